// The SQLite queue store: envelopes, deliveries and attempts as rows in one
// SQLite file; a body in its message row up to 128 KB, else as a file beside
// it (<dir of the db>/messages/<queue id>, mode 0600): sqlite-draft.ts decides.
//
// Decides where a message lives and the order in which it becomes durable:
// a body file fsynced, directory fsynced, then message (with a small body),
// delivery and recipient rows inserted in one transaction (sqlite-draft.ts
// under the shared draft-lifecycle.ts, sqlite-commit.ts). A crash can
// therefore leave a body file without a row, which the next open sweeps
// away, but never a row without its body. The same holds at the other end: a message
// becomes 'done' (or is deleted) in a transaction and its body is removed
// after the COMMIT; a crash in between leaves a file the sweep treats as an
// orphan. The database runs in WAL mode; a write is reported durable only
// after the store fsynced the WAL (sqlite-wal-sync.ts), off the event loop.
// Accepted messages and recorded attempts go through one group commit
// (sqlite-group-commit.ts): those that arrive together share a transaction,
// the b-tree pages both touch, and one fsync.
//
// The work is split by who asks: sqlite-deliveries.ts (the scheduler's
// claims and results), sqlite-operator.ts (hold, release, retry, delete, and
// the retention purge of done messages), sqlite-inspect.ts (list, show and
// stats). This file opens, sweeps and delegates.
//
// How it fails: openSqliteStore rejects if the database cannot be opened or
// its schema is newer than this code (nothing is changed then); every method
// rejects on a database error, and after close; readBody returns a stream
// that errors for an id that is malformed, unknown, not yet committed or
// done (its body is gone), but to a delivery leased here, which may get its
// body from memory (recent-bodies.ts). A body file that cannot be removed
// after done or delete is logged, not an error: the next sweep removes it.
// Draft failures are described in draft-lifecycle.ts and sqlite-draft.ts.
//
//   openSqliteStore - open (create, migrate, sweep orphan bodies) the queue store at a path.
//   WAL_CHECKPOINT_BYTES - the WAL size at which SQLite copies it into the database.
//   QUEUE_PAGE_SIZE - the page size of a queue database this code creates.
//   COMMIT_SPACING - when the next group-commit batch waits for more (group-commit.ts).
import Database from 'better-sqlite3';
import { existsSync, rmSync, createReadStream } from 'node:fs';
import { mkdir, open, readdir, stat, type FileHandle } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger, type Logger } from '../../observability/logger.ts';
import { inBatches, type AttemptResult, type ClaimOptions, type LeaseClaim, type MessageClaimOptions, type SuspendOptions } from '../delivery-rules.ts';
import { OpenDrafts } from '../draft-lifecycle.ts';
import { createFreeSpaceReader } from '../free-space.ts';
import { createGroupCommit, type BatchSpacing, type GroupCommit } from '../group-commit.ts';
import { logMigration } from '../migrations.ts';
import { isQueueId, newQueueId } from '../queue-id.ts';
import { RECENT_BODIES_LIMIT, RecentBodies } from '../recent-bodies.ts';
import type {
  ClaimedDelivery,
  KeptStsPolicy,
  MessageDetails,
  MessageDraft,
  MessageSelector,
  QueuedMessageSummary,
  QueueStats,
  QueueStore,
} from '../queue-store.ts';
import { prepareCommit, type CommitRow } from './sqlite-commit.ts';
import { batchTransaction } from './sqlite-group-commit.ts';
import { prepareDeliveries, type DeliveryFunctions, type SqliteRecordVerdict } from './sqlite-deliveries.ts';
import { SqliteBodyFile, removeFile, syncDirectory } from './sqlite-draft.ts';
import { prepareInspect, type InspectFunctions } from './sqlite-inspect.ts';
import { prepareStsPolicies, type StsPolicyFunctions } from './sqlite-sts-policies.ts';
import { prepareOperator, type OperatorFunctions } from './sqlite-operator.ts';
import { MIGRATIONS, migrateSchema, readSchemaVersion } from './sqlite-schema.ts';
import { openWalSync, type WalSync } from './sqlite-wal-sync.ts';

export interface SqliteStoreOptions {
  /** The database file, e.g. data/queue.db; bodies go to messages/ in the same directory. */
  path: string;
  logger?: Logger;
  /**
   * Remove body files no queued message names: left by a crash before a
   * commit, or after a message became done or was deleted (default true). A second process opening
   * the queue while a server receives would take the server's drafts for
   * orphans (its commit then fails safely, the client hears 4xx): read-only
   * commands such as `postern queue list` should pass false.
   */
  removeOrphans?: boolean;
  /** Refuse to create the database: a missing file is an error naming it (the CLI's commands on a queue). */
  existing?: boolean;
}

