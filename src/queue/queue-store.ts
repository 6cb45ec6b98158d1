// The queue: the only place inbound and outbound meet (DESIGN.md).
//
// QueueStore is the contract every backend (sqlite, later postgres) fulfils
// and one shared contract suite (test/helpers/queue-store-contract.ts) checks.
// Failure model: every method rejects on a storage error; a message is
// visible to readers only after commit() resolved, and commit() resolves
// only once message and envelope are durable (fsynced). A draft that is
// discarded, or never committed because the process died, leaves nothing.
import type { Readable } from 'node:stream';
import type { TlsLevel } from '../config/config.ts';

/** How the client reached us: recorded with every message, shown by `queue show`. */
export interface ClientFacts {
  address: string;
  helo: string;
  listener: 'relay' | 'submission' | 'submissions';
  authUser?: string;
  tlsVersion?: string;
  tlsCipher?: string;
}

/** DSN parameters of one recipient (RFC 3461 §4). */
export interface RecipientDsn {
  /** Absent: the default (FAILURE, and DELAY at our discretion). */
  notify?: ('NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY')[];
  /** ORCPT as given, e.g. "rfc822;user@example.com". */
  orcpt?: string;
}

/** The SMTP envelope as accepted, plus what the sender asked for. */
export interface StoredEnvelope {
  /** '' is the null sender (bounces). */
  mailFrom: string;
  recipients: string[];
  /** BODY= parameter: '7BIT' or '8BITMIME'. */
  bodyType: '7BIT' | '8BITMIME';
  smtpUtf8: boolean;
  client: ClientFacts;
  /** REQUIRETLS (RFC 8689): every hop must be verified TLS. Absent: false. */
  requireTls?: boolean;
  /** DSN (RFC 3461): RET and ENVID of the message, NOTIFY/ORCPT per recipient address. */
  dsn?: { ret?: 'FULL' | 'HDRS'; envid?: string; recipients?: Record<string, RecipientDsn> };
}

/** held: the operator stopped it; done: every recipient delivered or bounced (body removed). */
export type MessageState = 'queued' | 'deferred' | 'held' | 'done';

/** Where one recipient stands. */
export type RecipientState = 'queued' | 'deferred' | 'delivered' | 'bounced';

export type { TlsLevel };

/** One delivery attempt to one host, as `queue show` prints it. */
export interface AttemptRecord {
  startedAt: Date;
  endedAt: Date;
  /** The next hop's name (MX host, smarthost or route host); absent when no host was reached (DNS failure). */
  host?: string;
  ip?: string;
  port?: number;
  /** Absent: the session stayed in plaintext. */
  tls?: { version: string; cipher: string; verified: boolean; verifyError?: string };
  policy: { level: TlsLevel; source: string };
  /** The remote reply, or what went wrong locally ("connection refused", "STARTTLS not offered"). */
  reply: string;
  outcome: 'delivered' | 'deferred' | 'bounced' | 'partial';
}

/** The result for one recipient of an attempt. */
export interface RecipientOutcome {
  address: string;
  result: 'delivered' | 'deferred' | 'bounced';
  /** Remote or local reply, with its code: "550 5.1.1 No such user". */
  reply: string;
}

/** A delivery handed to one worker under a lease: one message, one destination domain, its pending recipients. */
export interface ClaimedDelivery {
  deliveryId: string;
  messageId: string;
  domain: string;
  mailFrom: string;
  recipients: { address: string; dsn?: RecipientDsn }[];
  /** Attempts made before this one. */
  attempts: number;
  receivedAt: Date;
  bodyType: '7BIT' | '8BITMIME';
  smtpUtf8: boolean;
  requireTls: boolean;
  dsn: { ret?: 'FULL' | 'HDRS'; envid?: string };
  /** Bytes of the stored message (our Received header included): the SIZE= we declare to the next hop. */
  size: number;
  leaseOwner: string;
}

/** What `queue show` prints. */
export interface MessageDetails extends QueuedMessageSummary {
  envelope: StoredEnvelope;
  recipientStates: { address: string; state: RecipientState; reply?: string; updatedAt?: Date }[];
  /** leasedBy: the lease owner, machine/pid/token (lease-owner.ts), while or after a worker held it. */
  deliveries: { id: string; domain: string; attempts: number; nextAttemptAt?: Date; leasedUntil?: Date; leasedBy?: string }[];
  attempts: (AttemptRecord & { deliveryId: string; domain: string })[];
}

/** Queue depth by the state `queue list` shows (every state counted, 0 when none), and the oldest message not done. */
export interface QueueStats {
  byState: Record<Exclude<MessageState, 'done'>, number>;
  oldestReceivedAt?: Date;
}

