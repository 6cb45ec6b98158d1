// The scheduler: claims due deliveries under a lease, runs them through the
// courier (outbound, injected by the composition root: the queue does not
// import outbound), and records each result with the next attempt time
// (backoff.ts). Recipients that bounced, or whose message outlived
// outbound.retry.lifetime, get an RFC 3464 report to the envelope sender
// (delivery-reports.ts), itself queued and delivered like any other
// message, once the attempt's record stood. A lease is renewed while its
// attempt runs, so a slow attempt is never claimed and sent again.
// Concurrency: at most `concurrency` deliveries at once, `perDestination`
// per recipient domain (the store's claim passes over a domain at its limit).
// Every recorded recipient result is counted (deps.metrics), delivered ones
// with their latency from acceptance. A destination found dead has its due
// mail suspended at once (dead-destinations.ts).
// Fails: a courier that throws, or a store error, is logged and the
// delivery's lease simply lapses, so it is tried again later (never lost).
import { durationMs } from '../config/values.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { NO_METRICS, type RelayMetrics } from '../observability/metrics.ts';
import { nextAttemptAt, type RetrySettings } from './backoff.ts';
import { DeadDestinations, suspendedReply } from './dead-destinations.ts';
import { recordWithReport } from './delivery-reports.ts';
import { nextHopsSetPace, RecentDeliveryTimes, type InFlowGate } from './in-flow.ts';
import type { AttemptRecord, ClaimedDelivery, LeaseClaim, QueueStore, RecipientOutcome } from './queue-store.ts';

/** What one attempt for one claimed delivery produced. */
export interface CourierOutcome {
  attempts: AttemptRecord[];
  recipients: RecipientOutcome[];
  /** Whether the host that took the message offered DSN (RFC 3461 §6.2: else we report "relayed" ourselves). */
  nextHopOffersDsn: boolean;
  /**
   * The attempt whose host gave the replies in `recipients`: the last one, unless an earlier host's "later" (or our
   * verdict on an earlier host) is what the attempt ends with. Absent when no host was reached.
   */
  answeredBy?: AttemptRecord;
  /**
   * The deferral, when the destination and not the message is why no host took it: no next hop found, reached, or
   * usable (greeting, TLS). Counted toward a dead destination (dead-destinations.ts).
   */
  destinationDown?: string;
}

/** What the scheduler needs from outbound: one attempt for one claimed delivery. */
export type Courier = (claim: ClaimedDelivery) => Promise<CourierOutcome>;

export interface SchedulerOptions {
  store: QueueStore;
  courier: Courier;
  owner: string;
  hostname: string;
  concurrency: number;
  perDestination: number;
  leaseMs: number;
  /** How long stop() waits for deliveries in flight before it gives their leases back. */
  stopTimeoutMs: number;
  retry: RetrySettings;
  /** Longest sleep between looks at the queue (other nodes may add work). */
  pollMs: number;
  now(): Date;
  /** The monotonic clock deliveries' durations are taken on, in ms (in-flow control); performance.now() unless a test's own. */
  elapsed?: () => number;
  random?: () => number;
  logger: Logger;
  /** Counts recipient results and delivery latency; nothing is counted when absent. */
  metrics?: RelayMetrics;
  /** Given a token for every delivery taken from the queue (in-flow control, in-flow.ts). */
  inFlow?: Pick<InFlowGate, 'feed'>;
}

export interface Scheduler {
  /** start - begin the loop. */
  start(): void;
  /** nextHopsSetPace - in-flow.ts's nextHopsSetPace over the deliveries in flight now (their ages on `elapsed`, not now()'s). */
  nextHopsSetPace(): boolean;
  /** wake - look at the queue now (a message was just queued, or an operator asked for a retry). */
  wake(): void;
  /** runDue - claim and finish everything due now, then resolve with how many deliveries ran (tests, `queue flush`). */
  runDue(): Promise<number>;
  /** stop - claim nothing more, let deliveries in flight finish for stopTimeoutMs, then give back the leases of the rest. */
  stop(): Promise<void>;
}

// A look at the queue is a claim: a write transaction that reads the due
// deliveries. Under load every finished delivery and every accepted message
// asks for one; looking at most once per LOOK_INTERVAL_MS turns those into
// one claim for a batch (a delivery waits at most this long for its turn),
// as Postfix's queue manager scans its incoming queue in batches.
const LOOK_INTERVAL_MS = 5;
// While the next hops set the pace (in-flow.ts, nextHopsSetPace), an
// accepted message's wake-up looks at most this often: a look then reads
// every due delivery of the full destinations to pass over them (2.8 ms
// with 20,000 of them queued for a slow next hop), and only the end of a
// delivery, which looks at once, frees a slot. Mail for another destination
// waits at most this long.
const PACED_LOOK_INTERVAL_MS = 100;

