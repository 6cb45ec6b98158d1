// The PostgreSQL queue store: the shared contract (the same suite the SQLite
// store runs), then what only this backend has: tables in their own schema,
// bodies as chunk rows, schema versions and migrations by several nodes at
// once, drafts as transactions (a vanished connection leaves nothing),
// claims by several nodes at once, and the session settings durability
// rests on. Every test works in a fresh schema, dropped afterwards.
//
// Skipped, with a message saying how to run it, when no PostgreSQL answers
// (see test/helpers/postgres.ts); CI sets POSTERN_TEST_PG_URL.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { connect as connectTcp, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config/load.ts';
import { createLogger, type Logger } from '../../src/observability/logger.ts';
import { CHUNK_SIZE, DRAFT_MAX_AGE } from '../../src/queue/postgres/pg-body.ts';
import { createPool, parseQueueUrl } from '../../src/queue/postgres/pg-connection.ts';
import { suspendDestination } from '../../src/queue/postgres/pg-deliveries.ts';
import { MIGRATIONS } from '../../src/queue/postgres/pg-schema.ts';
import { openPostgresStore } from '../../src/queue/postgres/pg-store.ts';
import type { AttemptResult } from '../../src/queue/delivery-rules.ts';
import { recordWithReport } from '../../src/queue/delivery-reports.ts';
import type { ClaimedDelivery, QueueStore } from '../../src/queue/queue-store.ts';
import { captureWarnings } from '../helpers/captured-log.ts';
import { createTestSchema, postgresTestUrl, SKIP_MESSAGE, type TestSchema } from '../helpers/postgres.ts';
import { measureStreamingWrites } from '../helpers/queue-memory.ts';
import { attemptWith, bodyOf, commitMessage, commitToManyDomains, digest, envelopeWith, randomBody, readAll, receivedAtOf, runQueueStoreContract } from '../helpers/queue-store-contract.ts';

const baseUrl = await postgresTestUrl();
if (!baseUrl) console.warn(SKIP_MESSAGE);

// No database needed: how queue.url is checked and taken apart.
describe('queue.url for the postgres backend', () => {
  it('is required, and must be postgres://, when queue.backend is postgres (file or environment), with the password masked', () => {
    const problems = (env: Record<string, string>): string => {
      try {
        loadConfig({ env: { POSTERN_QUEUE_BACKEND: 'postgres', ...env }, cwd: '/nonexistent' });
        return '';
      } catch (error) {
        return (error as ConfigError).problems.join('\n');
      }
    };
    expect(problems({})).toBe('queue.url = "" (default): must be a postgres:// URL (postgres://user@host:5432/database) when queue.backend is postgres');
    expect(problems({ POSTERN_QUEUE_URL: 'mysql://u:hunter2@db/q' })).toBe(
      'queue.url = "mysql://u:***@db/q" (environment POSTERN_QUEUE_URL): must be a postgres:// URL (postgres://user@host:5432/database) when queue.backend is postgres',
    );
    expect(problems({ POSTERN_QUEUE_URL: 'postgres://u:hunter2@db/q?schema=mail' })).toBe('');
    expect(problems({ POSTERN_QUEUE_URL: 'postgresql://db/q' })).toBe('');
    // A password with a "/" (base64 has them), and a mistyped scheme, are masked too.
    expect(problems({ POSTERN_QUEUE_URL: 'postgres:/u:hunter2@db/q' })).not.toContain('hunter2');
    // Nor is anything of a value that is no URL at all: a libpq keyword string, a URL missing its scheme or its colon.
    for (const notUrl of ['host=db user=u password=hunter2 dbname=q', 'u:hunter2@db/q', 'postgres//u:hunter2@db/q']) {
      expect(problems({ POSTERN_QUEUE_URL: notUrl })).toBe(
        'queue.url = "(not shown: not a scheme:// URL, and it may hold a password)" (environment POSTERN_QUEUE_URL): must be a postgres:// URL (postgres://user@host:5432/database) when queue.backend is postgres',
      );
      expect(() => parseQueueUrl(notUrl)).toThrow(/^queue.url: (not a URL|must start with postgres)/);
      expect(() => parseQueueUrl(notUrl)).not.toThrow(/hunter2/);
    }
    // A YAML mapping where the URL should be (its parts as keys): not shown either.
    const file = join(mkdtempSync(join(tmpdir(), 'postern-url-')), 'postern.yaml');
    writeFileSync(file, 'queue:\n  backend: postgres\n  url: { user: u, password: hunter2 }\n');
    expect(() => loadConfig({ file, env: {} })).toThrow(/queue\.url = \(not a string, not shown\) \(.*\): must be a postgres:\/\/ URL/);
    expect(() => loadConfig({ file, env: {} })).not.toThrow(/hunter2/);
    expect(parseQueueUrl('postgres://u@db/q?password=hunter2&sslmode=require&sslpassword=hunter3&p%61ssword=hunter4').printable).toBe(
      'postgres://u@db/q?password=***&sslmode=require&sslpassword=***&p%61ssword=***',
    );
    expect(() => parseQueueUrl('postgres://postgres:Ab/Cd+9xYz@127.0.0.1:5432/test')).toThrow('queue.url: not a URL (expected postgres://user@host:5432/database): postgres://postgres:***@127.0.0.1:5432/test');
  });

  // A node given the URL alone kept a SQLite queue of its own, silently: in a cluster, a split nobody sees.
  it('is refused without queue.backend postgres, naming both keys', () => {
    expect(() => loadConfig({ env: { POSTERN_QUEUE_URL: 'postgres://u:hunter2@db/q' }, cwd: '/nonexistent' })).toThrow(
      'queue.url = "postgres://u:***@db/q" (environment POSTERN_QUEUE_URL): used only when queue.backend is postgres, and queue.backend is sqlite; set queue.backend to postgres (POSTERN_QUEUE_BACKEND), or leave queue.url empty',
    );
  });

  it('is taken apart into a connection string, the schema and session options that come last', () => {
    expect(parseQueueUrl('postgres://u:pw@db.example:6432/mail?schema=queue_a&sslmode=require&options=-c%20work_mem%3D8MB')).toEqual({
      connectionString: 'postgres://u:pw@db.example:6432/mail?sslmode=require',
      schema: 'queue_a',
      options: '-c work_mem=8MB -c synchronous_commit=on -c default_transaction_isolation=read\\ committed -c search_path=queue_a',
      printable: 'postgres://u:***@db.example:6432/mail?schema=queue_a&sslmode=require&options=-c%20work_mem%3D8MB',
    });
    expect(parseQueueUrl('postgresql://db/mail')).toMatchObject({ schema: undefined, options: '-c synchronous_commit=on -c default_transaction_isolation=read\\ committed' });
    expect(() => parseQueueUrl('mysql://db/mail')).toThrow(/must start with postgres:\/\/ or postgresql:\/\//);
    expect(() => parseQueueUrl('postgres://db/mail?schema=Queue;drop')).toThrow(/schema="Queue;drop" must be a lowercase identifier/);
    expect(() => parseQueueUrl('not a url')).toThrow(/queue.url: not a URL/);
  });
});

/**
 * cuttingProxy - a TCP proxy on 127.0.0.1 to the database; after cutBefore(text), the first client message that
 * holds `text` is not passed on, and its connection is dropped, as a network would drop it.
 */
async function cuttingProxy(target: URL): Promise<{ port: number; cuts: number; cutBefore: (text: string) => void; close: () => Promise<void> }> {
  let armed: string | undefined;
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    const upstream = connectTcp(Number(target.port || 5432), target.hostname);
    for (const socket of [client, upstream]) {
      sockets.add(socket);
      socket.on('error', () => undefined);
      socket.on('close', () => (client.destroy(), upstream.destroy()));
    }
    client.on('data', (data: Buffer) => {
      if (armed !== undefined && data.includes(armed)) {
        armed = undefined;
        proxy.cuts++;
        return client.destroy();
      }
      upstream.write(data);
    });
    upstream.on('data', (data: Buffer) => client.write(data));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const proxy = {
    port: (server.address() as AddressInfo).port,
    cuts: 0,
    cutBefore: (text: string) => (armed = text),
    close: () => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), server.close(() => resolve()))),
  };
  return proxy;
}

