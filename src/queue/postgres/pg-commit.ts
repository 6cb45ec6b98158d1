// The envelope half of a PostgreSQL draft's transaction: one message row,
// one delivery per recipient domain and one recipient row per RCPT, in one
// statement on the draft's client, before its COMMIT.
//
// Decides nothing of its own: recipients group into deliveries exactly as in
// the SQLite store (domainOf: the lowercased domain, '' for a bare
// <postmaster>; deliveries numbered in the order their domain first
// appears), each due at once (received_at, this node's clock, as `now` is
// in every claim).
//
// How it fails: rejects on any database error (the caller rolls back).
//
//   insertEnvelope - insert the message, its deliveries and its recipients.
import type pg from 'pg';
import type { RecipientDsn, StoredEnvelope } from '../queue-store.ts';
import { domainOf } from '../sqlite/sqlite-commit.ts';

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
  const { envelope } = row;
  const domains = envelope.recipients.map(domainOf);
  const dsns = envelope.recipients.map((address) => recipientDsn(envelope, address));
  await client.query(INSERT_ENVELOPE, [
    row.id,
    envelope.mailFrom,
    envelope.bodyType,
    envelope.smtpUtf8,
    envelope.client.address,
    envelope.client.helo,
    envelope.client.listener,
    envelope.client.authUser ?? null,
    envelope.client.tlsVersion ?? null,
    envelope.client.tlsCipher ?? null,
    row.size,
    row.chunks,
    new Date(),
    envelope.requireTls === true,
    envelope.dsn?.ret ?? null,
    envelope.dsn?.envid ?? null,
    [...new Set(domains)],
    envelope.recipients,
    domains,
    // Stored as the SQLite store stores them: a comma list ('' is an empty list), read back by decodeRecipientDsn.
    dsns.map((dsn) => (dsn?.notify ? dsn.notify.join(',') : null)),
    dsns.map((dsn) => dsn?.orcpt ?? null),
  ]);
}

/** recipientDsn - the DSN parameters the envelope gives this address, if any. */
function recipientDsn(envelope: StoredEnvelope, address: string): RecipientDsn | undefined {
  const byAddress = envelope.dsn?.recipients;
  // hasOwn: an address is client input, and "__proto__" must not find Object.prototype.
  return byAddress && Object.hasOwn(byAddress, address) ? byAddress[address] : undefined;
}
