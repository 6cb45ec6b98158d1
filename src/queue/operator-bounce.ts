// The operator's bounce (`postern queue bounce`, POST /api/queue/bounce;
// Postfix's postsuper -e and -f, Exim's -Mg): return messages to their
// senders now, instead of when outbound.retry.lifetime runs out. Every
// recipient still pending bounces, with the operator's action and its last
// reply as the reason, and the sender gets the report an expiry would give
// (delivery-reports.ts, through the scheduler's own report-then-record path).
// A held message is bounced too: the operator named it.
//
// The bounce leases the deliveries first (claimMessages), so a relay's
// scheduler, another node, or a second bounce never act on one delivery at
// once. A delivery another worker holds, an attempt under way, is left to
// that attempt: its message is bounced in part or not at all, and the caller
// says so. The sender gets one report per message, however many domains its
// recipients are in, as from Postfix.
//
// Fails: a message that could not be returned is left as it was (its leases
// given back) and the others are still returned; then bounceMessages rejects
// naming it, and those it returned. One deleted or finished meanwhile is not
// a failure: it is merely not among those returned.
//
//   bounceMessages   - return the messages' pending recipients to their senders; the ids bounced (in whole or part).
//   operatorReply    - the reason recorded for a recipient the operator returned.
import { errorMessage, type Logger } from '../observability/logger.ts';
import { recordWithReport } from './delivery-reports.ts';
import type { ClaimedDelivery, MessageSelector, QueueStore, RecipientOutcome } from './queue-store.ts';

/** Who bounces: our name for the reports, the owner and length of the leases taken meanwhile, and the log. */
export interface BounceContext {
  /** The reporting MTA and the report's Message-ID domain. */
  hostname: string;
  /** A lease owner of this process (lease-owner.ts): a restart on this machine takes back what a crash left. */
  owner: string;
  leaseMs: number;
  now: Date;
  log: Logger;
}

/** bounceMessages - return the pending recipients of the selected messages to their senders; the ids of the messages bounced (in whole or part). */
export async function bounceMessages(store: QueueStore, selector: MessageSelector, context: BounceContext): Promise<string[]> {
  const { now, owner } = context;
  const ids = 'all' in selector ? (await store.listMessages()).map((m) => m.id) : [...new Set(selector.ids)];
  const claims = await store.claimMessages(ids, { now, leaseMs: context.leaseMs, owner });
  const bounced: string[] = [];
  const failed: string[] = [];
  const recorded = new Set<string>();
  // By message, once: `--all` names every message in the queue.
  const claimsOf = new Map<string, ClaimedDelivery[]>();
  for (const c of claims) claimsOf.set(c.messageId, [...(claimsOf.get(c.messageId) ?? []), c]);
  try {
    for (const id of ids) {
      const mine = claimsOf.get(id);
      if (mine === undefined) continue;
      try {
        const done = await returnMessage(store, mine, context);
        for (const deliveryId of done) recorded.add(deliveryId);
        if (done.length > 0) bounced.push(id);
      } catch (err) {
        const after = await store.showMessage(id);
        if (after !== undefined && after.state !== 'done') failed.push(`${id} (${errorMessage(err)})`);
      }
    }
  } finally {
    // What was not recorded goes back at once rather than when the lease lapses.
    for (const c of claims.filter((c) => !recorded.has(c.deliveryId))) await store.releaseLease({ deliveryId: c.deliveryId, owner }).catch(() => undefined);
  }
  if (failed.length > 0) throw new Error(`could not return ${failed.join(', ')}; returned ${bounced.length > 0 ? bounced.join(', ') : 'none'}`);
  return bounced;
}

/** returnMessage - bounce the recipients of one message's claimed deliveries, with one report; the deliveries whose record stood. */
async function returnMessage(store: QueueStore, claims: ClaimedDelivery[], context: BounceContext): Promise<string[]> {
  const { now, owner } = context;
  // The last replies and when they came (the end of the last attempt), for the reasons and the report.
  const details = await store.showMessage(claims[0]!.messageId);
  const last = new Map(details?.recipientStates.map((r) => [r.address, r]));
  const outcomesOf = (claim: ClaimedDelivery) => claim.recipients.map((r): RecipientOutcome => ({ address: r.address, result: 'bounced', reply: operatorReply(last.get(r.address)?.reply) }));
  const lastAttempts = new Map(details?.recipientStates.flatMap((r) => (r.reply !== undefined && r.updatedAt !== undefined ? [[r.address, r.updatedAt] as const] : [])));
  const recipients = claims.flatMap(outcomesOf);
  const log = context.log.child({ queueId: claims[0]!.messageId });
  const { recorded, report } = await recordWithReport({
    store, hostname: context.hostname, claim: { ...claims[0]!, recipients: claims.flatMap((c) => c.recipients) }, recipients,
    nextHopOffersDsn: false, now, lastAttempts, log,
    records: claims.map((c) => ({ lease: { deliveryId: c.deliveryId, owner }, result: { attempts: [], recipients: outcomesOf(c), nextAttemptAt: now } })),
  });
  const stood = claims.filter((_, i) => recorded[i]);
  if (stood.length === 0) return [];
  const returned = stood.flatMap(outcomesOf);
  log.info({ results: returned.map((r) => ({ rcpt: r.address, result: r.result, reply: r.reply })), ...(report !== undefined && { report }) }, 'returned to the sender by the operator');
  return stood.map((c) => c.deliveryId);
}

/** operatorReply - the reason recorded for a recipient the operator returned, with its last reply if it had one. */
export function operatorReply(lastReply: string | undefined): string {
  const reason = '5.0.0 returned to the sender by the relay\'s operator';
  return lastReply === undefined ? `${reason} before any attempt` : `${reason}; last reply: ${lastReply}`;
}
