// The operator's bounce (operator-bounce.ts) on both real stores, as the CLI
// runs it: messages committed through a second store handle (the relay's),
// so the bouncer has no body in memory. A concurrent operator action is
// injected at one exact point through that second handle (a Proxy only
// decides when it runs). Several of these came from a review of the first
// version, which failed them.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterEach, describe, expect, it } from 'vitest';
import { silentLogger } from '../../src/observability/logger.ts';
import { bounceMessages, type BounceContext } from '../../src/queue/operator-bounce.ts';
import { openPostgresStore } from '../../src/queue/postgres/pg-store.ts';
import type { QueueStore, StoredEnvelope } from '../../src/queue/queue-store.ts';
import { openSqliteStore } from '../../src/queue/sqlite/sqlite-store.ts';
import { formatRfc5322Date } from '../../src/smtp/rfc5322-date.ts';
import { createTestSchema, postgresTestUrl, SKIP_MESSAGE, type TestSchema } from '../helpers/postgres.ts';
import { attemptWith, commitMessage, envelopeWith, readAll, receivedAtOf } from '../helpers/queue-fixtures.ts';

const baseUrl = await postgresTestUrl();
if (!baseUrl) console.warn(SKIP_MESSAGE);
const LEASE = 600_000;
const OWNER = 'operator-laptop/999999/cafe';

interface Backend {
  store: QueueStore;
  peer: QueueStore;
  cleanup(): Promise<void>;
}

const backends: [string, () => Promise<Backend>][] = [
  ['sqlite', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'review-bounce-'));
    const path = join(dir, 'queue.db');
    const store = await openSqliteStore({ path });
    const peer = await openSqliteStore({ path, removeOrphans: false });
    return { store, peer, cleanup: async () => { await store.close(); await peer.close(); await rm(dir, { recursive: true, force: true }); } };
  }],
];
if (baseUrl) {
  backends.push(['postgres', async () => {
    const schema: TestSchema = await createTestSchema(baseUrl);
    const store = await openPostgresStore({ url: schema.url });
    const peer = await openPostgresStore({ url: schema.url, removeOrphans: false });
    return { store, peer, cleanup: async () => { await store.close(); await peer.close(); await schema.drop(); } };
  }]);
}

function context(now: Date): BounceContext {
  return { now, hostname: 'relay.test', owner: OWNER, leaseMs: LEASE, log: silentLogger() };
}

/** deliveryStatus - the message/delivery-status part of a report: per-message group, then one per recipient. */
function deliveryStatus(report: Buffer): Record<string, string>[] {
  const text = report.toString('latin1');
  const boundary = /boundary="([^"]+)"/.exec(text)![1]!;
  const part = text.split(`--${boundary}`).find((p) => p.includes('Content-Type: message/delivery-status'))!;
  const body = part.slice(part.indexOf('\r\n\r\n') + 4).replace(/\r\n[ \t]+/g, ' ');
  return body.split(/\r\n\r\n/).filter((g) => g.trim()).map((g) => Object.fromEntries(g.split('\r\n').filter(Boolean).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()])));
}

async function reportsTo(store: QueueStore, sender: string): Promise<Buffer[]> {
  const reports = (await store.listMessages()).filter((m) => m.mailFrom === '' && m.recipients.includes(sender));
  return Promise.all(reports.map((r) => readAll(store.readBody(r.id))));
}