/** openSqliteStore - open (create, migrate, sweep orphan bodies) the queue store at a path. */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<QueueStore> {
  const logger = options.logger ?? silentLogger();
  const file = resolve(options.path);
  const messagesDir = join(dirname(file), 'messages');
  if (options.existing && !existsSync(file)) throw new Error(`no queue at ${file} (queue.path): no relay has run with this configuration; is it the relay's (--config FILE)?`);
  await mkdir(messagesDir, { recursive: true, mode: 0o700 });
  await syncDirectory(dirname(file));
  // Create the file 0600 before SQLite does (it would use 0644): it holds
  // addresses. SQLite gives its -wal and -shm files the database's mode.
  await (await open(file, 'a', 0o600)).close();

  const db = new Database(file);
  let wal: WalSync | undefined;
  try {
    readSchemaVersion(db, file); // refuse a newer database before any pragma writes to it
    db.pragma('busy_timeout = 5000');
    // Takes effect on a new, empty database only (before WAL mode): an existing queue keeps its pages.
    db.pragma(`page_size = ${QUEUE_PAGE_SIZE}`);
    db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
    const journal = String(db.pragma('journal_mode = WAL', { simple: true }));
    if (journal !== 'wal') logger.warn({ path: file, journal }, 'queue database is not in WAL mode');
    // NORMAL: a COMMIT does not fsync; the store fsyncs the WAL itself, asynchronously (sqlite-wal-sync.ts).
    db.pragma('synchronous = NORMAL');
    const pageSize = Number(db.pragma('page_size', { simple: true }));
    db.pragma(`wal_autocheckpoint = ${walCheckpointPages(pageSize)}`);
    db.pragma('foreign_keys = ON');
    logMigration(logger, { path: file }, migrateSchema(db, file), MIGRATIONS);
    wal = await openWalSync(file);
    await wal.sync(); // the migration, if there was one
    const removed = options.removeOrphans === false ? 0 : await sweepOrphanBodies(db, messagesDir, logger);
    logger.info({ path: file, schemaVersion: MIGRATIONS.length, orphansRemoved: removed }, 'queue store opened');
    // Kept open for the store's life: one fsync per batch that made body files, no open and close around it.
    const messagesDirHandle = await open(messagesDir, 'r');
    return new SqliteQueueStore(db, wal, messagesDir, messagesDirHandle, logger, pageSize);
  } catch (error) {
    db.close();
    await wal?.close();
    throw error;
  }
}

/** What the store's one writer queue takes: a message to insert, or an attempt to record. */
export type WriteItem = { kind: 'commit'; row: CommitRow } | { kind: 'record'; claim: LeaseClaim; result: AttemptResult };

/** A message whose body is kept: committed and not done. A body file no such message names is an orphan. */
const KEPT = "id = ? AND state != 'done'";
const BODY_KEPT = `SELECT id FROM messages WHERE ${KEPT}`;

/**
 * SQLite copies the WAL into the database (a checkpoint, with two fsyncs, on the event loop) once it holds
 * this many bytes of pages; SQLite's default is 1,000 pages. A checkpoint copies each page once, however
 * often it was written since the last: bodies in rows are freed once delivered and their pages reused, so
 * the larger window copies far less per message. Alternating runs, plaintext 100 KB: 1,000 → 4,000 pages
 * of 4 KB +11% msg/s, 4,000 → 16,000 +9% (bench/ROUNDS.md, "Fourteenth round"). The WAL file grows to
 * about 64 MB, whatever the page size.
 */
export const WAL_CHECKPOINT_BYTES = 16_000 * 4096;

/** walCheckpointPages - WAL_CHECKPOINT_BYTES in pages of this size (SQLite's wal_autocheckpoint counts pages). */
function walCheckpointPages(pageSize: number): number {
  return Math.ceil(WAL_CHECKPOINT_BYTES / pageSize);
}

/**
 * A new queue's page size. A 100 KB body in its row is 7 overflow pages, not 25: SQLite writes each page
 * to the WAL in two calls (frame header, page) and copies it again at a checkpoint, so the store alone
 * (bench/store.ts, 100 KB) spent 14% less CPU per message, and no more with 4 KB messages
 * (bench/ROUNDS.md, "Twenty-sixth round").
 */
export const QUEUE_PAGE_SIZE = 16_384;

/**
 * SQLite's page cache, in KiB (better-sqlite3 sets 16 MB). With 16 KB pages the larger cache held
 * more of the bodies' freed pages, for more resident memory and no less CPU.
 */
