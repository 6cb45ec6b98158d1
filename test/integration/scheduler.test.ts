// The scheduler in a running relay, with a real store and an injected clock
// (RelayOptions.now): backoff is waited out by moving the clock, not by
// sleeping; expiry bounces; a lapsed lease is taken over; the per-destination
// limit holds; when the next hops set the pace; stop() waits for deliveries
// in flight. Every test drives the scheduler itself (runDue), on a relay of
// its own.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { formatDetails } from '../../src/cli/queue.ts';
import { CLAIM_LOOK_AHEAD } from '../../src/queue/delivery-rules.ts';
import { SLOW_DELIVERY_MS } from '../../src/queue/in-flow.ts';
import { openQueueStore } from '../../src/queue/open-store.ts';
import type { Scheduler } from '../../src/queue/scheduler.ts';
import type { PemCredentials } from '../../src/tls/dev-certs.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { commitMessage, envelopeWith } from '../helpers/queue-fixtures.ts';
import { driveByHand, NEXT_HOP_NAME, queueShow, startNextHop, submitMessage, writeTestCa, type NextHop, type NextHopKind, type NextHopOptions } from '../helpers/next-hop.ts';
import { parseMetrics } from '../helpers/prometheus-text.ts';
import { testClock, type TestClock } from '../helpers/test-clock.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const SECOND = 1000;

let ca: PemCredentials;
let caFile: string;
let removeCa: () => Promise<void>;
let dns: DnsServer;

beforeAll(async () => {
  ({ ca, caFile, remove: removeCa } = await writeTestCa());
  dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] }, 'servfail.test': { servfail: true } });
});
afterAll(async () => {
  await dns?.close();
  await removeCa?.();
});

interface Setup {
  relay: TestRelay;
  scheduler: Scheduler;
  clock: TestClock;
  hop: NextHop;
  reports: NextHop;
}

const running: { relay: TestRelay; hops: NextHop[] }[] = [];
afterEach(async () => {
  for (const { relay, hops } of running.splice(0)) {
    for (const hop of hops) hop.release();
    await relay.stop();
    await Promise.all(hops.map((h) => h.close()));
  }
});

/** setup - a relay on a test clock routing dest.test to a next hop of `kind` and sender.test to a reports sink (and `outbound.routes` besides). */
async function setup(kind: NextHopKind, outbound: Record<string, unknown> = {}, hopOptions: NextHopOptions = {}, relayOptions: { elapsed?: () => number } = {}): Promise<Setup> {
  const hop = await startNextHop(kind, { ca, ...hopOptions });
  const reports = await startNextHop('starttls-ca-right-name', { ca });
  const clock = testClock();
  const route = (h: NextHop) => ({ host: NEXT_HOP_NAME, port: h.port, tls: 'verify' });
  const { routes, ...rest } = outbound as { routes?: Record<string, unknown> };
  const relay = await startTestRelay(
    { outbound: { enabled: true, routes: { 'dest.test': route(hop), 'sender.test': route(reports), ...routes }, dns: { servers: [dns.address] }, tls: { caFile }, ...rest } },
    { now: clock.now, ...relayOptions },
  );
  running.push({ relay, hops: [hop, reports] });
  return { relay, scheduler: await driveByHand(relay), clock, hop, reports };
}