/** claimDue's arguments. */
export interface ClaimOptions {
  now: Date;
  limit: number;
  leaseMs: number;
  owner: string;
  /**
   * At most `limit` deliveries in flight per recipient domain, counting the `busy` ones the caller already
   * runs (by domain): a domain at its limit is passed over, and deliveries further down the order are taken.
   */
  perDestination?: { limit: number; busy: Record<string, number> };
}

/** A claim of named messages' deliveries (claimMessages): the lease alone, no limit. */
export type MessageClaimOptions = Pick<ClaimOptions, 'now' | 'leaseMs' | 'owner'>;

/**
 * suspendDestination's arguments. A suspended delivery waits its message's time in the queue, but at least
 * `minWaitMs` and at most `maxWaitMs` (retry.initial and retry.max), as Postfix's queue manager backs off deferred
 * mail: so a backlog does not fall due again all at once. It is due by the end of its message's lifetime
 * (`lifetimeMs` after arrival) at the latest. `reply`: what its pending recipients show meanwhile ("4.4.1 delivery
 * temporarily suspended: …").
 */
export interface SuspendOptions {
  now: Date;
  minWaitMs: number;
  maxWaitMs: number;
  lifetimeMs: number;
  reply: string;
}

/** A claimed delivery as its worker names it when recording or giving it back. */
export interface LeaseClaim {
  deliveryId: string;
  owner: string;
}

/** What one attempt did, as recordAttempt stores it. */
export interface AttemptResult {
  attempts: AttemptRecord[];
  recipients: RecipientOutcome[];
  nextAttemptAt: Date;
}

/** The operator's queue verbs (CLI and HTTP API alike); flush is retry of everything. */
export type QueueVerb = 'hold' | 'release' | 'retry' | 'delete' | 'bounce';

/** Which messages a queue verb acts on. */
export type MessageSelector = { ids: string[] } | { all: true };

/** What became of a done message, from its recipients: all delivered, all bounced, or some of each. */
export type MessageOutcome = 'delivered' | 'bounced' | 'partly bounced';

/** One line of `postern queue list`. */
export interface QueuedMessageSummary {
  id: string;
  mailFrom: string;
  recipients: string[];
  size: number;
  receivedAt: Date;
  state: MessageState;
  /** Only when state is 'done'. */
  outcome?: MessageOutcome;
  /** Each recipient's state and last reply, in RCPT order: why a deferred message waits (postqueue -p's reason). */
  recipientStates: { address: string; state: RecipientState; reply?: string }[];
  /** The earliest next attempt of its deliveries not finished; only for a queued or deferred message. */
  nextAttemptAt?: Date;
  /** The latest lease end of its deliveries not finished, if a worker took one (past: the lease lapsed). */
  leasedUntil?: Date;
}

/** A message being received: its id is fixed first so the Received header can name it. */
export interface MessageDraft {
  readonly id: string;
  /** writeBody - stream the final bytes to storage; resolves with the byte count. Rejects if the stream errors. */
  writeBody(body: Readable): Promise<number>;
  /** commit - make body and envelope durable; only after this may the client hear 250. */
  commit(envelope: StoredEnvelope): Promise<void>;
  /** discard - throw the draft away (client vanished, message refused); idempotent. */
  discard(): Promise<void>;
}

/** A domain's MTA-STS policy kept between restarts: outbound/mta-sts.ts writes and reads `policy`, opaque here. */
export interface KeptStsPolicy {
  domain: string;
  policy: string;
  /** When it lapses (the policy's max_age from when it was fetched). */
  until: Date;
}

