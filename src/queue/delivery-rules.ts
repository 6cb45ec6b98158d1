// The scheduler's calls as both queue backends take them: the arguments of
// claimDue, recordAttempt, releaseLease and suspendDestination, what a
// record did, and the rules every backend applies the same way before its
// own SQL runs.
//
// Decides which claims and suspensions make sense (a valid `now`, a whole
// limit >= 0, a lease > 0, an owner; waits > 0, a 4.x.y reply) and when an
// attempt's outcomes became known (the end of its last attempt; the clock
// only when there was no attempt at all).
//
// How it fails: checkClaimOptions and checkSuspendOptions throw, naming the
// argument, on a call that makes no sense; inBatches rejects with the error
// of the batch that failed (the batches before it stand); outcomeTime does
// not fail.
//
//   checkClaimOptions - refuse a claim that could not mean anything sensible.
//   checkLeaseOptions - the same for the lease's part alone (claimMessages).
//   checkSuspendOptions - refuse a suspension that could not mean anything sensible.
//   inBatches         - a suspension's transactions, the event loop free between them.
//   destinationSlots  - how many more deliveries to one domain a claim may take.
//   fullDestinations  - the domains a claim must pass over: no slot left.
//   outcomeTime       - when the outcomes of a recorded attempt became known.
//   recordMayHaveStood - whether a record that failed may have committed, from what the queue shows afterwards.
import type { AttemptRecord, AttemptResult, ClaimOptions, LeaseClaim, MessageClaimOptions, SuspendOptions } from './queue-store.ts';

export type { AttemptResult, ClaimOptions, LeaseClaim, MessageClaimOptions, SuspendOptions };

/** What recordAttempt did: refused, or recorded (naming the message if that made it done). */
export type RecordVerdict = { recorded: false } | { recorded: true; doneMessageId?: string };

// How far past `limit` a claim looks for deliveries to other domains when the
// first ones due belong to a domain with few slots left. A domain with no
// slot left is skipped by the query itself, however many of its deliveries
// are due; this bounds the rest (a deep backlog to one busy domain is not
// read on every claim). Postfix's queue manager bounds what it reads in the
// same way (qmgr_message_active_limit).
export const CLAIM_LOOK_AHEAD = 100;

/** checkClaimOptions - refuse a claim that could not mean anything sensible. */
export function checkClaimOptions(options: ClaimOptions): void {
  const { limit, perDestination } = options;
  checkLeaseOptions(options, 'claimDue');
  if (!Number.isSafeInteger(limit) || limit < 0) throw new Error(`claimDue: limit must be a whole number >= 0, not ${limit}`);
  if (perDestination && (!Number.isSafeInteger(perDestination.limit) || perDestination.limit < 1)) {
    throw new Error(`claimDue: perDestination.limit must be a whole number >= 1, not ${perDestination.limit}`);
  }
}

/** checkLeaseOptions - refuse a lease that could not mean anything sensible (claimDue's and claimMessages' alike). */
export function checkLeaseOptions({ now, leaseMs, owner }: MessageClaimOptions, caller: 'claimDue' | 'claimMessages'): void {
  if (Number.isNaN(now.getTime())) throw new Error(`${caller}: now is not a valid date`);
  // A lease of 0 would hand the same delivery to the next claimer at once.
  if (!Number.isSafeInteger(leaseMs) || leaseMs <= 0) throw new Error(`${caller}: leaseMs must be a whole number > 0, not ${leaseMs}`);
  if (owner === '') throw new Error(`${caller}: owner must not be empty`);
}

/** checkSuspendOptions - refuse a suspension that could not mean anything sensible (suspendDestination). */
export function checkSuspendOptions({ now, minWaitMs, maxWaitMs, lifetimeMs, reply }: SuspendOptions): void {
  if (Number.isNaN(now.getTime())) throw new Error('suspendDestination: now is not a valid date');
  // A wait of 0 would leave the deliveries due, and a store that moves them in batches would never end.
  for (const [name, ms] of Object.entries({ minWaitMs, maxWaitMs, lifetimeMs })) {
    if (!Number.isSafeInteger(ms) || ms <= 0) throw new Error(`suspendDestination: ${name} must be a whole number > 0, not ${ms}`);
  }
  if (maxWaitMs < minWaitMs) throw new Error(`suspendDestination: maxWaitMs (${maxWaitMs}) must not be below minWaitMs (${minWaitMs})`);
  // The recipients' reply is what `queue list` and a later bounce report show: a deferral says why.
  if (!/^4\.\d{1,3}\.\d{1,3} /.test(reply)) throw new Error(`suspendDestination: reply must start with a 4.x.y enhanced code, not ${JSON.stringify(reply)}`);
}

/**
 * inBatches - run `batch` (one transaction moving at most SUSPEND_BATCH rows) until one moves fewer, the event loop
 * free between them; returns how many moved in all. A SQLite store's work holds the event loop, a PostgreSQL one's
 * the rows' locks: 20,000 deliveries suspended in one SQLite transaction held the loop for 324-508 ms, in batches
 * it waited 5-11 ms at most (bench/store.ts --waiting 20000 --suspend).
 */
export async function inBatches(batch: (limit: number) => Promise<number>): Promise<number> {
  let moved = 0;
  for (;;) {
    const done = await batch(SUSPEND_BATCH);
    moved += done;
    if (done < SUSPEND_BATCH) return moved;
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Deliveries a suspension moves in one transaction (inBatches). */
export const SUSPEND_BATCH = 100;

/** destinationSlots - how many more deliveries to `domain` a claim may take (Infinity without a per-destination limit). */
export function destinationSlots({ perDestination }: ClaimOptions, domain: string): number {
  if (!perDestination) return Infinity;
  return Math.max(0, perDestination.limit - (perDestination.busy[domain] ?? 0));
}

/** fullDestinations - the domains with no slot left, which a claim's query skips whatever their backlog. */
export function fullDestinations(options: ClaimOptions): string[] {
  return Object.keys(options.perDestination?.busy ?? {}).filter((domain) => destinationSlots(options, domain) === 0);
}

/** outcomeTime - when the outcomes became known: the end of the last attempt, or now if there was none (expiry). */
export function outcomeTime(attempts: AttemptRecord[]): Date {
  // recordAttempt takes no `now`: the attempts' own times are the honest
  // answer; only an outcome without any attempt falls back to the clock.
  if (attempts.length === 0) return new Date();
  return new Date(Math.max(...attempts.map((a) => a.endedAt.getTime())));
}

/**
 * recordMayHaveStood - whether a record whose answer was lost (a connection dropped) may have committed, from its
 * delivery as the queue shows it afterwards: no longer leased to us (a record ends the lease), or gone (the message
 * done and removed at once, with queue.keepDone 0, or deleted). Only a delivery still leased to us shows that it
 * did not: the report queued with that attempt is withdrawn then, and kept in every other case.
 */
export function recordMayHaveStood(delivery: { leasedBy?: string } | undefined, owner: string): boolean {
  return delivery === undefined || delivery.leasedBy !== owner;
}