describe('backoff and expiry', () => {
  it('attempts a deferred delivery only once the clock has passed its backoff, which doubles', async () => {
    const { relay, scheduler, clock, hop } = await setup('rcpt-4xx-5xx');
    const id = await submitMessage(relay, { from: 'alice@sender.test', to: ['temp@dest.test'], marker: 'backoff' });
    expect(await scheduler.runDue()).toBe(1);

    // First retry after retry.initial (300 s) plus up to 10% jitter.
    const first = await queueShow(relay, id);
    const firstEnd = first.attempts[0]!.endedAt.getTime();
    const firstRetry = first.deliveries[0]!.nextAttemptAt!;
    expect(firstRetry.getTime() - firstEnd).toBeGreaterThanOrEqual(300 * SECOND);
    expect(firstRetry.getTime() - firstEnd).toBeLessThanOrEqual(330 * SECOND + SECOND);

    clock.setTo(new Date(firstRetry.getTime() - SECOND));
    expect(await scheduler.runDue()).toBe(0);
    expect((await queueShow(relay, id)).attempts).toHaveLength(1);

    clock.setTo(firstRetry);
    expect(await scheduler.runDue()).toBe(1);
    const second = await queueShow(relay, id);
    expect(second.attempts).toHaveLength(2);
    expect(second.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: expect.stringMatching(/^451 4\.2\.0 /) })]);
    // Second retry: twice the first wait (600 s), plus jitter.
    const secondWait = second.deliveries[0]!.nextAttemptAt!.getTime() - second.attempts[1]!.endedAt.getTime();
    expect(secondWait).toBeGreaterThanOrEqual(600 * SECOND);
    expect(secondWait).toBeLessThanOrEqual(660 * SECOND + SECOND);
    expect(hop.transactions.map((t) => t.refused)).toEqual([[{ address: 'temp@dest.test', code: 451 }], [{ address: 'temp@dest.test', code: 451 }]]);
  });

  it('bounces a recipient still deferred after retry.lifetime, with a report to the sender', async () => {
    const { relay, scheduler, clock, reports } = await setup('rcpt-4xx-5xx', { retry: { lifetime: '1h' } });
    const id = await submitMessage(relay, { from: 'bob@sender.test', to: ['temp@dest.test'], marker: 'expiry' });
    expect(await scheduler.runDue()).toBe(1);
    expect((await queueShow(relay, id)).recipientStates[0]!.state).toBe('deferred');

    clock.advance(3600 * SECOND);
    // The last attempt, then the report it produced.
    expect(await scheduler.runDue()).toBe(2);
    const show = await queueShow(relay, id);
    expect(show.state).toBe('done');
    expect(show.recipientStates).toEqual([expect.objectContaining({ state: 'bounced', reply: expect.stringMatching(/^451 4\.2\.0 .*gave up: message expired/) })]);

    const [report] = await reports.waitForMessages(1);
    expect(report).toMatchObject({ mailFrom: '', rcptTo: ['bob@sender.test'] });
    const text = report!.message!.toString('latin1');
    expect(text).toContain('Final-Recipient: rfc822; temp@dest.test\r\nAction: failed\r\n');
    // Like Postfix, an expired recipient is reported with the last transient status it got.
    expect(text).toMatch(/\r\nStatus: 4\.\d+\.\d+\r\n/);
  });
});

