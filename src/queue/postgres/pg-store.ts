// The PostgreSQL queue store: envelopes, bodies, deliveries and attempts as
// rows of one database that several Postern nodes share. Any node accepts,
// any node delivers, and `postern queue` on any node sees the whole queue.
//
// Decides how a node uses the database: two pools, one for drafts (a
// statement per full body chunk and one to commit, pg-draft.ts under the
// shared draft-lifecycle.ts; no connection is held while a client sends)
// and one for everything else (short statements and transactions), so a
// burst of arriving mail never starves the scheduler or the CLI. The schema is
// created or migrated on open (pg-schema.ts, under an advisory lock). The
// work is split by who asks: pg-deliveries.ts (the scheduler's claims and
// results), pg-operator.ts (hold, release, retry, delete, purge of done
// messages), pg-inspect.ts (list, show, stats), pg-body.ts (chunked
// bodies). This file opens and delegates.
//
// Attempts that finish together are recorded in one statement (group-commit.ts,
// pg-deliveries.ts recordAttempts): one round trip and one WAL flush.
//
// A body that fit in its message's own row stays in memory for this node's
// deliveries of it (recent-bodies.ts: served without a query to a delivery
// this node holds a lease on).
//
// A message's body chunks are deleted in the transaction that makes it done,
// or with the message by `queue delete`. Chunk rows of drafts that never
// committed (a node died mid-DATA) are removed once a day old (pg-body.ts):
// at open (unless removeOrphans is false, as for the CLI) and at most once
// an hour from the retention sweep's purgeDone. A sweep that fails is
// logged and does not stop the open or the purge.
//
// How it fails: openPostgresStore rejects, naming the URL (password masked),
// if the database cannot be reached, the URL is not postgres://, or its
// schema is newer than this code (nothing is changed then); every method
// rejects on a database error, and after close; readBody returns a stream
// that errors for an id that is malformed, unknown, not yet committed or
// done, but to a delivery leased here, which may get its body from memory.
// Draft failures are described in draft-lifecycle.ts and pg-draft.ts.
//
//   openPostgresStore - connect, migrate, and return the queue store on queue.url.
import type pg from 'pg';
import { Readable } from 'node:stream';
import { silentLogger, type Logger } from '../../observability/logger.ts';
import { inBatches, type AttemptResult, type ClaimOptions, type LeaseClaim, type MessageClaimOptions } from '../delivery-rules.ts';
import { OpenDrafts } from '../draft-lifecycle.ts';
import { createGroupCommit } from '../group-commit.ts';
import { logMigration } from '../migrations.ts';
import { newQueueId } from '../queue-id.ts';
import { RECENT_BODIES_LIMIT, RecentBodies } from '../recent-bodies.ts';
import type { ClaimedDelivery, KeptStsPolicy, MessageDetails, MessageDraft, MessageSelector, QueuedMessageSummary, QueueStats, QueueStore, SuspendOptions } from '../queue-store.ts';
import { readBodyChunks, removeOrphanChunks } from './pg-body.ts';
import { createPool, parseQueueUrl, withClient, type QueueConnection } from './pg-connection.ts';
import * as deliveries from './pg-deliveries.ts';
import { PgDraft } from './pg-draft.ts';
import * as inspect from './pg-inspect.ts';
import * as operator from './pg-operator.ts';
import { MIGRATIONS, migrateSchema } from './pg-schema.ts';
import * as stsPolicies from './pg-sts-policies.ts';

export interface PostgresStoreOptions {
  /** postgres://user:password@host:5432/database, optionally ?schema=NAME (created if missing). */
  url: string;
  logger?: Logger;
  /** Whether open removes chunk rows no message claims (default true; the CLI passes false, as for SQLite). */
  removeOrphans?: boolean;
  /** Refuse to create the queue's tables: a database or schema without them is an error naming it (the CLI's commands). */
  existing?: boolean;
  /** Connections for short queries (claims, records, the CLI); default 10. */
  poolSize?: number;
  /** Connections for drafts' statements (a full body chunk, a commit): this many at once before the next waits; default 20. */
  draftPoolSize?: number;
}

