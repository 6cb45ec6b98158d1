// The SQLite queue store: the shared contract, then what only this backend
// has: body files and their modes, the orphan sweep (of done messages' files
// too), schema versions, cascading deletes and purges, claims from several
// processes at once, group commits spaced when several senders commit at
// once, and a bound on memory while bodies stream in (measured by
// test/helpers/queue-memory.ts, as the PostgreSQL store's is). About 600
// lines because each of these needs the same temporary store set-up; split
// by topic if it grows.
import Database from 'better-sqlite3';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, readlink, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Readable, Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/observability/logger.ts';
import { FREE_SPACE_MAX_AGE_MS } from '../../src/queue/free-space.ts';
import { newQueueId } from '../../src/queue/queue-id.ts';
import type { QueueStore, StoredEnvelope } from '../../src/queue/queue-store.ts';
import { INLINE_BODY_LIMIT, WRITE_BATCH } from '../../src/queue/sqlite/sqlite-draft.ts';
import { MIGRATIONS } from '../../src/queue/sqlite/sqlite-schema.ts';
import { COMMIT_SPACING, openSqliteStore, QUEUE_PAGE_SIZE, WAL_CHECKPOINT_BYTES } from '../../src/queue/sqlite/sqlite-store.ts';
import { measureStreamingWrites } from '../helpers/queue-memory.ts';
import { attemptWith, bodyOf, commitMessage, commitToManyDomains, deliverMessage, envelopeWith, failingBody, readAll, receivedAtOf, runQueueStoreContract } from '../helpers/queue-store-contract.ts';
import { keepLoopBusy } from '../helpers/busy-loop.ts';

const DAY_MS = 86_400_000;

/** A body one byte too large for the message row: it gets a file. */
const FILE_BODY = Buffer.alloc(INLINE_BODY_LIMIT + 1, 0x61);

