// The SQLite queue store: the shared contract, then what only this backend
// has: body files and their modes, the orphan sweep, schema versions, and a
// bound on memory while bodies stream in.
import Database from 'better-sqlite3';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.ts';
import { newQueueId } from '../../src/queue/queue-id.ts';
import type { QueueStore } from '../../src/queue/queue-store.ts';
import { MIGRATIONS } from '../../src/queue/sqlite/sqlite-schema.ts';
import { openSqliteStore } from '../../src/queue/sqlite/sqlite-store.ts';
import { bodyOf, commitMessage, envelopeWith, failingBody, readAll, runQueueStoreContract } from '../helpers/queue-store-contract.ts';

async function tempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), 'postern-sqlite-'));
}

runQueueStoreContract('sqlite', async () => {
  const dir = await tempDir();
  const path = join(dir, 'data', 'queue.db');
  const opened: QueueStore[] = [await openSqliteStore({ path })];
  return {
    store: opened[0]!,
    reopen: async () => {
      const store = await openSqliteStore({ path });
      opened.push(store);
      return store;
    },
    cleanup: async () => {
      for (const store of opened) await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

describe('sqlite queue store', () => {
  let dir: string;
  let dbPath: string;
  let messagesDir: string;
  const opened: QueueStore[] = [];

  async function openStore(logger = createLogger({ level: 'silent' }), removeOrphans?: boolean): Promise<QueueStore> {
    const store = await openSqliteStore({ path: dbPath, logger, removeOrphans });
    opened.push(store);
    return store;
  }

  beforeEach(async () => {
    dir = await tempDir();
    dbPath = join(dir, 'nested', 'data', 'queue.db');
    messagesDir = join(dir, 'nested', 'data', 'messages');
  });
  afterEach(async () => {
    for (const store of opened.splice(0)) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates parent directories, a WAL database at the newest schema version, and messages/', async () => {
    await openStore();
    const db = new Database(dbPath, { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    } finally {
      db.close();
    }
    expect((await stat(messagesDir)).isDirectory()).toBe(true);
  });

  it('stores the whole envelope: client facts, body type, recipients in order with their domain', async () => {
    const store = await openStore();
    const envelope = envelopeWith({ mailFrom: 'a@example.org', recipients: ['x@Mail.Example.COM', 'postmaster', 'y@example.net'], bodyType: '7BIT', smtpUtf8: true });
    const id = await commitMessage(store, [Buffer.from('body')], envelope);

    const db = new Database(dbPath, { readonly: true });
    try {
      expect(db.prepare('SELECT * FROM messages').all()).toEqual([
        {
          id, mail_from: 'a@example.org', body_type: '7BIT', smtp_utf8: 1,
          client_address: '192.0.2.10', client_helo: 'client.example.org', client_listener: 'submission',
          auth_user: 'alice', tls_version: 'TLSv1.3', tls_cipher: 'TLS_AES_256_GCM_SHA384',
          size: 4, received_at: expect.any(Number), state: 'queued',
        },
      ]);
      expect(db.prepare('SELECT message_id, position, address, domain FROM recipients ORDER BY position').all()).toEqual([
        { message_id: id, position: 0, address: 'x@Mail.Example.COM', domain: 'mail.example.com' },
        { message_id: id, position: 1, address: 'postmaster', domain: '' },
        { message_id: id, position: 2, address: 'y@example.net', domain: 'example.net' },
      ]);
    } finally {
      db.close();
    }
  });

  it('stores optional client facts as NULL when absent', async () => {
    const store = await openStore();
    await commitMessage(store, [Buffer.from('b')], envelopeWith({ client: { address: '::1', helo: 'localhost', listener: 'relay' } }));
    const db = new Database(dbPath, { readonly: true });
    try {
      expect(db.prepare('SELECT client_listener, auth_user, tls_version, tls_cipher FROM messages').get()).toEqual({
        client_listener: 'relay', auth_user: null, tls_version: null, tls_cipher: null,
      });
    } finally {
      db.close();
    }
  });

  it('writes body files and the database readable by the owner only', async () => {
    const store = await openStore();
    const id = await commitMessage(store, [Buffer.from('secret')], envelopeWith({}));
    expect((await stat(join(messagesDir, id))).mode & 0o777).toBe(0o600);
    expect((await stat(dbPath)).mode & 0o777).toBe(0o600);
    expect((await stat(`${dbPath}-wal`)).mode & 0o777).toBe(0o600);
    expect((await stat(messagesDir)).mode & 0o777).toBe(0o700);
  });

  it('removes the partial file when the client stream errors', async () => {
    const store = await openStore();
    const draft = store.beginMessage();
    await expect(draft.writeBody(failingBody(Buffer.alloc(100_000), new Error('connection reset')))).rejects.toThrow('connection reset');
    expect(await readdir(messagesDir)).toEqual([]);
    await draft.discard();
    expect(await readdir(messagesDir)).toEqual([]);
  });

  it('removes a written draft’s file on discard and on close', async () => {
    const store = await openStore();
    const discarded = store.beginMessage();
    await discarded.writeBody(bodyOf([Buffer.from('one')]));
    const open = store.beginMessage();
    await open.writeBody(bodyOf([Buffer.from('two')]));
    expect((await readdir(messagesDir)).sort()).toEqual([discarded.id, open.id].sort());

    await discarded.discard();
    expect(await readdir(messagesDir)).toEqual([open.id]);
    await store.close();
    expect(await readdir(messagesDir)).toEqual([]);
  });

  it('aborts a write in progress on discard, and writeBody rejects', async () => {
    const store = await openStore();
    const draft = store.beginMessage();
    const body = new Readable({ read() {} }); // a client that sends a little, then stalls
    body.push(Buffer.alloc(1000, 0x62));
    const writing = draft.writeBody(body);
    const rejected = expect(writing).rejects.toThrow();
    await draft.discard();
    await rejected;
    expect(body.destroyed).toBe(true);
    expect(await readdir(messagesDir)).toEqual([]);
  });

  it('never removes a file it did not create (a queue id already taken on disk)', async () => {
    const store = await openStore();
    const draft = store.beginMessage();
    await writeFile(join(messagesDir, draft.id), 'another message');
    await expect(draft.writeBody(bodyOf([Buffer.from('mine')]))).rejects.toThrow(/EEXIST/);
    await draft.discard();
    expect(await readFile(join(messagesDir, draft.id), 'utf8')).toBe('another message');
  });

  it('removes orphan body files on open, counts them in the log, and keeps committed ones', async () => {
    let store = await openStore();
    const kept = await commitMessage(store, [Buffer.from('committed')], envelopeWith({}));
    await store.close();
    const orphan = newQueueId();
    await writeFile(join(messagesDir, orphan), 'crashed before the row was inserted');
    await writeFile(join(messagesDir, 'notes.txt'), 'not a queue id: left alone');

    const lines: Array<Record<string, unknown>> = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, done) {
        lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
        done();
      },
    });
    store = await openStore(createLogger({ level: 'info', destination }));

    expect((await readdir(messagesDir)).sort()).toEqual([kept, 'notes.txt'].sort());
    expect(lines.find((line) => line.msg === 'queue store opened')).toMatchObject({ orphansRemoved: 1 });
    expect((await readAll(store.readBody(kept))).toString()).toBe('committed');
  });

  it('a second opener’s sweep and a commit never leave a row without its body', async () => {
    const server = await openStore();
    const draft = server.beginMessage();
    await draft.writeBody(bodyOf([Buffer.from('in flight')]));

    // e.g. `postern queue list` opening the store while the server receives
    const cli = await openStore();
    await expect(draft.commit(envelopeWith({}))).rejects.toThrow(/vanished/);
    expect(await server.listMessages()).toEqual([]);
    expect(await cli.listMessages()).toEqual([]);
  });

  it('with removeOrphans: false, a second opener leaves the server’s drafts alone', async () => {
    const server = await openStore();
    const draft = server.beginMessage();
    await draft.writeBody(bodyOf([Buffer.from('in flight')]));

    const cli = await openStore(undefined, false);
    await draft.commit(envelopeWith({}));
    expect((await cli.listMessages()).map((m) => m.id)).toEqual([draft.id]);
    expect((await readAll(cli.readBody(draft.id))).toString()).toBe('in flight');
  });

  it('refuses a database written by a newer schema, and leaves it unchanged', async () => {
    await (await openStore()).close();
    const future = MIGRATIONS.length + 7;
    const db = new Database(dbPath);
    db.pragma(`user_version = ${future}`);
    db.close();

    await expect(openStore()).rejects.toThrow(new RegExp(`schema version ${future}, newer than this Postern knows \\(${MIGRATIONS.length}\\)`));
    const after = new Database(dbPath, { readonly: true });
    try {
      expect(after.pragma('user_version', { simple: true })).toBe(future);
    } finally {
      after.close();
    }
  });

  it('streams ten concurrent 10 MB bodies without holding them in memory', async () => {
    const gc = exposeGc();
    const store = await openStore();
    const count = 10;
    const size = 10 * 1024 * 1024;
    const chunk = 64 * 1024;

    // Every body stops before its last chunk until all ten are there. At that
    // moment a store that buffered bodies would hold ~100 MB; one that streams
    // holds a few chunks per body (measured: about 1 MB in all).
    const baseline = liveBytes(gc);
    let arrived = 0;
    let releaseAll!: () => void;
    const allArrived = new Promise<void>((resolve) => (releaseAll = resolve));
    let growth = Number.NaN;
    const atLastChunk = async (): Promise<void> => {
      arrived++;
      if (arrived === count) {
        growth = liveBytes(gc) - baseline;
        releaseAll();
      }
      await allArrived;
    };

    const drafts = Array.from({ length: count }, () => store.beginMessage());
    const sizes = await Promise.all(drafts.map((draft, i) => draft.writeBody(patternBody({ size, chunk, fill: i, atLastChunk }))));

    expect(sizes).toEqual(Array.from({ length: count }, () => size));
    expect(arrived).toBe(count);
    expect(growth).toBeLessThan(30 * 1024 * 1024);
    await Promise.all(drafts.map((draft) => draft.discard()));
  });
});

/** patternBody - `size` bytes of `fill` in fresh chunks, awaiting atLastChunk before the last one. */
function patternBody(options: { size: number; chunk: number; fill: number; atLastChunk: () => Promise<void> }): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    for (let left = options.size; left > 0; left -= options.chunk) {
      if (left <= options.chunk) await options.atLastChunk();
      yield Buffer.alloc(Math.min(options.chunk, left), options.fill);
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** liveBytes - JS heap plus Buffer memory still reachable, after collecting garbage. */
function liveBytes(gc: () => void): number {
  // Buffers live outside the JS heap, so heapUsed alone would not see a store
  // that buffers: count arrayBuffers too. Two collections, because V8 frees
  // ArrayBuffer memory on a background sweeper that the next GC finishes;
  // after one, up to ~30 MB of garbage was still counted.
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** exposeGc - the V8 gc() function, without a command-line flag (vitest runs the workers). */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}
