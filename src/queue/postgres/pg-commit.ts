// A PostgreSQL draft's commit: one message row, one delivery per recipient
// domain, one recipient row per RCPT and the body's last chunk row, in one
// statement, so most messages take one round trip from DATA's end to 250.
//
// Decides whether the message goes in: only if every chunk row written
// before (seq 0 to rows - 1) is still there, and none is older than
// DRAFT_MAX_AGE. A row committed without its WAL flush may be gone after a
// database crash, and the orphan sweep takes rows twice that old
// (pg-body.ts); the age is read on the sweep's clock, the database's, so a
// row the sweep may be deleting right now is never counted as there. Either
// way nothing is inserted and the client hears 4xx. The statement waits for its WAL flush
// (synchronous_commit on, for this transaction, whatever the session says),
// which makes every earlier chunk row durable too. The columns are the ones
// both stores write (stored-columns.ts), and recipients group into
// deliveries exactly as in the SQLite store (by their domain column;
// deliveries numbered in the order their domain first appears), each due at
// once (received_at, this node's clock, as `now` is in every claim).
//
// How it fails: rejects on any database error (nothing is inserted), and
// when a chunk row written before is missing or too old.
//
//   insertEnvelope - insert the message, its deliveries, its recipients and its last chunk.
import type pg from 'pg';
import type { StoredEnvelope } from '../queue-store.ts';
import { messageColumns, recipientColumns } from '../stored-columns.ts';
import { DRAFT_MAX_AGE, type WrittenBody } from './pg-body.ts';

export interface EnvelopeRow {
  id: string;
  envelope: StoredEnvelope;
  body: WrittenBody;
}

// The other inserts take the message row from its CTE, so none happens without it. Parameters carry
// their types: several are used in more than one place. $22 is how many chunk rows were written before,
// $23 the last chunk (NULL when there is none), $24 DRAFT_MAX_AGE.
const INSERT_ENVELOPE = `
  WITH message AS (
    INSERT INTO messages (id, mail_from, body_type, smtp_utf8, client_address, client_helo, client_listener, auth_user,
                          tls_version, tls_cipher, size, chunks, received_at, require_tls, dsn_ret, dsn_envid)
    SELECT $1::text, $2::text, $3::text, $4::boolean, $5::text, $6::text, $7::text, $8::text,
           $9::text, $10::text, $11::bigint, $12::integer, $13::timestamptz, $14::boolean, $15::text, $16::text
      FROM (SELECT set_config('synchronous_commit', 'on', true)) AS durable
     WHERE (SELECT count(*) FROM message_chunks WHERE message_id = $1::text) = $22::integer
       AND NOT EXISTS (SELECT 1 FROM message_chunks WHERE message_id = $1::text AND written_at < now() - $24::interval)
    RETURNING id, received_at
  ), last_chunk AS (
    INSERT INTO message_chunks (message_id, seq, data)
    SELECT message.id, $22::integer, $23::bytea FROM message WHERE $23::bytea IS NOT NULL
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

/** insertEnvelope - insert the message, its deliveries, its recipients and its last chunk, durably, in one statement. */
export async function insertEnvelope(pool: pg.Pool, row: EnvelopeRow): Promise<void> {
  const m = messageColumns(row.envelope);
  const recipients = recipientColumns(row.envelope);
  const domains = recipients.map((r) => r.domain);
  const { size, rows, rest } = row.body;
  const result = await pool.query(INSERT_ENVELOPE, [
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
    size,
    rest.length > 0 ? rows + 1 : rows,
    new Date(),
    m.requireTls,
    m.dsnRet,
    m.dsnEnvid,
    [...new Set(domains)],
    recipients.map((r) => r.address),
    domains,
    recipients.map((r) => r.dsnNotify),
    recipients.map((r) => r.dsnOrcpt),
    rows,
    rest.length > 0 ? rest : null,
    DRAFT_MAX_AGE,
  ]);
  // A draft commits only with a recipient, so no row inserted means no message row.
  if (result.rowCount === 0) {
    throw new Error(`message ${row.id}: of the ${rows} chunk row(s) written before its commit, one is gone or more than ${DRAFT_MAX_AGE} old; nothing was inserted`);
  }
}