/** pageSizeOf - the page size of the SQLite database at a path. */
function pageSizeOf(path: string): number {
  const db = new Database(path, { readonly: true });
  try {
    return Number(db.pragma('page_size', { simple: true }));
  } finally {
    db.close();
  }
}

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
    openPeer: async () => {
      // A second worker beside the first: it must not sweep the first one's drafts.
      const store = await openSqliteStore({ path, removeOrphans: false });
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
  const children: ChildProcess[] = [];

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
    for (const child of children.splice(0)) if (child.exitCode === null) child.kill();
    for (const store of opened.splice(0)) await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('creates parent directories, a WAL database of 16 KB pages at the newest schema version, and messages/', async () => {
    await openStore();
    const db = new Database(dbPath, { readonly: true });
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
      expect(db.pragma('page_size', { simple: true })).toBe(16_384);
    } finally {
      db.close();
    }
    expect((await stat(messagesDir)).isDirectory()).toBe(true);
  });

  it.each([
    ['a new queue', QUEUE_PAGE_SIZE],
    ['a queue made with 4 KB pages (before 16 KB)', 4096],
  ])('lets the WAL of %s grow to WAL_CHECKPOINT_BYTES before a checkpoint, and counts what it and the next checkpoint will take as not free', async (_name, pageSize) => {
    if (pageSize !== QUEUE_PAGE_SIZE) await makeQueueWithPageSize(pageSize);
    const store = await openStore();
    expect(pageSizeOf(dbPath)).toBe(pageSize);
    // The WAL's header, then a 24-byte header per page.
    const walLimit = 32 + (WAL_CHECKPOINT_BYTES / pageSize) * (pageSize + 24);
    // What the store will still take by itself: the WAL's room to grow, and the pages only the WAL holds,
    // which the next checkpoint appends to the database file.
    const expectedReserve = async (): Promise<number> => {
      const db = new Database(dbPath, { readonly: true });
      try {
        const pages = Number(db.pragma('page_count', { simple: true }));
        return Math.max(0, walLimit - (await stat(`${dbPath}-wal`)).size) + Math.max(0, pages * pageSize - (await stat(dbPath)).size);
      } finally {
        db.close();
      }
    };
    const reserveRead = async (): Promise<number> => {
      await new Promise((resolve) => setTimeout(resolve, FREE_SPACE_MAX_AGE_MS + 10)); // a fresh reading
      const fromStore = (await store.freeSpace())!;
      return (await statfs(dir).then((fs) => fs.bavail * fs.bsize)) - fromStore;
    };
    // Other test files write to the same disk between the two readings: within 4 MB.
    expect(Math.abs((await reserveRead()) - (await expectedReserve()))).toBeLessThan(4 * 2 ** 20);
    // 240 bodies of 100 KB, in their rows, one transaction each: about 24 MB of WAL, all of it new pages.
    // With SQLite's default of 1,000 pages it would have been copied into the database and rewound at 4 MB.
    const body = Buffer.alloc(100 * 1024, 0x62);
    for (let i = 0; i < 240; i++) await commitMessage(store, [body], envelopeWith({}));
    expect((await stat(`${dbPath}-wal`)).size).toBeGreaterThan(20 * 2 ** 20);
    expect(Math.abs((await reserveRead()) - (await expectedReserve()))).toBeLessThan(4 * 2 ** 20);
    expect(pageSizeOf(dbPath)).toBe(pageSize);
  });

  /** makeQueueWithPageSize - a queue at the newest schema whose pages are of another size, as an older release made it. */
  async function makeQueueWithPageSize(pageSize: number): Promise<void> {
    await (await openStore()).close();
    opened.length = 0;
    const db = new Database(dbPath);
    try {
      db.pragma('journal_mode = DELETE');
      db.pragma(`page_size = ${pageSize}`);
      db.exec('VACUUM');
      db.pragma('journal_mode = WAL');
    } finally {
      db.close();
    }
  }

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
          size: 4, received_at: expect.any(Number), require_tls: 0, dsn_ret: null, dsn_envid: null, state: 'queued', done_at: null,
          body: Buffer.from('body'),
        },
      ]);
      const deliveries = db.prepare('SELECT * FROM deliveries ORDER BY id').all() as { id: number }[];
      const receivedAt = (db.prepare('SELECT received_at FROM messages').get() as { received_at: number }).received_at;
      const pending = { message_id: id, attempts: 0, next_attempt_at: receivedAt, lease_owner: null, lease_until: null, finished: 0 };
      expect(deliveries).toEqual([
        { ...pending, id: expect.any(Number), domain: 'mail.example.com' },
        { ...pending, id: expect.any(Number), domain: '' },
        { ...pending, id: expect.any(Number), domain: 'example.net' },
      ]);
      const [first, second, third] = deliveries.map((d) => d.id);
      const queued = { message_id: id, state: 'queued', reply: null, updated_at: null, dsn_notify: null, dsn_orcpt: null };
      expect(db.prepare('SELECT * FROM recipients ORDER BY position').all()).toEqual([
        { ...queued, position: 0, address: 'x@Mail.Example.COM', domain: 'mail.example.com', delivery_id: first },
        { ...queued, position: 1, address: 'postmaster', domain: '', delivery_id: second },
        { ...queued, position: 2, address: 'y@example.net', domain: 'example.net', delivery_id: third },
      ]);
    } finally {
      db.close();
    }
  });

  it('stores REQUIRETLS, RET, ENVID and per-recipient NOTIFY and ORCPT in columns', async () => {
    const store = await openStore();
    const dsn = { ret: 'FULL' as const, envid: 'ENV-1', recipients: { 'a@x.test': { notify: ['DELAY' as const, 'FAILURE' as const], orcpt: 'rfc822;a@x.test' }, 'b@x.test': { notify: [] } } };
    await commitMessage(store, [Buffer.from('b')], envelopeWith({ recipients: ['a@x.test', 'b@x.test', 'c@x.test'], requireTls: true, dsn }));
    const db = new Database(dbPath, { readonly: true });
    try {
      expect(db.prepare('SELECT require_tls, dsn_ret, dsn_envid FROM messages').get()).toEqual({ require_tls: 1, dsn_ret: 'FULL', dsn_envid: 'ENV-1' });
      expect(db.prepare('SELECT address, dsn_notify, dsn_orcpt FROM recipients ORDER BY position').all()).toEqual([
        { address: 'a@x.test', dsn_notify: 'DELAY,FAILURE', dsn_orcpt: 'rfc822;a@x.test' },
        { address: 'b@x.test', dsn_notify: '', dsn_orcpt: null },
        { address: 'c@x.test', dsn_notify: null, dsn_orcpt: null },
      ]);
      expect(db.prepare('SELECT COUNT(*) AS n FROM deliveries').get()).toEqual({ n: 1 });
    } finally {
      db.close();
    }
    expect((await store.showMessage((await store.listMessages())[0]!.id))!.envelope.dsn).toEqual(dsn);
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

  it('keeps a body of up to INLINE_BODY_LIMIT bytes in its row, a larger one in a file, and clears either when the message is done', async () => {
    const store = await openStore();
    const small = await commitMessage(store, [Buffer.alloc(INLINE_BODY_LIMIT - 10, 0x62), Buffer.alloc(10, 0x63)], envelopeWith({ recipients: ['r@a.test'] }));
    const large = await commitMessage(store, [FILE_BODY.subarray(0, 1000), FILE_BODY.subarray(1000)], envelopeWith({ recipients: ['r@a.test'] }));
    expect(await readdir(messagesDir)).toEqual([large]);
    const db = new Database(dbPath, { readonly: true });
    const bodies = () => db.prepare('SELECT id, length(body) AS inline FROM messages ORDER BY received_at, rowid').all();
    try {
      expect(bodies()).toEqual([{ id: small, inline: INLINE_BODY_LIMIT }, { id: large, inline: null }]);
      expect((await readAll(store.readBody(small))).equals(Buffer.concat([Buffer.alloc(INLINE_BODY_LIMIT - 10, 0x62), Buffer.alloc(10, 0x63)]))).toBe(true);
      expect((await readAll(store.readBody(large))).equals(FILE_BODY)).toBe(true);

      const at = await receivedAtOf(store, large);
      const delivered = (address: string) => ({ address, result: 'delivered' as const, reply: '250 2.0.0 Ok' });
      for (const claimed of await store.claimDue({ now: new Date(at), limit: 10, leaseMs: 60_000, owner: 'w' })) {
        const result = { attempts: [attemptWith(at)], recipients: claimed.recipients.map((r) => delivered(r.address)), nextAttemptAt: new Date(at) };
        expect(await store.recordAttempt({ deliveryId: claimed.deliveryId, owner: 'w' }, result)).toBe(true);
      }
      expect(bodies()).toEqual([{ id: small, inline: null }, { id: large, inline: null }]);
      expect(await readdir(messagesDir)).toEqual([]);
    } finally {
      db.close();
    }
  });

  it('writes a body larger than WRITE_BATCH to its file in batches, byte for byte, readable after a reopen', async () => {
    const store = await openStore();
    // Odd-sized chunks whose bytes depend on their offset: a batch written twice, dropped or out of order shows.
    const body = Buffer.alloc(3 * WRITE_BATCH + 17);
    for (let i = 0; i < body.length; i++) body[i] = (i * 31 + (i >> 12)) & 0xff;
    const chunks: Buffer[] = [];
    for (let at = 0; at < body.length; at += 65_521) chunks.push(body.subarray(at, at + 65_521));
    const id = await commitMessage(store, chunks, envelopeWith({}));
    expect((await readFile(join(messagesDir, id))).equals(body)).toBe(true);
    expect((await readAll(store.readBody(id))).equals(body)).toBe(true);
    await store.close();
    expect((await readAll((await openStore()).readBody(id))).equals(body)).toBe(true);
  });

  it('serves a just-committed body only while its message is queued: not once another process deleted it', async () => {
    const store = await openStore();
    const inFile = Buffer.alloc(WRITE_BATCH, 0x64);
    const ids = [await commitMessage(store, [FILE_BODY], envelopeWith({})), await commitMessage(store, [inFile], envelopeWith({}))];
    const small = await commitMessage(store, [Buffer.from('Subject: s\r\n\r\nhi\r\n')], envelopeWith({}));
    expect((await readAll(store.readBody(ids[1]!))).equals(inFile)).toBe(true);
    // The body file is gone too, so only memory could still answer with the bytes.
    const peer = await openStore(undefined, false);
    expect(await peer.deleteMessages({ ids: [...ids, small] })).toHaveLength(3);
    for (const id of [...ids, small]) await expect(readAll(store.readBody(id))).rejects.toThrow(/no such message/);
  });

  it('writes body files and the database readable by the owner only', async () => {
    const store = await openStore();
    const id = await commitMessage(store, [FILE_BODY], envelopeWith({}));
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

  it.each([
    { how: 'with an error', error: new Error('connection reset'), expected: 'connection reset' },
    { how: 'without an error', error: undefined, expected: /premature close/i },
  ])('rejects writeBody and leaves no file when the client stream goes $how while a batch is being written', async ({ error, expected }) => {
    const store = await openStore();
    const draft = store.beginMessage();
    const body = new Readable({ read() {} });
    body.push(Buffer.alloc(WRITE_BATCH + 1, 0x62));
    // The first batch's open and write are on the thread pool when the client goes.
    setImmediate(() => body.destroy(error));
    await expect(draft.writeBody(body)).rejects.toThrow(expected);
    await draft.discard();
    expect(await readdir(messagesDir)).toEqual([]);
  });

  it('rejects writeBody with the disk’s error when the disk fills mid-body, leaves no file, and takes the next message', async (context) => {
    // A file system of its own, too small for the body: a tmpfs, which needs root (CI runs as root).
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', dir]).status !== 0) {
      console.warn('skipped: mounting a tmpfs needs root; run `npm test` as root, as .ci/run does');
      return context.skip();
    }
    try {
      const store = await openStore();
      const { bavail, bsize } = await statfs(dir);
      const filler = join(dir, 'filler');
      await writeFile(filler, Buffer.alloc(Math.max(0, bavail * bsize - 3 * WRITE_BATCH)));
      const draft = store.beginMessage();
      const body = Readable.from(Array.from({ length: 16 }, () => Buffer.alloc(WRITE_BATCH / 2, 0x63)));
      await expect(draft.writeBody(body)).rejects.toThrow(/ENOSPC|wrote \d+ of \d+ bytes/);
      await draft.discard();
      expect(await readdir(messagesDir)).toEqual([]);
      await rm(filler);
      await commitMessage(store, [Buffer.from('after the full disk\r\n')], envelopeWith({}));
      expect(await store.listMessages()).toHaveLength(1);
      for (const store of opened.splice(0)) await store.close();
    } finally {
      spawnSync('umount', ['-l', dir]);
    }
  });

  it('removes a written draft’s file on discard and on close', async () => {
    const store = await openStore();
    const discarded = store.beginMessage();
    await discarded.writeBody(bodyOf([FILE_BODY]));
    const open = store.beginMessage();
    await open.writeBody(bodyOf([FILE_BODY]));
    expect((await readdir(messagesDir)).sort()).toEqual([discarded.id, open.id].sort());

    await discarded.discard();
    expect(await readdir(messagesDir)).toEqual([open.id]);
    await store.close();
    expect(await readdir(messagesDir)).toEqual([]);
  });

  it('closes every body file it opens: written whole, streamed, failed mid-stream, discarded', async () => {
    // The descriptors this process holds on files in messages/ (the directory itself stays open for its fsyncs).
    const bodyDescriptors = async () => {
      const targets = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
      return targets.filter((target) => target.startsWith(`${messagesDir}/`));
    };
    const store = await openStore();
    await commitMessage(store, [FILE_BODY], envelopeWith({}));
    await commitMessage(store, [Buffer.alloc(2 * WRITE_BATCH + 1, 0x63)], envelopeWith({}));
    const failed = store.beginMessage();
    await expect(failed.writeBody(failingBody(Buffer.alloc(WRITE_BATCH + 1), new Error('connection reset')))).rejects.toThrow('connection reset');
    await failed.discard();
    const discarded = store.beginMessage();
    await discarded.writeBody(bodyOf([FILE_BODY]));
    await discarded.discard();
    expect((await readdir(messagesDir)).length).toBe(2);
    expect(await bodyDescriptors()).toEqual([]);
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
    await expect(draft.writeBody(bodyOf([FILE_BODY]))).rejects.toThrow(/EEXIST/);
    await draft.discard();
    expect(await readFile(join(messagesDir, draft.id), 'utf8')).toBe('another message');
  });

  it('removes orphan body files on open, counts them in the log, and keeps committed ones', async () => {
    let store = await openStore();
    const kept = await commitMessage(store, [FILE_BODY], envelopeWith({}));
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
    expect((await readAll(store.readBody(kept))).equals(FILE_BODY)).toBe(true);
  });

  it('a second opener’s sweep and a commit never leave a row without its body', async () => {
    const server = await openStore();
    const draft = server.beginMessage();
    await draft.writeBody(bodyOf([FILE_BODY]));

    // e.g. `postern queue list` opening the store while the server receives
    const cli = await openStore();
    await expect(draft.commit(envelopeWith({}))).rejects.toThrow(/vanished/);
    expect(await server.listMessages()).toEqual([]);
    expect(await cli.listMessages()).toEqual([]);
  });

  it('commits the other messages of a batch when one of them fails', async () => {
    const store = await openStore();
    const drafts = [store.beginMessage(), store.beginMessage(), store.beginMessage()];
    for (const draft of drafts) await draft.writeBody(bodyOf([FILE_BODY]));
    await rm(join(messagesDir, drafts[1]!.id));
    // Committed in one turn of the event loop: one batch, one transaction.
    const results = await Promise.allSettled(drafts.map((draft) => draft.commit(envelopeWith({ recipients: ['r@a.test'] }))));
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(String((results[1] as PromiseRejectedResult).reason)).toMatch(/vanished/);
    expect((await store.listMessages()).map((m) => m.id).sort()).toEqual([drafts[0]!.id, drafts[2]!.id].sort());
    expect((await readAll(store.readBody(drafts[2]!.id))).equals(FILE_BODY)).toBe(true);
  });

  it('records an attempt and commits messages in one batch, a failing commit leaving the attempt alone', async () => {
    const store = await openStore();
    const delivered = await commitMessage(store, [Buffer.from('Subject: a\r\n\r\nbody\r\n')], envelopeWith({ recipients: ['r@a.test'] }));
    const [claim] = await store.claimDue({ now: new Date(Date.now() + 1000), limit: 1, leaseMs: 60_000, owner: 'w' });
    expect(claim?.messageId).toBe(delivered);
    const drafts = [store.beginMessage(), store.beginMessage()];
    for (const draft of drafts) await draft.writeBody(bodyOf([FILE_BODY]));
    await rm(join(messagesDir, drafts[0]!.id));
    // Called in one turn of the event loop: one batch, one transaction.
    const envelope = envelopeWith({ recipients: ['r@b.test'] });
    const results = await Promise.allSettled([
      drafts[0]!.commit(envelope),
      store.recordAttempt({ deliveryId: claim!.deliveryId, owner: 'w' }, {
        attempts: [attemptWith(Date.now())],
        recipients: [{ address: 'r@a.test', result: 'delivered', reply: '250 2.0.0 Ok' }],
        nextAttemptAt: new Date(Date.now() + 300_000),
      }),
      drafts[1]!.commit(envelope),
    ]);
    expect(results.map((r) => r.status)).toEqual(['rejected', 'fulfilled', 'fulfilled']);
    expect((results[1] as PromiseFulfilledResult<boolean>).value).toBe(true);
    expect((await store.showMessage(delivered))?.state).toBe('done');
    expect((await store.listMessages()).map((m) => m.id)).toEqual([drafts[1]!.id]);
  });

  it('with four senders committing at once and a busy event loop, holds the next batch back for a message that comes after it', async (context) => {
    const store = await openStore();
    const envelope = envelopeWith({ recipients: ['r@a.test'] });
    await commitMessage(store, [Buffer.from('Subject: s\r\n\r\nfirst\r\n')], envelope); // the store's first fsync, slower than the rest
    // The wait ends COMMIT_SPACING.ms after a batch started: after a batch whose fsync took longer (a disk
    // busy with other tests), there is nothing to wait for, and the try shows nothing either way.
    for (let attempt = 0; attempt < 5; attempt++) {
      const outcome = await sixthAfterFourAndFifth(store, envelope);
      if (outcome === 'first batch outlasted the spacing') continue;
      expect(outcome).toBe('joined the fifth');
      expect(await store.listMessages()).toHaveLength(1 + 6 * (attempt + 1));
      return;
    }
    console.warn(`skipped: every first batch took longer than ${COMMIT_SPACING.ms} ms to commit on this disk`);
    context.skip();
  });

  /** Four commits in one batch, a fifth arriving during it, a sixth once it is done: whether the sixth shares the fifth's batch. */
  async function sixthAfterFourAndFifth(store: QueueStore, envelope: StoredEnvelope): Promise<'joined the fifth' | 'committed alone' | 'first batch outlasted the spacing'> {
    const drafts = Array.from({ length: 6 }, () => store.beginMessage());
    for (const draft of drafts) await draft.writeBody(bodyOf([Buffer.from('Subject: s\r\n\r\nbody\r\n')]));
    const stopBusy = keepLoopBusy();
    try {
      // Four in one turn: one batch. The fifth on the next turn, while that batch's fsync is in flight.
      const started = performance.now();
      const firstBatch = drafts.slice(0, 4).map((draft) => draft.commit(envelope));
      const fifth = new Promise((resolve) => setImmediate(resolve)).then(() => drafts[4]!.commit(envelope));
      await Promise.all(firstBatch);
      const firstBatchMs = performance.now() - started;
      // Without spacing, the fifth's batch is in flight by now and the sixth waits for the next one.
      let sixthCommitted = false;
      const sixth = drafts[5]!.commit(envelope).then(() => (sixthCommitted = true));
      await fifth;
      await new Promise((resolve) => setImmediate(resolve)); // a batch of its own would need another fsync, a later turn
      const joined = sixthCommitted;
      await sixth;
      if (firstBatchMs >= COMMIT_SPACING.ms) return 'first batch outlasted the spacing';
      return joined ? 'joined the fifth' : 'committed alone';
    } finally {
      stopBusy();
    }
  }

  it('with removeOrphans: false, a second opener leaves the server’s drafts alone', async () => {
    const server = await openStore();
    const draft = server.beginMessage();
    await draft.writeBody(bodyOf([FILE_BODY]));

    const cli = await openStore(undefined, false);
    await draft.commit(envelopeWith({}));
    expect((await cli.listMessages()).map((m) => m.id)).toEqual([draft.id]);
    expect((await readAll(cli.readBody(draft.id))).equals(FILE_BODY)).toBe(true);
  });

  it('removes a done message’s body at once, and sweeps one a crash left behind', async () => {
    let store = await openStore();
    const id = await commitMessage(store, [FILE_BODY], envelopeWith({ recipients: ['r@a.test'] }));
    const at = await receivedAtOf(store, id);
    const [claimed] = await store.claimDue({ now: new Date(at), limit: 1, leaseMs: 60_000, owner: 'w' });
    const outcome = { address: 'r@a.test', result: 'delivered' as const, reply: '250 2.0.0 Ok' };
    expect(await store.recordAttempt({ deliveryId: claimed!.deliveryId, owner: 'w' }, { attempts: [attemptWith(at)], recipients: [outcome], nextAttemptAt: new Date(at) })).toBe(true);
    expect(await readdir(messagesDir)).toEqual([]);

    // A crash between the COMMIT that made it done and the unlink leaves the file:
    // a reader (removeOrphans: false) leaves it, the relay's open removes it.
    await store.close();
    await writeFile(join(messagesDir, id), 'delivered soon');
    await (await openStore(undefined, false)).close();
    expect(await readdir(messagesDir)).toEqual([id]);
    store = await openStore();
    expect(await readdir(messagesDir)).toEqual([]);
    expect((await store.showMessage(id))!.state).toBe('done');
  });

  it('deletes a message’s deliveries, recipients and attempts with it', async () => {
    const store = await openStore();
    const id = await commitMessage(store, [Buffer.from('b')], envelopeWith({ recipients: ['r@a.test', 's@b.test'] }));
    const at = await receivedAtOf(store, id);
    const [claimed] = await store.claimDue({ now: new Date(at), limit: 1, leaseMs: 60_000, owner: 'w' });
    const address = claimed!.recipients[0]!.address;
    const outcome = { address, result: 'deferred' as const, reply: '451 4.3.0 later' };
    await store.recordAttempt({ deliveryId: claimed!.deliveryId, owner: 'w' }, { attempts: [attemptWith(at)], recipients: [outcome], nextAttemptAt: new Date(at + 1) });

    expect(await store.deleteMessages({ ids: [id] })).toEqual([id]);
    const db = new Database(dbPath, { readonly: true });
    try {
      for (const table of ['messages', 'deliveries', 'recipients', 'attempts']) {
        expect(db.prepare(`SELECT COUNT(*) AS n FROM ${table}`).get(), table).toEqual({ n: 0 });
      }
    } finally {
      db.close();
    }
    expect(await readdir(messagesDir)).toEqual([]);
  });

  it('purges a done message’s deliveries, recipients and attempts with it, finding done messages by the messages_done index', async () => {
    const store = await openStore();
    const id = await commitMessage(store, [FILE_BODY], envelopeWith({ recipients: ['r@a.test', 's@a.test'] }));
    const at = await receivedAtOf(store, id);
    await deliverMessage(store, id);
    const kept = await commitMessage(store, [Buffer.from('b')], envelopeWith({ recipients: ['k@b.test'] }));

    expect(await store.purgeDone(new Date(at + DAY_MS), 10)).toBe(1);
    const db = new Database(dbPath, { readonly: true });
    try {
      const count = (table: string) => db.prepare<[string], { n: number }>(`SELECT COUNT(*) AS n FROM ${table} WHERE message_id = ?`).get(id)!.n;
      for (const table of ['deliveries', 'recipients', 'attempts']) expect(count(table), table).toBe(0);
      expect(db.prepare('SELECT id FROM messages').all()).toEqual([{ id: kept }]);
      const plan = db.prepare("EXPLAIN QUERY PLAN SELECT id FROM messages WHERE state = 'done' AND done_at < 1 ORDER BY done_at LIMIT 1").all() as { detail: string }[];
      expect(plan.map((row) => row.detail).join('; ')).toMatch(/USING (COVERING )?INDEX messages_done/);
    } finally {
      db.close();
    }
    expect(await readdir(messagesDir)).toEqual([]);
  });

  /** plansOfStatements - the query plan of every statement a newly opened store prepares (parameters NULL). */
  async function plansOfStatements(): Promise<{ sql: string; plan: string }[]> {
    const prepare = vi.spyOn(Database.prototype, 'prepare');
    let statements: string[];
    try {
      await openStore();
      statements = [...new Set(prepare.mock.calls.map(([sql]) => sql))].filter((sql) => !/^\s*(PRAGMA|BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)/i.test(sql));
    } finally {
      prepare.mockRestore();
    }
    const db = new Database(dbPath, { readonly: true });
    try {
      return statements.map((sql) => {
        const explain = db.prepare<unknown[], { detail: string }>(`EXPLAIN QUERY PLAN ${sql}`);
        const named: Record<string, null> = Object.fromEntries([...sql.matchAll(/@(\w+)/g)].map(([, name]) => [name!, null]));
        const rows = Object.keys(named).length > 0 ? explain.all(named) : explain.all(...[...sql.matchAll(/\?/g)].map(() => null));
        return { sql: sql.replace(/\s+/g, ' ').trim(), plan: rows.map((row) => row.detail).join('; ') };
      });
    } finally {
      db.close();
    }
  }

  // SQLite, without statistics, took deliveries_due (finished=?) for "this message's unfinished deliveries": a walk
  // over the whole pending queue for every message recorded done, listed or retried (sqlite-schema.ts).
  it('walks the pending deliveries only to find when the next one is due: every statement about a message uses its index', async () => {
    const plans = await plansOfStatements();
    expect(plans.filter(({ sql }) => /message_id = @id AND \+finished = 0/.test(sql)).map(({ plan }) => plan)).toEqual([expect.stringMatching(/SEARCH deliveries USING (COVERING )?INDEX sqlite_autoindex_deliveries_1 \(message_id=\?\)/)]);
    const walks = plans.filter(({ plan }) => /deliveries_due \(finished=\?\)/.test(plan)).map(({ sql }) => sql);
    expect(walks).toEqual([expect.stringContaining('SELECT MIN(MAX(d.next_attempt_at, COALESCE(d.lease_until, 0))) AS due')]);
  });

  // The done messages kept for `queue show` outnumber the others by far on a busy relay; /metrics reads the depth at every scrape.
  it('reads the queue depth, and the messages not done that queue list and the operator verbs read, by the messages_not_done index', async () => {
    const plans = await plansOfStatements();
    const notDone = plans.filter(({ sql }) => /^SELECT .* FROM messages m .*WHERE m\.state != 'done'/.test(sql));
    const recipients = notDone.find(({ sql }) => sql.startsWith('SELECT r.message_id, r.address'));
    expect(notDone).toHaveLength(4);
    expect(notDone.map(({ sql }) => sql)).toEqual(
      expect.arrayContaining([expect.stringMatching(/^SELECT m\.id, m\.mail_from/), expect.stringMatching(/^SELECT CASE WHEN/), expect.stringMatching(/^SELECT m\.id FROM messages m/), recipients?.sql]),
    );
    for (const { sql, plan } of notDone) expect(plan, sql).toMatch(/^SCAN m USING INDEX messages_not_done/);
    // The listing's recipients follow the messages' order, by position: nothing is sorted.
    expect(recipients?.plan).not.toMatch(/TEMP B-TREE/);
  });

  it('migrates a database two schema versions back (no MTA-STS policies, no messages_not_done index), keeping its messages', async () => {
    const store = await openStore();
    const id = await commitMessage(store, [Buffer.from('b')], envelopeWith({ recipients: ['r@a.test'] }));
    const at = await receivedAtOf(store, id);
    await deliverMessage(store, id);
    await store.close();
    const db = new Database(dbPath);
    db.exec('DROP INDEX messages_not_done; DROP TABLE mta_sts_policies');
    db.pragma(`user_version = ${MIGRATIONS.length - 2}`);
    db.close();

    const reopened = await openStore();
    expect((await reopened.showMessage(id))!.state).toBe('done');
    expect(await reopened.purgeDone(new Date(at + DAY_MS), 10)).toBe(1);
    await reopened.keepStsPolicy('a.test', { policy: 'p', until: new Date(at + DAY_MS) }, { now: new Date(at), limit: 10 });
    expect(await reopened.keptStsPolicies(new Date(at), 10)).toEqual([{ domain: 'a.test', policy: 'p', until: new Date(at + DAY_MS) }]);
    const after = new Database(dbPath, { readonly: true });
    try {
      expect(after.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
      const indexes = after.prepare<[], { name: string }>("SELECT name FROM sqlite_master WHERE type = 'index' AND name IN ('mta_sts_policies_by_until', 'messages_not_done') ORDER BY name").all();
      expect(indexes).toEqual([{ name: 'messages_not_done' }, { name: 'mta_sts_policies_by_until' }]);
    } finally {
      after.close();
    }
  });

  it('hands each delivery to exactly one of four processes claiming at once', async () => {
    const store = await openStore();
    const now = await commitToManyDomains([store], { messages: 4, domains: 50 });

    const claimers = Array.from({ length: 4 }, (_, i) => startClaimer({ path: dbPath, owner: `process-${i}`, now }));
    children.push(...claimers.map((c) => c.child));
    await Promise.all(claimers.map((c) => c.ready));
    for (const claimer of claimers) claimer.go(); // all four are open and waiting: they start together
    const claimed = await Promise.all(claimers.map((c) => c.claimed));

    const ids = claimed.flat();
    expect(ids).toHaveLength(200);
    expect(new Set(ids).size).toBe(200);
    expect(await store.claimDue({ now: new Date(now), limit: 10, leaseMs: 60_000, owner: 'late' })).toEqual([]);
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
    const store = await openStore();
    // A store that buffered bodies would hold ~100 MB; one that streams holds
    // a few chunks per body (measured: about 1 MB in all).
    const measured = await measureStreamingWrites(store, { count: 10, size: 10 * 1024 * 1024, chunk: 64 * 1024 });
    expect(measured.sizes).toEqual(Array.from({ length: 10 }, () => 10 * 1024 * 1024));
    expect(measured.arrived).toBe(10);
    expect(measured.growth).toBeLessThan(30 * 1024 * 1024);
    await Promise.all(measured.drafts.map((draft) => draft.discard()));
  });
});

const STORE_MODULE = new URL('../../src/queue/sqlite/sqlite-store.ts', import.meta.url).href;
const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));

