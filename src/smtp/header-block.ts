// Where a message's header block ends (RFC 5322 §2.1: the header fields,
// then an empty line, then the body), read from the start of the message.
// One answer for both places that need it: the trace headers added on the
// way in (inbound/trace-headers.ts) and the headers a bounce quotes
// (queue/delivery-reports.ts). Bounded: a header block larger than
// HEADER_BLOCK_LIMIT is taken as those first bytes (Postfix's
// header_size_limit is 100 KB), one fewer where the last is the CR of a
// CRLF: a bounce quotes the block, and a CR cut from its LF would be a bare
// CR on the wire.
//
//   headerBlockLength  - the header block's length in the bytes read so far, or undefined while more could change it.
//   headerBlockSettles - whether headerBlockLength can answer once one more piece is read (no need to ask before).
//   fieldLinesLength   - how much of a header block is header fields, before a line that is none.
//   HEADER_BLOCK_LIMIT - the most bytes taken as a header block.

export const HEADER_BLOCK_LIMIT = 256 * 1024;

const END_OF_HEADERS = Buffer.from('\r\n\r\n');

/**
 * headerBlockLength - how many bytes at the start of `data` are the header block, with the CRLF that ends
 * its last field; 0 for a message that starts with its body. `complete`: `data` is the whole message.
 */
export function headerBlockLength(data: Buffer, complete: boolean): number | undefined {
  // First: "\r\n\r\nbody" starts with its body, whose first line is empty (the search below would find a block of 2).
  if (data.length >= 2 && data[0] === 0x0d && data[1] === 0x0a) return 0;
  const end = data.indexOf(END_OF_HEADERS);
  if (end !== -1) return bounded(data, end + 2);
  if (complete || data.length >= HEADER_BLOCK_LIMIT) return bounded(data, data.length);
  return undefined;
}

/**
 * headerBlockSettles - whether headerBlockLength may answer once `chunk` is added to the `before` bytes read so far,
 * whose last bytes (up to 3) are `tail`. A reader fed in pieces joins and searches them only then: searching all it
 * has again at every piece was quadratic in a header block sent a few bytes at a time.
 */
export function headerBlockSettles(before: number, tail: Buffer, chunk: Buffer): boolean {
  if (before < 2 || before + chunk.length >= HEADER_BLOCK_LIMIT) return true;
  return chunk.indexOf(END_OF_HEADERS) !== -1 || Buffer.concat([tail, chunk.subarray(0, 3)]).indexOf(END_OF_HEADERS) !== -1;
}

/** bounded - `length`, or HEADER_BLOCK_LIMIT when it is more, less one when that would end between a CR and its LF. */
function bounded(data: Buffer, length: number): number {
  if (length <= HEADER_BLOCK_LIMIT) return length;
  return data[HEADER_BLOCK_LIMIT - 1] === 0x0d ? HEADER_BLOCK_LIMIT - 1 : HEADER_BLOCK_LIMIT;
}

// A header field's first line (RFC 5322 §2.2, §4.5.3's obsolete space before the colon allowed, as Postfix
// does), or one of its continuation lines after the first.
const FIELD_LINE = /[!-9;-~]+[ \t]*:/y;
const CONTINUATION_LINE = /[ \t]/y;

/**
 * fieldLinesLength - how many characters at the start of a header block (latin1, CRLF lines) are header fields;
 * less than its length when a line that is no header field ends the fields early (a script that left out the
 * empty line before its body, or sent a body alone). Postfix's cleanup ends the headers there.
 */
export function fieldLinesLength(headerBlock: string): number {
  let at = 0;
  while (at < headerBlock.length) {
    const end = headerBlock.indexOf('\r\n', at);
    // A last line without its CRLF is not judged: a block cut at HEADER_BLOCK_LIMIT may end inside a field's name.
    if (end === -1) return headerBlock.length;
    FIELD_LINE.lastIndex = at;
    CONTINUATION_LINE.lastIndex = at;
    // An mbox "From " line is no field either: text that starts "From now on" is more likely than a mailbox file.
    if (!FIELD_LINE.test(headerBlock) && !(at > 0 && CONTINUATION_LINE.test(headerBlock))) return at;
    at = end + 2;
  }
  return at;
}
