// In-flow control without sockets: the token count, the bounded wait, no
// wait while the next hops set the pace (on vitest's fake clock: nothing
// here measures time), and the rule that says when they do.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createInFlowGate, nextHopsSetPace, PACED_LIMIT, RECENT_DOMAINS_KEPT, RecentDeliveryTimes, SLOW_DELIVERY_MS, type InFlowGate, type RecentTimes } from '../../src/queue/in-flow.ts';

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

  /** gateOutOfTokens - a gate (delay 1 s) whose 20 tokens are taken, asking `pace` whether the next hops set it. */
  async function gateOutOfTokens(pace: () => boolean = () => false): Promise<InFlowGate> {
    const gate = createInFlowGate(1000);
    gate.paceFrom(pace);
    for (let i = 0; i < 20; i++) await gate.enter();
    return gate;
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
    const gate = await gateOutOfTokens();
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
    const gate = await gateOutOfTokens();
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

  it('lets senders in without tokens while the next hops set the pace, and holds them again after', async () => {
    let pace = false;
    const gate = await gateOutOfTokens(() => pace);
    const held = track(gate.enter());
    await vi.advanceTimersByTimeAsync(100);
    expect(held.settled).toBeUndefined();
    pace = true;
    gate.feed(0);
    await vi.advanceTimersByTimeAsync(0);
    // Released by the look, long before its delay ran out.
    expect(held.settled).toBe(true);
    for (let i = 0; i < 50; i++) expect(await gate.enter()).toBe(false);
    pace = false;
    expect(track(gate.enter()).settled).toBeUndefined();
  });

  it('lets a waiting sender in when the next hops come to set the pace, without waiting for a look at the queue', async () => {
    let pace = false;
    const gate = await gateOutOfTokens(() => pace);
    const held = track(gate.enter());
    await vi.advanceTimersByTimeAsync(200);
    expect(held.settled).toBeUndefined();
    pace = true;
    await vi.advanceTimersByTimeAsync(50);
    expect(held.settled).toBe(true);
    // Its timer and the pace check are gone with it.
    expect(vi.getTimerCount()).toBe(0);
  });

  it('lets at most PACED_LIMIT in by the pace; deliveries taken pay them back before tokens come', async () => {
    const gate = createInFlowGate(1000);
    gate.paceFrom(() => true);
    for (let i = 0; i < 20 + PACED_LIMIT; i++) expect(await gate.enter()).toBe(false);
    const held = track(gate.enter());
    await vi.advanceTimersByTimeAsync(100);
    expect(held.settled).toBeUndefined();
    gate.feed(1);
    await vi.advanceTimersByTimeAsync(0);
    expect(held.settled).toBe(true);
    gate.paceFrom(() => false);
    gate.feed(PACED_LIMIT);
    // All the pace let in is paid back, and no token came: the next sender waits, for the next delivery taken.
    const next = track(gate.enter());
    await vi.advanceTimersByTimeAsync(0);
    expect(next.settled).toBeUndefined();
    gate.feed(1);
    await vi.advanceTimersByTimeAsync(0);
    expect(next.settled).toBe(true);
  });

  it('never waits with a delay of 0', async () => {
    const gate = createInFlowGate(0);
    for (let i = 0; i < 50; i++) expect(await gate.enter()).toBe(false);
  });
});

