// The retention of done messages (queue.keepDone, src/queue/done-purge.ts):
// the sweep over a real SQLite store, in batches, on its timer, through a
// failure and at stop; then in a running relay, where a delivered
// message's history stays for keepDone on the relay's clock and is removed
// after it.
import Database from 'better-sqlite3';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { createLogger } from '../../src/observability/logger.ts';
import { createDonePurge, type DonePurgeOptions } from '../../src/queue/done-purge.ts';
import type { QueueStore } from '../../src/queue/queue-store.ts';
import { openSqliteStore } from '../../src/queue/sqlite/sqlite-store.ts';
import { NEXT_HOP_NAME, queueShow, startNextHop, submitMessage, writeTestCa, driveByHand, type NextHop } from '../helpers/next-hop.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { commitMessage, deliverMessage, envelopeWith } from '../helpers/queue-fixtures.ts';
import { testClock } from '../helpers/test-clock.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const HOUR = 3_600_000;

describe('the sweep of done messages', () => {
  let dir: string;
  let dbPath: string;
  let store: QueueStore;
  let lines: Record<string, unknown>[];
  const logger = () =>
    createLogger({
      level: 'debug',
      destination: new Writable({
        write(chunk: Buffer, _encoding, done) {
          lines.push(JSON.parse(chunk.toString()) as Record<string, unknown>);
          done();
        },
      }),
    });

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-purge-'));
    dbPath = join(dir, 'queue.db');
    store = await openSqliteStore({ path: dbPath });
    lines = [];
  });
  afterEach(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** deliverNow - commit a message and record it delivered, by an attempt ending at `doneAt`; returns its id. */
  async function deliverNow(doneAt: number): Promise<string> {
    const id = await commitMessage(store, [Buffer.from('Subject: x\r\n\r\nx\r\n')], envelopeWith({ recipients: ['r@a.test'] }));
    await deliverMessage(store, id, doneAt);
    return id;
  }

  function purge(changes: Partial<DonePurgeOptions>) {
    return createDonePurge({ store, keepMs: HOUR, intervalMs: 60_000, batch: 2, maxBatches: 10, now: () => new Date(), logger: logger(), ...changes });
  }

  it('removes, a batch at a time, every message done longer than keepMs ago, and nothing else', async () => {
    const t = Date.now();
    const old = [];
    for (let i = 0; i < 5; i++) old.push(await deliverNow(t - 2 * HOUR + i));
    const recent = await deliverNow(t - HOUR + 60_000);
    const waiting = await commitMessage(store, [Buffer.from('x')], envelopeWith({ recipients: ['w@b.test'] }));

    expect(await purge({ now: () => new Date(t) }).sweep()).toBe(5);
    for (const id of old) expect(await store.showMessage(id)).toBeUndefined();
    expect((await store.showMessage(recent))!.state).toBe('done');
    expect((await store.listMessages({ includeDone: true })).map((m) => m.id)).toEqual([recent, waiting]);
    expect(lines.filter((l) => l.msg === 'done messages removed from the queue history')).toEqual([
      expect.objectContaining({ removed: 5, doneBefore: new Date(t - HOUR).toISOString() }),
    ]);
    expect(await purge({ now: () => new Date(t) }).sweep()).toBe(0);
    expect(lines.filter((l) => l.msg === 'done messages removed from the queue history')).toHaveLength(1); // nothing removed, nothing said
  });

  it('removes at most maxBatches × batch in one sweep, and the rest in the next', async () => {
    const t = Date.now() - 2 * HOUR;
    for (let i = 0; i < 5; i++) await deliverNow(t + i);
    const sweeper = purge({ batch: 2, maxBatches: 2 });
    expect(await sweeper.sweep()).toBe(4);
    expect(await store.listMessages({ includeDone: true })).toHaveLength(1);
    expect(await sweeper.sweep()).toBe(1);
    expect(await sweeper.sweep()).toBe(0);
  });

  it('keeps nothing with keepMs 0, and sweeps on its own every interval, also after a sweep that failed', async () => {
    const sweeper = purge({ keepMs: 0, intervalMs: 10 });
    const first = await deliverNow(Date.now() - 1);
    // A real failure of the store: the table it deletes from is gone (renamed by hand, as a broken schema would be).
    const db = new Database(dbPath);
    db.exec('ALTER TABLE messages RENAME TO messages_aside');
    sweeper.start();
    try {
      await vi.waitFor(() => expect(lines.some((l) => l.msg === 'done messages not removed; next sweep retries')).toBe(true), { timeout: 10_000 });
    } finally {
      db.exec('ALTER TABLE messages_aside RENAME TO messages');
      db.close();
    }
    await vi.waitFor(async () => expect(await store.showMessage(first)).toBeUndefined(), { timeout: 10_000 });
    const second = await deliverNow(Date.now() - 1);
    await vi.waitFor(async () => expect(await store.showMessage(second)).toBeUndefined(), { timeout: 10_000 });
    await sweeper.stop();
  });

  it('stops after the batch in flight: stop() resolves once the store is no longer used, and no sweep follows', async () => {
    const t = Date.now() - 2 * HOUR;
    for (let i = 0; i < 10; i++) await deliverNow(t + i);
    const sweeper = purge({ batch: 1, intervalMs: 1 });
    sweeper.start();
    const sweeping = sweeper.sweep();
    await sweeper.stop();
    const removed = await sweeping;
    expect(removed).toBeGreaterThanOrEqual(1);
    expect(removed).toBeLessThan(10);
    await store.close(); // a sweep still running would now fail, and log it
    store = await openSqliteStore({ path: dbPath });
    expect(await store.listMessages({ includeDone: true })).toHaveLength(10 - removed);
    expect(lines.some((l) => l.msg === 'done messages not removed; next sweep retries')).toBe(false);
  });
});

describe('queue.keepDone in a running relay', () => {
  let relay: TestRelay;
  let hop: NextHop;
  let dns: DnsServer;
  let removeCa: () => Promise<void>;
  const clock = testClock();

  beforeEach(async () => {
    const test = await writeTestCa();
    removeCa = test.remove;
    hop = await startNextHop('starttls-ca-right-name', { ca: test.ca });
    dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] } });
    relay = await startTestRelay(
      {
        queue: { keepDone: '1h' },
        outbound: { enabled: true, routes: { 'dest.test': { host: NEXT_HOP_NAME, port: hop.port, tls: 'verify' } }, dns: { servers: [dns.address] }, tls: { caFile: test.caFile } },
      },
      { now: clock.now },
    );
  });
  afterEach(async () => {
    await relay?.stop();
    await hop?.close();
    await dns?.close();
    await removeCa?.();
  });

  it('keeps a delivered message’s history for keepDone on the relay’s clock, then removes it', async () => {
    const scheduler = await driveByHand(relay);
    const id = await submitMessage(relay, { from: 'sender@sender.test', to: ['rcpt@dest.test'] });
    expect(await scheduler.runDue()).toBe(1);
    expect((await queueShow(relay, id)).outcome).toBe('delivered');

    expect(await relay.donePurge.sweep()).toBe(0);
    clock.advance(HOUR - 60_000);
    expect(await relay.donePurge.sweep()).toBe(0);
    expect((await queueShow(relay, id)).attempts).toHaveLength(1);
    clock.advance(2 * 60_000);
    expect(await relay.donePurge.sweep()).toBe(1);
    await expect(queueShow(relay, id)).rejects.toThrow(/no such message/);
    expect(relay.logs).toContainEqual(expect.objectContaining({ component: 'done-purge', msg: 'done messages removed from the queue history', removed: 1 }));
  });
});
