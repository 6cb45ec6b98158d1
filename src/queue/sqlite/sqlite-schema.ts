// SQLite queue schema: an ordered list of migrations; PRAGMA user_version
// counts how many of them a database has had. A later change is one entry
// added at the end of MIGRATIONS; an entry is never edited once released,
// because databases in the field already ran it.
//
// How it fails: readSchemaVersion/migrateSchema throw on a database written
// by a newer Postern (its user_version is past the end of the list:
// migrations.ts), before changing anything; a migration that fails rolls back whole, leaving the
// database at the version it had.
//
// A message's deliveries are looked up by message_id, which leads the index
// of UNIQUE (message_id, domain): one row per destination. A statement that
// also asks for `finished = 0` writes it `+finished = 0`. The unary plus
// keeps SQLite from taking deliveries_due (finished, next_attempt_at)
// for it instead, as it did without statistics (a queue is never ANALYZEd):
// a walk over every pending delivery in the queue for each message. With
// 20,000 deliveries deferred, the store spent 2.1-2.8 ms of CPU per message
// delivered instead of 0.25-0.34 (bench/ROUNDS.md, "Twenty-seventh
// round"). test/integration/sqlite-store.test.ts checks every plan.
//
//   readSchemaVersion - the database's user_version, refused if newer than this code.
//   migrateSchema     - apply the missing migrations in one transaction.
import type Database from 'better-sqlite3';
import { refuseNewerSchema, type Migration } from '../migrations.ts';

