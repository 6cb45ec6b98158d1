// The SQLite queue store alone, without sockets: what one message costs the
// store in CPU and wall time, for a given group-commit batch size. Each
// round commits `batch` messages at once (one group commit), claims them
// (one claim transaction) and records each delivered (one group commit),
// as the relay does when `batch` messages arrive together. 50 rounds warm
// up first. Measures the whole process (the store runs on this event loop
// and libuv's thread pool), so nothing else should run meanwhile; compare
// two commits by alternating runs (bench/ROUNDS.md, "Fifth round").
// Then every message, all done, is purged by the relay's retention sweep
// (done-purge.ts, RELAY_SWEEP's batch size, no bound on batches): CPU per
// message purged, the event loop's delay meanwhile (how long arrivals can
// wait behind a batch), and the database's size per done message before.
//
// A queue that holds mail for a next hop that is down, queued first
// (bench/ROUNDS.md, "Twenty-seventh round"): with --deferred N, N messages
// to it deferred for an hour; with --waiting N, N messages to it due again,
// every claim told that its delivery slots are all busy; --suspend adds,
// before the rounds, the scheduler's suspension of that destination (found
// dead, dead-destinations.ts), and says how long the event loop waited for it.
//
//   npx tsx bench/store.ts [--batch 10] [--messages 3000] [--size 4096] [--deferred 0] [--waiting 0] [--suspend]
//
// How it fails: rejects when the store cannot be opened in a temporary
// directory under /var/tmp, or a claim does not return every message just
// committed; the directory is removed on every way out (cleanup.ts).
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { silentLogger } from '../src/observability/logger.ts';
import { createDonePurge, RELAY_SWEEP } from '../src/queue/done-purge.ts';
import type { QueueStore, StoredEnvelope } from '../src/queue/queue-store.ts';
import { openSqliteStore } from '../src/queue/sqlite/sqlite-store.ts';
import { Cleanup } from './cleanup.ts';

const WARM_UP_ROUNDS = 50;

const ENVELOPE: StoredEnvelope = {
  mailFrom: 'sender@source.test',
  recipients: ['rcpt@sink.test'],
  bodyType: '7BIT',
  smtpUtf8: false,
  client: { address: '127.0.0.1', helo: 'client.test', listener: 'relay' },
};

/** The destination that is down: its messages are queued before the measured rounds (--deferred, --waiting). */
const DOWN = 'down.test';

/** runRound - commit `batch` messages together, claim them, record each delivered (or, with `deferUntil`, deferred). */
async function runRound(store: QueueStore, batch: number, body: Buffer, { envelope = ENVELOPE, deferUntil, downBusy = false }: { envelope?: StoredEnvelope; deferUntil?: Date; downBusy?: boolean } = {}): Promise<void> {
  await Promise.all(
    Array.from({ length: batch }, async () => {
      const draft = store.beginMessage();
      await draft.writeBody(Readable.from([body]));
      await draft.commit(envelope);
    }),
  );
  const now = new Date();
  const claims = await store.claimDue({ now, limit: batch, leaseMs: 600_000, owner: 'bench', perDestination: { limit: 1000, busy: downBusy ? { [DOWN]: 1000 } : {} } });
  if (claims.length !== batch) throw new Error(`claimed ${claims.length} of the ${batch} messages just committed`);
  const attempt = { startedAt: now, endedAt: now, host: '127.0.0.1', ip: '127.0.0.1', port: 25, policy: { level: 'none' as const, source: 'bench' } };
  const [reply, outcome] = deferUntil ? (['421 4.4.2 down', 'deferred'] as const) : (['250 2.0.0 Ok: queued', 'delivered'] as const);
  await Promise.all(
    claims.map((claim) =>
      store.recordAttempt(
        { deliveryId: claim.deliveryId, owner: 'bench' },
        {
          attempts: [{ ...attempt, reply, outcome }],
          recipients: [{ address: envelope.recipients[0]!, result: outcome, reply }],
          nextAttemptAt: deferUntil ?? now,
        },
      ),
    ),
  );
}

