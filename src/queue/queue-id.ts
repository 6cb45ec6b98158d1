// Queue ids: short, unique across nodes, roughly sortable by time, safe in
// file names and Received headers (letters and digits only), like Postfix's
// long queue ids.
import { randomBytes } from 'node:crypto';

// Crockford's base 32: one case only (safe on case-insensitive file systems), no I, L, O or U.
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';

// Random bytes are drawn 4 KB at a time: a call to the generator costs as much for 4 bytes as for 4,096
// (5 µs alone, about 25 in a busy relay), and an id needs uniqueness, not secrecy.
const POOL_SIZE = 4096;
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** The random part's 30 bits (6 symbols of 5). */
const RANDOM_RANGE = 2 ** 30;

/** randomBits - a fresh random part, 0 to RANDOM_RANGE - 1. */
function randomBits(): number {
  if (poolOffset + 4 > pool.length) {
    pool = randomBytes(POOL_SIZE);
    poolOffset = 0;
  }
  poolOffset += 4;
  return pool.readUInt32BE(poolOffset - 4) % RANDOM_RANGE;
}

// Within one millisecond this process counts up from the first id's random part, as ULID's monotonic
// mode does: fresh random parts would collide by the birthday bound (10,000 ids in one millisecond: about
// a 5% chance), a count never does. Across nodes the first random part of each millisecond keeps them apart.
let lastTime = -1;
let lastRandom = 0;

/** newQueueId - 10 symbols of milliseconds since the epoch, then 6 of a random part (counting up within a millisecond). */
export function newQueueId(now: number = Date.now()): string {
  lastRandom = now === lastTime ? (lastRandom + 1) % RANDOM_RANGE : randomBits();
  lastTime = now;
  return symbols(now, 10) + symbols(lastRandom, 6);
}

/** symbols - `value` in `count` symbols of the alphabet, most significant first. */
function symbols(value: number, count: number): string {
  let text = '';
  let v = value;
  for (let i = 0; i < count; i++) {
    text = ALPHABET[v % 32]! + text;
    v = Math.floor(v / 32);
  }
  return text;
}

/** isQueueId - whether a string has the shape of a queue id (checked before it becomes a path). */
export function isQueueId(value: string): boolean {
  return /^[0-9A-HJKMNP-TV-Z]{16}$/.test(value);
}
