// The delivery status notification (RFC 3464) one attempt calls for: to the
// envelope sender, for recipients that bounced (or expired), and "relayed"
// for those delivered to a next hop without DSN when they asked for success
// (RFC 3461 §6.2.3.1); NOTIFY decides who is reported (bounce.ts). Never for
// a message from the null sender (RFC 5321 §4.5.5).
//
// A report is queued before its attempt is recorded: the record may make
// the message done and remove its body, which the report quotes, and a
// report queued first is never lost (a crash before the record sends it
// again with the next attempt). The scheduler withdraws the report of an
// attempt whose record is refused (scheduler.ts).
//
// What is returned: the header block, or the whole message when the sender
// asked RET=FULL and it is at most RETURNED_MESSAGE_LIMIT bytes (Postfix's
// bounce_size_limit); a larger one is returned as its headers.
//
// Fails: queueReport rejects on a store error, with its draft discarded;
// recordWithReport rejects when the report or the record does (a report whose
// record failed is kept if that record committed all the same, or if that
// cannot be read back; one whose records were all refused, or failed without
// committing, is withdrawn, and a failed withdrawal is logged).
//
//   queueReport      - queue the report one attempt calls for; its queue id.
//   recordWithReport - queue that report, then record the attempt; the report withdrawn if the record does not stand.
import { Readable } from 'node:stream';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { headerBlockLength } from '../smtp/header-block.ts';
import { buildDsn, recipientsToNotify, statusFromReply, type DsnRecipient } from './bounce.ts';
import type { AttemptRecord, AttemptResult, ClaimedDelivery, LeaseClaim, QueueStore, RecipientDsn, RecipientOutcome } from './queue-store.ts';
import { recordMayHaveStood } from './delivery-rules.ts';

/** The most bytes of a message a RET=FULL report returns whole (Postfix's bounce_size_limit). */
export const RETURNED_MESSAGE_LIMIT = 50_000;

/** The message a report is about: a claimed delivery, or all of a message's at once (the operator's bounce). */
export type ReportedMessage = Pick<ClaimedDelivery, 'messageId' | 'mailFrom' | 'receivedAt' | 'dsn' | 'recipients' | 'requireTls'>;

export interface ReportFacts {
  store: QueueStore;
  /** Our name: the reporting MTA and the report's Message-ID domain. */
  hostname: string;
  claim: ReportedMessage;
  /** Each recipient's result as it will be recorded (expired deferrals already bounced). */
  recipients: RecipientOutcome[];
  /** The attempt whose host gave the replies (CourierOutcome.answeredBy): the Remote-MTA. */
  answeredBy?: AttemptRecord;
  nextHopOffersDsn: boolean;
  now: Date;
  /**
   * When each recipient was last tried (Last-Attempt-Date; none for one never tried). Absent: `now`, the
   * attempt this report follows.
   */
  lastAttempts?: ReadonlyMap<string, Date>;
  log: Logger;
}

/** queueReport - queue the report this attempt calls for; its queue id, or undefined when it calls for none. */
export async function queueReport(facts: ReportFacts): Promise<string | undefined> {
  const { store, claim, now, log } = facts;
  if (claim.mailFrom === '') return undefined;
  type Candidate = { address: string; dsn?: RecipientDsn; action: DsnRecipient['action']; reply: string };
  const dsnOf = new Map(claim.recipients.map((c) => [c.address, c.dsn]));
  const candidates = facts.recipients.flatMap((r): Candidate[] => {
    const dsn = dsnOf.get(r.address);
    if (r.result === 'bounced') return [{ address: r.address, dsn, action: 'failed', reply: r.reply }];
    // RFC 3461 §6.2.3.1: a next hop without DSN cannot report success, so we say "relayed".
    if (r.result === 'delivered' && !facts.nextHopOffersDsn) return [{ address: r.address, dsn, action: 'relayed', reply: r.reply }];
    return [];
  });
  const notify = recipientsToNotify(candidates);
  if (notify.length === 0) return undefined;
  const dsnRecipients: DsnRecipient[] = notify.map((r) => ({
    address: r.address,
    action: r.action,
    status: statusFromReply(r.reply, r.action === 'failed' ? '5.0.0' : '2.0.0'),
    diagnostic: r.reply,
    ...(facts.answeredBy?.host ? { remoteMta: facts.answeredBy.host } : {}),
    ...(r.dsn?.orcpt ? { orcpt: r.dsn.orcpt } : {}),
    ...lastAttemptOf(facts, r.address),
  }));
  // RFC 8689 §5: a REQUIRETLS message's report returns its headers only, whatever RET asked, and is itself REQUIRETLS.
  const ret = claim.requireTls ? 'HDRS' : claim.dsn.ret;
  // A body the queue cannot give (the attempt that threw reading it, now expired): the report goes without it, not
  // never; else the attempt could not be recorded, and would be tried again for ever.
  const original = await readOriginal(store, claim.messageId, ret === 'FULL').catch((err: unknown): Original => {
    log.warn({ err }, 'the message could not be read for its report; the report goes without it');
    return { headers: Buffer.alloc(0) };
  });
  const report = buildDsn({
    queueId: claim.messageId,
    reportingMta: facts.hostname,
    arrivalDate: claim.receivedAt,
    now,
    envelopeFrom: claim.mailFrom,
    envid: claim.dsn.envid,
    ret,
    recipients: dsnRecipients,
    originalHeaders: original.headers,
    ...(original.body ? { originalBody: original.body } : {}),
    messageIdDomain: facts.hostname,
  });
  const draft = store.beginMessage();
  try {
    await draft.writeBody(Readable.from([report.content]));
    await draft.commit({
      mailFrom: '',
      recipients: report.recipients,
      bodyType: report.bodyType,
      smtpUtf8: false,
      requireTls: claim.requireTls,
      // A report originates here; it is recorded as if submitted locally.
      client: { address: '127.0.0.1', helo: facts.hostname, listener: 'relay' },
    });
  } catch (err) {
    await draft.discard();
    throw err;
  }
  log.info({ report: draft.id, to: claim.mailFrom, recipients: dsnRecipients.map((r) => `${r.address}: ${r.action}`) }, 'delivery status notification queued');
  return draft.id;
}