/** measureStore - CPU and wall time per message over `rounds` rounds after the warm-up, then the purge of them all, in a store under `dir`. */
async function measureStore(dir: string, batch: number, rounds: number, size: number, backlog: { deferred: number; waiting: number; suspend: boolean }): Promise<string> {
  const file = join(dir, 'queue.db');
  const store = await openSqliteStore({ path: file });
  try {
    const body = Buffer.alloc(size, 'x\r\n');
    const envelope = { ...ENVELOPE, recipients: [`rcpt@${DOWN}`] };
    const queueFor = async (count: number, deferUntil: Date) => {
      for (let left = count; left > 0; left -= batch) await runRound(store, Math.min(batch, left), body, { envelope, deferUntil });
    };
    // Each tried once and deferred for an hour; the waiting ones then made due again, as `queue retry` does.
    const inAnHour = new Date(Date.now() + 3_600_000);
    await queueFor(backlog.waiting, inAnHour);
    if (backlog.waiting > 0) await store.retryMessages({ all: true }, new Date(Date.now() - 1000));
    await queueFor(backlog.deferred, inAnHour);
    const downBusy = backlog.waiting > 0;
    let suspension = '';
    if (backlog.suspend) {
      const loopDelay = monitorEventLoopDelay({ resolution: 1 });
      loopDelay.enable();
      const startedAt = performance.now();
      const cpuBefore = process.cpuUsage();
      const moved = await store.suspendDestination(DOWN, { now: new Date(), minWaitMs: 300_000, maxWaitMs: 4_000_000, lifetimeMs: 5 * 86_400_000, reply: '4.4.1 delivery temporarily suspended: connection refused' });
      const cpu = process.cpuUsage(cpuBefore);
      loopDelay.disable();
      suspension = `; the suspension of ${moved} deliveries took ${(performance.now() - startedAt).toFixed(0)} ms, CPU ${((cpu.user + cpu.system) / moved).toFixed(1)} µs per delivery, event loop delay max ${(loopDelay.max / 1e6).toFixed(1)} ms`;
    }
    for (let i = 0; i < WARM_UP_ROUNDS; i++) await runRound(store, batch, body, { downBusy });
    const cpuBefore = process.cpuUsage();
    const wallBefore = performance.now();
    for (let i = 0; i < rounds; i++) await runRound(store, batch, body, { downBusy });
    const cpu = process.cpuUsage(cpuBefore);
    const messages = rounds * batch;
    const perMessage = (micros: number) => (micros / messages).toFixed(0);
    const stored = `batch ${batch}, ${size} bytes, ${messages} messages${backlog.deferred ? `, ${backlog.deferred} deferred` : ''}${backlog.waiting ? `, ${backlog.waiting} due to a destination with no slot free` : ''}: CPU ${perMessage(cpu.user + cpu.system)} µs per message (user ${perMessage(cpu.user)}), wall ${((performance.now() - wallBefore) / messages).toFixed(3)} ms${suspension}`;
    return backlog.deferred + backlog.waiting > 0 ? stored : `${stored}\n${await measurePurge(store, file, messages + WARM_UP_ROUNDS * batch)}`;
  } finally {
    await store.close();
  }
}

/** measurePurge - purge every done message in RELAY_SWEEP's batches: CPU per message, the event loop's delay, bytes per done message before. */
async function measurePurge(store: QueueStore, file: string, done: number): Promise<string> {
  // The WAL is folded into the database by the purge's own writes: count both.
  const size = async () => (await stat(file)).size + (await stat(`${file}-wal`).catch(() => ({ size: 0 }))).size;
  const bytesPerMessage = (await size()) / done;
  const cpuBefore = process.cpuUsage();
  const loopDelay = monitorEventLoopDelay({ resolution: 1 });
  loopDelay.enable();
  // The relay's own sweep, with no bound on batches and every done message old enough.
  const sweeper = createDonePurge({ ...RELAY_SWEEP, maxBatches: Number.MAX_SAFE_INTEGER, store, keepMs: 0, now: () => new Date(Date.now() + 1000), logger: silentLogger() });
  const purged = await sweeper.sweep();
  loopDelay.disable();
  if (purged !== done) throw new Error(`purged ${purged} of the ${done} done messages`);
  const cpu = process.cpuUsage(cpuBefore);
  const ms = (ns: number) => (ns / 1e6).toFixed(1);
  return `purge in batches of ${RELAY_SWEEP.batch}: CPU ${((cpu.user + cpu.system) / purged).toFixed(0)} µs per message, event loop delay p99 ${ms(loopDelay.percentile(99))} ms, max ${ms(loopDelay.max)} ms; database before it: ${(bytesPerMessage / 1024).toFixed(2)} KB per done message`;
}

const { values } = parseArgs({
  options: {
    batch: { type: 'string', default: '10' },
    messages: { type: 'string', default: '3000' },
    size: { type: 'string', default: '4096' },
    deferred: { type: 'string', default: '0' },
    waiting: { type: 'string', default: '0' },
    suspend: { type: 'boolean', default: false },
  },
});

/** wholeNumber - an option's value as a whole number >= `least` (1 unless given), or a thrown error naming the option. */
function wholeNumber(option: string, value: string, least = 1): number {
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < least) throw new Error(`--${option} must be a whole number >= ${least}, not ${value}`);
  return n;
}

const batch = wholeNumber('batch', values.batch);
const messageCount = wholeNumber('messages', values.messages);
const cleanup = new Cleanup();
cleanup.install();
const dir = await cleanup.tempDir('postern-store-bench-');
process.stdout.write(`${await measureStore(dir, batch, Math.max(1, Math.round(messageCount / batch)), wholeNumber('size', values.size), { deferred: wholeNumber('deferred', values.deferred, 0), waiting: wholeNumber('waiting', values.waiting, 0), suspend: values.suspend })}\n`);
await cleanup.runAll();
