// The DataStream#_transform and #_flush Postern's outbound connections use
// (queuedBodyTransform, queuedBodyFlush), on random messages cut into
// random chunks, seeded so a failure repeats:
//  - a queued body (CRLF line ends only): the same bytes out, and the same
//    byte counts, as nodemailer's own loop;
//  - any bytes at all (a, ., CR and LF, bare line ends too): a dot is added
//    before each dot that is first in the message or follows a CR or an LF,
//    and nothing else changes, so no reading of line ends finds a line that
//    is a lone dot before the end; the end is CRLF.CRLF, or only .CRLF
//    after a CRLF.
// Both builds of the library's DataStream are used.
import { join } from 'node:path';
import { Readable, type Transform } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { queuedBodyFlush, queuedBodyTransform } from '../../src/outbound/dot-stuffing.ts';
import { classPrototypes } from '../../src/smtp/library-builds.ts';
import { randomLineEndTexts } from '../helpers/random-line-ends.ts';

type DataStream = Transform & { inByteCount: number; outByteCount: number };
type TransformFunction = (this: DataStream, chunk: Buffer, encoding: BufferEncoding, done: () => void) => void;
type FlushFunction = (this: DataStream, done: () => void) => void;

async function through(stream: DataStream, chunks: Buffer[]): Promise<{ out: Buffer; inBytes: number; outBytes: number }> {
  const parts: Buffer[] = [];
  for await (const part of Readable.from(chunks).pipe(stream)) parts.push(part as Buffer);
  return { out: Buffer.concat(parts), inBytes: stream.inByteCount, outBytes: stream.outByteCount };
}

/** dotsStuffed - the rule, byte by byte: a dot first or after CR or LF gets a dot before it; then the end of the data. */
function dotsStuffed(text: Buffer): Buffer {
  const out: number[] = [];
  text.forEach((byte, i) => {
    if (byte === 0x2e && (i === 0 || text[i - 1] === 0x0d || text[i - 1] === 0x0a)) out.push(0x2e);
    out.push(byte);
  });
  const end = text.subarray(-2).toString('latin1') === '\r\n' ? '.\r\n' : '\r\n.\r\n';
  return Buffer.concat([Buffer.from(out), Buffer.from(end)]);
}

describe('fast dot-stuffing', () => {
  let builds: (new () => DataStream)[];
  beforeAll(async () => {
    const prototypes = await classPrototypes<{ constructor: new () => DataStream }>('nodemailer', join('smtp-connection', 'data-stream.js'), 'default');
    builds = prototypes.map((proto) => proto.constructor);
  });
  const ours = (DataStream: new () => DataStream) =>
    Object.assign(new DataStream(), { _transform: queuedBodyTransform as unknown as TransformFunction, _flush: queuedBodyFlush as unknown as FlushFunction });

  it.each([
    { seed: 8, maxLength: 3000, maxChunk: 700, count: 500 },
    { seed: 9, maxLength: 60, maxChunk: 3, count: 3000 },
  ])('writes exactly what nodemailer’s loop writes for $count random queued bodies in chunks of 1 to $maxChunk bytes', async ({ seed, maxLength, maxChunk, count }) => {
    for (const { text, chunks } of randomLineEndTexts(seed, count, maxLength, maxChunk, 'queued')) {
      for (const DataStream of builds) {
        const expected = await through(new DataStream(), chunks);
        expect(await through(ours(DataStream), chunks), JSON.stringify(text.toString('latin1'))).toEqual(expected);
      }
    }
  });

  // 'bytes': every case within a few bytes; 'lines': mail-like text with a few bare line ends.
  it.each([
    { shape: 'bytes', seed: 7, maxLength: 60, maxChunk: 10, count: 3000 },
    { shape: 'lines', seed: 8, maxLength: 3000, maxChunk: 700, count: 500 },
  ] as const)('stuffs every dot that starts a line by any reading of line ends, changes nothing else, and ends the data on a line of its own ($shape)', async ({ shape, seed, maxLength, maxChunk, count }) => {
    for (const { text, chunks } of randomLineEndTexts(seed, count, maxLength, maxChunk, shape)) {
      for (const DataStream of builds) {
        const { out, inBytes, outBytes } = await through(ours(DataStream), chunks);
        expect(out.toString('latin1'), JSON.stringify(text.toString('latin1'))).toBe(dotsStuffed(text).toString('latin1'));
        expect([inBytes, outBytes]).toEqual([text.length, out.length]);
      }
    }
  });
});
