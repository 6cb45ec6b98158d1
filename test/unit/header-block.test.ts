// headerBlockLength (smtp/header-block.ts): where the header block ends, for
// the trace headers on the way in and the headers a bounce quotes.
import { describe, expect, it } from 'vitest';
import { fieldLinesLength, HEADER_BLOCK_LIMIT, headerBlockLength } from '../../src/smtp/header-block.ts';

const bytes = (text: string) => Buffer.from(text, 'latin1');

describe('headerBlockLength', () => {
  it('ends after the CRLF of the last field, before the empty line', () => {
    expect(headerBlockLength(bytes('Subject: a\r\nTo: b\r\n\r\nbody\r\n'), false)).toBe(19);
  });

  it('is 0 for a message that starts with its body', () => {
    expect(headerBlockLength(bytes('\r\nonly a body\r\n'), false)).toBe(0);
  });

  it('waits for more while the empty line may still come, and takes everything at the end of the message', () => {
    expect(headerBlockLength(bytes('Subject: a\r\nTo: b\r\n'), false)).toBeUndefined();
    expect(headerBlockLength(bytes('Subject: a\r\nTo: b\r\n'), true)).toBe(19);
  });

  it('takes the first HEADER_BLOCK_LIMIT bytes of a larger header block', () => {
    const huge = bytes(`X-Long: ${'a'.repeat(HEADER_BLOCK_LIMIT)}\r\n\r\nbody`);
    expect(headerBlockLength(huge, false)).toBe(HEADER_BLOCK_LIMIT);
    expect(headerBlockLength(huge.subarray(0, HEADER_BLOCK_LIMIT + 5), false)).toBe(HEADER_BLOCK_LIMIT);
    expect(headerBlockLength(huge.subarray(0, HEADER_BLOCK_LIMIT - 5), false)).toBeUndefined();
  });

  it('never cuts a CRLF in two at HEADER_BLOCK_LIMIT: a bounce quoting the block would carry a bare CR', () => {
    // The CR of a field's CRLF is the last byte within the limit.
    const field = `X-Long: ${'a'.repeat(HEADER_BLOCK_LIMIT - 'X-Long: '.length - 1)}\r\n`;
    const huge = bytes(`${field}X-More: b\r\n\r\nbody`);
    expect(huge[HEADER_BLOCK_LIMIT - 1]).toBe(0x0d);
    expect(headerBlockLength(huge, false)).toBe(HEADER_BLOCK_LIMIT - 1);
    expect(headerBlockLength(huge.subarray(0, HEADER_BLOCK_LIMIT + 1), true)).toBe(HEADER_BLOCK_LIMIT - 1);
  });
});

describe('fieldLinesLength', () => {
  it.each([
    ['fields only', 'Subject: a\r\nFrom: b\r\n', 21],
    ['a folded field', 'Subject: a\r\n b\r\n', 16],
    ['the obsolete space before the colon', 'Subject : a\r\n', 13],
    ['text after fields', 'Subject: a\r\ntext\r\n', 12],
    ['text first', 'hello world\r\n', 0],
    ['a continuation first', ' x\r\nSubject: a\r\n', 0],
    ['an empty block', '', 0],
    ['text that starts "From "', 'From now on the build runs at 2am.\r\nThanks\r\n', 0],
    // A block cut at HEADER_BLOCK_LIMIT can end inside a field's name: that last line is not judged.
    ['a last line cut short', 'Subject: a\r\nFro', 15],
  ])('%s', (_name, block, length) => {
    expect(fieldLinesLength(block)).toBe(length);
  });
});