describe('nextHopsSetPace', () => {
  const limits = { concurrency: 4, perDestination: 2 };
  const slow = SLOW_DELIVERY_MS;
  const none: RecentTimes = { byDomain: new Map() };
  /** recent - each domain's recent deliveries' average, as the scheduler keeps them. */
  const recent = (byDomain: Record<string, number>): RecentTimes => ({ byDomain: new Map(Object.entries(byDomain)) });
  const four = (ageMs: number) => ['a.test', 'b.test', 'c.test', 'd.test'].map((domain) => ({ domain, ageMs }));
  it('says so when every slot is busy, half of them or more with deliveries that have run SLOW_DELIVERY_MS', () => {
    expect(nextHopsSetPace(four(slow), limits, none)).toBe(true);
    expect(nextHopsSetPace(four(slow - 1), limits, none)).toBe(false);
    expect(nextHopsSetPace(four(slow).slice(1), limits, none)).toBe(false);
    const ages = (...ageMs: number[]) => ageMs.map((a, n) => ({ domain: `d${n}.test`, ageMs: a }));
    expect(nextHopsSetPace(ages(slow, slow, 0, 0), limits, none)).toBe(true);
    expect(nextHopsSetPace(ages(slow * 100, 0, 0, 0), limits, none)).toBe(false);
  });
  it('counts a young delivery as slow, every slot busy, when its destination’s recent deliveries took SLOW_DELIVERY_MS', () => {
    expect(nextHopsSetPace(four(0), limits, recent({ 'a.test': slow, 'b.test': slow }))).toBe(true);
    expect(nextHopsSetPace(four(0), limits, recent({ 'a.test': slow, 'b.test': slow - 1 }))).toBe(false);
  });
  it('does not let one dead next hop among many quick ones read as the pace when every slot is busy', () => {
    const quick = ['a.test', 'b.test', 'c.test'].map((domain) => ({ domain, ageMs: 2 }));
    expect(nextHopsSetPace([...quick, { domain: 'dead.test', ageMs: 29_000 }], limits, recent({ 'dead.test': 30_000, 'a.test': 20, 'b.test': 20, 'c.test': 20 }))).toBe(false);
  });
  it('says so when every slot of one destination is busy with slow deliveries, whatever the others do', () => {
    const fast = [{ domain: 'fast.test', ageMs: 5 }];
    expect(nextHopsSetPace([...fast, { domain: 'slow.test', ageMs: slow * 2 }, { domain: 'slow.test', ageMs: 0 }], limits, none)).toBe(true);
    expect(nextHopsSetPace([...fast, { domain: 'slow.test', ageMs: slow * 2 - 2 }, { domain: 'slow.test', ageMs: 0 }], limits, none)).toBe(false);
    expect(nextHopsSetPace([...fast, { domain: 'slow.test', ageMs: slow * 10 }], limits, none)).toBe(false);
  });
  it('says so at once, ages aside, when the full destination’s recent deliveries took SLOW_DELIVERY_MS on average; never with a slot free', () => {
    const fresh = [{ domain: 'slow.test', ageMs: 0 }, { domain: 'slow.test', ageMs: 0 }];
    expect(nextHopsSetPace(fresh, limits, recent({ 'slow.test': slow }))).toBe(true);
    expect(nextHopsSetPace(fresh, limits, recent({ 'slow.test': slow - 1 }))).toBe(false);
    expect(nextHopsSetPace(fresh.slice(1), limits, recent({ 'slow.test': slow * 10 }))).toBe(false);
  });
  it('does not take another destination’s slow deliveries for the pace of a full one', () => {
    const busy = [{ domain: 'busy.test', ageMs: 3 }, { domain: 'busy.test', ageMs: 1 }];
    expect(nextHopsSetPace(busy, limits, recent({ 'busy.test': 20, 'dead.test': 30_000 }))).toBe(false);
    // A destination with no recent deliveries of its own goes by its deliveries' ages.
    expect(nextHopsSetPace(busy, limits, recent({ 'dead.test': 30_000 }))).toBe(false);
  });
  it('finds one destination held by slow deliveries when every slot is busy too', () => {
    const fastFull = [{ domain: 'fast.test', ageMs: 1 }, { domain: 'fast.test', ageMs: 1 }, { domain: 'fast.test', ageMs: 1 }];
    expect(nextHopsSetPace([...fastFull, { domain: 'slow.test', ageMs: slow * 3 }], { concurrency: 4, perDestination: 1 }, none)).toBe(true);
  });
  it('is false with nothing in flight', () => {
    expect(nextHopsSetPace([], limits, none)).toBe(false);
  });
});

describe('RecentDeliveryTimes', () => {
  it('averages each destination’s deliveries over about its last eight', () => {
    const times = new RecentDeliveryTimes();
    times.record('a.test', 800);
    times.record('b.test', 0);
    expect(Object.fromEntries(times.byDomain)).toEqual({ 'a.test': 800, 'b.test': 0 });
    times.record('a.test', 0);
    expect(times.byDomain.get('a.test')).toBe(700);
  });
  it(`keeps the RECENT_DOMAINS_KEPT destinations that finished a delivery last`, () => {
    const times = new RecentDeliveryTimes();
    for (let n = 0; n < RECENT_DOMAINS_KEPT; n++) times.record(`d${n}.test`, n);
    times.record('d0.test', 0); // d0 finished again: d1 is now the one finished longest ago
    times.record('new.test', 5);
    expect(times.byDomain.size).toBe(RECENT_DOMAINS_KEPT);
    expect(times.byDomain.has('d0.test')).toBe(true);
    expect(times.byDomain.has('d1.test')).toBe(false);
    expect(times.byDomain.get('new.test')).toBe(5);
  });
});
