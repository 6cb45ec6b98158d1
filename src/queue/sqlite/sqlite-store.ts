// The SQLite queue store: envelopes as rows in one SQLite file, bodies as
// files beside it (<dir of the db>/messages/<queue id>, mode 0600).
//
// Decides where a message lives and the order in which it becomes durable:
// body fsynced, directory fsynced, then message and recipient rows inserted
// in one transaction (see sqlite-draft.ts). A crash can therefore leave a
// body without a row, which the next open sweeps away, but never a row
// without its body. The database runs in WAL mode with synchronous=FULL, so
// a COMMIT that returned is on disk.
//
// How it fails: openSqliteStore rejects if the database cannot be opened or
// its schema is newer than this code (nothing is changed then); listMessages
// rejects on a database error; readBody returns a stream that errors for an
// id that is malformed, unknown or not yet committed; after close every call
// fails. Draft failures are described in sqlite-draft.ts.
//
//   openSqliteStore - open (create, migrate, sweep orphan bodies) the queue store at a path.
import Database from 'better-sqlite3';
import { statSync, rmSync, createReadStream } from 'node:fs';
import { mkdir, open, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger, type Logger } from '../../observability/logger.ts';
import { isQueueId, newQueueId } from '../queue-id.ts';
import type { MessageDraft, MessageState, QueuedMessageSummary, QueueStore, StoredEnvelope } from '../queue-store.ts';
import { SqliteDraft, syncDirectory } from './sqlite-draft.ts';
import { MIGRATIONS, migrateSchema, readSchemaVersion } from './sqlite-schema.ts';

export interface SqliteStoreOptions {
  /** The database file, e.g. data/queue.db; bodies go to messages/ in the same directory. */
  path: string;
  logger?: Logger;
  /**
   * Remove body files no row names (default true). A second process opening
   * the queue while a server receives would take the server's drafts for
   * orphans (its commit then fails safely, the client hears 4xx): read-only
   * commands such as `postern queue list` should pass false.
   */
  removeOrphans?: boolean;
}

/** openSqliteStore - open (create, migrate, sweep orphan bodies) the queue store at a path. */
export async function openSqliteStore(options: SqliteStoreOptions): Promise<QueueStore> {
  const logger = options.logger ?? silentLogger();
  const file = resolve(options.path);
  const messagesDir = join(dirname(file), 'messages');
  await mkdir(messagesDir, { recursive: true, mode: 0o700 });
  await syncDirectory(dirname(file));
  // Create the file 0600 before SQLite does (it would use 0644): it holds
  // addresses. SQLite gives its -wal and -shm files the database's mode.
  await (await open(file, 'a', 0o600)).close();

  const db = new Database(file);
  try {
    readSchemaVersion(db, file); // refuse a newer database before any pragma writes to it
    db.pragma('busy_timeout = 5000');
    const journal = String(db.pragma('journal_mode = WAL', { simple: true }));
    if (journal !== 'wal') logger.warn({ path: file, journal }, 'queue database is not in WAL mode');
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    const from = migrateSchema(db, file);
    if (from !== MIGRATIONS.length) {
      logger.info({ path: file, from, to: MIGRATIONS.length, steps: MIGRATIONS.slice(from).map((m) => m.name) }, 'queue schema migrated');
    }
    const removed = options.removeOrphans === false ? 0 : await sweepOrphanBodies(db, messagesDir, logger);
    logger.info({ path: file, schemaVersion: MIGRATIONS.length, orphansRemoved: removed }, 'queue store opened');
  } catch (error) {
    db.close();
    throw error;
  }
  return new SqliteQueueStore(db, messagesDir, logger);
}

interface MessageRow {
  id: string;
  mail_from: string;
  size: number;
  received_at: number;
  state: MessageState;
}

class SqliteQueueStore implements QueueStore {
  readonly #drafts = new Set<SqliteDraft>();
  #closed = false;
  readonly #insertMessage: (row: { id: string; envelope: StoredEnvelope; size: number; ino: number }) => void;
  readonly #selectMessages: Database.Statement<[], MessageRow>;
  readonly #selectRecipients: Database.Statement<[], { message_id: string; address: string }>;
  readonly #messageExists: Database.Statement<[string], { id: string }>;

  constructor(
    private readonly db: Database.Database,
    private readonly messagesDir: string,
    private readonly logger: Logger,
  ) {
    this.#selectMessages = db.prepare('SELECT id, mail_from, size, received_at, state FROM messages ORDER BY received_at, rowid');
    this.#selectRecipients = db.prepare('SELECT message_id, address FROM recipients ORDER BY message_id, position');
    this.#messageExists = db.prepare('SELECT id FROM messages WHERE id = ?');
    this.#insertMessage = prepareInsert(db, messagesDir);
  }

