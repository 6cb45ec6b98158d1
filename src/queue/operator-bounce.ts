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
// says so.
//
// Fails: rejects on a store error; each delivery is its own record, so what
// was recorded before the error stays, with its report.
//
//   bounceMessages   - return the messages' pending recipients to their senders; the ids bounced (in whole or part).
//   operatorReply    - the reason recorded for a recipient the operator returned.
import type { Logger } from '../observability/logger.ts';
import { recordWithReport } from './delivery-reports.ts';
import type { MessageSelector, QueueStore, RecipientOutcome } from './queue-store.ts';

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
  const { now, log } = context;
  // The last replies, for the reasons; and with --all, which messages there are.
  const queued = await store.listMessages();
  const ids = 'all' in selector ? queued.map((m) => m.id) : [...new Set(selector.ids)];
  const lastReply = new Map(queued.flatMap((m) => m.recipientStates.map((r) => [`${m.id} ${r.address}`, r.reply] as const)));
  const claims = await store.claimMessages(ids, { now, leaseMs: context.leaseMs, owner: context.owner });
  const bounced = new Set<string>();
  for (const claim of claims) {
    const recipients = claim.recipients.map((r): RecipientOutcome => ({ address: r.address, result: 'bounced', reply: operatorReply(lastReply.get(`${claim.messageId} ${r.address}`)) }));
    const claimLog = log.child({ queueId: claim.messageId, delivery: claim.deliveryId, domain: claim.domain });
    const { recorded, report } = await recordWithReport({
      store, hostname: context.hostname, claim, recipients, nextHopOffersDsn: false, now, log: claimLog,
      lease: { deliveryId: claim.deliveryId, owner: context.owner }, attempts: [], nextAttemptAt: now,
    });
    if (!recorded) continue;
    bounced.add(claim.messageId);
    claimLog.info({ results: recipients.map((r) => ({ rcpt: r.address, result: r.result, reply: r.reply })), ...(report !== undefined && { report }) }, 'returned to the sender by the operator');
  }
  return ids.filter((id) => bounced.has(id));
}

/** operatorReply - the reason recorded for a recipient the operator returned, with its last reply if it had one. */
export function operatorReply(lastReply: string | undefined): string {
  const reason = '5.0.0 returned to the sender by the relay\'s operator';
  return lastReply === undefined ? `${reason} before any attempt` : `${reason}; last reply: ${lastReply}`;
}
