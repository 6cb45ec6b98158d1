// Postern's DataStream#_transform against nodemailer's own loop: the same
// bytes out (and the same byte counts) for random messages of a, ., CR and
// LF cut into random chunks, seeded so a failure repeats. Both builds must
// carry the replacement.
import { Readable, type Transform } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { dataStreamPrototypes, installFastDotStuffing } from '../../src/outbound/dot-stuffing.ts';
import { randomLineEndTexts } from '../helpers/random-line-ends.ts';

type DataStream = Transform & { inByteCount: number; outByteCount: number };
type TransformFunction = (this: DataStream, chunk: Buffer, encoding: BufferEncoding, done: () => void) => void;

async function through(stream: DataStream, chunks: Buffer[]): Promise<{ out: Buffer; inBytes: number; outBytes: number }> {
  const parts: Buffer[] = [];
  for await (const part of Readable.from(chunks).pipe(stream)) parts.push(part as Buffer);
  return { out: Buffer.concat(parts), inBytes: stream.inByteCount, outBytes: stream.outByteCount };
}

describe('fast dot-stuffing', () => {
  let builds: { DataStream: new () => DataStream; libraryTransform: TransformFunction }[];
  beforeAll(async () => {
    // The classes of both builds, and the library's own loop, taken before the replacement.
    builds = (await dataStreamPrototypes()).map((proto) => ({
      DataStream: proto.constructor as new () => DataStream,
      libraryTransform: Object.getOwnPropertyDescriptor(proto, '_transform')?.value as TransformFunction,
    }));
    await installFastDotStuffing();
  });

  // 'bytes': every rule within a few bytes; 'lines': mail-like text, long chunks with nothing to change.
  it.each([
    { shape: 'bytes', seed: 7, maxLength: 60, maxChunk: 10, count: 3000 },
    { shape: 'lines', seed: 8, maxLength: 3000, maxChunk: 700, count: 500 },
  ] as const)('writes exactly what nodemailer’s loop writes, for $count random messages ($shape) in random chunks', async ({ shape, seed, maxLength, maxChunk, count }) => {
    for (const { DataStream, libraryTransform } of builds) expect(DataStream.prototype._transform).not.toBe(libraryTransform);
    for (const { text, chunks } of randomLineEndTexts(seed, count, maxLength, maxChunk, shape)) {
      for (const { DataStream, libraryTransform } of builds) {
        const library = new DataStream();
        library._transform = libraryTransform;
        const expected = await through(library, chunks);
        expect(await through(new DataStream(), chunks), JSON.stringify(text.toString('latin1'))).toEqual(expected);
      }
    }
  });
});
