// In-flow control without sockets: the token count and the bounded wait,
// on vitest's fake clock (nothing here measures time).
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createInFlowGate } from '../../src/queue/in-flow.ts';

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
    gate.feed(1);
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
    gate.feed(1);
    expect(await gate.enter()).toBe(false);
  });

  it('releases waiting senders first, in order, and keeps at most 20 tokens', async () => {
    const gate = createInFlowGate(1000);
    for (let i = 0; i < 20; i++) await gate.enter();
    const first = track(gate.enter());
    const second = track(gate.enter());
    gate.feed(1);
    await vi.advanceTimersByTimeAsync(0);
    expect([first.settled, second.settled]).toEqual([true, undefined]);
    gate.feed(100);
    await vi.advanceTimersByTimeAsync(0);
    expect(second.settled).toBe(true);
    for (let i = 0; i < 20; i++) expect(await gate.enter()).toBe(false);
    expect(track(gate.enter()).settled).toBeUndefined();
  });

  it('never waits with a delay of 0', async () => {
    const gate = createInFlowGate(0);
    for (let i = 0; i < 50; i++) expect(await gate.enter()).toBe(false);
  });
});
