// PostgreSQL queue schema: an ordered list of migrations, and the table
// schema_version that records which of them a database has had (one row per
// step). A later change is one entry added at the end of MIGRATIONS; an
// entry is never edited once released, because databases in the field
// already ran it.
//
// Decides how nodes starting together agree: the whole migration runs in one
// transaction under a transaction-scoped advisory lock (one key per queue
// schema), so the second node waits, then finds the schema current.
// PostgreSQL DDL is transactional: a step that fails leaves nothing.
//
// How it fails: migrateSchema throws, changing nothing, when the database
// records a version newer than this code knows (it names both:
// migrations.ts); and on any database error, with the transaction rolled
// back.
//
//   MIGRATIONS    - the steps, oldest first.
//   migrateSchema - bring a database to the newest version; returns the version it had.
import type pg from 'pg';
import { refuseNewerSchema, type Migration } from '../migrations.ts';

export const MIGRATIONS: readonly Migration[] = [
  {
    name: 'messages, message_chunks, deliveries, recipients and attempts',
    // The same model as the SQLite store (sqlite-schema.ts), in PostgreSQL's
    // types: times are timestamptz (milliseconds are all we store), flags
    // boolean, ids of deliveries and attempts identity columns (never reused,
    // so a worker's stale claim can never name a newer delivery).
    //
    // messages.seq is the commit order: the tie-breaker when two messages
    // have the same received_at millisecond. messages.chunks is how many
    // rows of message_chunks make the body.
    //
    // message_chunks holds the body, ~256 KB a row, written by the draft's
    // own transaction; its foreign key is checked at COMMIT (DEFERRABLE
    // INITIALLY DEFERRED), because the chunks arrive before the envelope.
    // STORAGE EXTERNAL: out of line but not compressed; mail is mostly
    // already-encoded text seen once, and the CPU is better spent elsewhere.
    // A message that becomes done loses its chunks in the same transaction.
    //
    // 'deferred' is not stored but derived for listings, as in SQLite: a
    // queued message with a recipient in state 'deferred'.
    sql: `
      CREATE TABLE messages (
        id              text PRIMARY KEY,
        seq             bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
        mail_from       text NOT NULL,
        body_type       text NOT NULL CHECK (body_type IN ('7BIT', '8BITMIME')),
        smtp_utf8       boolean NOT NULL,
        client_address  text NOT NULL,
        client_helo     text NOT NULL,
        client_listener text NOT NULL CHECK (client_listener IN ('relay', 'submission', 'submissions')),
        auth_user       text,
        tls_version     text,
        tls_cipher      text,
        size            bigint NOT NULL CHECK (size >= 0),
        chunks          integer NOT NULL CHECK (chunks >= 0),
        received_at     timestamptz NOT NULL,
        require_tls     boolean NOT NULL DEFAULT false,
        dsn_ret         text CHECK (dsn_ret IN ('FULL', 'HDRS')),
        dsn_envid       text,
        state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'held', 'done')),
        done_at         timestamptz,
        CHECK ((state = 'done') = (done_at IS NOT NULL))
      );
      CREATE INDEX messages_not_done ON messages (received_at, seq) WHERE state <> 'done';
      CREATE TABLE message_chunks (
        message_id text NOT NULL REFERENCES messages (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
        seq        integer NOT NULL CHECK (seq >= 0),
        data       bytea NOT NULL,
        PRIMARY KEY (message_id, seq)
      );
      ALTER TABLE message_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
      CREATE TABLE deliveries (
        id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_id      text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        domain          text NOT NULL,
        attempts        integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        next_attempt_at timestamptz NOT NULL,
        lease_owner     text,
        lease_until     timestamptz,
        finished        boolean NOT NULL DEFAULT false,
        UNIQUE (message_id, domain),
        CHECK ((lease_owner IS NULL) = (lease_until IS NULL))
      );
      CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE NOT finished;
      CREATE TABLE recipients (
        message_id  text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        position    integer NOT NULL,
        address     text NOT NULL,
        domain      text NOT NULL,
        delivery_id bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        state       text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'deferred', 'delivered', 'bounced')),
        reply       text,
        updated_at  timestamptz,
        dsn_notify  text,
        dsn_orcpt   text,
        PRIMARY KEY (message_id, position)
      );
      CREATE INDEX recipients_by_delivery ON recipients (delivery_id, position);
      CREATE TABLE attempts (
        id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        delivery_id      bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
        message_id       text NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        started_at       timestamptz NOT NULL,
        ended_at         timestamptz NOT NULL,
        host             text,
        ip               text,
        port             integer,
        tls_version      text,
        tls_cipher       text,
        tls_verified     boolean,
        tls_verify_error text,
        policy_level     text NOT NULL,
        policy_source    text NOT NULL,
        reply            text NOT NULL,
        outcome          text NOT NULL CHECK (outcome IN ('delivered', 'deferred', 'bounced', 'partial'))
      );
      CREATE INDEX attempts_by_message ON attempts (message_id, started_at);
      CREATE INDEX attempts_by_delivery ON attempts (delivery_id);
    `,
  },
  {
    name: 'done messages by when they became done',
    // For the retention sweep (purgeDone), as in SQLite: only done messages are in it.
    sql: "CREATE INDEX messages_done ON messages (done_at) WHERE state = 'done';",
  },
  {
    name: 'body chunks written before their message row',
    // A draft no longer holds a connection through DATA (pg-draft.ts): each
    // full chunk is committed as it arrives, before the message row exists,
    // so the foreign key goes. A message's chunks are deleted with it
    // explicitly (pg-operator.ts), as they already were when it became done.
    // written_at is for the sweep of chunks no message row ever claimed
    // (pg-body.ts, removeOrphanChunks). The ALTERs need message_chunks to
    // themselves, and a node of the previous version holds it through each
    // DATA: waiting, they would hold up every other node's statements on it
    // behind them, so they give up after 5 s (the node fails to start and is
    // started again; stopping the older nodes first avoids it).
    sql: `
      SET LOCAL lock_timeout = '5s';
      ALTER TABLE message_chunks DROP CONSTRAINT message_chunks_message_id_fkey;
      ALTER TABLE message_chunks ADD COLUMN written_at timestamptz NOT NULL DEFAULT now();
      SET LOCAL lock_timeout TO DEFAULT;
    `,
  },
  {
    name: 'record_attempt: an attempt recorded in one round trip',
    // What pg-deliveries.ts's recordAttempt did in five round trips (BEGIN,
    // three statements, COMMIT), as one function called in one statement:
    // each round trip woke a backend, and on two cores the relay waited for
    // it. The same three steps in the same order: lock the message row, then
    // the delivery row (the lock order of pg-deliveries.ts); refuse, changing
    // nothing, a delivery that is gone, finished or leased by someone else;
    // store the attempts and the recipients' outcomes; end the lease, finish
    // the delivery when none of its recipients is pending, and make the
    // message done (its body chunks deleted) when no other delivery of it is
    // unfinished. Each statement of a VOLATILE function takes a fresh
    // snapshot, so, as with separate statements, the last one sees what the
    // others did and what a sibling delivery's record committed while this
    // one waited for the message row. Parameters are p_, variables v_: a
    // name shared with a column would be ambiguous. search_path is fixed at
    // creation: the queue's schema.
    sql: `
      CREATE FUNCTION record_attempt(
          p_delivery bigint, p_owner text,
          p_addresses text[], p_states text[], p_replies text[], p_updated timestamptz,
          p_started_at timestamptz[], p_ended_at timestamptz[], p_host text[], p_ip text[], p_port integer[],
          p_tls_version text[], p_tls_cipher text[], p_tls_verified boolean[], p_tls_verify_error text[],
          p_policy_level text[], p_policy_source text[], p_reply text[], p_outcome text[],
          p_next_attempt timestamptz,
          OUT recorded boolean, OUT done_message text)
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
      DECLARE
        v_message text;
        v_finished boolean;
        v_lease_owner text;
      BEGIN
        recorded := false;
        -- The outer FOR UPDATE locks the delivery only once the join has its row, which needs the
        -- message row the materialized CTE has locked by then. FOR UPDATE hands back the delivery
        -- as it is now (READ COMMITTED re-reads a row it waited for).
        WITH message AS MATERIALIZED (
          SELECT id FROM messages WHERE id = (SELECT message_id FROM deliveries WHERE id = p_delivery) FOR UPDATE
        )
        SELECT message.id, d.finished, d.lease_owner INTO v_message, v_finished, v_lease_owner
          FROM message JOIN deliveries d ON d.id = p_delivery
           FOR UPDATE OF d;
        IF v_message IS NULL OR v_finished OR v_lease_owner IS DISTINCT FROM p_owner THEN
          RETURN;
        END IF;

        INSERT INTO attempts (delivery_id, message_id, started_at, ended_at, host, ip, port, tls_version, tls_cipher,
                              tls_verified, tls_verify_error, policy_level, policy_source, reply, outcome)
        SELECT p_delivery, v_message, a.started_at, a.ended_at, a.host, a.ip, a.port, a.tls_version, a.tls_cipher,
               a.tls_verified, a.tls_verify_error, a.policy_level, a.policy_source, a.reply, a.outcome
          FROM unnest(p_started_at, p_ended_at, p_host, p_ip, p_port, p_tls_version, p_tls_cipher,
                      p_tls_verified, p_tls_verify_error, p_policy_level, p_policy_source, p_reply, p_outcome)
               WITH ORDINALITY AS a(started_at, ended_at, host, ip, port, tls_version, tls_cipher,
                                    tls_verified, tls_verify_error, policy_level, policy_source, reply, outcome, n)
         ORDER BY a.n;

        -- Only a pending recipient changes: one already delivered or bounced stays so.
        UPDATE recipients r SET state = o.state, reply = o.reply, updated_at = p_updated
          FROM unnest(p_addresses, p_states, p_replies) AS o(address, state, reply)
         WHERE r.delivery_id = p_delivery AND r.address = o.address AND r.state IN ('queued', 'deferred');

        UPDATE deliveries SET attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, next_attempt_at = p_next_attempt,
               finished = NOT EXISTS (SELECT 1 FROM recipients WHERE delivery_id = p_delivery AND state IN ('queued', 'deferred'))
         WHERE id = p_delivery
        RETURNING finished INTO v_finished;
        recorded := true;
        IF NOT v_finished THEN
          RETURN;
        END IF;

        UPDATE messages m SET state = 'done', done_at = p_updated
         WHERE m.id = v_message
           AND NOT EXISTS (SELECT 1 FROM deliveries o WHERE o.message_id = m.id AND o.id <> p_delivery AND NOT o.finished);
        IF FOUND THEN
          DELETE FROM message_chunks WHERE message_id = v_message;
          done_message := v_message;
        END IF;
      END
      $fn$;
    `,
  },
  {
    name: 'record_attempts: the attempts that finish together recorded in one statement',
    // record_attempt for a batch: the scheduler's deliveries that end in the
    // same turn of a node's event loop go to the database as one statement
    // (pg-deliveries.ts), one round trip and one WAL flush for all of them.
    // Each record is a JSON object of record_attempt's arguments, by name.
    // Every message of the batch is locked first, ordered by (received_at,
    // seq) as the operator's verbs lock them (pg-operator.ts), so two
    // batches, or a batch and a verb, never wait for each other in a cycle;
    // then record_attempt runs for each record, in the batch's order, and
    // answers for it. A batch of several waits at most a second for those
    // locks (lock_timeout, for this step only): one message locked elsewhere
    // must not hold up every record of the node. It then fails, and the
    // caller records its attempts one by one, each waiting as long as it
    // takes, as a single record always does.
    sql: `
      CREATE FUNCTION record_attempts(p_records jsonb)
        RETURNS TABLE (recorded boolean, done_message text)
        LANGUAGE plpgsql SET search_path FROM CURRENT AS $fn$
      DECLARE
        v_lock_timeout text := current_setting('lock_timeout');
      BEGIN
        IF jsonb_array_length(p_records) > 1 THEN
          PERFORM set_config('lock_timeout', '1s', true);
        END IF;
        PERFORM 1 FROM messages m
         WHERE m.id IN (SELECT d.message_id FROM deliveries d
                         WHERE d.id IN (SELECT (e->>'delivery')::bigint FROM jsonb_array_elements(p_records) AS e))
         ORDER BY m.received_at, m.seq
           FOR UPDATE;
        PERFORM set_config('lock_timeout', v_lock_timeout, true);
        RETURN QUERY
          SELECT a.recorded, a.done_message
            FROM ROWS FROM (jsonb_to_recordset(p_records) AS (
                   delivery bigint, owner text, addresses text[], states text[], replies text[], updated timestamptz,
                   started_at timestamptz[], ended_at timestamptz[], host text[], ip text[], port integer[],
                   tls_version text[], tls_cipher text[], tls_verified boolean[], tls_verify_error text[],
                   policy_level text[], policy_source text[], reply text[], outcome text[], next_attempt timestamptz))
                 WITH ORDINALITY AS r
           CROSS JOIN LATERAL record_attempt(
                   r.delivery, r.owner, r.addresses, r.states, r.replies, r.updated,
                   r.started_at, r.ended_at, r.host, r.ip, r.port, r.tls_version, r.tls_cipher, r.tls_verified,
                   r.tls_verify_error, r.policy_level, r.policy_source, r.reply, r.outcome, r.next_attempt) AS a
           ORDER BY r.ordinality;
      END
      $fn$;
    `,
  },
  {
    name: 'MTA-STS policies kept between restarts',
    // RFC 8461 §5.1: a policy is kept for its max_age, and a node that
    // restarted must not forget an enforced one (DNS and the policy's web
    // server are what an attacker would block). `policy` is outbound's JSON.
    // A node reads what any node kept: all of it when it starts, and a
    // domain's when DNS and the fetch give it no policy for that domain.
    sql: `
      CREATE TABLE mta_sts_policies (
        domain text PRIMARY KEY,
        policy text NOT NULL,
        until  timestamptz NOT NULL
      );
      CREATE INDEX mta_sts_policies_by_until ON mta_sts_policies (until);
    `,
  },
];