describe.skipIf(!baseUrl)('postgres', () => {
  runQueueStoreContract('postgres', async () => {
    const schema = await createTestSchema(baseUrl!);
    const opened: QueueStore[] = [];
    const open = async (): Promise<QueueStore> => {
      const store = await openPostgresStore({ url: schema.url });
      opened.push(store);
      return store;
    };
    return {
      store: await open(),
      reopen: open,
      // Another node: its own pools on the same database and schema.
      openPeer: open,
      cleanup: async () => {
        for (const store of opened) await store.close();
        await schema.drop();
      },
    };
  });

  describe('postgres queue store', () => {
    let schema: TestSchema;
    const opened: QueueStore[] = [];

    async function openStore(options: { poolSize?: number; logger?: Logger; existing?: boolean } = {}): Promise<QueueStore> {
      const store = await openPostgresStore({ url: schema.url, logger: createLogger({ level: 'silent' }), ...options });
      opened.push(store);
      return store;
    }

    /** claimFresh - `count` messages to one domain each, committed, then claimed by owner 'w'. */
    async function claimFresh(store: QueueStore, count: number): Promise<{ ids: string[]; at: number; claims: ClaimedDelivery[] }> {
      const ids: string[] = [];
      for (let i = 0; i < count; i++) ids.push(await commitMessage(store, [Buffer.from(`m${i}`)], envelopeWith({ recipients: [`r@d${i}.test`] })));
      const at = Math.max(...(await Promise.all(ids.map((id) => receivedAtOf(store, id)))));
      const claims = await store.claimDue({ now: new Date(at), limit: count, leaseMs: 600_000, owner: 'w' });
      expect(claims.map((c) => c.messageId)).toEqual(ids);
      return { ids, at, claims };
    }

    /** lockMessage - hold a message row locked, as an operator's transaction would, until release. */
    async function lockMessage(id: string): Promise<{ release(): Promise<void> }> {
      const client = new pg.Client({ connectionString: baseUrl, options: `-c search_path=${schema.schema}` });
      await client.connect();
      await client.query('BEGIN');
      await client.query('SELECT 1 FROM messages WHERE id = $1 FOR UPDATE', [id]);
      let released: Promise<void> | undefined;
      return { release: () => (released ??= client.query('ROLLBACK').then(() => client.end())) };
    }

    beforeEach(async () => {
      schema = await createTestSchema(baseUrl!);
    });
    afterEach(async () => {
      for (const store of opened.splice(0)) await store.close();
      await schema.drop();
    });

    it('creates its tables in the schema the URL names, at the newest version', async () => {
      await openStore();
      const tables = await schema.query<{ table_name: string }>(
        'SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY table_name',
        [schema.schema],
      );
      expect(tables.rows.map((r) => r.table_name)).toEqual(['attempts', 'deliveries', 'message_chunks', 'messages', 'mta_sts_policies', 'recipients', 'schema_version']);
      const versions = await schema.query('SELECT version, name FROM schema_version ORDER BY version');
      expect(versions.rows).toEqual(MIGRATIONS.map((m, i) => ({ version: i + 1, name: m.name })));
    });

    it('creates the schema named in the URL when it does not exist yet', async () => {
      await schema.query(`DROP SCHEMA ${schema.schema}`);
      await openStore();
      const found = await schema.query('SELECT 1 FROM information_schema.schemata WHERE schema_name = $1', [schema.schema]);
      expect(found.rowCount).toBe(1);
    });

    // The CLI's commands on a queue: a queue.url no relay ever used is named, not created and reported empty.
    it('with `existing`, refuses a schema that holds no queue, naming it, and creates nothing there', async () => {
      await schema.query(`DROP SCHEMA ${schema.schema}`);
      await expect(openStore({ existing: true })).rejects.toThrow(new RegExp(`^queue database .* \\(schema ${schema.schema}\\) holds no queue: no relay has run with this queue\\.url`));
      const found = await schema.query('SELECT 1 FROM information_schema.schemata WHERE schema_name = $1', [schema.schema]);
      expect(found.rowCount).toBe(0);
      await schema.query(`CREATE SCHEMA ${schema.schema}`);
      await openStore();
      await openStore({ existing: true });
    });

    it('migrates once when several nodes start together', async () => {
      const stores = await Promise.all(Array.from({ length: 4 }, () => openPostgresStore({ url: schema.url })));
      opened.push(...stores);
      const versions = await schema.query('SELECT version FROM schema_version ORDER BY version');
      expect(versions.rows).toEqual(MIGRATIONS.map((_, i) => ({ version: i + 1 }))); // each step once
      const id = await commitMessage(stores[0]!, [Buffer.from('x')], envelopeWith({}));
      expect((await stores[3]!.listMessages()).map((m) => m.id)).toEqual([id]);
    });

    // A database whose default is REPEATABLE READ (ALTER DATABASE … SET default_transaction_isolation, here through
    // the URL): the lock statement fixed the snapshot before its wait, and the nodes that waited read version 0.
    it('migrates once when several nodes start together on a database whose default isolation is REPEATABLE READ', async () => {
      const url = new URL(schema.url);
      url.searchParams.set('options', '-c default_transaction_isolation=repeatable\\ read');
      const stores = await Promise.all(Array.from({ length: 4 }, () => openPostgresStore({ url: url.toString() })));
      opened.push(...stores);
      const versions = await schema.query('SELECT version FROM schema_version ORDER BY version');
      expect(versions.rows).toEqual(MIGRATIONS.map((_, i) => ({ version: i + 1 })));
    });

    // One node names the schema in the URL, another reaches it through its role's search_path: the same tables, so
    // one migration lock (keyed on the configured text, they migrated side by side and collided on CREATE TABLE).
    it('migrates once when nodes reach one schema by ?schema= and by search_path', async () => {
      const bySearchPath = new URL(baseUrl!);
      bySearchPath.searchParams.set('options', `-c search_path=${schema.schema}`);
      const urls = Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? schema.url : bySearchPath.toString()));
      const results = await Promise.allSettled(urls.map((url) => openPostgresStore({ url })));
      opened.push(...results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : [])));
      expect(results.flatMap((r) => (r.status === 'rejected' ? [String(r.reason)] : []))).toEqual([]);
      const versions = await schema.query('SELECT version FROM schema_version ORDER BY version');
      expect(versions.rows).toEqual(MIGRATIONS.map((_, i) => ({ version: i + 1 })));
    });

    it('refuses a database written by a newer schema, names both versions, and leaves it unchanged', async () => {
      await (await openStore()).close();
      const future = MIGRATIONS.length + 7;
      await schema.query("INSERT INTO schema_version (version, name) VALUES ($1, 'from the future')", [future]);
      await schema.query('DROP TABLE attempts');

      await expect(openStore()).rejects.toThrow(new RegExp(`schema version ${future}, newer than this Postern knows \\(${MIGRATIONS.length}\\)`));
      const versions = await schema.query('SELECT max(version) AS v FROM schema_version');
      expect(versions.rows).toEqual([{ v: future }]);
      // Nothing was re-created either.
      expect((await schema.query("SELECT to_regclass('attempts') AS t")).rows).toEqual([{ t: null }]);
    });

    it('says which URL it could not reach, without the password', async () => {
      const url = 'postgres://postern:s3cret@127.0.0.1:1/queue';
      await expect(openPostgresStore({ url })).rejects.toThrow(/queue database postgres:\/\/postern:\*\*\*@127\.0\.0\.1:1\/queue: .*ECONNREFUSED/);
      await expect(openPostgresStore({ url })).rejects.not.toThrow(/s3cret/);
    });

    it('runs every session with synchronous_commit on, READ COMMITTED and the queue schema first, whatever the URL or PGOPTIONS ask', async () => {
      const url = new URL(schema.url);
      url.searchParams.set('options', '-c synchronous_commit=off -c default_transaction_isolation=serializable -c application_name=x');
      const saved = process.env.PGOPTIONS;
      process.env.PGOPTIONS = '-c synchronous_commit=off';
      const pool = createPool(parseQueueUrl(url.toString()), 2);
      try {
        const settings = await pool.query("SELECT current_setting('synchronous_commit') AS sync, current_setting('transaction_isolation') AS isolation, current_setting('search_path') AS path");
        expect(settings.rows).toEqual([{ sync: 'on', isolation: 'read committed', path: schema.schema }]);
      } finally {
        if (saved === undefined) delete process.env.PGOPTIONS;
        else process.env.PGOPTIONS = saved;
        await pool.end();
      }
    });

    it('stores a body as chunk rows of CHUNK_SIZE, and removes them when the message is done', async () => {
      const store = await openStore();
      const size = 3 * CHUNK_SIZE + 1000;
      const generated = randomBody(size, 8192);
      const draft = store.beginMessage();
      await draft.writeBody(generated.stream);
      await draft.commit(envelopeWith({ recipients: ['r@a.test'] }));

      const rows = await schema.query<{ seq: number; n: number }>('SELECT seq, length(data) AS n FROM message_chunks WHERE message_id = $1 ORDER BY seq', [draft.id]);
      expect(rows.rows.map((r) => r.seq)).toEqual([0, 1, 2, 3]);
      expect(rows.rows.map((r) => r.n)).toEqual([CHUNK_SIZE, CHUNK_SIZE, CHUNK_SIZE, 1000]);
      expect(await digest(store.readBody(draft.id))).toEqual({ sha256: generated.sha256(), size });

      const at = await receivedAtOf(store, draft.id);
      const [claimed] = await store.claimDue({ now: new Date(at), limit: 1, leaseMs: 60_000, owner: 'w' });
      const delivered = { address: 'r@a.test', result: 'delivered' as const, reply: '250 2.0.0 Ok' };
      expect(await store.recordAttempt({ deliveryId: claimed!.deliveryId, owner: 'w' }, { attempts: [attemptWith(at)], recipients: [delivered], nextAttemptAt: new Date(at) })).toBe(true);
      expect((await schema.query('SELECT count(*)::int AS n FROM message_chunks')).rows).toEqual([{ n: 0 }]);
    });

    it('serves a leased body of more than one chunk row whole, from the database', async () => {
      const store = await openStore();
      const size = CHUNK_SIZE + 100;
      const generated = randomBody(size, 8192);
      const draft = store.beginMessage();
      await draft.writeBody(generated.stream);
      await draft.commit(envelopeWith({ recipients: ['r@a.test'] }));
      const at = await receivedAtOf(store, draft.id);
      expect(await store.claimDue({ now: new Date(at), limit: 1, leaseMs: 60_000, owner: 'w' })).toHaveLength(1);
      expect(await digest(store.readBody(draft.id))).toEqual({ sha256: generated.sha256(), size });
    });

    const chunkRows = async (id?: string): Promise<number> =>
      (await schema.query<{ n: number }>(`SELECT count(*)::int AS n FROM message_chunks${id ? ' WHERE message_id = $1' : ''}`, id ? [id] : [])).rows[0]!.n;

    it('keeps a draft out of the queue until its commit, holding no connection meanwhile; a discarded draft deletes its rows', async () => {
      const store = await openStore();
      const draft = store.beginMessage();
      await draft.writeBody(bodyOf([Buffer.alloc(CHUNK_SIZE * 2 + 10, 0x61)]));
      // The two full rows are in, each committed on its own; the last one waits for the commit.
      expect(await chunkRows(draft.id)).toBe(2);
      expect(await store.listMessages()).toEqual([]);
      await expect(readAll(store.readBody(draft.id))).rejects.toThrow(/no such message/);
      // Before, the draft's transaction sat open here, holding a pooled connection.
      const holding = await schema.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND state = 'idle in transaction'", [schema.schema]);
      expect(holding.rows).toEqual([{ n: 0 }]);
      const connected = await schema.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [schema.schema]);
      expect(connected.rows[0]!.n).toBeGreaterThan(0);
      await draft.commit(envelopeWith({}));
      expect(await chunkRows(draft.id)).toBe(3);
      expect((await readAll(store.readBody(draft.id))).length).toBe(CHUNK_SIZE * 2 + 10);

      const discarded = store.beginMessage();
      await discarded.writeBody(bodyOf([Buffer.alloc(CHUNK_SIZE * 2, 0x62)]));
      expect(await chunkRows(discarded.id)).toBe(2);
      await discarded.discard();
      expect(await chunkRows(discarded.id)).toBe(0);
    });

    it('inserts nothing, and says why, when a chunk row written before the commit is gone', async () => {
      const store = await openStore();
      const draft = store.beginMessage();
      await draft.writeBody(bodyOf([Buffer.alloc(CHUNK_SIZE * 2 + 10, 0x61)]));
      await schema.query('DELETE FROM message_chunks WHERE message_id = $1 AND seq = 1', [draft.id]);
      await expect(draft.commit(envelopeWith({}))).rejects.toThrow('of the 2 chunk row(s) written before its commit, one is gone or more than 12 hours old; nothing was inserted');
      expect(await store.listMessages()).toEqual([]);
      expect((await schema.query('SELECT count(*)::int AS n FROM messages')).rows).toEqual([{ n: 0 }]);
      expect(await chunkRows(draft.id)).toBe(1); // left for the orphan sweep
    });

    it('refuses a draft whose first chunk row is older than DRAFT_MAX_AGE, on the database clock the orphan sweep reads', async () => {
      const store = await openStore();
      const draft = store.beginMessage();
      await draft.writeBody(bodyOf([Buffer.alloc(CHUNK_SIZE + 10, 0x61)]));
      await schema.query("UPDATE message_chunks SET written_at = now() - interval '12 hours 1 minute' WHERE message_id = $1", [draft.id]);
      await expect(draft.commit(envelopeWith({}))).rejects.toThrow(`of the 1 chunk row(s) written before its commit, one is gone or more than ${DRAFT_MAX_AGE} old`);
      expect(await store.listMessages()).toEqual([]);
    });

    it('deletes a discarded draft’s rows only once its chunk INSERT in flight has finished', async () => {
      const store = await openStore();
      const draft = store.beginMessage();
      // Another transaction holds the draft's row 0 uncommitted: the draft's INSERT of it waits for that one.
      const blockerPool = createPool(parseQueueUrl(schema.url), 1);
      const blocker = await blockerPool.connect();
      try {
        await blocker.query('BEGIN');
        await blocker.query("INSERT INTO message_chunks (message_id, seq, data) VALUES ($1, 0, 'x')", [draft.id]);
        const writing = draft.writeBody(bodyOf([Buffer.alloc(CHUNK_SIZE + 10, 0x61)])).catch((error: unknown) => error);
        await vi.waitFor(async () => {
          const waiting = await schema.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [schema.schema]);
          expect(waiting.rows).toEqual([{ n: 1 }]);
        });
        const discarding = draft.discard();
        // Time for a delete that did not wait to run first, and find nothing.
        await new Promise((resolve) => setTimeout(resolve, 300));
        await blocker.query('ROLLBACK');
        await discarding;
        expect(await writing).toBeInstanceOf(Error);
      } finally {
        blocker.release();
        await blockerPool.end();
      }
      expect(await chunkRows(draft.id)).toBe(0);
    });

    // Locks are taken in the order messages, then deliveries (pg-deliveries.ts): a suspension that waited for a
    // message while holding deliveries could deadlock with a record.
    it('suspends a destination without waiting for a message another transaction holds: that one is passed over', async () => {
      const store = await openStore();
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) ids.push(await commitMessage(store, [Buffer.from(`m${i}`)], envelopeWith({ recipients: [`r${i}@a.test`] })));
      const now = new Date(Math.max(...(await Promise.all(ids.map((id) => receivedAtOf(store, id))))) + 1);
      const lock = await lockMessage(ids[0]!);
      try {
        const options = { now, minWaitMs: 300_000, maxWaitMs: 4_000_000, lifetimeMs: 5 * 86_400_000, reply: '4.4.1 delivery temporarily suspended: connection refused' };
        expect(await store.suspendDestination('a.test', options)).toBe(1);
      } finally {
        await lock.release();
      }
      expect((await store.claimDue({ now, limit: 10, leaseMs: 60_000, owner: 'w' })).map((c) => c.messageId)).toEqual([ids[0]]);
    });

    // inBatches stops at the first batch that moves fewer than it asked for: each statement must keep to its limit.
    it('moves at most the limit asked for in one suspension statement', async () => {
      const store = await openStore();
      const ids: string[] = [];
      for (let i = 0; i < 5; i++) ids.push(await commitMessage(store, [Buffer.from(`m${i}`)], envelopeWith({ recipients: [`r${i}@a.test`] })));
      const now = new Date(Math.max(...(await Promise.all(ids.map((id) => receivedAtOf(store, id))))) + 1);
      const pool = createPool(parseQueueUrl(schema.url), 1);
      try {
        const options = { now, minWaitMs: 300_000, maxWaitMs: 4_000_000, lifetimeMs: 5 * 86_400_000, reply: '4.4.1 delivery temporarily suspended: connection refused' };
        expect(await suspendDestination(pool, 'a.test', options, 2)).toBe(2);
      } finally {
        await pool.end();
      }
      expect(await store.claimDue({ now, limit: 10, leaseMs: 60_000, owner: 'w' })).toHaveLength(3);
    });

    it('removes chunk rows no message claims once a day old: at open, then at most hourly with purgeDone', async () => {
      const first = await openStore();
      const kept = await commitMessage(first, [Buffer.alloc(CHUNK_SIZE + 5, 0x63)], envelopeWith({}));
      const orphan = (id: string, hoursOld: number) =>
        schema.query(`INSERT INTO message_chunks (message_id, seq, data, written_at) VALUES ($1, 0, 'x', now() - $2 * interval '1 hour')`, [id, hoursOld]);
      await orphan('01AAAAAAAAAAAAAA', 25);
      await orphan('01BBBBBBBBBBBBBB', 23);
      await schema.query("UPDATE message_chunks SET written_at = now() - interval '30 days' WHERE message_id = $1", [kept]);

      await openStore();
      const left = async () => (await schema.query<{ id: string }>('SELECT DISTINCT message_id AS id FROM message_chunks ORDER BY 1')).rows.map((r) => r.id);
      expect(await left()).toEqual(['01BBBBBBBBBBBBBB', kept].sort());
      expect((await readAll(first.readBody(kept))).length).toBe(CHUNK_SIZE + 5);

      vi.useFakeTimers({ toFake: ['performance'] });
      try {
        const store = await openStore();
        await orphan('01CCCCCCCCCCCCCC', 25);
        await store.purgeDone(new Date(), 10);
        expect(await left()).toContain('01CCCCCCCCCCCCCC');
        vi.advanceTimersByTime(3600 * 1000);
        await store.purgeDone(new Date(), 10);
        expect(await left()).toEqual(['01BBBBBBBBBBBBBB', kept].sort());
      } finally {
        vi.useRealTimers();
      }
    });

    it('deletes a message’s chunk rows with it', async () => {
      const store = await openStore();
      const id = await commitMessage(store, [Buffer.alloc(CHUNK_SIZE * 2 + 1, 0x64)], envelopeWith({}));
      expect(await chunkRows(id)).toBe(3);
      expect(await store.deleteMessages({ ids: [id] })).toEqual([id]);
      expect(await chunkRows()).toBe(0);
    });

    it('carries on when the database drops every connection of the store', async () => {
      const store = await openStore();
      const id = await commitMessage(store, [Buffer.from('before')], envelopeWith({}));
      await Promise.all([store.listMessages(), store.stats(), store.nextDueAt(), store.showMessage(id)]); // several pooled connections
      const killed = await schema.query('SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity WHERE application_name = $1', [schema.schema]);
      expect(killed.rows.length).toBeGreaterThan(0);
      // Dead connections leave the pool; the next calls get new ones.
      await vi.waitFor(async () => expect((await store.listMessages()).map((m) => m.id)).toEqual([id]));
      const second = await commitMessage(store, [Buffer.from('after')], envelopeWith({}));
      expect((await readAll(store.readBody(second))).toString()).toBe('after');
    });

    // A connection dropped while a result was recorded let the lease lapse: the delivery went out again a whole
    // lease (10 minutes) later. The delivery, still leased to us, shows the record did not stand: it is made again.
    it('records a delivery result again when the connection drops before the record reaches the database', async () => {
      const proxy = await cuttingProxy(new URL(baseUrl!));
      try {
        const url = new URL(schema.url);
        url.host = `127.0.0.1:${proxy.port}`;
        const { logger, lines: logs } = captureWarnings();
        const store = await openPostgresStore({ url: url.toString(), logger });
        opened.push(store);
        const { ids, claims } = await claimFresh(store, 1);
        const claim = claims[0]!;
        proxy.cutBefore('record_attempts');
        const written = await recordWithReport({
          store, hostname: 'relay.test', claim, recipients: [{ address: 'r@d0.test', result: 'delivered', reply: '250 ok' }], nextHopOffersDsn: true, now: new Date(), log: logger,
          records: [{ lease: { deliveryId: claim.deliveryId, owner: 'w' }, result: { attempts: [attemptWith(Date.now())], recipients: [{ address: 'r@d0.test', result: 'delivered', reply: '250 ok' }], nextAttemptAt: new Date() } }],
        });
        expect(proxy.cuts).toBe(1);
        expect(written).toEqual({ recorded: [true] });
        expect((await store.showMessage(ids[0]!))!.state).toBe('done');
        expect(logs.map((l) => l.msg)).toContain('recording a delivery result failed, and it did not stand; recording it again');
      } finally {
        await proxy.close();
      }
    });

    // A node behind by more than outbound.lease writes leases the others read as lapsed: its deliveries went out
    // twice, and nothing said why.
    it('warns at open when this node\'s clock is off the database\'s, and not when it is not', async () => {
      const opens = async (): Promise<Record<string, unknown>[]> => {
        const { logger, lines: logs } = captureWarnings();
        await openStore({ logger });
        return logs.filter((l) => String(l.msg).startsWith("this node's clock is off"));
      };
      expect(await opens()).toEqual([]);
      vi.useFakeTimers({ toFake: ['Date'], now: Date.now() - 60_000 });
      try {
        expect((await opens()).map((l) => Math.round(Number(l.offsetSeconds)))).toEqual([60]);
      } finally {
        vi.useRealTimers();
      }
    });

    it('hands each delivery to exactly one of four nodes claiming at once', async () => {
      const nodes = await Promise.all(Array.from({ length: 4 }, () => openStore()));
      const now = await commitToManyDomains(nodes, { messages: 4, domains: 50 });
      const claimAll = async (node: QueueStore, owner: string): Promise<string[]> => {
        const claimed: string[] = [];
        for (;;) {
          const batch = await node.claimDue({ now: new Date(now), limit: 2, leaseMs: 600_000, owner });
          if (batch.length === 0) return claimed;
          claimed.push(...batch.map((c) => c.deliveryId));
        }
      };
      // Two claimers per node, eight in all, each looping until nothing is left.
      const claimed = await Promise.all(nodes.flatMap((node, i) => [claimAll(node, `node-${i}-a`), claimAll(node, `node-${i}-b`)]));
      const ids = claimed.flat();
      expect(ids).toHaveLength(200);
      expect(new Set(ids).size).toBe(200);
      expect(claimed.filter((c) => c.length > 0).length).toBeGreaterThan(1);
    });

    it('makes a message done when two nodes finish its last two deliveries at the same moment', async () => {
      const warnings = captureWarnings();
      const [a, b] = await Promise.all([openStore({ logger: warnings.logger }), openStore({ logger: warnings.logger })]);
      const ids: string[] = [];
      for (let i = 0; i < 20; i++) ids.push(await commitMessage(a, [Buffer.from('b')], envelopeWith({ recipients: ['x@one.test', 'y@two.test'] })));
      const now = new Date(Math.max(...(await Promise.all(ids.map((id) => receivedAtOf(a, id))))));
      const claims = await a.claimDue({ now, limit: 100, leaseMs: 60_000, owner: 'w' });
      expect(claims).toHaveLength(40);
      const record = (node: QueueStore, c: ClaimedDelivery) =>
        node.recordAttempt({ deliveryId: c.deliveryId, owner: 'w' }, { attempts: [attemptWith(now.getTime())], recipients: c.recipients.map((r) => ({ address: r.address, result: 'delivered' as const, reply: '250 ok' })), nextAttemptAt: now });
      // Each node records its twenty in one batch; b's in the opposite order, so only locking the batch's
      // messages in one order first keeps the two batches from waiting for each other in a cycle.
      const forA = claims.filter((c) => c.domain === 'one.test');
      const forB = claims.filter((c) => c.domain !== 'one.test').reverse();
      const results = await Promise.all([...forA.map((c) => record(a, c)), ...forB.map((c) => record(b, c))]);
      expect(results.every(Boolean)).toBe(true);
      expect(await a.listMessages()).toEqual([]);
      expect((await schema.query("SELECT count(*)::int AS n FROM messages WHERE state = 'done'")).rows).toEqual([{ n: 20 }]);
      expect((await schema.query('SELECT count(*)::int AS n FROM message_chunks')).rows).toEqual([{ n: 0 }]);
      // A deadlock would have failed a batch, recorded then one by one.
      expect(warnings.lines).toEqual([]);
    });

    it('records attempts that finish together in one batch, where a record that fails fails alone', async () => {
      const warnings = captureWarnings();
      const store = await openStore({ logger: warnings.logger });
      const ids: string[] = [];
      for (let i = 0; i < 3; i++) ids.push(await commitMessage(store, [Buffer.from(`m${i}`)], envelopeWith({ recipients: [`r@d${i}.test`] })));
      const at = Math.max(...(await Promise.all(ids.map((id) => receivedAtOf(store, id)))));
      const claims = await store.claimDue({ now: new Date(at), limit: 10, leaseMs: 60_000, owner: 'w' });
      expect(claims.map((c) => c.messageId)).toEqual(ids);
      const record = (c: ClaimedDelivery, outcome: string) =>
        store.recordAttempt(
          { deliveryId: c.deliveryId, owner: 'w' },
          { attempts: [attemptWith(at, { outcome: outcome as 'delivered' })], recipients: [{ address: c.recipients[0]!.address, result: 'delivered', reply: '250 ok' }], nextAttemptAt: new Date(at) },
        );
      // The second breaks the attempts table's CHECK on outcome.
      const results = await Promise.allSettled([record(claims[0]!, 'delivered'), record(claims[1]!, 'not an outcome'), record(claims[2]!, 'delivered')]);
      expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
      expect(results.filter((r) => r.status === 'fulfilled').map((r) => r.value)).toEqual([true, true]);
      expect((await store.listMessages()).map((m) => m.id)).toEqual([ids[1]]);
      const leases = await schema.query<{ lease_owner: string | null; attempts: number }>('SELECT lease_owner, attempts FROM deliveries WHERE id = $1', [claims[1]!.deliveryId]);
      expect(leases.rows).toEqual([{ lease_owner: 'w', attempts: 0 }]);
      expect(warnings.lines).toMatchObject([{ msg: 'recording a batch of attempts failed; recording them one by one', attempts: 3 }]);
    });

    it('answers each record of a batch with its own verdict', async () => {
      const store = await openStore();
      const { ids, at, claims } = await claimFresh(store, 4);
      const results = await Promise.all([
        store.recordAttempt({ deliveryId: claims[0]!.deliveryId, owner: 'someone else' }, resultFor(claims[0]!, at, 'delivered')),
        store.recordAttempt({ deliveryId: claims[1]!.deliveryId, owner: 'w' }, resultFor(claims[1]!, at, 'delivered')),
        store.recordAttempt({ deliveryId: 'not a delivery', owner: 'w' }, resultFor(claims[2]!, at, 'delivered')),
        store.recordAttempt({ deliveryId: claims[2]!.deliveryId, owner: 'w' }, resultFor(claims[2]!, at, 'deferred')),
        store.recordAttempt({ deliveryId: claims[3]!.deliveryId, owner: 'w' }, resultFor(claims[3]!, at, 'delivered')),
      ]);
      expect(results).toEqual([false, true, false, true, true]);
      expect((await store.listMessages()).map((m) => m.id)).toEqual([ids[0], ids[2]]);
    });

    it('records a batch while the operator holds and releases its messages, in any order, without a deadlock', async () => {
      const warnings = captureWarnings();
      const store = await openStore({ logger: warnings.logger });
      const operator = await openStore();
      for (let round = 0; round < 6; round++) {
        const { ids, at, claims } = await claimFresh(store, 30);
        const verbs = Promise.all([0, 1, 2, 3, 4, 5].map((k) => (k % 2 ? operator.releaseMessages({ ids }) : operator.holdMessages({ ids }))));
        const results = await Promise.all([...claims].reverse().map((c) => store.recordAttempt({ deliveryId: c.deliveryId, owner: 'w' }, resultFor(c, at, 'delivered'))));
        await verbs;
        expect(results.every(Boolean)).toBe(true);
      }
      expect(warnings.lines).toEqual([]);
    });

    it('records the rest of a batch when one of its messages stays locked, and that one once the lock goes', async () => {
      const warnings = captureWarnings();
      const store = await openStore({ logger: warnings.logger });
      const { ids, at, claims } = await claimFresh(store, 2);
      const locker = await lockMessage(ids[0]!);
      try {
        let lockedOneSettled = false;
        const lockedOne = store.recordAttempt({ deliveryId: claims[0]!.deliveryId, owner: 'w' }, resultFor(claims[0]!, at, 'delivered')).finally(() => (lockedOneSettled = true));
        const other = store.recordAttempt({ deliveryId: claims[1]!.deliveryId, owner: 'w' }, resultFor(claims[1]!, at, 'delivered'));
        expect(await other).toBe(true);
        expect(lockedOneSettled).toBe(false);
        await locker.release();
        expect(await lockedOne).toBe(true);
      } finally {
        await locker.release();
      }
      expect(warnings.lines).toMatchObject([{ msg: 'recording a batch of attempts failed; recording them one by one', err: { code: '55P03' } }]);
    });

    it('does not record a batch again when its connection is lost: it may have committed', async () => {
      const warnings = captureWarnings();
      const store = await openStore({ logger: warnings.logger });
      const { ids, at, claims } = await claimFresh(store, 2);
      const locker = await lockMessage(ids[0]!);
      try {
        const records = Promise.allSettled(claims.map((c) => store.recordAttempt({ deliveryId: c.deliveryId, owner: 'w' }, resultFor(c, at, 'delivered'))));
        // The batch waits for the lock (for at most a second): end its backend then.
        await vi.waitFor(
          async () => {
            const waiting = await schema.query<{ pid: number }>(
              "SELECT pid FROM pg_stat_activity WHERE query LIKE '%FROM record_attempts(%' AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()",
            );
            expect(waiting.rows).toHaveLength(1);
            await schema.query('SELECT pg_terminate_backend($1)', [waiting.rows[0]!.pid]);
          },
          { timeout: 900, interval: 10 },
        );
        expect((await records).map((r) => r.status)).toEqual(['rejected', 'rejected']);
      } finally {
        await locker.release();
      }
      expect(warnings.lines).toEqual([]);
      expect((await schema.query('SELECT count(*)::int AS n FROM attempts')).rows).toEqual([{ n: 0 }]);
    });

    // A policy is usually fetched again because its kept one lapsed; two nodes keeping two such domains at once
    // each held its own row and waited for the other's in the clean-up of lapsed rows: "deadlock detected".
    it('lets two nodes keep MTA-STS policies at once, each clearing lapsed rows, without a deadlock', async () => {
      const [a, b] = [await openStore(), await openStore()];
      const T = Date.parse('2026-06-01T00:00:00Z');
      const HOUR = 3_600_000;
      const keep = (store: QueueStore, domain: string) => store.keepStsPolicy(domain, { policy: 'p', until: new Date(T + 24 * HOUR) }, { now: new Date(T), limit: 10_000 });
      const failures: string[] = [];
      for (let round = 0; round < 20; round++) {
        await schema.query('INSERT INTO mta_sts_policies (domain, policy, until) VALUES ($1, $3, $4), ($2, $3, $4)', [`a${round}.test`, `b${round}.test`, 'p', new Date(T - HOUR)]);
        const results = await Promise.allSettled([keep(a, `a${round}.test`), keep(b, `b${round}.test`)]);
        for (const r of results) if (r.status === 'rejected') failures.push(String((r.reason as Error).message));
      }
      expect(failures).toEqual([]);
      expect((await a.keptStsPolicies(new Date(T), 100)).length).toBe(40);
    });

    it('lets a node see, hold and release what another node accepted', async () => {
      const [a, b] = await Promise.all([openStore(), openStore()]);
      const id = await commitMessage(a, [Buffer.from('from a')], envelopeWith({}));
      expect((await b.listMessages()).map((m) => [m.id, m.state])).toEqual([[id, 'queued']]);
      expect(await b.holdMessages({ all: true })).toEqual([id]);
      expect((await a.listMessages()).map((m) => m.state)).toEqual(['held']);
      expect(await b.releaseMessages({ ids: [id] })).toEqual([id]);
      expect((await readAll(b.readBody(id))).toString()).toBe('from a');
    });

    it('streams concurrent large bodies in without holding them in memory', async () => {
      const store = await openStore();
      const size = 8 * 1024 * 1024;
      // A store that buffered bodies would hold ~48 MB; one that streams holds a chunk or two per body.
      const { drafts, sizes, growth } = await measureStreamingWrites(store, { count: 6, size, chunk: 64 * 1024 });
      expect(sizes).toEqual(drafts.map(() => size));
      expect(growth).toBeLessThan(16 * 1024 * 1024);
      await Promise.all(drafts.map((draft) => draft.commit(envelopeWith({}))));
      const read = await Promise.all(drafts.map((draft) => digest(store.readBody(draft.id))));
      expect(read.map((r) => r.size)).toEqual(drafts.map(() => size));
    });
  });
});

/** resultFor - one attempt with `result` for every recipient of the delivery. */
function resultFor(claim: ClaimedDelivery, at: number, result: 'delivered' | 'deferred'): AttemptResult {
  return {
    attempts: [attemptWith(at, { outcome: result })],
    recipients: claim.recipients.map((r) => ({ address: r.address, result, reply: result === 'delivered' ? '250 2.0.0 Ok' : '451 4.3.0 later' })),
    nextAttemptAt: new Date(at),
  };
}
