// In-flow control without sockets: the token count, the bounded wait, and
// no wait while the delivery slots are full, on vitest's fake clock (nothing
// here measures time).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createInFlowGate, mustWait, SLOTS_FULL_MS } from '../../src/queue/in-flow.ts';

describe('in-flow gate', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** state - whether each promise has settled, and with what. */
  function track(promise: Promise<boolean>): { settled?: boolean } {
    const result: { settled?: boolean } = {};
    void promise.then((waited) => {
      result.settled = waited;
    });
    return result;
  }

  it('lets 20 transactions in at once, then holds the next until a delivery is taken from the queue', async () => {
    const gate = createInFlowGate(1000);
    for (let i = 0; i < 20; i++) expect(await gate.enter()).toBe(false);
    const next = track(gate.enter());
    await vi.advanceTimersByTimeAsync(500);
    expect(next.settled).toBeUndefined();
    gate.feed(1, false);
    await vi.advanceTimersByTimeAsync(0);
    expect(next.settled).toBe(true);
  });

  it('holds a transaction at most the delay, then lets it in anyway', async () => {
    const gate = createInFlowGate(1000);
    for (let i = 0; i < 20; i++) await gate.enter();
    const held = track(gate.enter());
    await vi.advanceTimersByTimeAsync(999);
    expect(held.settled).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    expect(held.settled).toBe(true);
    // Its timer is gone: a later feed becomes a token for the next sender.
    gate.feed(1, false);
    expect(await gate.enter()).toBe(false);
  });

  it('releases waiting senders first, in order, and keeps at most 20 tokens', async () => {
    const gate = createInFlowGate(1000);
    for (let i = 0; i < 20; i++) await gate.enter();
    const first = track(gate.enter());
    const second = track(gate.enter());
    gate.feed(1, false);
    await vi.advanceTimersByTimeAsync(0);
    expect([first.settled, second.settled]).toEqual([true, undefined]);
    gate.feed(100, false);
    await vi.advanceTimersByTimeAsync(0);
    expect(second.settled).toBe(true);
    for (let i = 0; i < 20; i++) expect(await gate.enter()).toBe(false);
    expect(track(gate.enter()).settled).toBeUndefined();
  });

  it('stops holding senders once every delivery slot has been busy for SLOTS_FULL_MS on end', async () => {
    const gate = createInFlowGate(1000);
    for (let i = 0; i < 20; i++) await gate.enter();
    gate.feed(0, true);
    const held = track(gate.enter());
    await vi.advanceTimersByTimeAsync(SLOTS_FULL_MS - 1);
    gate.feed(0, true);
    await vi.advanceTimersByTimeAsync(0);
    expect(held.settled).toBeUndefined();
    await vi.advanceTimersByTimeAsync(1);
    gate.feed(0, true);
    await vi.advanceTimersByTimeAsync(0);
    // Released by the look that found the slots full long enough, long before its delay ran out.
    expect(held.settled).toBe(true);
    for (let i = 0; i < 50; i++) expect(await gate.enter()).toBe(false);
  });

  it('holds senders again after a look finds a free slot, and counts the full time afresh', async () => {
    const gate = createInFlowGate(1000);
    for (let i = 0; i < 20; i++) await gate.enter();
    gate.feed(0, true);
    await vi.advanceTimersByTimeAsync(SLOTS_FULL_MS);
    expect(await gate.enter()).toBe(false);
    gate.feed(0, false);
    expect(track(gate.enter()).settled).toBeUndefined();
    gate.feed(0, true);
    await vi.advanceTimersByTimeAsync(SLOTS_FULL_MS - 1);
    expect(track(gate.enter()).settled).toBeUndefined();
  });

  it('never waits with a delay of 0', async () => {
    const gate = createInFlowGate(0);
    for (let i = 0; i < 50; i++) expect(await gate.enter()).toBe(false);
  });
});

describe('mustWait', () => {
  it('waits only with no token left, a delay set, and the slots not full for SLOTS_FULL_MS', () => {
    expect(mustWait({ tokens: 0, delayMs: 1000, slotsFullForMs: undefined })).toBe(true);
    expect(mustWait({ tokens: 0, delayMs: 1000, slotsFullForMs: SLOTS_FULL_MS - 1 })).toBe(true);
    expect(mustWait({ tokens: 0, delayMs: 1000, slotsFullForMs: SLOTS_FULL_MS })).toBe(false);
    expect(mustWait({ tokens: 1, delayMs: 1000, slotsFullForMs: undefined })).toBe(false);
    expect(mustWait({ tokens: 0, delayMs: 0, slotsFullForMs: undefined })).toBe(false);
  });
});
