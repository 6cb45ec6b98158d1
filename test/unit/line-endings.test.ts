import { once } from 'node:events';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ChunkGatherer, GATHERED, SMALL_CHUNK } from '../../src/inbound/chunk-gatherer.ts';
import { BareLineEndings } from '../../src/inbound/line-endings.ts';
import { randomLineEndTexts } from '../helpers/random-line-ends.ts';

async function run(mode: 'normalize' | 'reject', chunks: string[], sizeLimit = Infinity): Promise<{ out: string; found: boolean; overLimit: boolean }> {
  const t = new BareLineEndings(mode, sizeLimit);
  const parts: Buffer[] = [];
  for await (const c of Readable.from(chunks.map((s) => Buffer.from(s, 'latin1'))).pipe(t)) parts.push(c as Buffer);
  return { out: Buffer.concat(parts).toString('latin1'), found: t.found, overLimit: t.overLimit };
}

describe('BareLineEndings', () => {
  const rows: [string, string[], string, boolean][] = [
    ['CRLF untouched', ['a\r\nb\r\n'], 'a\r\nb\r\n', false],
    ['bare LF becomes CRLF', ['a\nb\n'], 'a\r\nb\r\n', true],
    ['bare CR becomes CRLF', ['a\rb\r\n'], 'a\r\nb\r\n', true],
    ['CRLF split across chunks stays one CRLF', ['a\r', '\nb'], 'a\r\nb', false],
    ['CR at a chunk end followed by text is bare', ['a\r', 'b'], 'a\r\nb', true],
    ['smuggling \\n.\\n is neutralised to a plain dot line', ['x\n.\nMAIL FROM:<e@x>\r\n'], 'x\r\n.\r\nMAIL FROM:<e@x>\r\n', true],
    ['trailing lone CR', ['a\r'], 'a\r\n', true],
    ['CR CR LF', ['a\r\r\n'], 'a\r\n\r\n', true],
    ['an empty chunk between a CR and its LF', ['a\r', '', '\nb\r\n'], 'a\r\nb\r\n', false],
  ];
  it.each(rows)('normalize: %s', async (_name, input, expected, found) => {
    expect(await run('normalize', input)).toEqual({ out: expected, found, overLimit: false });
  });
  it.each(rows)('reject: %s (bytes unchanged, detection same)', async (_name, input, _expected, found) => {
    expect(await run('reject', input)).toEqual({ out: input.join(''), found, overLimit: false });
  });

  // Every line end in every split: random text of a, ., CR and LF cut into random chunks, against the
  // same rule written as one regular expression over the whole text. Seeded, so a failure repeats.
  // Long chunks of mail-like lines take the fast path (crlf-scan.ts) until a bare line end or a CR at a chunk's end.
  it('agrees with the rule written as a regular expression, for 2,400 random texts in random chunks', async () => {
    for (const { text: bytes, chunks: pieces } of [...randomLineEndTexts(42, 2000, 40, 8), ...randomLineEndTexts(43, 400, 3000, 600, 'lines')]) {
      const text = bytes.toString('latin1');
      const chunks = pieces.map((piece) => piece.toString('latin1'));
      const found = /\r(?!\n)|(?<!\r)\n/.test(text);
      expect(await run('normalize', chunks), JSON.stringify(chunks)).toEqual({ out: text.replace(/\r\n|\r|\n/g, '\r\n'), found, overLimit: false });
      expect((await run('reject', chunks)).found, JSON.stringify(chunks)).toBe(found);
    }
  });

  // limits.messageSize counted as stored: over it, nothing more is passed on, and overLimit says so.
  it('passes on no more than the size limit, counted after normalizing, for 2,000 random texts in random chunks', async () => {
    for (const [n, { text: bytes, chunks: pieces }] of randomLineEndTexts(44, 2000, 60, 8).entries()) {
      const normalized = bytes.toString('latin1').replace(/\r\n|\r|\n/g, '\r\n');
      const limit = n % (normalized.length + 2);
      const chunks = pieces.map((piece) => piece.toString('latin1'));
      const { out, overLimit } = await run('normalize', chunks, limit);
      expect(overLimit, JSON.stringify([chunks, limit])).toBe(normalized.length > limit);
      expect(normalized.startsWith(out) && out.length <= limit, JSON.stringify([chunks, limit, out])).toBe(true);
      if (!overLimit) expect(out).toBe(normalized);
    }
  });
});

// A client that sends a byte at a time made every later stage hold a Buffer per byte (chunk-gatherer.ts).
describe('small chunks gathered', () => {
  it('passes a large chunk on as it came, with a lone small one before it uncopied', () => {
    const gatherer = new ChunkGatherer();
    const small = Buffer.from('\r\n.x');
    const large = Buffer.alloc(SMALL_CHUNK, 'a');
    expect(gatherer.take(small)).toEqual([]);
    const out = gatherer.take(large);
    expect(out).toHaveLength(2);
    expect(out[0]).toBe(small);
    expect(out[1]).toBe(large);
    expect(gatherer.release()).toBeUndefined();
  });

  it('copies a run of small chunks into pieces of GATHERED bytes, in order', () => {
    const gatherer = new ChunkGatherer();
    const bytes = Buffer.from(Array.from({ length: 3 * GATHERED + 100 }, (_, i) => i % 251));
    const out: Buffer[] = [];
    for (let i = 0; i < bytes.length; i++) out.push(...gatherer.take(bytes.subarray(i, i + 1)));
    out.push(gatherer.release()!);
    expect(out.map((b) => b.length)).toEqual([GATHERED, GATHERED, GATHERED, 100]);
    expect(Buffer.concat(out).equals(bytes)).toBe(true);
  });

  it.each(['normalize', 'reject'] as const)('%s: a message sent a byte at a time comes out the same, in a few chunks', async (mode) => {
    const message = `Subject: bytes\r\nX-Bare: a\nb\r\n\r\n${'line\r\n'.repeat(10_000)}end\r`;
    const t = new BareLineEndings(mode, Infinity);
    // 'data' events, one for each chunk passed on (an async iterator would read them joined).
    const parts: Buffer[] = [];
    t.on('data', (c: Buffer) => parts.push(c));
    Readable.from([...Buffer.from(message, 'latin1')].map((b) => Buffer.from([b]))).pipe(t);
    await once(t, 'end');
    const expected = mode === 'normalize' ? message.replace(/\r?\n|\r(?!\n)/g, '\r\n') : message;
    expect(Buffer.concat(parts).toString('latin1')).toBe(expected);
    expect(parts.length).toBeLessThanOrEqual(Math.ceil(expected.length / GATHERED) + 1);
    expect(t.found).toBe(true);
  });
});