const PAGE_CACHE_KIB = 4096;

/** Accepted messages in a batch and arriving during it, from different senders, that make batches worth spacing. */
const SEVERAL_SENDERS = 4;

/**
 * When the next group-commit batch waits for more (group-commit.ts): up to 10 ms after the last one started,
 * while the event loop is busy, once accepted messages show several senders at once. A message that arrives
 * while a batch holding another is in flight comes from a second sender (a lone sender's next message cannot
 * arrive before its last is committed); with two or three, waiting only slows them down, as they are all
 * that would fill the batch (two senders with a connection per message: 15% fewer msg/s when the batch
 * waited for any second sender). So it waits once the batch and what arrived during it hold four messages.
 * Twenty senders with a connection per message: +27% msg/s (bench/ROUNDS.md, "Sixteenth round").
 */
export const COMMIT_SPACING: BatchSpacing<WriteItem> = {
  ms: 10,
  concurrent: (batch, arrived) => {
    const committed = batch.filter(isCommit).length;
    const arriving = arrived.filter(isCommit).length;
    return committed > 0 && arriving > 0 && committed + arriving >= SEVERAL_SENDERS;
  },
};

function isCommit(item: WriteItem): boolean {
  return item.kind === 'commit';
}

/** A body file is read in chunks of this size (fs streams default to 64 KB: four times the trips to the thread pool). */
const READ_CHUNK = 256 * 1024;

