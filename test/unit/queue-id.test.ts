// Queue ids: the shape every path and header relies on, uniqueness within
// one millisecond (the random part counts up) and across many (a fresh
// random part, from a pool that is refilled every 1,024 ids), and order by
// time.
import { describe, expect, it } from 'vitest';
import { isQueueId, newQueueId } from '../../src/queue/queue-id.ts';

describe('newQueueId', () => {
  // With a fresh random part for each id, two of 10,000 in one millisecond were alike about once in 20 runs.
  it('gives 100,000 distinct ids of the right shape in the same millisecond', () => {
    const now = Date.UTC(2026, 10, 29, 21, 0, 0);
    const ids = Array.from({ length: 100_000 }, () => newQueueId(now));
    expect(ids.every(isQueueId)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids.map((id) => id.slice(0, 10))).size).toBe(1);
  });

  it('gives ids of the right shape over many milliseconds, random parts using the whole alphabet, across many refills of the pool', () => {
    const start = Date.UTC(2026, 10, 29, 21, 0, 0);
    const ids = Array.from({ length: 10_000 }, (_, n) => newQueueId(start + n));
    expect(ids.every(isQueueId)).toBe(true);
    const randomParts = ids.map((id) => id.slice(10));
    // 10,000 fresh parts of 30 bits: a repeat has a chance of about 5%, so only most must differ.
    expect(new Set(randomParts).size).toBeGreaterThan(9_990);
    expect(new Set(randomParts.flatMap((part) => [...part])).size).toBe(32);
  });

  it('sorts by time: a later millisecond gives a larger id', () => {
    const now = Date.UTC(2026, 10, 29, 21, 0, 0);
    expect(newQueueId(now) < newQueueId(now + 1)).toBe(true);
    expect(newQueueId(now + 1000) < newQueueId(now + 1001)).toBe(true);
  });

  it('rejects what is not a queue id before it can become a path', () => {
    expect(isQueueId('../../etc/passwd')).toBe(false);
    expect(isQueueId('01M8MJN017NZXY6')).toBe(false);
    expect(isQueueId('01M8MJN017NZXY6I')).toBe(false);
    expect(isQueueId('01M8MJN017NZXY6H')).toBe(true);
  });
});