/** openPostgresStore - connect, create or migrate the schema, and return the queue store on queue.url. */
export async function openPostgresStore(options: PostgresStoreOptions): Promise<QueueStore> {
  const logger = options.logger ?? silentLogger();
  const connection = parseQueueUrl(options.url);
  const queries = createPool(connection, options.poolSize ?? 10);
  const drafts = createPool(connection, options.draftPoolSize ?? 20);
  // An idle connection the server dropped: the pool discards it; log it, never crash on it.
  for (const pool of [queries, drafts]) pool.on('error', (err) => logger.warn({ err, url: connection.printable }, 'idle queue database connection failed'));
  try {
    logMigration(logger, { url: connection.printable, schema: connection.schema }, await migrate(queries, connection, options.existing ?? false), MIGRATIONS);
    const orphansRemoved = options.removeOrphans === false ? 0 : await removeOrphans(queries, logger);
    logger.info({ url: connection.printable, schema: connection.schema, schemaVersion: MIGRATIONS.length, orphansRemoved }, 'queue store opened');
    await warnIfClockOff(queries, logger);
  } catch (error) {
    await Promise.all([queries.end(), drafts.end()]);
    throw error;
  }
  return new PostgresQueueStore(queries, drafts, logger);
}

/** How far this node's clock may be from the database's before a warning: synchronised clocks (NTP) are milliseconds apart. */
export const CLOCK_OFFSET_WARNING_MS = 5_000;

/**
 * warnIfClockOff - warn when this node's clock is more than CLOCK_OFFSET_WARNING_MS from the database server's.
 * Each node takes due times and leases on its own clock: one behind by more than outbound.lease writes leases the
 * others read as lapsed, and its deliveries go out twice, with nothing else said. (The database's clock stands in
 * for the other nodes'; the round trip is allowed for.)
 */
async function warnIfClockOff(pool: pg.Pool, logger: Logger): Promise<void> {
  const sent = Date.now();
  const { rows } = await pool.query<{ now: Date }>('SELECT clock_timestamp() AS now');
  const received = Date.now();
  const offsetMs = rows[0]!.now.getTime() - (sent + received) / 2;
  if (Math.abs(offsetMs) - (received - sent) / 2 > CLOCK_OFFSET_WARNING_MS) {
    logger.warn({ offsetSeconds: Math.round(offsetMs / 100) / 10 }, "this node's clock is off the queue database's: leases and due times are compared across nodes, so keep every clock synchronised (NTP)");
  }
}

/** migrate - run migrateSchema on one connection; a connection error names the URL. */
async function migrate(pool: pg.Pool, connection: QueueConnection, existing: boolean): Promise<number> {
  try {
    return await withClient(pool, (client) => migrateSchema(client, { ...connection, existing }));
  } catch (error) {
    if (error instanceof Error && error.message.startsWith('queue database ')) throw error;
    throw new Error(`queue database ${connection.printable}: ${(error as Error).message}`, { cause: error });
  }
}

/** How often purgeDone also removes chunk rows no message claims (their age bound is a day: an hour late is nothing). */
const ORPHAN_SWEEP_INTERVAL_MS = 3600 * 1000;

class PostgresQueueStore implements QueueStore {
  readonly #drafts = new OpenDrafts();
  readonly #recentBodies = new RecentBodies(RECENT_BODIES_LIMIT);
  /** Attempts that finish together are recorded in one statement. */
  readonly #records = createGroupCommit((items: deliveries.RecordItem[]) => deliveries.recordAttempts(this.queries, items, this.logger));
  #closed = false;
  /** When chunk rows no message claims were last removed, on a monotonic clock (at open). */
  #orphansRemovedAt = performance.now();

  constructor(
    private readonly queries: pg.Pool,
    private readonly draftPool: pg.Pool,
    private readonly logger: Logger,
  ) {}