class SqliteQueueStore implements QueueStore {
  readonly #drafts = new OpenDrafts();
  #closed = false;
  /** Accepted messages and recorded attempts, in one queue: a batch of both is one transaction and one WAL fsync. */
  readonly #writes: GroupCommit<WriteItem, SqliteRecordVerdict | undefined>;
  readonly #deliveries: DeliveryFunctions;
  readonly #operator: OperatorFunctions;
  readonly #inspect: InspectFunctions;
  readonly #stsPolicies: StsPolicyFunctions;
  /** The body of a message that may be read (committed and not done): in the row, or NULL for a file. */
  readonly #keptBody: Database.Statement<[string], { body: Buffer | null }>;
  readonly #recentBodies = new RecentBodies(RECENT_BODIES_LIMIT);
  /** The database, its WAL and messages/ share one directory, so one file system. */
  readonly #freeSpace: () => Promise<number | undefined>;
  constructor(
    private readonly db: Database.Database,
    private readonly wal: WalSync,
    private readonly messagesDir: string,
    private readonly messagesDirHandle: FileHandle,
    private readonly logger: Logger,
    /** The database's page size, fixed once it exists. */
    private readonly pageSize: number,
  ) {
    const insertMessage = prepareCommit(db, messagesDir);
    const deliveries = prepareDeliveries(db);
    this.#deliveries = deliveries;
    const writeAll = batchTransaction(db, (item: WriteItem) => (item.kind === 'commit' ? insertMessage(item.row) : deliveries.recordAttempt(item)));
    // A message whose body is a file may be inserted only once the file's name is durable.
    const needsDirectorySync = (item: WriteItem) => item.kind === 'commit' && 'file' in item.row.body;
    this.#writes = createGroupCommit<WriteItem, SqliteRecordVerdict | undefined>(async (items) => {
      let syncFailed: Error | undefined;
      try {
        // One fsync of messages/ for the batch (none when every body is in its row).
        if (items.some(needsDirectorySync)) await this.messagesDirHandle.sync();
      } catch (error) {
        syncFailed = Object.assign(error instanceof Error ? error : new Error(String(error)), { phase: 'sync' });
      }
      if (this.#closed) return items.map(() => new Error('queue store is closed'));
      // A failed fsync fails the messages that needed it; the batch's other items go in.
      const written = syncFailed ? items.filter((item) => !needsDirectorySync(item)) : items;
      const results = written.length > 0 ? await this.#durable(writeAll(written)) : [];
      let next = 0;
      return items.map((item) => (syncFailed && needsDirectorySync(item) ? syncFailed : results[next++]!));
    }, COMMIT_SPACING);
    this.#operator = prepareOperator(db);
    this.#inspect = prepareInspect(db);
    this.#stsPolicies = prepareStsPolicies(db);
    this.#keptBody = db.prepare(`SELECT body FROM messages WHERE ${KEPT}`);
    this.#freeSpace = createFreeSpaceReader(messagesDir, { reserved: () => this.#selfGrowth() });
  }

  freeSpace(): Promise<number | undefined> {
    return this.#freeSpace();
  }

  /**
   * selfGrowth - the disk the store will take by itself, which is not free for mail: the WAL growing to its
   * checkpoint size, and the database file growing at the next checkpoint by the pages only the WAL holds
   * yet. When it cannot be read, the most it can be.
   */
  async #selfGrowth(): Promise<number> {
    const pageSize = this.pageSize;
    // The WAL's header, then a 24-byte header per page (SQLite's file format).
    const walLimit = 32 + walCheckpointPages(pageSize) * (pageSize + 24);
    try {
      const [walSize, fileSize] = await Promise.all([this.wal.size(), stat(this.db.name).then((s) => s.size)]);
      const pages = Number(this.db.pragma('page_count', { simple: true }));
      return Math.max(0, walLimit - walSize) + Math.max(0, pages * pageSize - fileSize);
    } catch {
      return walLimit + walCheckpointPages(pageSize) * pageSize;
    }
  }

  beginMessage(): MessageDraft {
    if (this.#closed) throw new Error('queue store is closed');
    const id = newQueueId();
    const bodyFile = new SqliteBodyFile(id, {
      bodyPath: join(this.messagesDir, id),
      logger: this.logger,
      commitMessage: async (row) => {
        await this.#writes.add({ kind: 'commit', row });
        if (row.wholeBody) this.#recentBodies.add(row.id, row.wholeBody);
      },
    });
    return this.#drafts.begin(id, bodyFile);
  }

  listMessages(options: { includeDone?: boolean } = {}): Promise<QueuedMessageSummary[]> {
    return this.#run(() => this.#inspect.listMessages(options));
  }

  showMessage(id: string): Promise<MessageDetails | undefined> {
    return this.#run(() => this.#inspect.showMessage(id));
  }

  stats(): Promise<QueueStats> {
    return this.#run(() => this.#inspect.stats());
  }

  countDone(): Promise<number> {
    return this.#run(() => this.#inspect.countDone());
  }

  async claimDue(options: ClaimOptions): Promise<ClaimedDelivery[]> {
    const claimed = await this.#run(() => this.#deliveries.claimDue(options));
    for (const delivery of claimed) this.#recentBodies.leased(delivery.deliveryId, delivery.messageId, options.leaseMs);
    return claimed;
  }

  async claimMessages(ids: readonly string[], options: MessageClaimOptions): Promise<ClaimedDelivery[]> {
    const claimed = await this.#run(() => this.#deliveries.claimMessages(ids, options));
    for (const delivery of claimed) this.#recentBodies.leased(delivery.deliveryId, delivery.messageId, options.leaseMs);
    return claimed;
  }

  async recordAttempt(claim: LeaseClaim, result: AttemptResult): Promise<boolean> {
    if (this.#closed) throw new Error('queue store is closed');
    let verdict: SqliteRecordVerdict;
    try {
      verdict = (await this.#writes.add({ kind: 'record', claim, result })) as SqliteRecordVerdict;
    } finally {
      this.#recentBodies.leaseEnded(claim.deliveryId);
    }
    if (!verdict.recorded) return false;
    if (verdict.doneMessageId !== undefined) {
      this.#recentBodies.delete(verdict.doneMessageId);
      if (verdict.bodyInFile) await this.#removeBodies([verdict.doneMessageId]);
    }
    return true;
  }

  async releaseLease(claim: LeaseClaim): Promise<void> {
    try {
      await this.#run(() => this.#deliveries.releaseLease(claim));
    } finally {
      this.#recentBodies.leaseEnded(claim.deliveryId);
    }
  }

  renewLease(claim: LeaseClaim, until: Date): Promise<boolean> {
    return this.#run(() => this.#deliveries.renewLease(claim, until));
  }

  leaseHolders(now: Date): Promise<string[]> {
    return this.#run(() => this.#deliveries.leaseHolders(now));
  }

  releaseLeasesOf(owners: readonly string[]): Promise<number> {
    return this.#run(() => this.#deliveries.releaseLeasesOf(owners));
  }

  nextDueAt(): Promise<Date | undefined> {
    return this.#run(() => this.#deliveries.nextDueAt());
  }

  // Not waited on for durability: a suspension lost in a crash only has those deliveries tried sooner.
  suspendDestination(domain: string, options: SuspendOptions): Promise<number> {
    return inBatches((limit) => this.#run(() => this.#deliveries.suspendDestination(domain, options, limit)));
  }

  holdMessages(selector: MessageSelector): Promise<string[]> {
    return this.#run(() => this.#operator.holdMessages(selector)).then((ids) => this.#durable(ids));
  }

  releaseMessages(selector: MessageSelector): Promise<string[]> {
    return this.#run(() => this.#operator.releaseMessages(selector)).then((ids) => this.#durable(ids));
  }

  retryMessages(selector: MessageSelector, now: Date): Promise<string[]> {
    return this.#run(() => this.#operator.retryMessages(selector, now)).then((ids) => this.#durable(ids));
  }

  async deleteMessages(selector: MessageSelector): Promise<string[]> {
    const removed = await this.#durable(await this.#run(() => this.#operator.deleteMessages(selector)));
    for (const id of removed) this.#recentBodies.delete(id);
    await this.#removeBodies(removed);
    return removed;
  }

  purgeDone(doneBefore: Date, limit: number): Promise<number> {
    return this.#run(() => this.#operator.purgeDone(doneBefore, limit)).then((count) => this.#durable(count));
  }

  keptStsPolicies(now: Date, limit: number, domain?: string): Promise<KeptStsPolicy[]> {
    return this.#run(() => this.#stsPolicies.keptStsPolicies(now, limit, domain));
  }

  keepStsPolicy(domain: string, kept: { policy: string; until: Date } | undefined, options: { now: Date; limit: number }): Promise<void> {
    return this.#run(() => this.#stsPolicies.keepStsPolicy(domain, kept, options)).then(() => this.#durable(undefined));
  }

  readBody(id: string): Readable {
    // The id becomes a path: check its shape first (no '/', no '..').
    if (this.#closed) return failedStream(new Error('queue store is closed'));
    if (!isQueueId(id)) return failedStream(new Error(`not a queue id: ${JSON.stringify(id)}`));
    const recent = this.#recentBodies.get(id);
    if (recent) return Readable.from(recent);
    // A draft's file exists before its row does, and a done message's body is gone.
    const kept = this.#keptBody.get(id);
    if (!kept) return failedStream(new Error(`no such message in the queue (unknown, or done): ${id}`));
    return kept.body ? Readable.from([kept.body]) : createReadStream(join(this.messagesDir, id), { highWaterMark: READ_CHUNK });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Discard waits for a commit in flight, which still needs the database; so does a batch being made durable.
    await this.#drafts.discardAll();
    await this.#writes.idle();
    this.db.close();
    await this.wal.close();
    await this.messagesDirHandle.close();
  }

  /** durable - `result` of a write just committed, once the WAL holding it is on disk; rejects if the fsync fails. */
  async #durable<T>(result: T): Promise<T> {
    await this.wal.sync();
    return result;
  }

  /** run - one synchronous database call as a promise: rejects after close or when the call throws. */
  #run<T>(call: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new Error('queue store is closed'));
    try {
      return Promise.resolve(call());
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  /** removeBodies - delete the body files of messages whose rows are done or gone; a failure is left to the sweep. */
  async #removeBodies(ids: string[]): Promise<void> {
    // Ids came from our own rows, but they become paths: check them anyway.
    const paths = ids.filter(isQueueId);
    const results = await Promise.allSettled(paths.map((id) => removeFile(join(this.messagesDir, id))));
    results.forEach((result, i) => {
      if (result.status === 'rejected') this.logger.warn({ queueId: paths[i], err: result.reason as unknown }, 'body file not removed; the next sweep removes it');
    });
  }
}

/** sweepOrphanBodies - remove body files no kept message names (a crash before commit, or after done/delete); returns how many. */
async function sweepOrphanBodies(db: Database.Database, messagesDir: string, logger: Logger): Promise<number> {
  const names = await readdir(messagesDir);
  const stray = names.filter((name) => !isQueueId(name));
  if (stray.length > 0) logger.warn({ dir: messagesDir, files: stray }, 'files in the queue directory that are not queue ids; left alone');
  const exists = db.prepare<[string], { id: string }>(BODY_KEPT);
  const candidates = names.filter((name) => isQueueId(name) && !exists.get(name));
  if (candidates.length === 0) return 0;
  // Re-check and unlink under the write lock, so a commit in another process
  // (which checks its body under the same lock) cannot slip in between.
  // Synchronous unlinks: only at start-up, and only for files no kept message names.
  const remove = db.transaction(() => {
    let removed = 0;
    for (const id of candidates) {
      if (exists.get(id)) continue;
      rmSync(join(messagesDir, id), { force: true });
      removed++;
    }
    return removed;
  });
  return remove.immediate();
}

/** failedStream - a Readable that errors at once (readBody's answer for an id it cannot serve). */
function failedStream(error: Error): Readable {
  const stream = new Readable({ read() {} });
  stream.destroy(error);
  return stream;
}
