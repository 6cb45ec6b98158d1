// Postern's SMTPStream#_feedDataStream (smtp/fast-data-scan.ts) against
// smtp-server's own loop: random messages of a, ., CR and LF, ended by the
// terminator and followed by a command, cut into random chunks (seeded, so a
// failure repeats), fed to a real SMTPStream of each build in data mode.
// Both must give the same body bytes, the same byte count, and the same
// commands after the data: where the data ends is the security-relevant
// part (SMTP smuggling), so a random text may hold a terminator of its own.
import type { PassThrough } from 'node:stream';
import { beforeAll, describe, expect, it } from 'vitest';
import { installFastDataScan, type SmtpStreamState } from '../../src/smtp/fast-data-scan.ts';
import { classPrototypes } from '../../src/smtp/library-builds.ts';
import { randomLineEndTexts } from '../helpers/random-line-ends.ts';

type Parser = SmtpStreamState & {
  startDataMode(maxBytes?: number): PassThrough;
  continue(): void;
  oncommand: (command: Buffer, next?: () => void) => void;
  dataBytes: number;
  write(chunk: Buffer): boolean;
  end(): void;
  once(event: 'finish', listener: () => void): void;
};
type Feed = SmtpStreamState['_feedDataStream'];

const AFTER = Buffer.from('\r\n.\r\nNOOP\r\nQUIT\r\n');

/** parse - feed `chunks` to a parser in data mode; what it gave as data, how many bytes it counted, and the commands after. */
async function parse(parser: Parser, chunks: Buffer[]): Promise<{ body: string; dataBytes: number; commands: string[] }> {
  const commands: string[] = [];
  parser.oncommand = (command, next) => {
    commands.push(command.toString('latin1'));
    next?.();
  };
  const data = parser.startDataMode();
  const parts: Buffer[] = [];
  data.on('data', (part: Buffer) => parts.push(part));
  data.once('end', () => parser.continue());
  for (const chunk of chunks) parser.write(chunk);
  parser.end();
  await new Promise<void>((resolve) => parser.once('finish', resolve));
  return { body: Buffer.concat(parts).toString('latin1'), dataBytes: parser.dataBytes, commands };
}

describe('fast DATA scan', () => {
  let builds: { SMTPStream: new () => Parser; libraryFeed: Feed }[];
  beforeAll(async () => {
    // The classes of both builds, and the library's own method, taken before the replacement.
    builds = (await classPrototypes<SmtpStreamState>('smtp-server', 'smtp-stream.js', 'SMTPStream')).map((proto) => ({
      SMTPStream: proto.constructor as new () => Parser,
      libraryFeed: Object.getOwnPropertyDescriptor(proto, '_feedDataStream')?.value as Feed,
    }));
    await installFastDataScan();
  });

  // 'bytes': every case within a few bytes; 'lines': mail-like text, long chunks whose seams mostly hold nothing.
  it.each([
    { shape: 'bytes', seed: 11, maxLength: 80, maxChunk: 12 },
    { shape: 'lines', seed: 12, maxLength: 3000, maxChunk: 700 },
  ] as const)('ends, unstuffs and counts exactly as smtp-server’s loop does, for 3,000 random messages ($shape) in random chunks', async ({ shape, seed, maxLength, maxChunk }) => {
    for (const { SMTPStream, libraryFeed } of builds) expect(SMTPStream.prototype._feedDataStream).not.toBe(libraryFeed);

    let endedEarly = 0;
    for (const { text, chunks } of randomLineEndTexts(seed, 3000, maxLength, maxChunk, shape)) {
      // The terminator and two commands, split where the text's length says, sometimes inside the terminator.
      const cut = text.length % AFTER.length;
      const last = chunks.pop() ?? Buffer.alloc(0);
      const input = [...chunks, Buffer.concat([last, AFTER.subarray(0, cut)]), AFTER.subarray(cut)];
      for (const { SMTPStream, libraryFeed } of builds) {
        const library = new SMTPStream();
        library._feedDataStream = libraryFeed;
        const expected = await parse(library, input);
        const actual = await parse(new SMTPStream(), input);
        expect(actual, JSON.stringify(text.toString('latin1'))).toEqual(expected);
        if (expected.commands[0] !== 'NOOP') endedEarly++;
      }
    }
    // Some texts carried a terminator of their own: the early end was compared too.
    expect(endedEarly).toBeGreaterThan(0);
  });

  // Past the size limit nothing is passed on, the piece that ends the data too (the library wrote that one).
  it('passes on nothing past the size limit, up to the end of the data', async () => {
    const { SMTPStream } = builds[0]!;
    const parser = new SMTPStream();
    const data = parser.startDataMode(10);
    const pieces: Buffer[] = [];
    data.on('data', (piece: Buffer) => pieces.push(piece));
    const ended = new Promise((resolve) => data.once('end', resolve));
    parser.write(Buffer.from(`${'x'.repeat(100)}\r\n.\r\n`, 'latin1'));
    await ended;
    expect((data as PassThrough & { sizeExceeded?: boolean }).sizeExceeded).toBe(true);
    expect(pieces).toEqual([]);
  });

  // The library passes on the part before each doubled dot and feeds the rest to itself on the next turn of the event
  // loop: a turn and a write per such line, which a sender of nothing but ".." lines made cost 5 s of CPU per 3 MB.
  it('passes a chunk of doubled-dot lines on in one piece, unstuffed', async () => {
    const { SMTPStream } = builds[0]!;
    const parser = new SMTPStream();
    const data = parser.startDataMode();
    const pieces: Buffer[] = [];
    data.on('data', (piece: Buffer) => pieces.push(piece));
    const ended = new Promise((resolve) => data.once('end', resolve));
    parser.write(Buffer.from(`x${'\r\n..'.repeat(10_000)}\r\n.\r\n`, 'latin1'));
    await ended;
    expect(Buffer.concat(pieces).toString('latin1')).toBe(`x${'\r\n.'.repeat(10_000)}\r\n`);
    expect(pieces.length).toBeLessThanOrEqual(2);
  });
});
