import { describe, expect, it } from 'vitest';
import { isAllCrlf } from '../../src/inbound/crlf-scan.ts';
import { randomLineEndTexts } from '../helpers/random-line-ends.ts';

// The rule, byte by byte: a byte is an LF exactly when the one before it is a CR, and the last is no CR.
function byRule(bytes: Uint8Array): boolean {
  let afterCr = false;
  for (const byte of bytes) {
    if ((byte === 0x0a) !== afterCr) return false;
    afterCr = byte === 0x0d;
  }
  return !afterCr;
}

/** `length` bytes of CRLF lines of 8 bytes each, with no line end within 8 bytes of `at` but `bytes` written there. */
function linesWith(length: number, at: number, bytes: string): Buffer {
  const text = Buffer.alloc(length, 'a');
  for (let end = 6; end + 1 < length; end += 8) text.write('\r\n', end, 'latin1');
  text.fill('a', Math.floor((at - 8) / 8) * 8, Math.ceil((at + 9) / 8) * 8);
  text.write(bytes, at, 'latin1');
  return text;
}

describe('isAllCrlf', () => {
  it.each([
    ['empty', '', true],
    ['text without line ends', 'abc', true],
    ['CRLF lines', 'a\r\nb\r\n', true],
    ['a bare LF', 'a\nb', false],
    ['a bare CR', 'a\rb', false],
    ['an LF first (its CR, if any, was in an earlier chunk)', '\nab', false],
    ['a CR last (its LF, if any, is in a later chunk)', 'ab\r', false],
    ['CR CR LF', 'a\r\r\n', false],
    ['LF CR', 'a\n\r', false],
  ])('%s', (_name, text, expected) => {
    expect(isAllCrlf(Buffer.from(text, 'latin1'))).toBe(expected);
  });

  // The function compares 16 bytes at a time and carries a CR over from one block to the next, and
  // copies 64 KiB at a time: a bare line end on either side of each seam, and a CRLF across it.
  it.each([15, 16, 17, 31, 32, 65535, 65536, 65537, 131071, 131072])('sees a bare CR or LF at %i, and a CRLF split there', (at) => {
    const length = 140_000;
    expect(isAllCrlf(linesWith(length, at, 'a'))).toBe(true);
    expect(isAllCrlf(linesWith(length, at, '\n'))).toBe(false);
    expect(isAllCrlf(linesWith(length, at, '\r'))).toBe(false);
    expect(isAllCrlf(linesWith(length, at - 1, '\r\n')), 'a CR just before `at`, its LF at `at`').toBe(true);
    expect(isAllCrlf(linesWith(length, at - 1, '\r\r\n')), 'a bare CR just before `at`').toBe(false);
  });

  it('agrees with the rule for random texts of up to 200 KB, whole and from odd offsets', () => {
    const texts = [...randomLineEndTexts(7, 300, 200_000, 200_000, 'lines'), ...randomLineEndTexts(8, 300, 200_000, 200_000, 'queued'), ...randomLineEndTexts(9, 3000, 100, 1, 'bytes')];
    let clean = 0;
    for (const { text } of texts) {
      for (const bytes of [text, text.subarray(1), text.subarray(3, text.length - 5)]) {
        expect(isAllCrlf(bytes), JSON.stringify(bytes.toString('latin1').slice(0, 200))).toBe(byRule(bytes));
        if (byRule(bytes)) clean++;
      }
    }
    // Both answers were asked for, many times each.
    expect(clean).toBeGreaterThan(500);
    expect(clean).toBeLessThan(texts.length * 3 - 500);
  });
});
