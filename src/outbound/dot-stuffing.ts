// The DATA phase of nodemailer's SMTPConnection#send goes through its
// DataStream, which stuffs leading dots and turns bare CR and LF into CRLF
// with a JavaScript loop over every byte: 12% of the event loop with 100 KB
// messages. stuffQueuedBodies gives the DataStreams of one connection, ours
// to a next hop, queuedBodyTransform, which only stuffs dots, found with two
// native searches per chunk ("\n." and "\r."), not one or two per line, and
// queuedBodyFlush, which ends the data.
//
// Why the line ends need no work there: a queued body's line ends are all
// CRLF. Intake made them so (inbound/line-endings.ts: bare CR and LF are
// normalized, or the message is refused), and a bounce report is CRLF lines
// around the original's header block (smtp/header-block.ts never cuts a
// CRLF in two). Proving that again for every line was 9% of the event
// loop with 10 MB messages (bench/ROUNDS.md, "Seventeenth round").
// On such bodies the bytes out are nodemailer's. On any other:
//  - every dot that starts a line by any reading of line ends (after CR,
//    after LF, or first) is still stuffed, so no next hop can see the data
//    end early (SMTP smuggling);
//  - the data still ends where every reader sees its end: CRLF.CRLF after
//    a body that does not end in CRLF (nodemailer's own ending would leave
//    a strict next hop waiting after a bare LF);
//  - bare line ends go out as they are.
// Other users of nodemailer in the process (the CLI, tests) keep the
// library's rules. test/unit/dot-stuffing.test.ts compares both cases with
// their rule on random input in random chunks.
// Fails: never. Should the library lose the method stuffQueuedBodies
// wraps, its own rules apply again (the same bytes for a queued body,
// slower), and the outbound session test fails.
import type { TransformCallback } from 'node:stream';
import type SMTPConnection from 'nodemailer/lib/smtp-connection';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
const LF_DOT = Buffer.from('\n.');
const CR_DOT = Buffer.from('\r.');
const STUFFED_DOT = Buffer.from('.');

/** DataStream's state, as the library keeps it, and ours. */
interface DataStreamState {
  inByteCount: number;
  outByteCount: number;
  /** The last byte of the previous chunk; false before the first. */
  lastByte: number | false;
  /** Ours: whether the bytes so far end in CRLF. */
  endsInCrlf?: boolean;
  push(chunk: Buffer): boolean;
  _transform(this: DataStreamState, chunk: Buffer | string, encoding: BufferEncoding, done: TransformCallback): void;
  _flush(this: DataStreamState, done: TransformCallback): void;
}

const END_AFTER_CRLF = Buffer.from('.\r\n');
const END_AFTER_OTHER = Buffer.from('\r\n.\r\n');

type SendStreamFactory = { _createSendStream?: (this: SendStreamFactory, callback: unknown) => DataStreamState };

/** stuffedChunk - the chunk with a dot before each dot that starts a line (`lastByte`: the byte before the chunk, false at the message's start). */
function stuffedChunk(chunk: Buffer, lastByte: number | false): Buffer {
  const parts: Buffer[] = [];
  if (chunk[0] === DOT && (lastByte === false || lastByte === LF || lastByte === CR)) parts.push(STUFFED_DOT);
  let copiedTo = 0;
  let afterLf = chunk.indexOf(LF_DOT);
  let afterCr = chunk.indexOf(CR_DOT);
  while (afterLf !== -1 || afterCr !== -1) {
    const lineEnd = afterCr === -1 || (afterLf !== -1 && afterLf < afterCr) ? afterLf : afterCr;
    const dot = lineEnd + 1;
    parts.push(chunk.subarray(copiedTo, dot), STUFFED_DOT);
    copiedTo = dot;
    if (lineEnd === afterLf) afterLf = chunk.indexOf(LF_DOT, dot);
    else afterCr = chunk.indexOf(CR_DOT, dot);
  }
  if (parts.length === 0) return chunk;
  parts.push(chunk.subarray(copiedTo));
  return Buffer.concat(parts);
}

/** queuedBodyTransform - DataStream#_transform for a queued body: the chunk with its line-leading dots stuffed. */
export function queuedBodyTransform(this: DataStreamState, input: Buffer | string, _encoding: BufferEncoding, done: TransformCallback): void {
  if (!input || !input.length) return done();
  const chunk = typeof input === 'string' ? Buffer.from(input) : input;
  this.inByteCount += chunk.length;
  const out = stuffedChunk(chunk, this.lastByte);
  this.outByteCount += out.length;
  this.push(out);
  const last = chunk[chunk.length - 1]!;
  this.endsInCrlf = last === LF && (chunk.length > 1 ? chunk[chunk.length - 2] === CR : this.lastByte === CR);
  this.lastByte = last;
  done();
}

/** queuedBodyFlush - DataStream#_flush for a queued body: the end of the data, on a line of its own. */
export function queuedBodyFlush(this: DataStreamState, done: TransformCallback): void {
  const end = this.endsInCrlf ? END_AFTER_CRLF : END_AFTER_OTHER;
  this.outByteCount += end.length;
  this.push(end);
  done();
}

/** stuffQueuedBodies - every DataStream `connection` makes from now on uses queuedBodyTransform and queuedBodyFlush. */
export function stuffQueuedBodies(connection: SMTPConnection): void {
  const internals = connection as unknown as SendStreamFactory;
  const createSendStream = internals._createSendStream;
  if (typeof createSendStream !== 'function') return;
  internals._createSendStream = function (this: SendStreamFactory, callback: unknown): DataStreamState {
    const stream = createSendStream.call(this, callback);
    stream._transform = queuedBodyTransform;
    stream._flush = queuedBodyFlush;
    return stream;
  };
}