// Postfix's queue manager: a destination whose connections or handshakes fail as often in a row as it has slots is
// dead, and its queued mail deferred with "delivery temporarily suspended" rather than tried message by message.
describe('dead destinations', () => {
  /** submitTo - queue one message to each address; returns the ids in order. */
  async function submitTo(relay: TestRelay, addresses: string[]): Promise<string[]> {
    const ids: string[] = [];
    for (const to of addresses) ids.push(await submitMessage(relay, { from: 'erin@sender.test', to: [to], marker: to }));
    return ids;
  }

  it('suspends the due mail of a destination whose next hop is down after perDestination attempts, and sends it once the hop is back', async () => {
    const down = await startNextHop('down');
    const route = { host: NEXT_HOP_NAME, port: down.port, tls: 'verify' };
    const { relay, scheduler, clock } = await setup('plain', { perDestination: 1, routes: { 'dead.test': route } });
    running.push({ relay, hops: [down] });
    const ids = await submitTo(relay, ['r0@dead.test', 'r1@dead.test', 'r2@dead.test', 'r3@dead.test']);
    const before = clock.now().getTime();
    expect(await scheduler.runDue()).toBe(1);
    const after = clock.now().getTime();
    const shown = await Promise.all(ids.map((id) => queueShow(relay, id)));
    const [tried, ...suspended] = [...shown].sort((a, b) => b.attempts.length - a.attempts.length);
    expect(tried!.attempts).toHaveLength(1);
    const refused = tried!.recipientStates[0]!.reply!;
    expect(refused).toMatch(/^4\.4\.1 .*ECONNREFUSED/);
    expect(suspended).toHaveLength(3);
    for (const message of suspended) {
      expect(message.attempts).toEqual([]);
      expect(message.deliveries).toEqual([expect.objectContaining({ attempts: 0 })]);
      // retry.initial (300 s) from the moment the attempt's end found the destination dead.
      expect(message.deliveries[0]!.nextAttemptAt!.getTime()).toBeGreaterThanOrEqual(before + 300 * SECOND);
      expect(message.deliveries[0]!.nextAttemptAt!.getTime()).toBeLessThanOrEqual(after + 300 * SECOND);
      expect(message.recipientStates).toEqual([expect.objectContaining({ state: 'deferred', reply: `4.4.1 delivery temporarily suspended: ${refused.slice('4.4.1 '.length)}` })]);
    }
    const metrics = parseMetrics(await (await fetch(`http://127.0.0.1:${relay.httpPort}/metrics`)).text());
    expect(metrics.get('postern_deliveries_suspended_total')).toBe(3);

    // Back, on the same port: the suspended three go at the end of the suspension, the one tried at its own retry.
    const back = await startNextHop('starttls-ca-right-name', { ca, port: down.port });
    running.push({ relay, hops: [back] });
    clock.advance(300 * SECOND);
    const atSuspensionEnd = await scheduler.runDue();
    // The one tried is due 300-330 s after its attempt: with little jitter, already now.
    expect(atSuspensionEnd).toBeGreaterThanOrEqual(3);
    clock.advance(30 * SECOND + SECOND);
    expect(atSuspensionEnd + (await scheduler.runDue())).toBe(4);
    expect((await back.waitForMessages(4)).map((m) => m.rcptTo[0]).sort()).toEqual(['r0@dead.test', 'r1@dead.test', 'r2@dead.test', 'r3@dead.test']);
  });

  // With durations that are not whole seconds: the store takes whole milliseconds.
  it('counts a greeting that refuses the session, as Postfix counts a failed handshake', async () => {
    const { relay, scheduler } = await setup('greeting-421', { perDestination: 1, lease: '4.1m', retry: { initial: '0.1h', lifetime: '4.1d' } });
    const ids = await submitTo(relay, ['a@dest.test', 'b@dest.test']);
    expect(await scheduler.runDue()).toBe(1);
    const replies = (await Promise.all(ids.map((id) => queueShow(relay, id)))).map((m) => m.recipientStates[0]!.reply).sort();
    expect(replies).toEqual(['421 4.3.2 mx.test is busy, try again later', '4.3.2 delivery temporarily suspended: 421 4.3.2 mx.test is busy, try again later'].sort());
  });

  // Postfix logs the like as "delivery temporarily suspended: Host or domain name not found. … try again".
  it('counts a next hop whose name the DNS cannot look up for now', async () => {
    const { relay, scheduler } = await setup('plain', { perDestination: 1, routes: { 'lost.test': { host: 'servfail.test', port: 25, tls: 'verify' } } });
    const ids = await submitTo(relay, ['a@lost.test', 'b@lost.test']);
    expect(await scheduler.runDue()).toBe(1);
    const replies = (await Promise.all(ids.map((id) => queueShow(relay, id)))).map((m) => m.recipientStates[0]!.reply!).sort();
    expect(replies).toEqual(['4.4.3 DNS lookup for servfail.test failed: ESERVFAIL', '4.4.3 delivery temporarily suspended: DNS lookup for servfail.test failed: ESERVFAIL']);
  });

  // The control: a host that answered the transaction said "later" to this message, not to all mail for the destination.
  it('does not count a next hop that took the transaction and deferred the recipient: every message gets its attempt', async () => {
    const { relay, scheduler } = await setup('rcpt-4xx-5xx', { perDestination: 1 });
    const ids = await submitTo(relay, ['temp@dest.test', 'temp@dest.test', 'temp@dest.test']);
    expect(await scheduler.runDue()).toBe(3);
    for (const id of ids) expect((await queueShow(relay, id)).attempts).toHaveLength(1);
  });
});

describe('leases', () => {
  it('takes over a delivery whose lease lapsed (a worker that died holding it)', async () => {
    const { relay, scheduler, clock, hop } = await setup('starttls-ca-right-name');
    const id = await submitMessage(relay, { from: 'carol@sender.test', to: ['x@dest.test'], marker: 'lease' });
    const other = await openQueueStore(relay.config);
    try {
      const [claim] = await other.claimDue({ now: clock.now(), limit: 10, leaseMs: 60 * SECOND, owner: 'dead-worker' });
      expect(claim).toMatchObject({ messageId: id, domain: 'dest.test', leaseOwner: 'dead-worker' });

      // While the dead worker's lease runs, nobody else may take it.
      expect(await scheduler.runDue()).toBe(0);
      expect(hop.connections).toHaveLength(0);

      clock.advance(60 * SECOND);
      expect(await scheduler.runDue()).toBe(1);
      expect(await hop.waitForMessages(1)).toEqual([expect.objectContaining({ mailFrom: 'carol@sender.test', rcptTo: ['x@dest.test'] })]);
      expect((await queueShow(relay, id)).state).toBe('done');

      // The dead worker waking up late cannot overwrite what the new owner recorded.
      const late = await other.recordAttempt(
        { deliveryId: claim!.deliveryId, owner: 'dead-worker' },
        { attempts: [], recipients: [{ address: 'x@dest.test', result: 'bounced', reply: '550 5.0.0 late' }], nextAttemptAt: clock.now() },
      );
      expect(late).toBe(false);
      expect((await queueShow(relay, id)).recipientStates[0]!.state).toBe('delivered');
    } finally {
      await other.close();
    }
  });
});