// Claims one look makes at most: each further one follows a domain the one before filled (claimAndRun).
const MAX_CLAIM_PASSES = 4;

/** createScheduler - a scheduler over a store and a courier. */
export function createScheduler(options: SchedulerOptions): Scheduler {
  const { store, logger } = options;
  const metrics = options.metrics ?? NO_METRICS;
  const inFlight = new Map<string, { task: Promise<void>; claim: ClaimedDelivery; startedAt: number }>();
  /** Claims whose courier is still at work (not yet recording): the ones stop() may give back. */
  const couriering = new Set<ClaimedDelivery>();
  /** Claims whose leases stop() gave back while their couriers still ran: their results are not recorded. */
  const givenBack = new WeakSet<ClaimedDelivery>();
  const perDomain = new Map<string, number>();
  let running = false;
  let timer: NodeJS.Timeout | undefined;
  /** When the pending timer fires and when the last look began, on performance.now() (a wall clock set back would stall looks). */
  let timerAt = 0;
  let lastLookAt = 0;
  let looking: Promise<number> | undefined;
  /** A look was asked for while one ran (a claim over the network, PostgreSQL): it runs when that one ends. */
  let lookAgain = false;
  /** Whether the next hops set the pace, as of the last look (wake() reads it for every accepted message). */
  let paced = false;
  const recentDeliveryTimes = new RecentDeliveryTimes();
  const dead = new DeadDestinations(options.perDestination);
  const elapsed = options.elapsed ?? (() => performance.now());

  async function claimAndRun(): Promise<number> {
    let started = 0;
    for (let pass = 0; pass < MAX_CLAIM_PASSES; pass++) {
      const free = options.concurrency - inFlight.size;
      if (free <= 0) break;
      const claims = await store.claimDue({
        now: options.now(),
        limit: free,
        leaseMs: options.leaseMs,
        owner: options.owner,
        perDestination: { limit: options.perDestination, busy: Object.fromEntries(perDomain) },
      });
      for (const claim of claims) if (start(claim)) started++;
      // A claim reads a window of the due deliveries: a backlog to one domain fills it, and that domain takes its
      // free slots only. Once full, it is passed over by the next claim, which reaches the domains behind it (else
      // they would wait for a look at which that domain happens to be full: under steady traffic to it, for ever).
      if (claims.length === 0 || !claims.some((c) => (perDomain.get(c.domain) ?? 0) >= options.perDestination)) break;
    }
    paced = nextHopsPace();
    options.inFlow?.feed(started);
    return started;
  }

  /** start - run a claimed delivery's attempt; false for one already in flight here. */
  function start(claim: ClaimedDelivery): boolean {
    // Its lease lapsed while its attempt still runs here (the clock jumped, renewals failed): the claim renewed our
    // own lease, and a second courier would send the message twice. The one in flight records the result.
    const already = inFlight.get(claim.deliveryId);
    if (already && !givenBack.has(already.claim)) {
      logger.warn({ queueId: claim.messageId, delivery: claim.deliveryId }, 'claimed a delivery whose attempt is still in flight here; not started twice');
      return false;
    }
    perDomain.set(claim.domain, (perDomain.get(claim.domain) ?? 0) + 1);
    const startedAt = elapsed();
    const task = runOne(claim).finally(() => {
      recentDeliveryTimes.record(claim.domain, elapsed() - startedAt);
      // Not an entry of a later claim of the same delivery (its lease was given back at stop, and taken again).
      if (inFlight.get(claim.deliveryId)?.claim === claim) inFlight.delete(claim.deliveryId);
      const left = (perDomain.get(claim.domain) ?? 1) - 1;
      if (left > 0) perDomain.set(claim.domain, left);
      else perDomain.delete(claim.domain);
      if (running) schedule(0);
    });
    inFlight.set(claim.deliveryId, { task, claim, startedAt });
    return true;
  }

  /** nextHopsPace - in-flow.ts's nextHopsSetPace over the deliveries in flight now (their ages on `elapsed`, not options.now's). */
  function nextHopsPace(): boolean {
    const now = elapsed();
    const deliveries = [...inFlight.values()].map((d) => ({ domain: d.claim.domain, ageMs: now - d.startedAt }));
    return nextHopsSetPace(deliveries, { concurrency: options.concurrency, perDestination: options.perDestination }, recentDeliveryTimes);
  }

  async function runOne(claim: ClaimedDelivery): Promise<void> {
    const log = logger.child({ queueId: claim.messageId, delivery: claim.deliveryId, domain: claim.domain });
    const lease: LeaseClaim = { deliveryId: claim.deliveryId, owner: options.owner };
    const stopRenewing = keepLease(claim, lease, log);
    try {
      couriering.add(claim);
      const outcome = await options.courier(claim)
        // A courier that throws (it should not: outbound returns even a body the queue cannot read as a deferral)
        // made an attempt all the same: recorded as a deferral,
        // it backs off and expires like any other, where a lapsed lease would have it tried again at once, forever.
        .catch((err: unknown): CourierOutcome => {
          log.error({ err }, 'delivery attempt failed; recorded as a deferral');
          const reply = `4.3.0 delivery attempt failed: ${errorMessage(err)}`;
          return { attempts: [], recipients: claim.recipients.map((r) => ({ address: r.address, result: 'deferred', reply })), nextHopOffersDsn: false };
        })
        .finally(() => {
          couriering.delete(claim);
          // The record clears the lease: a renewal racing it would be refused, and read as a lease lost.
          stopRenewing();
        });
      if (givenBack.has(claim)) return log.info('attempt ended after its lease was given back at stop; not recorded');
      const now = options.now();
      const next = nextAttemptAt({ attempts: claim.attempts + 1, receivedAt: claim.receivedAt, now, retry: options.retry, random: options.random });
      // Past the lifetime, a deferral becomes a bounce (Postfix: "delivery temporarily suspended" → expired).
      const recipients = outcome.recipients.map((r): RecipientOutcome =>
        r.result === 'deferred' && next === undefined ? { address: r.address, result: 'bounced', reply: `${r.reply} (gave up: message expired after ${describeSeconds(options.retry.lifetime)} in the queue)` } : r,
      );
      const written = await recordWithReport({
        store, hostname: options.hostname, claim, recipients, answeredBy: outcome.answeredBy, nextHopOffersDsn: outcome.nextHopOffersDsn, now, log,
        records: [{ lease, result: { attempts: outcome.attempts, recipients, nextAttemptAt: next ?? now } }],
      });
      const recorded = written.recorded[0] === true;
      // Counted once, by the worker whose result stood (a lapsed lease's result is another worker's to count).
      if (recorded) {
        const latency = (now.getTime() - claim.receivedAt.getTime()) / 1000;
        for (const r of recipients) metrics.deliveryRecorded(r.result, r.result === 'delivered' ? latency : undefined);
      }
      const fields = { recorded, relay: relayOf(outcome.answeredBy), results: recipients.map((r) => ({ rcpt: r.address, result: r.result, reply: r.reply })), nextAttemptAt: next };
      if (recorded) log.info(fields, 'delivery recorded');
      else log.warn(fields, 'delivery result not recorded: the message was deleted, or another worker holds the delivery (it may reach the next hop twice)');
      // An outcome with no attempt (a courier that threw) says nothing about the next hops.
      const deadBecause = outcome.attempts.length > 0 ? dead.attemptEnded(claim.domain, outcome.destinationDown) : undefined;
      if (deadBecause !== undefined) await suspend(claim.domain, deadBecause);
    } catch (err) {
      log.error({ err }, 'delivery result could not be recorded; the lease will lapse and it will be tried again');
    } finally {
      stopRenewing();
    }
  }

  /** suspend - defer a dead destination's due mail at once (dead-destinations.ts), without an attempt each. */
  async function suspend(domain: string, reason: string): Promise<void> {
    const { initial, max, lifetime } = options.retry;
    try {
      const waits = { minWaitMs: durationMs(initial), maxWaitMs: durationMs(max), lifetimeMs: durationMs(lifetime) };
      const moved = await store.suspendDestination(domain, { now: options.now(), ...waits, reply: suspendedReply(reason) });
      if (moved === 0) return;
      metrics.deliveriesSuspended(moved);
      logger.warn({ domain, deliveries: moved, reason }, 'next hops of the destination unusable: its due deliveries are suspended');
    } catch (err) {
      logger.error({ err, domain }, 'could not suspend the deliveries of a dead destination; they are tried as they fall due');
    }
  }

  /**
   * keepLease - renew a delivery's lease every third of it while the attempt runs (a slow next hop, a large
   * message), so no worker claims it and sends it again; returns the function that stops renewing.
   */
  function keepLease(claim: ClaimedDelivery, lease: LeaseClaim, log: Logger): () => void {
    const timer = setInterval(() => {
      if (givenBack.has(claim)) return clearInterval(timer);
      store.renewLease(lease, new Date(options.now().getTime() + options.leaseMs)).then(
        (held) => {
          if (held) return;
          // Deleted by the operator, or taken over after this process stalled (then the message may reach the next
          // hop twice: from here, and from the worker that took it over).
          clearInterval(timer);
          log.warn('lease of a delivery in flight no longer held (message deleted, or taken over by another worker); its result will not be recorded');
        },
        (err: unknown) => log.warn({ err }, 'could not renew the lease of a delivery in flight'),
      );
    }, options.leaseMs / 3);
    timer.unref();
    return () => clearInterval(timer);
  }

  /** schedule - look at the queue in `delayMs` (or sooner, if a look is already set for sooner); never twice within LOOK_INTERVAL_MS. */
  function schedule(delayMs: number): void {
    if (!running) return;
    const at = Math.max(performance.now() + delayMs, lastLookAt + LOOK_INTERVAL_MS);
    if (timer !== undefined && at >= timerAt) return;
    clearTimeout(timer);
    timerAt = at;
    timer = setTimeout(() => {
      timer = undefined;
      void look();
    }, at - performance.now());
  }

  async function look(): Promise<void> {
    if (looking) {
      lookAgain = true;
      return;
    }
    lastLookAt = performance.now();
    looking = claimAndRun();
    try {
      await looking;
      // While deliveries are in flight each one's end triggers the next look, but one that runs long (a slow
      // next hop) must not hold back what falls due meanwhile (a retry, `queue retry` from another process):
      // look again within pollMs. The earliest due time (a scan of the pending deliveries) is read when idle.
      if (inFlight.size > 0) return schedule(options.pollMs);
      const due = await store.nextDueAt();
      const wait = due ? Math.max(0, due.getTime() - options.now().getTime()) : options.pollMs;
      schedule(Math.min(wait, options.pollMs));
    } catch (err) {
      logger.error({ err }, 'scheduler could not read the queue');
      // The store failing is waited out; a look asked for meanwhile would only fail again.
      lookAgain = false;
      schedule(options.pollMs);
    } finally {
      looking = undefined;
      if (lookAgain) {
        // A delivery that ended during this look freed a slot this look's claim did not see.
        lookAgain = false;
        schedule(0);
      }
    }
  }

  return {
    start() {
      running = true;
      schedule(0);
    },
    nextHopsSetPace: nextHopsPace,
    wake() {
      schedule(paced ? PACED_LOOK_INTERVAL_MS : 0);
    },
    async runDue() {
      let total = 0;
      for (;;) {
        const started = await claimAndRun();
        total += started;
        if (inFlight.size === 0) return total;
        await Promise.race([...inFlight.values()].map((d) => d.task));
      }
    },
    async stop() {
      running = false;
      clearTimeout(timer);
      timer = undefined;
      // A look that failed was logged by look(); stop still waits for the deliveries in flight.
      await looking?.catch(() => undefined);
      let waiting: NodeJS.Timeout | undefined;
      const finished = await Promise.race([
        Promise.all([...inFlight.values()].map((d) => d.task)).then(() => true),
        new Promise<false>((resolve) => (waiting = setTimeout(() => resolve(false), options.stopTimeoutMs))),
      ]);
      clearTimeout(waiting);
      if (finished) return;
      // A next hop slower than the stop may take: its delivery is tried again by whoever claims it next (this
      // relay once restarted), and may reach the next hop twice if it had already taken the message. An attempt
      // already recording its result is let finish: giving its lease back would send the message again.
      const left = [...couriering];
      for (const claim of left) givenBack.add(claim);
      if (left.length > 0) logger.warn({ deliveries: left.length, stopTimeout: options.stopTimeoutMs / 1000 }, 'deliveries still in flight at stop; their leases are given back');
      await Promise.all(left.map((claim) => store.releaseLease({ deliveryId: claim.deliveryId, owner: options.owner })));
      await Promise.all([...inFlight.values()].filter((d) => !givenBack.has(d.claim)).map((d) => d.task));
    },
  };
}

// describeSeconds - "5 days", "1 hour", "90 seconds".
function describeSeconds(seconds: number): string {
  const [amount, unit] = seconds % 86400 === 0 ? [seconds / 86400, 'day'] : seconds % 3600 === 0 ? [seconds / 3600, 'hour'] : [seconds, 'second'];
  return `${amount} ${unit}${amount === 1 ? '' : 's'}`;
}

/** relayOf - the next hop that answered, as Postfix's relay= field (host[ip]:port, with the TLS version when there was TLS). */
function relayOf(attempt: AttemptRecord | undefined): string | undefined {
  if (!attempt?.host) return undefined;
  const where = `${attempt.host}[${attempt.ip ?? ''}]:${attempt.port ?? ''}`;
  return attempt.tls ? `${where} ${attempt.tls.version}` : where;
}
