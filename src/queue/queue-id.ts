// Queue ids: short, unique across nodes, roughly sortable by time, safe in
// file names and Received headers (letters and digits only), like Postfix's
// long queue ids.
import { randomBytes } from 'node:crypto';

// Crockford's base 32: one case only (safe on case-insensitive file systems), no I, L, O or U.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

// Random bytes are drawn 4 KB at a time: a call to the generator costs as much for 6 bytes as for 4,096
// (5 µs alone, about 25 in a busy relay, per message), and an id needs uniqueness, not secrecy.
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let poolOffset = 0;

function randomPart(length: number): Buffer {
  if (poolOffset + length > pool.length) {
    pool = randomBytes(POOL_SIZE);
    poolOffset = 0;
  }
  poolOffset += length;
  return pool.subarray(poolOffset - length, poolOffset);
}

/** newQueueId - 10 symbols of milliseconds since the epoch, then 6 random ones. */
export function newQueueId(now: number = Date.now()): string {
  let time = '';
  let t = now;
  for (let i = 0; i < 10; i++) {
    time = ALPHABET[t % 32]! + time;
    t = Math.floor(t / 32);
  }
  const random = randomPart(6);
  let tail = '';
  for (const byte of random) tail += ALPHABET[byte % 32]!;
  return time + tail;
}

/** isQueueId - whether a string has the shape of a queue id (checked before it becomes a path). */
export function isQueueId(value: string): boolean {
  return /^[0-9A-HJKMNP-TV-Z]{16}$/.test(value);
}
