// smtp-server's DATA parser (SMTPStream#_feedDataStream) looks at every
// byte of a message for a line that starts with a dot; with 100 KB messages
// that loop was 7% of the event loop's time. This is the same method with
// the loop replaced by Buffer#indexOf for "\n." (native, memchr-speed), so
// only the line starts that begin with a dot are looked at, and the
// library's rules applied there unchanged: the terminator CRLF.CRLF ends the
// data, a doubled dot loses its first dot, the last four bytes are held
// back for the next chunk (and go out ahead of it, uncopied, when no dot
// line starts at the seam), the start-of-data cases are as before (an
// attacker who controls TCP segmentation must not end DATA early: the
// terminator and dot handling below is the library's, line for line).
// test/unit/fast-data-scan.test.ts feeds random messages in random chunks
// through both and requires the same bytes, byte counts and ends.
//
// Bytes past the size limit are counted (smtp-server's sizeExceeded, and the
// 552 at the end) but not passed on: the library keeps writing them, and the
// queue would store a message it is going to refuse, as large as the client
// cares to send. Postfix's cleanup stops storing at message_size_limit too.
//
// Installed on both builds of smtp-server (ESM and CJS), like
// inbound/wire-replies.ts. Throws at start if the library's layout changed.
//
//   installFastDataScan - replace _feedDataStream in both builds; idempotent.
import type { PassThrough } from 'node:stream';
import { patchMethods, SMTP_STREAM } from './library-builds.ts';

/** The parser's state that _feedDataStream reads and writes (smtp-server's SMTPStream). */
export interface SmtpStreamState {
  _dataStream: PassThrough & { writable: boolean; sizeExceeded: boolean };
  _lastBytes: Buffer | false;
  _atDataStart: boolean;
  _countDataBytes(length: number): void;
  _endDataMode(chunk: Buffer | false, remainder: Buffer, done: () => void): void;
  _feedDataStream(chunk: Buffer, done: () => void): void;
}

const DOT_LINE_START = Buffer.from('\n.');
const EMPTY_BODY = Buffer.from('.\r\n');

/** feedDataStream - smtp-server's _feedDataStream, finding dot-led lines with indexOf. */
function feedDataStream(this: SmtpStreamState, input: Buffer, done: () => void): void {
  const dataStream = this._dataStream;
  let chunk = input;
  const held = this._lastBytes;
  if (held && held.length) {
    this._lastBytes = false;
    if (!this._atDataStart && input.length >= 4 && !seamHasDotLine(held, input)) {
      // Nothing at the seam for the library's rules to act on: the held bytes go out as they are and the
      // chunk is scanned alone, instead of being copied behind them (a copy of every chunk of a long message).
      this._countDataBytes(held.length);
      if (passesOn(dataStream)) dataStream.write(held);
    } else {
      chunk = Buffer.concat([held, chunk], held.length + chunk.length);
    }
  }
  let len = chunk.length;
  // The data must not start with the terminator (see the library's note on _atDataStart).
  if (this._atDataStart && len >= 3 && chunk.subarray(0, 3).equals(EMPTY_BODY)) {
    this._endDataMode(false, chunk.subarray(3), done);
    return;
  }
  // A first line that starts with an escape dot.
  if (this._atDataStart && len >= 2 && chunk[0] === 0x2e && chunk[1] === 0x2e) {
    chunk = chunk.subarray(1);
    len--;
    this._atDataStart = false;
  }
  // The library's loop visits i = 2 … len - 3 and acts where chunk[i] is a dot after a LF; the LF is at i - 1.
  // At a doubled dot it passes on what is before the first and feeds the rest to itself again, on the next turn
  // of the event loop: a turn and a write per doubled dot (3 MB of "..\r\n" lines took 5 s of CPU, 0.2 now).
  // Here the scan goes on in the same chunk from `start`, the rest's first byte, which is what that call would
  // look at (from its second byte on, the window of five bytes never reaching before it), and the parts are
  // passed on in one write.
  let start = 0;
  /** What goes on from this chunk: its parts between doubled dots, copied together once there is more than one. */
  let out: Buffer | undefined;
  let outLength = 0;
  const passOn = (from: number, to: number) => {
    this._countDataBytes(to - from);
    if (!passesOn(dataStream)) return;
    if (from === 0 && outLength === 0) return void (outLength = to); // the chunk's own first bytes: no copy yet
    if (!out) {
      out = Buffer.allocUnsafe(len);
      chunk.copy(out, 0, 0, outLength);
    }
    outLength += chunk.copy(out, outLength, from, to);
  };
  const ready = () => (out ?? chunk).subarray(0, outLength);
  for (let lf = chunk.indexOf(DOT_LINE_START, 1); lf !== -1 && lf + 1 < len - 2; lf = chunk.indexOf(DOT_LINE_START, lf + 1)) {
    const i = lf + 1;
    // CRLF.CRLF, with the LF before the dot and the dot already known
    if (chunk[i - 2] === 0x0d && chunk[i + 1] === 0x0d && chunk[i + 2] === 0x0a) {
      const body = chunk.subarray(start, i);
      if (outLength > 0) dataStream.write(ready());
      this._countDataBytes(body.length);
      this._endDataMode(passesOn(dataStream) ? body : false, chunk.subarray(i + 3), done);
      return;
    }
    if (chunk[i + 1] === 0x2e) {
      passOn(start, i);
      start = i + 1;
      lf = start; // the next search starts at start + 1
    }
  }
  // Hold the last four bytes back: a terminator may straddle this chunk and the next.
  this._lastBytes = len - start < 4 ? chunk.subarray(start) : chunk.subarray(len - 4);
  if (len - start > this._lastBytes.length) passOn(start, len - this._lastBytes.length);
  if (outLength === 0) return done();
  if (dataStream.write(ready()) || dataStream.destroyed) return done();
  // A stream the application destroys never drains, it only closes.
  const onDrain = () => {
    dataStream.removeListener('drain', onDrain);
    dataStream.removeListener('close', onDrain);
    done();
  };
  dataStream.once('drain', onDrain);
  dataStream.once('close', onDrain);
}

/** passesOn - whether bytes go on to the message: not once it is over the size limit, nor to a stream ended or destroyed. */
function passesOn(dataStream: SmtpStreamState['_dataStream']): boolean {
  return dataStream.writable && !dataStream.sizeExceeded;
}

/**
 * seamHasDotLine - whether the held bytes and the next chunk's first two bytes hold a dot after a LF that the
 * library's loop over their concatenation would look at (the LF at index 1 … held.length); the loop over the
 * chunk alone looks at every later one, with the same bytes around it.
 */
function seamHasDotLine(held: Buffer, chunk: Buffer): boolean {
  const at = (i: number) => (i < held.length ? held[i] : chunk[i - held.length]);
  for (let lf = 1; lf <= held.length; lf++) if (at(lf) === 0x0a && at(lf + 1) === 0x2e) return true;
  return false;
}

/** installFastDataScan - replace _feedDataStream in both builds of smtp-server; idempotent. */
export function installFastDataScan(): Promise<void> {
  return patchMethods<SmtpStreamState, '_feedDataStream'>('fast DATA scan', SMTP_STREAM, ['_feedDataStream'], () => ({ _feedDataStream: feedDataStream }));
}
