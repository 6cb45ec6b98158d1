// When a destination counts as dead, and what its suspended recipients show: pure, no queue, no sockets.
import { describe, expect, it } from 'vitest';
import { DeadDestinations, REMEMBERED_DESTINATIONS, suspendedReply } from '../../src/queue/dead-destinations.ts';

const REFUSED = '4.4.1 connect to mx.a.test[192.0.2.25]:25: connection refused';

describe('DeadDestinations', () => {
  it('finds a destination dead after as many unusable attempts in a row as it has slots, then counts afresh', () => {
    const dead = new DeadDestinations(3);
    expect(dead.attemptEnded('a.test', REFUSED)).toBeUndefined();
    expect(dead.attemptEnded('b.test', REFUSED)).toBeUndefined();
    expect(dead.attemptEnded('a.test', REFUSED)).toBeUndefined();
    expect(dead.attemptEnded('a.test', '4.4.2 timed out')).toBe('4.4.2 timed out');
    // Another try, as Postfix gives a dead destination once its suspension ends: as many failures again to suspend.
    expect(dead.attemptEnded('a.test', REFUSED)).toBeUndefined();
    expect(dead.attemptEnded('a.test', REFUSED)).toBeUndefined();
    expect(dead.attemptEnded('a.test', REFUSED)).toBe(REFUSED);
  });

  it('brings a destination back with one attempt that could use its next hop', () => {
    const dead = new DeadDestinations(2);
    dead.attemptEnded('a.test', REFUSED);
    dead.attemptEnded('a.test', undefined);
    expect(dead.attemptEnded('a.test', REFUSED)).toBeUndefined();
    expect(dead.attemptEnded('a.test', REFUSED)).toBe(REFUSED);
  });

  it('forgets the destination longest unheard of past REMEMBERED_DESTINATIONS, and no other', () => {
    const dead = new DeadDestinations(2);
    dead.attemptEnded('first.test', REFUSED);
    dead.attemptEnded('kept.test', REFUSED);
    for (let i = 0; i < REMEMBERED_DESTINATIONS - 1; i++) dead.attemptEnded(`d${i}.test`, REFUSED);
    // The map overflowed once: first.test, the longest unheard of, went; kept.test, the next, stayed.
    expect(dead.attemptEnded('kept.test', REFUSED)).toBe(REFUSED);
    expect(dead.attemptEnded('first.test', REFUSED)).toBeUndefined();
  });
});

describe('suspendedReply', () => {
  it.each([
    [REFUSED, '4.4.1 delivery temporarily suspended: connect to mx.a.test[192.0.2.25]:25: connection refused'],
    ['421 4.3.2 mx.a.test is busy', '4.3.2 delivery temporarily suspended: 421 4.3.2 mx.a.test is busy'],
    ['421 Service not available', '4.0.0 delivery temporarily suspended: 421 Service not available'],
    ['connection lost', '4.4.0 delivery temporarily suspended: connection lost'],
  ])('%s', (reply, suspended) => {
    expect(suspendedReply(reply)).toBe(suspended);
  });
});