describe('leases and reports of an attempt in flight', () => {
  // outbound.lease 2 s and a next hop that holds DATA for longer: without renewal another worker claims it and sends it again.
  it('renews the lease while the attempt runs, so no other worker can claim the delivery', async () => {
    const { relay, scheduler, hop } = await setup('starttls-ca-right-name', { lease: '2s' }, { holdData: true });
    const id = await submitMessage(relay, { from: 'frank@sender.test', to: ['x@dest.test'], marker: 'long' });
    const delivering = scheduler.runDue();
    await hop.waitForHeld(1);
    await new Promise((resolve) => setTimeout(resolve, 3_500));
    const other = await openQueueStore(relay.config);
    try {
      expect(await other.claimDue({ now: new Date(), limit: 10, leaseMs: 60_000, owner: 'another-worker' })).toEqual([]);
    } finally {
      await other.close();
    }
    hop.release();
    expect(await delivering).toBe(1);
    expect((await queueShow(relay, id)).recipientStates[0]!.state).toBe('delivered');
    expect(hop.messages).toHaveLength(1);
  });

  // Postfix: "lost connection ... while sending end of data -- message may be sent more than once".
  it('defers a delivery whose connection was lost after the whole message went out, saying it may be sent twice', async () => {
    const { relay, scheduler, hop } = await setup('starttls-ca-right-name', {}, { holdData: true });
    const id = await submitMessage(relay, { from: 'kim@sender.test', to: ['x@dest.test'], marker: 'lost-after-data' });
    const delivering = scheduler.runDue();
    await hop.waitForHeld(1);
    hop.drop();
    expect(await delivering).toBe(1);
    expect((await queueShow(relay, id)).recipientStates[0]).toMatchObject({
      state: 'deferred',
      reply: expect.stringMatching(/^4\.4\.1 .*\(after the end of data: the message may be sent more than once\)$/),
    });
  });

  // The operator deleted the message while its attempt ran: the record is refused, and the bounce queued with it withdrawn.
  it('withdraws the report of an attempt whose record was refused', async () => {
    const { relay, scheduler, hop, reports } = await setup('starttls-ca-right-name', {}, { holdData: true, dataReply: { code: 554, text: '5.7.1 Refused' } });
    const id = await submitMessage(relay, { from: 'gina@sender.test', to: ['x@dest.test'], marker: 'deleted' });
    const delivering = scheduler.runDue();
    await hop.waitForHeld(1);
    const other = await openQueueStore(relay.config);
    try {
      expect(await other.deleteMessages({ ids: [id] })).toEqual([id]);
    } finally {
      await other.close();
    }
    hop.release();
    expect(await delivering).toBe(1);
    expect(relay.logs.find((l) => String(l.msg).startsWith('delivery result not recorded') && l.queueId === id)).toMatchObject({ recorded: false, level: 40 });
    const queuedReport = relay.logs.find((l) => l.msg === 'delivery status notification queued' && l.queueId === id);
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'delivery status notification withdrawn: the attempt was not recorded', report: queuedReport?.report }));
    expect(await relay.queued()).toEqual([]);
    expect(await scheduler.runDue()).toBe(0);
    expect(reports.messages).toEqual([]);
  });
});

