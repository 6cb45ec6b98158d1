// Postern's DataStream#_transform against nodemailer's own loop: the same
// bytes out (and the same byte counts) for random messages of a, ., CR and
// LF cut into random chunks, seeded so a failure repeats. Both builds must
// carry the replacement.
import { Readable, type Transform } from 'node:stream';
import { describe, expect, it } from 'vitest';
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
  it('writes exactly what nodemailer’s loop writes, for 3,000 random messages in random chunks', async () => {
    // The classes of both builds, and the library's own loop, taken before the replacement.
    const builds = (await dataStreamPrototypes()).map((proto) => ({
      DataStream: proto.constructor as new () => DataStream,
      libraryTransform: Object.getOwnPropertyDescriptor(proto, '_transform')?.value as TransformFunction,
    }));
    await installFastDotStuffing();
    for (const { DataStream, libraryTransform } of builds) expect(DataStream.prototype._transform).not.toBe(libraryTransform);

    for (const { text, chunks } of randomLineEndTexts(7, 3000, 60, 10)) {
      for (const { DataStream, libraryTransform } of builds) {
        const library = new DataStream();
        library._transform = libraryTransform;
        const expected = await through(library, chunks);
        expect(await through(new DataStream(), chunks), JSON.stringify(text.toString('latin1'))).toEqual(expected);
      }
    }
  });
});