  beginMessage(): MessageDraft {
    if (this.#closed) throw new Error('queue store is closed');
    const id = newQueueId();
    const keepBody = (messageId: string, body: Buffer) => this.#recentBodies.add(messageId, [body]);
    return this.#drafts.begin(id, new PgDraft(id, { pool: this.draftPool, logger: this.logger.child({ queueId: id }), keepBody }));
  }

  listMessages(options: { includeDone?: boolean } = {}): Promise<QueuedMessageSummary[]> {
    return this.#run(() => inspect.listMessages(this.queries, options));
  }

  showMessage(id: string): Promise<MessageDetails | undefined> {
    return this.#run(() => inspect.showMessage(this.queries, id));
  }

  stats(): Promise<QueueStats> {
    return this.#run(() => inspect.queueStats(this.queries));
  }

  countDone(): Promise<number> {
    return this.#run(() => inspect.countDone(this.queries));
  }

  async claimDue(options: ClaimOptions): Promise<ClaimedDelivery[]> {
    const claimed = await this.#run(() => deliveries.claimDue(this.queries, options));
    for (const delivery of claimed) this.#recentBodies.leased(delivery.deliveryId, delivery.messageId, options.leaseMs);
    return claimed;
  }

  async claimMessages(ids: readonly string[], options: MessageClaimOptions): Promise<ClaimedDelivery[]> {
    const claimed = await this.#run(() => deliveries.claimMessages(this.queries, ids, options));
    for (const delivery of claimed) this.#recentBodies.leased(delivery.deliveryId, delivery.messageId, options.leaseMs);
    return claimed;
  }

  async recordAttempt(claim: LeaseClaim, result: AttemptResult): Promise<boolean> {
    try {
      const verdict = await this.#run(() => this.#records.add({ claim, result }));
      if (verdict.recorded && verdict.doneMessageId !== undefined) this.#recentBodies.delete(verdict.doneMessageId);
      return verdict.recorded;
    } finally {
      this.#recentBodies.leaseEnded(claim.deliveryId);
    }
  }

  async releaseLease(claim: LeaseClaim): Promise<void> {
    try {
      await this.#run(() => deliveries.releaseLease(this.queries, claim));
    } finally {
      this.#recentBodies.leaseEnded(claim.deliveryId);
    }
  }

  renewLease(claim: LeaseClaim, until: Date): Promise<boolean> {
    return this.#run(() => deliveries.renewLease(this.queries, claim, until));
  }

  leaseHolders(now: Date): Promise<string[]> {
    return this.#run(() => deliveries.leaseHolders(this.queries, now));
  }

  releaseLeasesOf(owners: readonly string[]): Promise<number> {
    return this.#run(() => deliveries.releaseLeasesOf(this.queries, owners));
  }

  nextDueAt(): Promise<Date | undefined> {
    return this.#run(() => deliveries.nextDueAt(this.queries));
  }

  holdMessages(selector: MessageSelector): Promise<string[]> {
    return this.#run(() => operator.holdMessages(this.queries, selector));
  }

  releaseMessages(selector: MessageSelector): Promise<string[]> {
    return this.#run(() => operator.releaseMessages(this.queries, selector));
  }

  suspendDestination(domain: string, options: SuspendOptions): Promise<number> {
    return inBatches((limit) => this.#run(() => deliveries.suspendDestination(this.queries, domain, options, limit)));
  }

  retryMessages(selector: MessageSelector, now: Date): Promise<string[]> {
    return this.#run(() => operator.retryMessages(this.queries, selector, now));
  }

  async deleteMessages(selector: MessageSelector): Promise<string[]> {
    const removed = await this.#run(() => operator.deleteMessages(this.queries, selector));
    for (const id of removed) this.#recentBodies.delete(id);
    return removed;
  }

  purgeDone(doneBefore: Date, limit: number): Promise<number> {
    return this.#run(async () => {
      if (performance.now() - this.#orphansRemovedAt >= ORPHAN_SWEEP_INTERVAL_MS) {
        this.#orphansRemovedAt = performance.now();
        await removeOrphans(this.queries, this.logger);
      }
      return operator.purgeDone(this.queries, doneBefore, limit);
    });
  }

  freeSpace(): Promise<number | undefined> {
    return Promise.resolve(undefined);
  }

  keptStsPolicies(now: Date, limit: number, domain?: string): Promise<KeptStsPolicy[]> {
    return this.#run(() => stsPolicies.keptStsPolicies(this.queries, now, limit, domain));
  }

  keepStsPolicy(domain: string, kept: { policy: string; until: Date } | undefined, options: { now: Date; limit: number }): Promise<void> {
    return this.#run(() => stsPolicies.keepStsPolicy(this.queries, domain, kept, options));
  }

  readBody(id: string): Readable {
    if (this.#closed) return failedStream(new Error('queue store is closed'));
    const recent = this.#recentBodies.get(id);
    return recent ? Readable.from(recent) : readBodyChunks(this.queries, id);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Discard waits for a commit in flight, which still needs its connection; attempts already handed in are recorded.
    await this.#drafts.discardAll();
    await this.#records.idle();
    await Promise.all([this.queries.end(), this.draftPool.end()]);
  }

  /** run - one database call: rejects after close or when the call does. */
  #run<T>(call: () => Promise<T>): Promise<T> {
    if (this.#closed) return Promise.reject(new Error('queue store is closed'));
    return call();
  }
}

/** removeOrphans - removeOrphanChunks, logged; a failure is logged and counts as none removed. */
async function removeOrphans(pool: pg.Pool, logger: Logger): Promise<number> {
  try {
    const removed = await removeOrphanChunks(pool);
    if (removed > 0) logger.info({ removed }, 'removed chunk rows of drafts that never committed');
    return removed;
  } catch (error) {
    logger.warn({ err: error }, 'could not remove chunk rows of drafts that never committed; trying again in an hour');
    return 0;
  }
}

/** failedStream - a Readable that errors at once (readBody's answer after close). */
function failedStream(error: Error): Readable {
  const stream = new Readable({ read() {} });
  stream.destroy(error);
  return stream;
}