  beginMessage(): MessageDraft {
    if (this.#closed) throw new Error('queue store is closed');
    const id = newQueueId();
    const draft = new SqliteDraft(id, {
      bodyPath: join(this.messagesDir, id),
      messagesDir: this.messagesDir,
      logger: this.logger.child({ queueId: id }),
      insertMessage: this.#insertMessage,
      release: (done) => this.#drafts.delete(done),
    });
    this.#drafts.add(draft);
    return draft;
  }

  listMessages(): Promise<QueuedMessageSummary[]> {
    if (this.#closed) return Promise.reject(new Error('queue store is closed'));
    try {
      // One read transaction: both queries see the same snapshot.
      const [rows, recipients] = this.db.transaction(() => [this.#selectMessages.all(), this.#selectRecipients.all()] as const)();
      const byMessage = new Map<string, string[]>();
      for (const r of recipients) {
        const list = byMessage.get(r.message_id);
        if (list) list.push(r.address);
        else byMessage.set(r.message_id, [r.address]);
      }
      return Promise.resolve(
        rows.map((row) => ({
          id: row.id,
          mailFrom: row.mail_from,
          recipients: byMessage.get(row.id) ?? [],
          size: row.size,
          receivedAt: new Date(row.received_at),
          state: row.state,
        })),
      );
    } catch (error) {
      return Promise.reject(error instanceof Error ? error : new Error(String(error)));
    }
  }

  readBody(id: string): Readable {
    // The id becomes a path: check its shape first (no '/', no '..').
    if (this.#closed) return failedStream(new Error('queue store is closed'));
    if (!isQueueId(id)) return failedStream(new Error(`not a queue id: ${JSON.stringify(id)}`));
    // A draft's file exists before its row does: only committed messages are readable.
    if (!this.#messageExists.get(id)) return failedStream(new Error(`no such message in the queue: ${id}`));
    return createReadStream(join(this.messagesDir, id));
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // Discard waits for a commit in flight, which still needs the database.
    await Promise.all([...this.#drafts].map((draft) => draft.discard()));
    this.db.close();
  }
}

/** prepareInsert - the commit transaction: body check, message row, recipient rows. */
function prepareInsert(db: Database.Database, messagesDir: string) {
  const insertMessage = db.prepare(`
    INSERT INTO messages (id, mail_from, body_type, smtp_utf8, client_address, client_helo, client_listener,
                          auth_user, tls_version, tls_cipher, size, received_at, state)
    VALUES (@id, @mailFrom, @bodyType, @smtpUtf8, @address, @helo, @listener,
            @authUser, @tlsVersion, @tlsCipher, @size, @receivedAt, 'queued')`);
  const insertRecipient = db.prepare('INSERT INTO recipients (message_id, position, address, domain) VALUES (?, ?, ?, ?)');
  const insert = db.transaction((row: { id: string; envelope: StoredEnvelope; size: number; ino: number }) => {
    // Under the write lock, the body must still be the file this draft wrote:
    // another process's sweep (a `postern queue` command opening the store)
    // may have taken it for an orphan. The sweep checks for the row under the
    // same lock, so exactly one of the two wins. Synchronous on purpose: an
    // await here would let other statements into the transaction.
    const ino = statSync(join(messagesDir, row.id), { throwIfNoEntry: false })?.ino;
    if (ino !== row.ino) throw new Error(`draft ${row.id}: body file vanished before commit`);
    const { envelope } = row;
    insertMessage.run({
      id: row.id,
      mailFrom: envelope.mailFrom,
      bodyType: envelope.bodyType,
      smtpUtf8: envelope.smtpUtf8 ? 1 : 0,
      address: envelope.client.address,
      helo: envelope.client.helo,
      listener: envelope.client.listener,
      authUser: envelope.client.authUser ?? null,
      tlsVersion: envelope.client.tlsVersion ?? null,
      tlsCipher: envelope.client.tlsCipher ?? null,
      size: row.size,
      receivedAt: Date.now(),
    });
    envelope.recipients.forEach((address, position) => insertRecipient.run(row.id, position, address, domainOf(address)));
  });
  // IMMEDIATE: hold the write lock from the body check to the COMMIT.
  return (row: { id: string; envelope: StoredEnvelope; size: number; ino: number }): void => insert.immediate(row);
}

/** domainOf - the lowercased domain of an address ('' for a bare <postmaster>). */
function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/** sweepOrphanBodies - remove body files no row names (left by a crash before commit); returns how many. */
async function sweepOrphanBodies(db: Database.Database, messagesDir: string, logger: Logger): Promise<number> {
  const names = await readdir(messagesDir);
  const stray = names.filter((name) => !isQueueId(name));
  if (stray.length > 0) logger.warn({ dir: messagesDir, files: stray }, 'files in the queue directory that are not queue ids; left alone');
  const exists = db.prepare<[string], { id: string }>('SELECT id FROM messages WHERE id = ?');
  const candidates = names.filter((name) => isQueueId(name) && !exists.get(name));
  if (candidates.length === 0) return 0;
  // Re-check and unlink under the write lock, so a commit in another process
  // (which checks its body under the same lock) cannot slip in between.
  // Synchronous unlinks: only at start-up, and only for files with no row.
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