// One claiming worker as its own process: opens the store, says "ready",
// waits for a line on stdin, claims two at a time until nothing is left,
// then prints the delivery ids it got as one JSON line.
const CLAIMER = `
  const { createInterface } = await import('node:readline');
  const { openSqliteStore } = await import(process.env.STORE_MODULE);
  const store = await openSqliteStore({ path: process.env.QUEUE_DB, removeOrphans: false });
  const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  console.log('ready');
  await lines.next();
  const claimed = [];
  for (;;) {
    const batch = await store.claimDue({ now: new Date(Number(process.env.CLAIM_AT)), limit: 2, leaseMs: 600000, owner: process.env.OWNER });
    if (batch.length === 0) break;
    claimed.push(...batch.map((c) => c.deliveryId));
  }
  console.log(JSON.stringify(claimed));
  await store.close();
  process.exit(0);
`;

/** startClaimer - spawn one CLAIMER process on the queue at `path`. */
function startClaimer(options: { path: string; owner: string; now: number }): { child: ChildProcess; ready: Promise<void>; go: () => void; claimed: Promise<string[]> } {
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', CLAIMER], {
    cwd: REPO_ROOT,
    env: { ...process.env, STORE_MODULE, QUEUE_DB: options.path, OWNER: options.owner, CLAIM_AT: String(options.now) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  const lines: string[] = [];
  let markReady!: () => void;
  const ready = new Promise<void>((resolve, reject) => {
    markReady = resolve;
    void exited.then((code) => reject(new Error(`claimer ${options.owner} exited (${code}) before it was ready: ${stderr}`)));
  });
  createInterface({ input: child.stdout }).on('line', (line) => {
    lines.push(line);
    if (line === 'ready') markReady();
  });
  const claimed = exited.then((code) => {
    if (code !== 0) throw new Error(`claimer ${options.owner} exited with ${code}: ${stderr}`);
    return JSON.parse(lines.at(-1) ?? '[]') as string[];
  });
  return { child, ready, go: () => child.stdin.write('go\n'), claimed };
}