/** migrateSchema - bring the database to the newest version in one locked transaction; returns the version it had. With `existing`, a database the queue never used is an error. */
export async function migrateSchema(client: pg.PoolClient, target: { schema?: string; printable: string; existing?: boolean }): Promise<number> {
  const table = target.schema === undefined ? 'schema_version' : `${target.schema}.schema_version`;
  await client.query('BEGIN');
  try {
    // Serialise nodes migrating the same queue schema; released by COMMIT or ROLLBACK. Keyed on the schema the tables
    // land in, not on how queue.url names it: one node's ?schema=mail and another's search_path of mail are one queue.
    await client.query("SELECT pg_advisory_xact_lock(hashtextextended('postern queue schema ' || coalesce($1, current_schema(), ''), 0))", [target.schema ?? null]);
    const from = await readVersion(client, table);
    const where = target.schema === undefined ? target.printable : `${target.printable} (schema ${target.schema})`;
    refuseNewerSchema(from, MIGRATIONS, where, 'point queue.url at another database or schema');
    if (from === 0 && target.existing) throw new Error(`queue database ${where} holds no queue: no relay has run with this queue.url; is it the relay's configuration (--config FILE)?`);
    if (from < MIGRATIONS.length) {
      // The schema name passed the identifier check in parseQueueUrl: safe unquoted.
      if (target.schema !== undefined) await client.query(`CREATE SCHEMA IF NOT EXISTS ${target.schema}`);
      await client.query(`CREATE TABLE IF NOT EXISTS ${table} (
        version    integer PRIMARY KEY,
        name       text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now())`);
      for (const [index, migration] of MIGRATIONS.entries()) {
        if (index < from) continue;
        await client.query(migration.sql);
        await client.query(`INSERT INTO ${table} (version, name) VALUES ($1, $2)`, [index + 1, migration.name]);
      }
    }
    await client.query('COMMIT');
    return from;
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

/** readVersion - the highest version schema_version records; 0 for a database the queue never used. */
async function readVersion(client: pg.PoolClient, table: string): Promise<number> {
  const exists = await client.query<{ found: string | null }>('SELECT to_regclass($1)::text AS found', [table]);
  if (exists.rows[0]?.found == null) return 0;
  const result = await client.query<{ version: number | null }>(`SELECT max(version) AS version FROM ${table}`);
  return result.rows[0]?.version ?? 0;
}
