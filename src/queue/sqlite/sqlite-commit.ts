// The commit of one message in the SQLite store: a draft's envelope (and a
// small body) becomes one message row, one delivery per recipient domain and
// one recipient row per RCPT, all or nothing (the store's batch transaction
// gives each item a savepoint when one fails), under the write lock.
//
// Decides how recipients group into deliveries: by their domain column
// (stored-columns.ts: the lowercased domain, '' for a bare <postmaster>),
// deliveries numbered in the order their domain first appears, each due at
// once (received_at).
//
// How it fails: the insert throws, and what it wrote is rolled back, if a
// body file is no longer the one the draft wrote (another opener's sweep
// took it), or on any database error.
//
//   prepareCommit - the insert of one message, run by the store's group commit (sqlite-store.ts) inside its batch transaction.
import type Database from 'better-sqlite3';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import type { StoredEnvelope } from '../queue-store.ts';
import type { StoredBody } from './sqlite-draft.ts';
import { messageColumns, recipientColumns } from '../stored-columns.ts';
import { sqliteValues } from './sqlite-values.ts';

export interface CommitRow {
  id: string;
  envelope: StoredEnvelope;
  size: number;
  body: StoredBody;
}

/** prepareCommit - one message's insert: body check, message row, deliveries, recipient rows (throws to refuse it). */
export function prepareCommit(db: Database.Database, messagesDir: string): (row: CommitRow) => undefined {
  const insertMessage = db.prepare(`
    INSERT INTO messages (id, mail_from, body_type, smtp_utf8, client_address, client_helo, client_listener,
                          auth_user, tls_version, tls_cipher, size, received_at, require_tls, dsn_ret, dsn_envid, state, body)
    VALUES (@id, @mailFrom, @bodyType, @smtpUtf8, @clientAddress, @clientHelo, @clientListener,
            @authUser, @tlsVersion, @tlsCipher, @size, @receivedAt, @requireTls, @dsnRet, @dsnEnvid, 'queued', @body)`);
  const insertDelivery = db.prepare<[string, string, number]>(
    'INSERT INTO deliveries (message_id, domain, attempts, next_attempt_at, finished) VALUES (?, ?, 0, ?, 0)',
  );
  const insertRecipient = db.prepare(`
    INSERT INTO recipients (message_id, position, address, domain, delivery_id, state, dsn_notify, dsn_orcpt)
    VALUES (@messageId, @position, @address, @domain, @deliveryId, 'queued', @dsnNotify, @dsnOrcpt)`);

  const insert = (row: CommitRow): undefined => {
    // Under the write lock, a body file must still be there: another
    // process's sweep (a `postern queue` command opening the store) may have
    // taken it for an orphan. The sweep checks for the row under the same
    // lock, so exactly one of the two wins. A file by this name is this
    // draft's: a queue id names one message, and the draft created the file
    // with O_EXCL. Synchronous on purpose: an await here would let other
    // statements into the transaction. (A read only, so batchTransaction may
    // run it twice.)
    const { envelope, body } = row;
    if ('file' in body && !existsSync(join(messagesDir, row.id))) {
      throw new Error(`draft ${row.id}: body file vanished before commit`);
    }
    const receivedAt = Date.now();
    const inline = 'inline' in body ? body.inline : null;
    insertMessage.run({ id: row.id, ...sqliteValues(messageColumns(envelope)), size: row.size, receivedAt, body: inline });
    const deliveryOf = new Map<string, number | bigint>();
    recipientColumns(envelope).forEach((recipient, position) => {
      let deliveryId = deliveryOf.get(recipient.domain);
      if (deliveryId === undefined) {
        deliveryId = insertDelivery.run(row.id, recipient.domain, receivedAt).lastInsertRowid;
        deliveryOf.set(recipient.domain, deliveryId);
      }
      insertRecipient.run({ messageId: row.id, position, deliveryId, ...recipient });
    });
  };
  return insert;
}