describe('concurrency and stop', () => {
  // perDestination 2 is the control: the held next hop would show two sessions at once if the limit allowed it.
  it.each([
    { perDestination: 1, atOnce: 1 },
    { perDestination: 2, atOnce: 2 },
  ])('runs at most $perDestination transaction(s) at once to one destination (perDestination: $perDestination)', async ({ perDestination, atOnce }) => {
    const { relay, scheduler, hop } = await setup('starttls-ca-right-name', { perDestination }, { holdData: true });
    await submitMessage(relay, { from: 'dave@sender.test', to: ['one@dest.test'], marker: 'first' });
    await submitMessage(relay, { from: 'dave@sender.test', to: ['two@dest.test'], marker: 'second' });

    const done = scheduler.runDue();
    await hop.waitForHeld(atOnce);
    expect(hop.transactions).toHaveLength(atOnce);
    expect(hop.connections).toHaveLength(atOnce);
    hop.release();
    expect(await done).toBe(2);
    expect(hop.messages).toHaveLength(2);
    expect(hop.maxConcurrentTransactions).toBe(atOnce);
  });

  // In-flow control asks this (in-flow.ts): a slot full for milliseconds is this process's pace, one held for SLOW_DELIVERY_MS the next hop's.
  it('says the next hops set the pace only once a full destination has held its slot SLOW_DELIVERY_MS', async () => {
    // Durations on a clock the test moves: how long the delivery takes to reach the hold is the machine's.
    let elapsed = 0;
    const { relay, scheduler, hop } = await setup('starttls-ca-right-name', { perDestination: 1 }, { holdData: true }, { elapsed: () => elapsed });
    await submitMessage(relay, { from: 'dave@sender.test', to: ['one@dest.test'], marker: 'pace' });
    const done = scheduler.runDue();
    await hop.waitForHeld(1);
    elapsed += SLOW_DELIVERY_MS - 1;
    expect(scheduler.nextHopsSetPace()).toBe(false);
    elapsed += 1;
    expect(scheduler.nextHopsSetPace()).toBe(true);
    hop.release();
    expect(await done).toBe(1);
    // The slot is free again.
    expect(scheduler.nextHopsSetPace()).toBe(false);
  });

  // A claim reads a window of limit + CLAIM_LOOK_AHEAD due deliveries. A backlog to one domain with a slot free
  // fills it, so a domain behind it waited for a look at which the first happened to be full; with that domain's
  // deliveries ending steadily, that look may never come. Here its one slot is held: runDue makes no other look.
  it('reaches a domain behind another domain\'s backlog once that domain\'s slots are taken', async () => {
    const other = await startNextHop('starttls-ca-right-name', { ca });
    const otherRoute = { host: NEXT_HOP_NAME, port: other.port, tls: 'verify' };
    const { relay, scheduler, hop } = await setup('starttls-ca-right-name', { concurrency: 2, perDestination: 1, routes: { 'other.test': otherRoute } }, { holdData: true });
    running.push({ relay, hops: [other] });
    const backlog = 2 + CLAIM_LOOK_AHEAD + 1;
    // Queued by another process, as fast as the store takes them (SMTP would be slowed by in-flow control).
    const store = await openQueueStore(relay.config);
    try {
      const envelope = (to: string) => envelopeWith({ mailFrom: 'ivy@sender.test', recipients: [to] });
      for (let i = 0; i < backlog; i++) await commitMessage(store, [Buffer.from(`Subject: backlog ${i}\r\n\r\nx\r\n`)], envelope('x@dest.test'));
      await commitMessage(store, [Buffer.from('Subject: behind the backlog\r\n\r\nx\r\n')], envelope('x@other.test'));
    } finally {
      await store.close();
    }
    const delivering = scheduler.runDue();
    await hop.waitForHeld(1);
    expect(await other.waitForMessages(1)).toEqual([expect.objectContaining({ rcptTo: ['x@other.test'] })]);
    hop.release();
    expect(await delivering).toBe(backlog + 1);
  });

  // A clock set forward past the lease (or renewals failing) lets this process claim its own delivery again while the
  // first attempt still runs: a second courier would send the message twice.
  it('does not start a second attempt of a delivery still in flight here whose lease lapsed', async () => {
    const { relay, scheduler, clock, hop } = await setup('starttls-ca-right-name', { lease: '60s' }, { holdData: true });
    const id = await submitMessage(relay, { from: 'gus@sender.test', to: ['x@dest.test'], marker: 'lease-lapsed-in-flight' });
    const first = scheduler.runDue();
    await hop.waitForHeld(1);
    clock.advance(61 * SECOND);
    const second = scheduler.runDue();
    const skipped = (): boolean => relay.logs.some((l) => l.msg === 'claimed a delivery whose attempt is still in flight here; not started twice');
    for (let waited = 0; !skipped() && hop.transactions.length < 2 && waited < 5 * SECOND; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20));
    hop.release();
    expect([await first, await second]).toEqual([1, 0]);
    expect(hop.transactions).toHaveLength(1);
    expect(hop.messages).toHaveLength(1);
    expect((await queueShow(relay, id)).recipientStates[0]!.state).toBe('delivered');
  });

  // A next hop slower than the orchestrator's grace period: the process would be killed with its leases held.
  it('stop() gives back the leases of deliveries still in flight after outbound.stopTimeout, and records nothing for them', async () => {
    const { relay, scheduler, hop } = await setup('starttls-ca-right-name', { stopTimeout: '1s' }, { holdData: true });
    const id = await submitMessage(relay, { from: 'hank@sender.test', to: ['x@dest.test'], marker: 'stop-timeout' });
    const delivering = scheduler.runDue();
    await hop.waitForHeld(1);
    await scheduler.stop(); // returns with the next hop still holding DATA
    const stopped = await queueShow(relay, id);
    expect(stopped.deliveries[0]!.leasedUntil).toBeUndefined();
    expect(stopped.recipientStates[0]!.state).toBe('queued');
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'deliveries still in flight at stop; their leases are given back', deliveries: 1 }));

    // runDue goes on by hand after stop(): it claims the delivery given back and sends it again. The first attempt's
    // end is not recorded; the next hop got the message twice, as it may from any relay stopped mid-DATA.
    hop.release();
    expect(await delivering).toBe(2);
    const after = await queueShow(relay, id);
    expect(after.attempts).toHaveLength(1);
    expect(after.recipientStates[0]!.state).toBe('delivered');
    expect(hop.messages).toHaveLength(2);
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'attempt ended after its lease was given back at stop; not recorded', queueId: id }));
  });

  it('stop() waits for the deliveries in flight and returns once they are recorded', async () => {
    const { relay, scheduler, hop } = await setup('starttls-ca-right-name', {}, { holdData: true });
    const id = await submitMessage(relay, { from: 'erin@sender.test', to: ['x@dest.test'], marker: 'stop' });
    const delivering = scheduler.runDue();
    await hop.waitForHeld(1);

    let stopped = false;
    const stopping = scheduler.stop().then(() => (stopped = true));
    const during = await queueShow(relay, id);
    expect(during.deliveries[0]!.leasedUntil).toBeDefined();
    // `queue show` says it is being delivered, not that an attempt is due at a time already past.
    expect(formatDetails(during)).toMatch(new RegExp(`Being delivered to dest\\.test now by [^/ ]+/${process.pid}/\\S+ \\(after 0 attempts; leased until `));
    expect(formatDetails(during)).not.toContain('Next attempt for dest.test');
    expect(during.recipientStates[0]!.state).toBe('queued');
    expect(stopped).toBe(false);

    hop.release();
    await stopping;
    expect((await queueShow(relay, id)).recipientStates[0]!.state).toBe('delivered');
    expect(await delivering).toBe(1);
  });
});

