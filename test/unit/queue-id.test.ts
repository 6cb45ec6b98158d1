// Queue ids: the shape every path and header relies on, uniqueness within
// one millisecond (the random part, drawn from a pool that is refilled
// every 682 ids), and order by time.
import { describe, expect, it } from 'vitest';
import { isQueueId, newQueueId } from '../../src/queue/queue-id.ts';

describe('newQueueId', () => {
  it('gives 10,000 distinct ids of the right shape in the same millisecond, across many refills of the random pool', () => {
    const now = Date.UTC(2026, 10, 29, 21, 0, 0);
    const ids = Array.from({ length: 10_000 }, () => newQueueId(now));
    expect(ids.every(isQueueId)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect(new Set(ids.map((id) => id.slice(0, 10))).size).toBe(1);
    // The random parts use the whole alphabet, not a corner of it.
    expect(new Set(ids.flatMap((id) => [...id.slice(10)])).size).toBe(32);
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
