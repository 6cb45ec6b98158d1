import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { BareLineEndings } from '../../src/inbound/line-endings.ts';
import { randomLineEndTexts } from '../helpers/random-line-ends.ts';

/** run - the chunks through BareLineEndings; checks that bytesAdded is what the output gained over the input. */
async function run(mode: 'normalize' | 'reject', chunks: string[]): Promise<{ out: string; found: boolean }> {
  const t = new BareLineEndings(mode);
  const parts: Buffer[] = [];
  for await (const c of Readable.from(chunks.map((s) => Buffer.from(s, 'latin1'))).pipe(t)) parts.push(c as Buffer);
  const out = Buffer.concat(parts);
  expect(t.bytesAdded, JSON.stringify(chunks)).toBe(out.length - chunks.join('').length);
  return { out: out.toString('latin1'), found: t.found };
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
    expect(await run('normalize', input)).toEqual({ out: expected, found });
  });
  it.each(rows)('reject: %s (bytes unchanged, detection same)', async (_name, input, _expected, found) => {
    expect(await run('reject', input)).toEqual({ out: input.join(''), found });
  });

  // Every line end in every split: random text of a, ., CR and LF cut into random chunks, against the
  // same rule written as one regular expression over the whole text. Seeded, so a failure repeats.
  // Long chunks of mail-like lines take the fast path (crlf-scan.ts) until a bare line end or a CR at a chunk's end.
  it('agrees with the rule written as a regular expression, for 2,400 random texts in random chunks', async () => {
    for (const { text: bytes, chunks: pieces } of [...randomLineEndTexts(42, 2000, 40, 8), ...randomLineEndTexts(43, 400, 3000, 600, 'lines')]) {
      const text = bytes.toString('latin1');
      const chunks = pieces.map((piece) => piece.toString('latin1'));
      const found = /\r(?!\n)|(?<!\r)\n/.test(text);
      expect(await run('normalize', chunks), JSON.stringify(chunks)).toEqual({ out: text.replace(/\r\n|\r|\n/g, '\r\n'), found });
      expect((await run('reject', chunks)).found, JSON.stringify(chunks)).toBe(found);
    }
  });
});