export const MIGRATIONS: readonly Migration[] = [
  {
    name: 'messages, deliveries, recipients and attempts',
    // Times are milliseconds since the epoch (INTEGER): exact, sortable, and
    // what Date takes back.
    //
    // messages.state is what the operator and the end of delivery decide
    // (queued, held, done); 'deferred' is not stored but derived for
    // listings: a queued message with a recipient in state 'deferred'.
    //
    // A delivery is one next hop of one message: its recipients of one
    // lowercased domain, created with the message (so a committed message is
    // at once claimable) and due at received_at. Its lease (owner, until)
    // is the claim of one worker; finished = no recipient left pending.
    // AUTOINCREMENT: a delivery id is never reused after a delete, so a
    // worker's stale claim can never name a newer delivery.
    //
    // Recipients keep their RCPT order (position), their own state and the
    // last reply; attempts are the history `queue show` prints, one row per
    // host tried. Attempt columns are not CHECKed beyond the outcome: a row
    // refused after the next hop said 250 would mean delivering twice.
    sql: `
      CREATE TABLE messages (
        id              TEXT PRIMARY KEY,
        mail_from       TEXT NOT NULL,
        body_type       TEXT NOT NULL CHECK (body_type IN ('7BIT', '8BITMIME')),
        smtp_utf8       INTEGER NOT NULL CHECK (smtp_utf8 IN (0, 1)),
        client_address  TEXT NOT NULL,
        client_helo     TEXT NOT NULL,
        client_listener TEXT NOT NULL CHECK (client_listener IN ('relay', 'submission', 'submissions')),
        auth_user       TEXT,
        tls_version     TEXT,
        tls_cipher      TEXT,
        size            INTEGER NOT NULL CHECK (size >= 0),
        received_at     INTEGER NOT NULL,
        require_tls     INTEGER NOT NULL DEFAULT 0 CHECK (require_tls IN (0, 1)),
        dsn_ret         TEXT CHECK (dsn_ret IN ('FULL', 'HDRS')),
        dsn_envid       TEXT,
        state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'held', 'done')),
        done_at         INTEGER,
        CHECK ((state = 'done') = (done_at IS NOT NULL))
      ) STRICT;
      CREATE INDEX messages_by_received_at ON messages (received_at);
      CREATE TABLE deliveries (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id      TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        domain          TEXT NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_attempt_at INTEGER NOT NULL,
        lease_owner     TEXT,
        lease_until     INTEGER,
        finished        INTEGER NOT NULL DEFAULT 0 CHECK (finished IN (0, 1)),
        UNIQUE (message_id, domain),
        CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
      ) STRICT;
      CREATE INDEX deliveries_due ON deliveries (finished, next_attempt_at);
      CREATE TABLE recipients (
        message_id  TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        position    INTEGER NOT NULL,
        address     TEXT NOT NULL,
        domain      TEXT NOT NULL,
        delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        state       TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'deferred', 'delivered', 'bounced')),
        reply       TEXT,
        updated_at  INTEGER,
        dsn_notify  TEXT,
        dsn_orcpt   TEXT,
        PRIMARY KEY (message_id, position)
      ) STRICT;
      CREATE INDEX recipients_by_delivery ON recipients (delivery_id, position);
      CREATE TABLE attempts (
        id               INTEGER PRIMARY KEY,
        delivery_id      INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        message_id       TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        started_at       INTEGER NOT NULL,
        ended_at         INTEGER NOT NULL,
        host             TEXT,
        ip               TEXT,
        port             INTEGER,
        tls_version      TEXT,
        tls_cipher       TEXT,
        tls_verified     INTEGER CHECK (tls_verified IN (0, 1)),
        tls_verify_error TEXT,
        policy_level     TEXT NOT NULL,
        policy_source    TEXT NOT NULL,
        reply            TEXT NOT NULL,
        outcome          TEXT NOT NULL CHECK (outcome IN ('delivered', 'deferred', 'bounced', 'partial'))
      ) STRICT;
      CREATE INDEX attempts_by_message ON attempts (message_id, started_at);
      CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
    `,
  },
  {
    name: 'small bodies in the message row',
    // A body up to sqlite-draft.ts's INLINE_BODY_LIMIT lives here (NULL: in
    // messages/<id>). Set to NULL when the message is done, as a file is removed.
    sql: 'ALTER TABLE messages ADD COLUMN body BLOB;',
  },
  {
    name: 'done messages by when they became done',
    // For the retention sweep (purgeDone): only done messages are in it, so
    // a long queue of deferred ones costs the sweep nothing.
    sql: "CREATE INDEX messages_done ON messages (done_at) WHERE state = 'done';",
  },
  {
    name: 'MTA-STS policies kept between restarts',
    // RFC 8461 §5.1: a policy is kept for its max_age, and a relay that
    // restarted must not forget an enforced one (DNS and the policy's web
    // server are what an attacker would block). `policy` is outbound's JSON.
    sql: `
      CREATE TABLE mta_sts_policies (
        domain TEXT PRIMARY KEY,
        policy TEXT NOT NULL,
        until  INTEGER NOT NULL
      ) STRICT;
      CREATE INDEX mta_sts_policies_by_until ON mta_sts_policies (until);
    `,
  },
  {
    name: 'messages not done, by arrival',
    // For the depth /metrics reads at every scrape, and `queue list` (the
    // CLI's and the HTTP API's): a pass over the messages not done, not
    // over the done ones kept for `queue show` (queue.keepDone). With
    // 500,000 done messages the depth took 37 ms of the event loop; with
    // this index, 0.1 ms.
    sql: "CREATE INDEX messages_not_done ON messages (received_at) WHERE state <> 'done';",
  },
];

/** readSchemaVersion - the database's user_version; throws if it is newer than MIGRATIONS knows. */
export function readSchemaVersion(db: Database.Database, file: string): number {
  const version = Number(db.pragma('user_version', { simple: true }));
  refuseNewerSchema(version, MIGRATIONS, file, 'point queue.path at another database');
  return version;
}

/** migrateSchema - bring the database to the newest version; returns the version it had. */
export function migrateSchema(db: Database.Database, file: string): number {
  // IMMEDIATE: take the write lock before reading the version, so two
  // processes opening a new database at once cannot both run a migration.
  const migrate = db.transaction(() => {
    const from = readSchemaVersion(db, file);
    for (const migration of MIGRATIONS.slice(from)) db.exec(migration.sql);
    // user_version lives in the database header: it commits or rolls back with the tables.
    db.pragma(`user_version = ${MIGRATIONS.length}`);
    return from;
  });
  return migrate.immediate();
}
