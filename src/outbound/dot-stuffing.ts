// The DATA phase of nodemailer's SMTPConnection#send goes through its
// DataStream, which stuffs leading dots and turns bare CR and LF into CRLF
// with a JavaScript loop over every byte: 12% of the event loop with 100 KB
// messages. Only bytes at a line end and right after one can change
// anything, so installFastDotStuffing gives DataStream (both builds, ESM and
// CJS, through smtp/library-builds.ts) a _transform that
// finds line ends with indexOf and applies nodemailer's own three rules at
// those places only; a chunk where no rule applies (the usual case: a queued
// body's line ends are CRLF) is first recognised in two indexOf per line and
// passed on as it is. The bytes out are the same: test/unit/dot-stuffing.test.ts
// compares it with the library's loop on random input in random chunks.
// Fails: throws at start if the library no longer has the class we change.
import { join } from 'node:path';
import type { TransformCallback } from 'node:stream';
import { classPrototypes } from '../smtp/library-builds.ts';

const CR = 0x0d;
const LF = 0x0a;
const DOT = 0x2e;
// What nodemailer inserts, by rule.
const INSERT_LF = Buffer.from('\n');
const INSERT_LF_DOT = Buffer.from('\n.');
const INSERT_CR = Buffer.from('\r');
const INSERT_DOT = Buffer.from('.');

/** DataStream's state, as the library keeps it. */
interface DataStreamState {
  inByteCount: number;
  outByteCount: number;
  /** The last byte of the previous chunk; false before the first. */
  lastByte: number | false;
  push(chunk: Buffer): boolean;
}

interface DataStreamPrototype {
  _transform(this: DataStreamState, chunk: Buffer | string, encoding: BufferEncoding, done: TransformCallback): void;
  __posternFastStuffing?: true;
}

/** insertionBefore - nodemailer's rule for byte `byte` after `prev` (false: the first byte of the message). */
function insertionBefore(prev: number | false, byte: number): Buffer | undefined {
  // A bare CR becomes CRLF, and a dot after it is stuffed like at any line start (SMTP smuggling).
  if (prev === CR && byte !== LF) return byte === DOT ? INSERT_LF_DOT : INSERT_LF;
  if (byte === LF && prev !== CR) return INSERT_CR;
  if (byte === DOT && (prev === LF || prev === false)) return INSERT_DOT;
  return undefined;
}

/**
 * untouched - whether no rule applies anywhere in the chunk, the usual case for a queued body (bare line
 * ends were made CRLF when it was received): every LF follows a CR, every CR is followed by an LF (or ends
 * the chunk, for the next one to decide), and no line starts with a dot. Two indexOf per line.
 */
function untouched(chunk: Buffer, lastByte: number | false): boolean {
  if (insertionBefore(lastByte, chunk[0]!)) return false;
  let cr = chunk.indexOf(CR);
  let lf = chunk.indexOf(LF);
  while (lf !== -1) {
    // An LF first in the chunk follows the previous chunk's last byte, which the line above checked.
    if ((lf > 0 && cr !== lf - 1) || chunk[lf + 1] === DOT) return false;
    cr = chunk.indexOf(CR, lf + 1);
    lf = chunk.indexOf(LF, lf + 1);
  }
  return cr === -1 || cr === chunk.length - 1;
}

/** stuffedChunk - the chunk as nodemailer's loop would push it. */
function stuffedChunk(chunk: Buffer, lastByte: number | false): Buffer {
  if (untouched(chunk, lastByte)) return chunk;
  const parts: Buffer[] = [];
  let copiedTo = 0;
  let checkedTo = -1;
  const check = (i: number) => {
    if (i <= checkedTo || i >= chunk.length) return;
    checkedTo = i;
    const insert = insertionBefore(i === 0 ? lastByte : chunk[i - 1]!, chunk[i]!);
    if (!insert) return;
    if (i > copiedTo) parts.push(chunk.subarray(copiedTo, i));
    parts.push(insert);
    copiedTo = i;
  };
  // Where a rule can apply: the first byte, every LF, and every byte after a CR or an LF.
  check(0);
  let nextCr = chunk.indexOf(CR);
  let nextLf = chunk.indexOf(LF);
  while (nextCr !== -1 || nextLf !== -1) {
    if (nextLf === -1 || (nextCr !== -1 && nextCr < nextLf)) {
      check(nextCr + 1);
      nextCr = chunk.indexOf(CR, nextCr + 1);
    } else {
      check(nextLf);
      check(nextLf + 1);
      nextLf = chunk.indexOf(LF, nextLf + 1);
    }
  }
  if (parts.length === 0) return chunk;
  if (copiedTo < chunk.length) parts.push(chunk.subarray(copiedTo));
  return Buffer.concat(parts);
}

/** installFastDotStuffing - replace DataStream#_transform in both nodemailer builds; idempotent. */
export async function installFastDotStuffing(): Promise<void> {
  for (const proto of await dataStreamPrototypes()) {
    if (typeof proto._transform !== 'function') throw new Error('nodemailer changed: DataStream.prototype._transform not found');
    if (proto.__posternFastStuffing) continue;
    proto._transform = function _transform(this: DataStreamState, input: Buffer | string, _encoding: BufferEncoding, done: TransformCallback): void {
      if (!input || !input.length) return done();
      const chunk = typeof input === 'string' ? Buffer.from(input) : input;
      this.inByteCount += chunk.length;
      const out = stuffedChunk(chunk, this.lastByte);
      this.outByteCount += out.length;
      this.push(out);
      this.lastByte = chunk[chunk.length - 1]!;
      done();
    };
    proto.__posternFastStuffing = true;
  }
}

/** dataStreamPrototypes - DataStream.prototype of the CJS and the ESM build. */
export function dataStreamPrototypes(): Promise<DataStreamPrototype[]> {
  return classPrototypes<DataStreamPrototype>('nodemailer', join('smtp-connection', 'data-stream.js'), 'default');
}
