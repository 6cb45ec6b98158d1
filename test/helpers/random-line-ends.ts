// Seeded random messages for the byte-rewriting property tests, cut into
// random chunks (every split across chunk boundaries). Two shapes:
//  - 'bytes': a, ., CR and LF in equal parts, so every line-end and
//    dot-stuffing case turns up within a few bytes;
//  - 'lines': mostly CRLF lines of a's, some led by a dot, a few ended by a
//    bare CR or LF, as mail is, so long chunks with nothing to change (the
//    fast paths) meet the rare ones that have something;
//  - 'queued': the same lines, all ended by CRLF, as a queued body is.
// xorshift32 is exact in 32-bit integer arithmetic, so a seed gives the
// same texts everywhere and a failure repeats.

export type TextShape = 'bytes' | 'lines' | 'queued';

/** randomLineEndTexts - `count` texts of up to about `maxLength` bytes, each cut into chunks of 1..`maxChunk` bytes. */
export function randomLineEndTexts(seed: number, count: number, maxLength: number, maxChunk: number, shape: TextShape = 'bytes'): { text: Buffer; chunks: Buffer[] }[] {
  let state = seed;
  const random = (n: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  const lineEnd = () => (shape === 'queued' || random(16) > 0 ? '\r\n' : random(2) ? '\r' : '\n');
  const line = () => (random(8) === 0 ? '.' : '') + 'a'.repeat(random(12)) + lineEnd();
  const textOf = (length: number) => {
    if (shape === 'bytes') return Array.from({ length }, () => 'a.\r\n'[random(4)]).join('');
    let text = '';
    while (text.length < length) text += line();
    return text;
  };
  return Array.from({ length: count }, () => {
    const text = Buffer.from(textOf(random(maxLength)), 'latin1');
    const chunks: Buffer[] = [];
    for (let at = 0; at < text.length; ) {
      const size = 1 + random(maxChunk);
      chunks.push(text.subarray(at, at + size));
      at += size;
    }
    return { text, chunks };
  });
}