// The loop as the relay runs it (no runDue): each delivery's end looks at the queue again, and so must the passing of time.
describe('the running loop', () => {
  /** eventually - poll `condition` every 50 ms; fail after 10 s. */
  async function eventually(what: string, condition: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + 10 * SECOND;
    while (!(await condition())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }

  it('runs a retry asked from another process while a slow delivery is in flight (it waited for that delivery to end)', async () => {
    const slow = await startNextHop('starttls-ca-right-name', { ca, holdData: true });
    const picky = await startNextHop('rcpt-4xx-5xx', { ca });
    const reports = await startNextHop('starttls-ca-right-name', { ca });
    const route = (h: NextHop) => ({ host: NEXT_HOP_NAME, port: h.port, tls: 'verify' });
    const relay = await startTestRelay({
      outbound: { enabled: true, routes: { 'slow.test': route(slow), 'picky.test': route(picky), 'sender.test': route(reports) }, dns: { servers: [dns.address] }, tls: { caFile } },
    });
    running.push({ relay, hops: [slow, picky, reports] });
    const deferred = await submitMessage(relay, { from: 'a@sender.test', to: ['temp@picky.test'], marker: 'deferred' });
    await eventually('the first attempt', async () => (await queueShow(relay, deferred)).attempts.length === 1);
    await submitMessage(relay, { from: 'a@sender.test', to: ['x@slow.test'], marker: 'slow' });
    await slow.waitForHeld(1);

    const store = await openQueueStore(relay.config);
    try {
      expect(await store.retryMessages({ ids: [deferred] }, new Date())).toEqual([deferred]);
    } finally {
      await store.close();
    }
    await eventually('the retry', async () => (await queueShow(relay, deferred)).attempts.length === 2);
    expect(slow.messages).toHaveLength(1);
  });
});
