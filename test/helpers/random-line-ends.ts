// Seeded random messages for the byte-rewriting property tests: texts of
// a, ., CR and LF (every line-end and dot-stuffing case) cut into random
// chunks (every split across chunk boundaries). xorshift32 is exact in
// 32-bit integer arithmetic, so a seed gives the same texts everywhere and a
// failure repeats.

/** randomLineEndTexts - `count` texts of up to `maxLength` bytes, each cut into chunks of 1..`maxChunk` bytes. */
export function randomLineEndTexts(seed: number, count: number, maxLength: number, maxChunk: number): { text: Buffer; chunks: Buffer[] }[] {
  let state = seed;
  const random = (n: number) => {
    state ^= state << 13;
    state ^= state >>> 17;
    state ^= state << 5;
    return (state >>> 0) % n;
  };
  return Array.from({ length: count }, () => {
    const text = Buffer.from(Array.from({ length: random(maxLength) }, () => 'a.\r\n'[random(4)]).join(''), 'latin1');
    const chunks: Buffer[] = [];
    for (let at = 0; at < text.length; ) {
      const size = 1 + random(maxChunk);
      chunks.push(text.subarray(at, at + size));
      at += size;
    }
    return { text, chunks };
  });
}