export interface QueueStore {
  /** beginMessage - start a draft with a fresh queue id. */
  beginMessage(): MessageDraft;
  /** listMessages - committed messages not yet done, oldest first; with includeDone, the done ones (with their outcome) too. */
  listMessages(options?: { includeDone?: boolean }): Promise<QueuedMessageSummary[]>;
  /** showMessage - everything known about one message (also after it is done); undefined if unknown. */
  showMessage(id: string): Promise<MessageDetails | undefined>;
  /**
   * claimDue - lease up to `limit` deliveries whose next attempt is due at `now`, whose message is not held and
   * that no unexpired lease holds; oldest due first. A lease lasts `leaseMs`; when it lapses (a crashed worker)
   * the delivery is claimable again.
   */
  claimDue(options: ClaimOptions): Promise<ClaimedDelivery[]>;
  /**
   * claimMessages - lease every unfinished delivery of these messages that no lease holds at `now` (or whose lease
   * lapsed), due or not, held or not: the operator's bounce records them at once. Unknown and done ids are passed
   * over; a delivery another worker holds is not claimed.
   */
  claimMessages(ids: readonly string[], options: MessageClaimOptions): Promise<ClaimedDelivery[]>;
  /**
   * recordAttempt - store the attempts and per-recipient outcomes of a claimed delivery and end the lease.
   * Recipients deferred get `nextAttemptAt`; a delivery with no recipient left pending is finished, and a
   * message whose deliveries are all finished becomes 'done' and its body is removed. Ignored (resolves false)
   * when the lease is no longer this owner's (it lapsed and someone else claimed it) or the message was deleted.
   */
  recordAttempt(claim: LeaseClaim, result: AttemptResult): Promise<boolean>;
  /** releaseLease - give a claimed delivery back untouched (graceful stop). */
  releaseLease(claim: LeaseClaim): Promise<void>;
  /**
   * renewLease - move the lease of a delivery still in flight on to `until` (an attempt that outlasts
   * outbound.lease must not be claimed and sent again by another worker); false when the lease is no longer
   * this owner's, or the delivery is finished or gone.
   */
  renewLease(claim: LeaseClaim, until: Date): Promise<boolean>;
  /** leaseHolders - the owners of leases that have not lapsed at `now` (a starting node looks for those of gone processes, lease-owner.ts). */
  leaseHolders(now: Date): Promise<string[]>;
  /** releaseLeasesOf - give back every lease these owners hold, the deliveries untouched (their processes are gone); returns how many. */
  releaseLeasesOf(owners: readonly string[]): Promise<number>;
  /** stats - queue depth by state (messages not done) and the oldest such message's arrival, for /metrics. */
  stats(): Promise<QueueStats>;
  /** countDone - how many done messages are kept (queue.keepDone), counted without reading them. */
  countDone(): Promise<number>;
  /**
   * suspendDestination - a destination found dead (Postfix: "delivery temporarily suspended"): every delivery to
   * `domain` due at `now`, unfinished, of a queued message that has not outlived its lifetime, and that no lease
   * holds, waits (see SuspendOptions), its pending recipients deferred with `reply`. Neither its attempts nor its
   * recipients' time of the last attempt change: none was made. Returns how many deliveries moved.
   */
  suspendDestination(domain: string, options: SuspendOptions): Promise<number>;
  /** nextDueAt - when the earliest pending, unheld delivery is due (for the scheduler's sleep); undefined if none. */
  nextDueAt(): Promise<Date | undefined>;
  /** holdMessages - stop delivery of messages; returns the ids that changed. */
  holdMessages(selector: MessageSelector): Promise<string[]>;
  /** releaseMessages - undo hold; returns the ids that changed. */
  releaseMessages(selector: MessageSelector): Promise<string[]>;
  /** retryMessages - make every pending delivery of the messages due at `now` (queue retry / flush). */
  retryMessages(selector: MessageSelector, now: Date): Promise<string[]>;
  /** deleteMessages - remove messages, bodies and history; returns the ids removed. */
  deleteMessages(selector: MessageSelector): Promise<string[]>;
  /**
   * purgeDone - forget up to `limit` messages that became done before `doneBefore`, the longest done first:
   * their rows, recipients and attempts (the history `queue show` prints); returns how many. A message not done is
   * never touched. The retention sweep (done-purge.ts) calls it in batches.
   */
  purgeDone(doneBefore: Date, limit: number): Promise<number>;
  /** keptStsPolicies - the MTA-STS policies kept that have not lapsed at `now` (of one domain, if named), at most `limit`, the latest to lapse first. */
  keptStsPolicies(now: Date, limit: number, domain?: string): Promise<KeptStsPolicy[]>;
  /**
   * keepStsPolicy - keep a domain's MTA-STS policy, in place of the one kept, or forget it (`kept` undefined: a
   * max_age of 0). Those lapsed at `now` go at the same time, and past `limit` domains the soonest to lapse.
   */
  keepStsPolicy(domain: string, kept: { policy: string; until: Date } | undefined, options: { now: Date; limit: number }): Promise<void>;
  /** readBody - the stored bytes of a committed message; the stream errors if the id is unknown. */
  readBody(id: string): Readable;
  /**
   * freeSpace - bytes left for the queue's files on their file system (read at most every 100 ms, free-space.ts);
   * undefined where the queue keeps no local files (PostgreSQL: its disk is the database server's) or the reading
   * failed. Never rejects.
   */
  freeSpace(): Promise<number | undefined>;
  /** close - release files and handles; drafts not committed are discarded. */
  close(): Promise<void>;
}
