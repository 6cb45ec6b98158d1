// The envelope half of a PostgreSQL draft's transaction: one message row,
// one delivery per recipient domain and one recipient row per RCPT, in one
// statement on the draft's client, before its COMMIT.
//
// Decides nothing of its own: the columns are the ones both stores write
// (stored-columns.ts), and recipients group into deliveries exactly as in
// the SQLite store (by their domain column; deliveries numbered in the
// order their domain first appears), each due at once (received_at, this
// node's clock, as `now` is in every claim).
//
// How it fails: rejects on any database error (the caller rolls back).
//
//   insertEnvelope - insert the message, its deliveries and its recipients.
import type pg from 'pg';
import type { StoredEnvelope } from '../queue-store.ts';
import { messageColumns, recipientColumns } from '../stored-columns.ts';

export interface EnvelopeRow {
  id: string;
  envelope: StoredEnvelope;
  size: number;
  chunks: number;
}

// Data-modifying CTEs: the foreign keys are checked at the end of the
// statement, when the message row exists.
const INSERT_ENVELOPE = `
  WITH message AS (
    INSERT INTO messages (id, mail_from, body_type, smtp_utf8, client_address, client_helo, client_listener, auth_user,
                          tls_version, tls_cipher, size, chunks, received_at, require_tls, dsn_ret, dsn_envid)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
    RETURNING id, received_at
  ), delivery AS (
    INSERT INTO deliveries (message_id, domain, next_attempt_at)
    SELECT message.id, t.domain, message.received_at
      FROM message, unnest($17::text[]) WITH ORDINALITY AS t(domain, n)
     ORDER BY t.n
    RETURNING id, domain
  )
  INSERT INTO recipients (message_id, position, address, domain, delivery_id, dsn_notify, dsn_orcpt)
  SELECT $1, t.position - 1, t.address, t.domain, delivery.id, t.notify, t.orcpt
    FROM unnest($18::text[], $19::text[], $20::text[], $21::text[]) WITH ORDINALITY AS t(address, domain, notify, orcpt, position)
    JOIN delivery ON delivery.domain = t.domain`;

/** insertEnvelope - insert the message, its deliveries and its recipients (on the draft's client, inside its transaction). */
export async function insertEnvelope(client: pg.PoolClient, row: EnvelopeRow): Promise<void> {
  const m = messageColumns(row.envelope);
  const recipients = recipientColumns(row.envelope);
  const domains = recipients.map((r) => r.domain);
  await client.query(INSERT_ENVELOPE, [
    row.id,
    m.mailFrom,
    m.bodyType,
    m.smtpUtf8,
    m.clientAddress,
    m.clientHelo,
    m.clientListener,
    m.authUser,
    m.tlsVersion,
    m.tlsCipher,
    row.size,
    row.chunks,
    new Date(),
    m.requireTls,
    m.dsnRet,
    m.dsnEnvid,
    [...new Set(domains)],
    recipients.map((r) => r.address),
    domains,
    recipients.map((r) => r.dsnNotify),
    recipients.map((r) => r.dsnOrcpt),
  ]);
}
