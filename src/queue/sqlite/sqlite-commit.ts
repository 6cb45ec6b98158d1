// The commit transaction of the SQLite store: a draft's envelope becomes one
// message row, one delivery per recipient domain and one recipient row per
// RCPT, all or nothing, under the write lock.
//
// Decides how recipients group into deliveries: by the lowercased domain of
// the address (a bare <postmaster> has domain ''), deliveries numbered in the
// order their domain first appears, each due at once (received_at).
//
// How it fails: the insert throws, and the transaction rolls back whole, if
// the body file is no longer the one the draft wrote (another opener's sweep
// took it), or on any database error.
//
//   prepareCommit      - the commit function a draft calls (DraftContext.insertMessage).
//   domainOf           - the lowercased domain of an address.
//   decodeRecipientDsn - a recipient's DSN parameters back from the columns commit wrote.
import type Database from 'better-sqlite3';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { RecipientDsn, StoredEnvelope } from '../queue-store.ts';

export interface CommitRow {
  id: string;
  envelope: StoredEnvelope;
  size: number;
  ino: number;
}

/** prepareCommit - the commit transaction: body check, message row, deliveries, recipient rows. */
export function prepareCommit(db: Database.Database, messagesDir: string): (row: CommitRow) => void {
  const insertMessage = db.prepare(`
    INSERT INTO messages (id, mail_from, body_type, smtp_utf8, client_address, client_helo, client_listener,
                          auth_user, tls_version, tls_cipher, size, received_at, require_tls, dsn_ret, dsn_envid, state)
    VALUES (@id, @mailFrom, @bodyType, @smtpUtf8, @address, @helo, @listener,
            @authUser, @tlsVersion, @tlsCipher, @size, @receivedAt, @requireTls, @dsnRet, @dsnEnvid, 'queued')`);
  const insertDelivery = db.prepare<[string, string, number]>(
    'INSERT INTO deliveries (message_id, domain, attempts, next_attempt_at, finished) VALUES (?, ?, 0, ?, 0)',
  );
  const insertRecipient = db.prepare(`
    INSERT INTO recipients (message_id, position, address, domain, delivery_id, state, dsn_notify, dsn_orcpt)
    VALUES (@messageId, @position, @address, @domain, @deliveryId, 'queued', @notify, @orcpt)`);

  const insert = db.transaction((row: CommitRow) => {
    // Under the write lock, the body must still be the file this draft wrote:
    // another process's sweep (a `postern queue` command opening the store)
    // may have taken it for an orphan. The sweep checks for the row under the
    // same lock, so exactly one of the two wins. Synchronous on purpose: an
    // await here would let other statements into the transaction.
    const ino = statSync(join(messagesDir, row.id), { throwIfNoEntry: false })?.ino;
    if (ino !== row.ino) throw new Error(`draft ${row.id}: body file vanished before commit`);
    const { envelope } = row;
    const receivedAt = Date.now();
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
      receivedAt,
      requireTls: envelope.requireTls === true ? 1 : 0,
      dsnRet: envelope.dsn?.ret ?? null,
      dsnEnvid: envelope.dsn?.envid ?? null,
    });
    const deliveryOf = new Map<string, number | bigint>();
    envelope.recipients.forEach((address, position) => {
      const domain = domainOf(address);
      let deliveryId = deliveryOf.get(domain);
      if (deliveryId === undefined) {
        deliveryId = insertDelivery.run(row.id, domain, receivedAt).lastInsertRowid;
        deliveryOf.set(domain, deliveryId);
      }
      const dsn = recipientDsn(envelope, address);
      insertRecipient.run({
        messageId: row.id,
        position,
        address,
        domain,
        deliveryId,
        notify: dsn?.notify ? dsn.notify.join(',') : null,
        orcpt: dsn?.orcpt ?? null,
      });
    });
  });
  // IMMEDIATE: hold the write lock from the body check to the COMMIT.
  return (row: CommitRow): void => insert.immediate(row);
}

/** domainOf - the lowercased domain of an address ('' for a bare <postmaster>). */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/** recipientDsn - the DSN parameters the envelope gives this address, if any. */
function recipientDsn(envelope: StoredEnvelope, address: string): RecipientDsn | undefined {
  const byAddress = envelope.dsn?.recipients;
  // hasOwn: an address is client input, and "__proto__" must not find Object.prototype.
  return byAddress && Object.hasOwn(byAddress, address) ? byAddress[address] : undefined;
}

/** decodeRecipientDsn - a recipient's DSN parameters from dsn_notify (comma list) and dsn_orcpt; undefined if neither. */
export function decodeRecipientDsn(notify: string | null, orcpt: string | null): RecipientDsn | undefined {
  if (notify === null && orcpt === null) return undefined;
  const dsn: RecipientDsn = {};
  // '' is an empty list (stored as given), not one empty keyword.
  if (notify !== null) dsn.notify = (notify === '' ? [] : notify.split(',')) as NonNullable<RecipientDsn['notify']>;
  if (orcpt !== null) dsn.orcpt = orcpt;
  return dsn;
}
