// SQLite queue schema: an ordered list of migrations; PRAGMA user_version
// counts how many of them a database has had. Adding a table (deliveries,
// leases, attempts) is adding one entry at the end of MIGRATIONS; an entry is
// never edited once released, because databases in the field already ran it.
//
// How it fails: readSchemaVersion/migrateSchema throw on a database written
// by a newer Postern (its user_version is past the end of the list), before
// changing anything; a migration that fails rolls back whole, leaving the
// database at the version it had.
//
//   readSchemaVersion - the database's user_version, refused if newer than this code.
//   migrateSchema     - apply the missing migrations in one transaction.
import type Database from 'better-sqlite3';

export interface Migration {
  /** What the step does, for the log line. */
  name: string;
  sql: string;
}

export const MIGRATIONS: readonly Migration[] = [
  {
    name: 'messages and recipients',
    // Times are milliseconds since the epoch (INTEGER): exact, sortable, and
    // what Date takes back. Recipients keep their RCPT order (position) and
    // the lowercased domain, which later deliveries group by (one per next hop).
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
        state           TEXT NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'held'))
      ) STRICT;
      CREATE INDEX messages_by_received_at ON messages (received_at);
      CREATE TABLE recipients (
        message_id TEXT NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        position   INTEGER NOT NULL,
        address    TEXT NOT NULL,
        domain     TEXT NOT NULL,
        PRIMARY KEY (message_id, position)
      ) STRICT;
      CREATE INDEX recipients_by_domain ON recipients (domain);
    `,
  },
];

/** readSchemaVersion - the database's user_version; throws if it is newer than MIGRATIONS knows. */
export function readSchemaVersion(db: Database.Database, file: string): number {
  const version = Number(db.pragma('user_version', { simple: true }));
  if (version > MIGRATIONS.length) {
    throw new Error(
      `queue database ${file} has schema version ${version}, newer than this Postern knows (${MIGRATIONS.length}): ` +
        'it was written by a newer Postern; run that version, or point queue.path at another database',
    );
  }
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