for (const [name, open] of backends) {
  describe(`queue bounce on ${name}`, () => {
    let b: Backend;
    afterEach(async () => b?.cleanup());

    async function queue(recipients: string[], changes: Partial<StoredEnvelope> = {}): Promise<string> {
      return commitMessage(b.peer, [Buffer.from(`Subject: bounce\r\nMessage-ID: <${recipients[0]}>\r\n\r\nhello\r\n`)], envelopeWith({ mailFrom: 'sender@example.org', recipients, ...changes }));
    }

    it('a message deleted by another operator mid-bounce: the rest is still bounced, and nothing is left leased to the bouncer', async () => {
      b = await open();
      const [a, gone, c] = [await queue(['r@a.test']), await queue(['r@b.test']), await queue(['r@c.test'])];
      const now = new Date();
      // `postern queue delete GONE` from another shell, right after the bounce took its leases.
      const store = new Proxy(b.store, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (prop !== 'claimMessages') return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          return async (...args: Parameters<QueueStore['claimMessages']>) => {
            const claimed = await target.claimMessages(...args);
            expect(await b.peer.deleteMessages({ ids: [gone] })).toEqual([gone]);
            return claimed;
          };
        },
      });
      const outcome = await bounceMessages(store, { ids: [a, gone, c] }, context(now)).then((ids) => ({ ids }), (err: Error) => ({ error: err.message }));
      const shownC = (await b.peer.showMessage(c))!;
      // What a running relay's scheduler can take now (a minute later): message c is due.
      const relayClaims = await b.peer.claimDue({ now: new Date(now.getTime() + 60_000), limit: 10, leaseMs: LEASE, owner: 'relay/1/beef' });
      expect({
        outcome,
        c: { state: shownC.state, leasedBy: shownC.deliveries[0]!.leasedBy, leasedUntil: shownC.deliveries[0]!.leasedUntil },
        relayCanTakeC: relayClaims.some((x) => x.messageId === c),
      }).toEqual({ outcome: { ids: [a, c] }, c: { state: 'done', leasedBy: undefined, leasedUntil: undefined }, relayCanTakeC: false });
    });

    // A record that fails may have committed (a connection lost after COMMIT, a failed fsync of the WAL): the report
    // was withdrawn, and the message, done and bounced, left its sender untold. One that failed before it committed
    // must still take its report back: the message is still queued, and may yet be delivered.
    it.each([
      ['after it committed', true, 'done', 1],
      ['before it committed', false, 'queued', 0],
    ] as const)('keeps the report of a record that fails %s, and only then', async (_when, commits, state, reports) => {
      b = await open();
      const id = await queue(['r@a.test']);
      const store = new Proxy(b.store, {
        get(target, prop, receiver) {
          const value = Reflect.get(target, prop, receiver) as unknown;
          if (prop !== 'recordAttempt') return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
          return async (...args: Parameters<QueueStore['recordAttempt']>) => {
            if (commits) await target.recordAttempt(...args);
            throw new Error('Connection terminated unexpectedly');
          };
        },
      });
      await bounceMessages(store, { ids: [id] }, context(new Date())).catch(() => undefined);
      expect((await b.peer.showMessage(id))?.state).toBe(state);
      expect(await reportsTo(b.peer, 'sender@example.org')).toHaveLength(reports);
    });

    // RFC 3464 §2.3.7: Last-Attempt-Date is "the date and time of the last attempt to relay, gateway, or deliver the message".
    it('reports Last-Attempt-Date as the last attempt (absent when there was none), not the time of the bounce', async () => {
      b = await open();
      const never = await queue(['never@a.test']);
      const tried = await queue(['tried@b.test']);
      const at = await receivedAtOf(b.store, tried);
      const [claim] = (await b.store.claimDue({ now: new Date(at + 10), limit: 10, leaseMs: LEASE, owner: 'relay/1/beef' })).filter((x) => x.messageId === tried);
      const attempt = attemptWith(at + 10, { reply: '451 4.2.0 Mailbox busy', outcome: 'deferred' });
      expect(await b.store.recordAttempt({ deliveryId: claim!.deliveryId, owner: 'relay/1/beef' }, { attempts: [attempt], recipients: [{ address: 'tried@b.test', result: 'deferred', reply: '451 4.2.0 Mailbox busy' }], nextAttemptAt: new Date(at + 3_600_000) })).toBe(true);
      const releaseClaims = await b.store.claimDue({ now: new Date(at + 10), limit: 10, leaseMs: LEASE, owner: 'x/1/x' });
      for (const r of releaseClaims) await b.store.releaseLease({ deliveryId: r.deliveryId, owner: 'x/1/x' });

      // The operator gives up two days later.
      const bounceAt = new Date(at + 2 * 86_400_000);
      expect((await bounceMessages(b.store, { ids: [never, tried] }, context(bounceAt))).sort()).toEqual([never, tried].sort());
      const groups = (await reportsTo(b.store, 'sender@example.org')).flatMap((r) => deliveryStatus(r).slice(1));
      const lastAttempt = Object.fromEntries(groups.map((g) => [g['Final-Recipient'], g['Last-Attempt-Date']]));
      expect(lastAttempt).toEqual({
        'rfc822; never@a.test': undefined,
        'rfc822; tried@b.test': formatRfc5322Date(attempt.endedAt),
      });
    });

    it('one bounce of one message gives its sender one report, as postsuper -e does, not one per recipient domain', async () => {
      b = await open();
      const id = await queue(['r@a.test', 'r@b.test', 'r@c.test']);
      expect(await bounceMessages(b.store, { ids: [id] }, context(new Date()))).toEqual([id]);
      expect((await reportsTo(b.store, 'sender@example.org')).length).toBe(1);
    });
  });
}

// A `queue retry` holds its messages' deliveries locked until it commits (pg-operator.ts): the bounce waits for
// it rather than pass the message over as if an attempt held it.
describe.skipIf(!baseUrl)('queue bounce beside a retry in progress (postgres)', () => {
  it('waits for the retry and returns the message', async () => {
    const schema = await createTestSchema(baseUrl!);
    const store = await openPostgresStore({ url: schema.url });
    const client = new pg.Client({ connectionString: baseUrl, options: `-c search_path=${schema.schema}` });
    const watcher = new pg.Client({ connectionString: baseUrl });
    await client.connect();
    await watcher.connect();
    try {
      const id = await commitMessage(store, [Buffer.from('Subject: x\r\n\r\nhi\r\n')], envelopeWith({ mailFrom: 'sender@example.org', recipients: ['r@a.test'] }));
      await client.query('BEGIN');
      await client.query("SELECT id FROM messages WHERE id = $1 FOR UPDATE", [id]);
      await client.query('UPDATE deliveries SET next_attempt_at = least(next_attempt_at, now()) WHERE message_id = ANY($1) AND NOT finished', [[id]]);
      let settled = false;
      const bouncing = bounceMessages(store, { ids: [id] }, context(new Date())).finally(() => (settled = true));
      // Commit only once the bounce waits on our locks (or ended without), so that it meets them (asked on a connection of its own:
      // within a transaction the statistics views keep their first snapshot).
      const waiting = "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'SELECT id FROM messages WHERE id = ANY%FOR UPDATE'";
      while (!settled && (await watcher.query(waiting)).rowCount === 0) {
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      await client.query('COMMIT');
      expect(await bouncing).toEqual([id]);
      const shown = (await store.showMessage(id))!;
      expect({ leased: shown.deliveries.some((d) => d.leasedUntil !== undefined), state: shown.state }).toEqual({ leased: false, state: 'done' });
    } finally {
      await client.end();
      await watcher.end();
      await store.close();
      await schema.drop();
    }
  });
});