/** lastAttemptOf - a report recipient's Last-Attempt-Date field, if it has one. */
function lastAttemptOf(facts: ReportFacts, address: string): { lastAttemptAt?: Date } {
  if (facts.lastAttempts === undefined) return { lastAttemptAt: facts.now };
  const at = facts.lastAttempts.get(address);
  return at === undefined ? {} : { lastAttemptAt: at };
}

/** One delivery's result to record under its lease. */
export interface RecordUnderLease {
  lease: LeaseClaim;
  result: AttemptResult;
}

/**
 * recordWithReport - queue the report the results call for (facts.recipients: all of them), then record each
 * delivery's: a crash or a failure between them sends the report again with the next attempt (at least once),
 * where the other order could lose it. A report none of whose records stood (the message deleted meanwhile, or
 * the leases another worker's) is withdrawn. A record that failed may have committed all the same (a connection
 * lost after COMMIT, a failed fsync of the WAL): whether it stood is read back, and the report kept when it did or
 * when that cannot be told (a message done and bounced must not leave its sender untold); one that shows it did
 * not is made once more. Whether each record
 * stood, and the report's queue id.
 */
export async function recordWithReport(facts: ReportFacts & { records: RecordUnderLease[] }): Promise<{ recorded: boolean[]; report?: string }> {
  const { store, log } = facts;
  const report = await queueReport(facts);
  const recorded: boolean[] = [];
  const recordRest = async () => {
    for (const { lease, result } of facts.records.slice(recorded.length)) recorded.push(await store.recordAttempt(lease, result));
  };
  try {
    await recordRest();
  } catch (err) {
    // A record that shows it did not stand (its delivery still leased to us, so no other worker may act on it) is
    // made once more: a connection dropped for a moment would otherwise let the lease lapse, and the message go
    // out again a whole lease later.
    if (await mayHaveStood(store, facts.claim.messageId, facts.records[recorded.length]!.lease, log)) throw err;
    log.warn({ err: errorMessage(err) }, 'recording a delivery result failed, and it did not stand; recording it again');
    try {
      await recordRest();
    } catch (again) {
      const failed = facts.records[recorded.length]!.lease;
      if (report !== undefined && !recorded.includes(true) && !(await mayHaveStood(store, facts.claim.messageId, failed, log))) await withdrawReport(store, report, log);
      throw again;
    }
  }
  if (report !== undefined && !recorded.includes(true)) await withdrawReport(store, report, log);
  return { recorded, ...(report !== undefined && { report }) };
}

/** mayHaveStood - whether a record that failed may have committed (recordMayHaveStood), or the queue cannot say. */
async function mayHaveStood(store: QueueStore, messageId: string, lease: LeaseClaim, log: Logger): Promise<boolean> {
  try {
    return recordMayHaveStood((await store.showMessage(messageId))?.deliveries.find((d) => d.id === lease.deliveryId), lease.owner);
  } catch (err) {
    log.warn({ err: errorMessage(err) }, 'whether a failed record stood could not be read; its delivery status notification is kept');
    return true;
  }
}

/** withdrawReport - take back a report queued for an attempt whose record did not stand. */
async function withdrawReport(store: QueueStore, reportId: string, log: Logger): Promise<void> {
  try {
    await store.deleteMessages({ ids: [reportId] });
    log.info({ report: reportId }, 'delivery status notification withdrawn: the attempt was not recorded');
  } catch (err) {
    log.warn({ err, report: reportId }, 'delivery status notification of an attempt not recorded could not be withdrawn');
  }
}

/** What a report returns of the message: its header block, and its body for RET=FULL. */
type Original = { headers: Buffer; body?: Buffer };

/**
 * readOriginal - the message's header block, and with `whole` its body (after the empty line) when the message
 * is at most RETURNED_MESSAGE_LIMIT bytes; reads no further than it needs.
 */
async function readOriginal(store: QueueStore, id: string, whole: boolean): Promise<Original> {
  const parts: Buffer[] = [];
  let bytes = 0;
  const stream = store.readBody(id);
  try {
    for await (const chunk of stream) {
      parts.push(chunk as Buffer);
      bytes += (chunk as Buffer).length;
      if (whole && bytes <= RETURNED_MESSAGE_LIMIT) continue;
      const joined = Buffer.concat(parts);
      const length = headerBlockLength(joined, false);
      if (length !== undefined) return { headers: joined.subarray(0, length) };
    }
    const message = Buffer.concat(parts);
    const headers = message.subarray(0, headerBlockLength(message, true));
    if (!whole || bytes > RETURNED_MESSAGE_LIMIT) return { headers };
    // The empty line between them is the report's to write.
    const emptyLine = message[headers.length] === 0x0d && message[headers.length + 1] === 0x0a ? 2 : 0;
    return { headers, body: message.subarray(headers.length + emptyLine) };
  } finally {
    stream.destroy();
  }
}
