// The delivery half of the QueueStore contract (registered by
// runQueueStoreContract): deliveries per domain, claims and leases, attempts
// and outcomes, done messages, the operator's verbs, nextDueAt.
//
// Time comes from the arguments: a message is first due at its receivedAt
// (read back with showMessage), and every claim names its `now`, so no test
// sleeps or depends on the clock beyond the commit itself.
import { beforeEach, describe, expect, it } from 'vitest';
import { CLAIM_LOOK_AHEAD, recordMayHaveStood, SUSPEND_BATCH } from '../../src/queue/delivery-rules.ts';
import type { ClaimedDelivery, QueueStore, RecipientOutcome, StoredEnvelope } from '../../src/queue/queue-store.ts';
import { attemptWith, commitMessage, deliverMessage, envelopeWith, readAll, receivedAtOf } from './queue-fixtures.ts';
import type { QueueStoreHarness } from './queue-store-contract.ts';

const LEASE = 60_000;
const DAY = 86_400_000;
const WORKER = 'worker-a';

/** runDeliveryContract - register the delivery tests; `current` is the harness of the running test. */
export function runDeliveryContract(current: () => QueueStoreHarness): void {
  describe('deliveries', () => {
    let store: QueueStore;
    beforeEach(() => {
      store = current().store;
    });

    /** queue - commit a message to these recipients; returns its id and when it was received (first due). */
    async function queue(recipients: string[], changes: Partial<StoredEnvelope> = {}): Promise<{ id: string; at: number }> {
      const id = await commitMessage(store, [Buffer.from(`Subject: to ${recipients.join(', ')}\r\n\r\nhello\r\n`)], envelopeWith({ recipients, ...changes }));
      return { id, at: await receivedAtOf(store, id) };
    }

    function claim(now: number, owner = WORKER, limit = 100, from = store): Promise<ClaimedDelivery[]> {
      return from.claimDue({ now: new Date(now), limit, leaseMs: LEASE, owner });
    }

    /** record - one attempt at `at` with these outcomes, next attempt at `next`. */
    function record(claimed: ClaimedDelivery, at: number, recipients: RecipientOutcome[], next = at + 300_000, owner = WORKER): Promise<boolean> {
      return store.recordAttempt({ deliveryId: claimed.deliveryId, owner }, { attempts: [attemptWith(at)], recipients, nextAttemptAt: new Date(next) });
    }

    /** finishAll - claim everything due at `now` and deliver it: those messages become done. */
    async function finishAll(now: number): Promise<void> {
      for (const claimed of await claim(now, 'finisher')) {
        const delivered = claimed.recipients.map((r) => outcome(r.address, 'delivered'));
        expect(await record(claimed, now, delivered, now, 'finisher')).toBe(true);
      }
    }

    async function states(): Promise<[string, string][]> {
      return (await store.listMessages()).map((m) => [m.id, m.state]);
    }

    it('commits one delivery per recipient domain, due at once, with its recipients in RCPT order', async () => {
      const { id, at } = await queue(['a1@a.test', 'b@b.test', 'a2@A.Test']);
      expect(await claim(at - 1)).toEqual([]);

      const claims = byDomain(await claim(at));
      const common = {
        messageId: id, mailFrom: 'alice@example.org', attempts: 0, receivedAt: new Date(at), bodyType: '8BITMIME',
        smtpUtf8: false, requireTls: false, dsn: {}, leaseOwner: WORKER, deliveryId: expect.any(String),
        size: Buffer.byteLength('Subject: to a1@a.test, b@b.test, a2@A.Test\r\n\r\nhello\r\n'),
      };
      expect(claims).toEqual([
        { ...common, domain: 'a.test', recipients: [{ address: 'a1@a.test' }, { address: 'a2@A.Test' }] },
        { ...common, domain: 'b.test', recipients: [{ address: 'b@b.test' }] },
      ]);
      expect(claims[0]!.deliveryId).not.toBe(claims[1]!.deliveryId);
      expect(byDomain((await store.showMessage(id))!.deliveries)).toEqual([
        { id: claims[0]!.deliveryId, domain: 'a.test', attempts: 0, nextAttemptAt: new Date(at), leasedUntil: new Date(at + LEASE), leasedBy: WORKER },
        { id: claims[1]!.deliveryId, domain: 'b.test', attempts: 0, nextAttemptAt: new Date(at), leasedUntil: new Date(at + LEASE), leasedBy: WORKER },
      ]);
    });

    // What a worker whose record's answer was lost reads back to decide whether to keep the report it queued: a
    // delivery still leased to it (the record did not stand), recorded, or gone with its message (queue.keepDone 0
    // removes a done one at once: its report was withdrawn, and the sender never told of a bounce).
    it('shows, after a record, whether it may have stood (recordMayHaveStood) to the worker that made it', async () => {
      const { id, at } = await queue(['a@a.test', 'b@b.test']);
      const [first, second] = byDomain(await claim(at));
      const shown = async (deliveryId: string) => (await store.showMessage(id))?.deliveries.find((d) => d.id === deliveryId);
      expect(recordMayHaveStood(await shown(first!.deliveryId), WORKER)).toBe(false);
      expect(await record(first!, at, [outcome('a@a.test', 'bounced')])).toBe(true);
      expect(recordMayHaveStood(await shown(first!.deliveryId), WORKER)).toBe(true);
      expect(await store.deleteMessages({ ids: [id] })).toEqual([id]);
      expect(recordMayHaveStood(await shown(second!.deliveryId), WORKER)).toBe(true);
    });

    it('carries REQUIRETLS, BODY, SMTPUTF8 and DSN parameters to the claim, and shows the envelope as committed', async () => {
      const envelope = envelopeWith({
        recipients: ['x@a.test', 'y@a.test', 'z@b.test'], bodyType: '7BIT', smtpUtf8: true, requireTls: true,
        dsn: { ret: 'HDRS', envid: 'QQ314159', recipients: { 'x@a.test': { notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;x@a.test' }, 'z@b.test': { notify: ['NEVER'] } } },
      });
      const id = await commitMessage(store, [Buffer.from('x')], envelope);
      const claims = byDomain(await claim(await receivedAtOf(store, id)));

      expect(claims.map(({ domain, recipients, bodyType, smtpUtf8, requireTls, dsn }) => ({ domain, recipients, bodyType, smtpUtf8, requireTls, dsn }))).toEqual([
        {
          domain: 'a.test', bodyType: '7BIT', smtpUtf8: true, requireTls: true, dsn: { ret: 'HDRS', envid: 'QQ314159' },
          recipients: [{ address: 'x@a.test', dsn: { notify: ['SUCCESS', 'FAILURE'], orcpt: 'rfc822;x@a.test' } }, { address: 'y@a.test' }],
        },
        {
          domain: 'b.test', bodyType: '7BIT', smtpUtf8: true, requireTls: true, dsn: { ret: 'HDRS', envid: 'QQ314159' },
          recipients: [{ address: 'z@b.test', dsn: { notify: ['NEVER'] } }],
        },
      ]);
      expect((await store.showMessage(id))!.envelope).toEqual(envelope);

      // Without REQUIRETLS or DSN: requireTls false, and no dsn at all.
      const plain = envelopeWith({ recipients: ['p@a.test'] });
      const plainId = await commitMessage(store, [Buffer.from('x')], plain);
      expect((await store.showMessage(plainId))!.envelope).toStrictEqual({ ...plain, requireTls: false });
    });

    it('claims only deliveries due at `now` and of messages not held', async () => {
      const { id, at } = await queue(['r@a.test']);
      expect(await claim(at - 1)).toEqual([]);
      expect(await store.holdMessages({ ids: [id] })).toEqual([id]);
      expect(await claim(at + DAY)).toEqual([]);
      expect(await store.releaseMessages({ ids: [id] })).toEqual([id]);
      expect((await claim(at + DAY)).map((c) => c.messageId)).toEqual([id]);
    });

    it('claims at most `limit`, oldest due first', async () => {
      const m1 = await queue(['r@a.test']);
      const m2 = await queue(['r@b.test']);
      const m3 = await queue(['r@c.test']);
      const now = m3.at;
      // Due times in the reverse of commit order (retry only ever makes a delivery due earlier).
      expect(await store.retryMessages({ ids: [m3.id] }, new Date(now - 3 * DAY))).toEqual([m3.id]);
      expect(await store.retryMessages({ ids: [m1.id] }, new Date(now - 2 * DAY))).toEqual([m1.id]);
      expect(await store.retryMessages({ ids: [m2.id] }, new Date(now - DAY))).toEqual([m2.id]);

      expect(await claim(now, WORKER, 0)).toEqual([]);
      expect((await claim(now, WORKER, 2)).map((c) => c.messageId)).toEqual([m3.id, m1.id]);
      expect((await claim(now, WORKER, 2)).map((c) => c.messageId)).toEqual([m2.id]);
      expect(await claim(now, WORKER, 2)).toEqual([]);
    });

    it('passes over a domain at its per-destination limit, counting the busy ones, and takes the domains after it', async () => {
      const a1 = await queue(['r1@a.test']);
      const a2 = await queue(['r2@a.test']);
      const a3 = await queue(['r3@a.test']);
      const b = await queue(['r@b.test']);
      const claimWith = (busy: Record<string, number>, limit = 2) =>
        store.claimDue({ now: new Date(b.at), limit: 10, leaseMs: LEASE, owner: WORKER, perDestination: { limit, busy } });

      // One a.test delivery already in flight: one more of it, then b.test from further down the order.
      expect((await claimWith({ 'a.test': 1 })).map((c) => c.messageId)).toEqual([a1.id, b.id]);
      expect(await claimWith({ 'a.test': 2 })).toEqual([]);
      expect((await claimWith({ 'b.test': 5 })).map((c) => c.messageId)).toEqual([a2.id, a3.id]);
      await expect(claimWith({}, 0)).rejects.toThrow('perDestination.limit must be a whole number >= 1, not 0');
    });

    it('reads at most `limit` + CLAIM_LOOK_AHEAD due deliveries past a domain with slots left: one further down waits', async () => {
      // A backlog to a.test, which has one slot: the claim takes one of it and passes over the rest, as far as
      // the window reaches (3 + CLAIM_LOOK_AHEAD rows). b.test's delivery is the window's last row, c.test's the
      // first past it.
      const backlog: string[] = [];
      for (let i = 0; i < 2 + CLAIM_LOOK_AHEAD; i++) backlog.push((await queue([`r${i}@a.test`])).id);
      const b = await queue(['r@b.test']);
      const c = await queue(['r@c.test']);
      const claimWith = (busy: Record<string, number>) =>
        store.claimDue({ now: new Date(c.at), limit: 3, leaseMs: LEASE, owner: WORKER, perDestination: { limit: 1, busy } });
      expect((await claimWith({})).map((d) => d.messageId)).toEqual([backlog[0], b.id]);
      // With a.test at its limit, the query itself leaves its deliveries out: c.test is next.
      expect((await claimWith({ 'a.test': 1 })).map((d) => d.messageId)).toEqual([c.id]);
    });

    it('keeps a leased delivery from other workers until the lease lapses; the first owner then cannot record', async () => {
      const { id, at } = await queue(['r@a.test']);
      const [first] = await claim(at, 'worker-a');
      expect(await claim(at + LEASE - 1, 'worker-b')).toEqual([]);
      const [second] = await claim(at + LEASE, 'worker-b');
      expect(second).toMatchObject({ deliveryId: first!.deliveryId, leaseOwner: 'worker-b', attempts: 0, recipients: [{ address: 'r@a.test' }] });

      expect(await record(first!, at + 1000, [outcome('r@a.test', 'delivered')], at, 'worker-a')).toBe(false);
      const untouched = (await store.showMessage(id))!;
      expect(untouched.attempts).toEqual([]);
      expect(untouched.recipientStates).toEqual([{ address: 'r@a.test', state: 'queued' }]);

      expect(await record(second!, at + LEASE + 1000, [outcome('r@a.test', 'delivered')], at, 'worker-b')).toBe(true);
      expect((await store.showMessage(id))!.state).toBe('done');
    });

    it('lets the owner of a lapsed lease record while nobody else claimed the delivery', async () => {
      const { at } = await queue(['r@a.test']);
      const [claimed] = await claim(at);
      expect(await record(claimed!, at + 10 * LEASE, [outcome('r@a.test', 'delivered')])).toBe(true);
    });

    it('gives a lease back on releaseLease, to its owner only, with the delivery untouched', async () => {
      const { id, at } = await queue(['r@a.test']);
      const [claimed] = await claim(at, 'worker-a');
      await store.releaseLease({ deliveryId: claimed!.deliveryId, owner: 'worker-b' });
      expect(await claim(at, 'worker-c')).toEqual([]);

      await store.releaseLease({ deliveryId: claimed!.deliveryId, owner: 'worker-a' });
      expect((await store.showMessage(id))!.deliveries).toEqual([{ id: claimed!.deliveryId, domain: 'a.test', attempts: 0, nextAttemptAt: new Date(at) }]);
      expect(await claim(at, 'worker-c')).toMatchObject([{ deliveryId: claimed!.deliveryId, leaseOwner: 'worker-c', attempts: 0 }]);
      await store.releaseLease({ deliveryId: 'no-such-delivery', owner: 'worker-c' });
    });

    it('moves a lease on for its owner only: nobody else claims it until the new end, and the owner still records', async () => {
      const { id, at } = await queue(['r@a.test']);
      const [claimed] = await claim(at, 'worker-a');
      const lease = { deliveryId: claimed!.deliveryId, owner: 'worker-a' };
      expect(await store.renewLease(lease, new Date(at + 3 * LEASE))).toBe(true);
      expect(await store.renewLease({ ...lease, owner: 'worker-b' }, new Date(at + 10 * LEASE))).toBe(false);
      expect(await store.renewLease({ ...lease, deliveryId: 'no-such-delivery' }, new Date(at + 10 * LEASE))).toBe(false);
      expect((await store.showMessage(id))!.deliveries[0]!.leasedUntil).toEqual(new Date(at + 3 * LEASE));
      expect(await claim(at + 3 * LEASE - 1, 'worker-b')).toEqual([]);
      expect(await record(claimed!, at + 2 * LEASE, [outcome('r@a.test', 'delivered')], at, 'worker-a')).toBe(true);
      // Finished: nothing left to renew.
      expect(await store.renewLease(lease, new Date(at + 4 * LEASE))).toBe(false);
    });

    it('does not renew a lease that lapsed and was claimed by another worker', async () => {
      const { at } = await queue(['r@a.test']);
      const [first] = await claim(at, 'worker-a');
      await claim(at + LEASE, 'worker-b');
      expect(await store.renewLease({ deliveryId: first!.deliveryId, owner: 'worker-a' }, new Date(at + 5 * LEASE))).toBe(false);
    });

    it('names the holders of leases not lapsed, and gives back every lease of the owners named, to anyone', async () => {
      const { at } = await queue(['r@a.test', 's@b.test', 't@c.test']);
      expect(await store.leaseHolders(new Date(at))).toEqual([]);
      const [a1, a2] = await claim(at, 'gone:7:a', 2);
      const [b] = await claim(at, 'alive:8:b');
      expect(await store.leaseHolders(new Date(at))).toEqual(['alive:8:b', 'gone:7:a']);
      expect(await store.leaseHolders(new Date(at + LEASE))).toEqual([]);

      expect(await store.releaseLeasesOf(['gone:7:a', 'nobody:1:x'])).toBe(2);
      expect(await store.leaseHolders(new Date(at))).toEqual(['alive:8:b']);
      const taken = await claim(at, 'successor:9:c');
      expect(taken.map((d) => d.deliveryId).sort()).toEqual([a1!.deliveryId, a2!.deliveryId].sort());
      expect(taken.every((d) => d.attempts === 0)).toBe(true);
      // The gone owner's record is refused now; the live owner's lease was never touched.
      expect(await record(a1!, at, [outcome(a1!.recipients[0]!.address, 'delivered')], at, 'gone:7:a')).toBe(false);
      expect(await record(b!, at, [outcome(b!.recipients[0]!.address, 'delivered')], at, 'alive:8:b')).toBe(true);
      expect(await store.releaseLeasesOf([])).toBe(0);
    });

    it('records mixed outcomes: the deferred recipient is claimable again at nextAttemptAt, not before', async () => {
      const { id, at } = await queue(['ok@a.test', 'later@a.test']);
      const [claimed] = await claim(at);
      const attempt = attemptWith(at + 100, { outcome: 'partial' });
      const next = at + 300_000;
      expect(
        await store.recordAttempt(
          { deliveryId: claimed!.deliveryId, owner: WORKER },
          { attempts: [attempt], recipients: [outcome('ok@a.test', 'delivered'), outcome('later@a.test', 'deferred')], nextAttemptAt: new Date(next) },
        ),
      ).toBe(true);

      expect(await states()).toEqual([[id, 'deferred']]);
      const details = (await store.showMessage(id))!;
      expect(details.state).toBe('deferred');
      expect(details.recipientStates).toEqual([
        { address: 'ok@a.test', state: 'delivered', reply: REPLY.delivered, updatedAt: attempt.endedAt },
        { address: 'later@a.test', state: 'deferred', reply: REPLY.deferred, updatedAt: attempt.endedAt },
      ]);
      expect(details.deliveries).toEqual([{ id: claimed!.deliveryId, domain: 'a.test', attempts: 1, nextAttemptAt: new Date(next) }]);
      expect(await store.nextDueAt()).toEqual(new Date(next));

      expect(await claim(next - 1)).toEqual([]);
      const again = await claim(next);
      expect(again).toMatchObject([{ deliveryId: claimed!.deliveryId, attempts: 1, recipients: [{ address: 'later@a.test' }] }]);
      expect(again[0]!.recipients).toHaveLength(1);

      // A held message shows as held, whatever its recipients.
      await store.holdMessages({ ids: [id] });
      expect(await states()).toEqual([[id, 'held']]);
    });

    it('leaves a recipient already delivered alone, and one without an outcome pending', async () => {
      const { id, at } = await queue(['one@a.test', 'two@a.test', 'three@a.test']);
      const [first] = await claim(at);
      expect(await record(first!, at, [outcome('one@a.test', 'delivered')], at + 1000)).toBe(true);
      const [second] = await claim(at + 1000);
      expect(second!.recipients.map((r) => r.address)).toEqual(['two@a.test', 'three@a.test']);
      // one@ is not pending any more: an outcome for it (or for a stranger) changes nothing.
      const outcomes = [outcome('one@a.test', 'bounced'), outcome('stranger@a.test', 'bounced'), outcome('two@a.test', 'bounced')];
      expect(await record(second!, at + 1000, outcomes, at + 2000)).toBe(true);
      expect((await store.showMessage(id))!.recipientStates.map((r) => [r.address, r.state])).toEqual([
        ['one@a.test', 'delivered'],
        ['two@a.test', 'bounced'],
        ['three@a.test', 'queued'],
      ]);
      expect((await claim(at + 2000)).map((c) => c.recipients)).toEqual([[{ address: 'three@a.test' }]]);
    });

    it('makes a message done when every recipient is final: not listed, body gone, history kept exactly', async () => {
      const envelope = envelopeWith({ recipients: ['ok@a.test', 'gone@a.test', 'far@b.test'] });
      const body = 'Subject: done\r\n\r\nbye\r\n';
      const id = await commitMessage(store, [Buffer.from(body)], envelope);
      const at = await receivedAtOf(store, id);
      const [a, b] = byDomain(await claim(at));

      const unverified = attemptWith(at + 10, {
        host: 'mx.a.test', ip: '2001:db8::25', port: 25, outcome: 'partial', reply: '550 5.1.1 <gone@a.test>: No such user',
        tls: { version: 'TLSv1.2', cipher: 'ECDHE-RSA-AES128-GCM-SHA256', verified: false, verifyError: 'self-signed certificate in certificate chain' },
        policy: { level: 'may', source: 'default' },
      });
      const aOutcomes = [outcome('ok@a.test', 'delivered'), { address: 'gone@a.test', result: 'bounced' as const, reply: '550 5.1.1 <gone@a.test>: No such user' }];
      expect(await store.recordAttempt({ deliveryId: a!.deliveryId, owner: WORKER }, { attempts: [unverified], recipients: aOutcomes, nextAttemptAt: new Date(at) })).toBe(true);
      // b.test still pending: the message stays, and so does its body.
      expect((await store.listMessages()).map((m) => m.id)).toEqual([id]);
      expect((await readAll(store.readBody(id))).toString()).toBe(body);

      const refused = attemptWith(at + 20, {
        host: 'mx1.b.test', ip: '198.51.100.1', port: 2525, tls: undefined, outcome: 'deferred', reply: 'connection refused',
        policy: { level: 'encrypt', source: 'route b.test' },
      });
      const verified = attemptWith(at + 30, { host: 'mx2.b.test', ip: '198.51.100.2', policy: { level: 'encrypt', source: 'route b.test' } });
      // Given newest first: the store orders attempts by when they started.
      expect(
        await store.recordAttempt(
          { deliveryId: b!.deliveryId, owner: WORKER },
          { attempts: [verified, refused], recipients: [outcome('far@b.test', 'delivered')], nextAttemptAt: new Date(at) },
        ),
      ).toBe(true);

      expect(await store.listMessages()).toEqual([]);
      await expect(readAll(store.readBody(id))).rejects.toThrow();
      expect(await store.nextDueAt()).toBeUndefined();
      expect(await claim(at + DAY)).toEqual([]);
      expect(await record(b!, at + 40, [outcome('far@b.test', 'bounced')])).toBe(false);

      const details = (await store.showMessage(id))!;
      expect(details).toEqual({
        id, mailFrom: envelope.mailFrom, recipients: envelope.recipients, size: Buffer.byteLength(body), receivedAt: new Date(at), state: 'done',
        outcome: 'partly bounced',
        envelope: { ...envelope, requireTls: false },
        recipientStates: [
          { address: 'ok@a.test', state: 'delivered', reply: REPLY.delivered, updatedAt: unverified.endedAt },
          { address: 'gone@a.test', state: 'bounced', reply: '550 5.1.1 <gone@a.test>: No such user', updatedAt: unverified.endedAt },
          { address: 'far@b.test', state: 'delivered', reply: REPLY.delivered, updatedAt: verified.endedAt },
        ],
        deliveries: expect.any(Array),
        attempts: [
          { ...unverified, deliveryId: a!.deliveryId, domain: 'a.test' },
          { ...refused, deliveryId: b!.deliveryId, domain: 'b.test' },
          { ...verified, deliveryId: b!.deliveryId, domain: 'b.test' },
        ],
      });
      expect(details.attempts[1]).not.toHaveProperty('tls'); // plaintext: no TLS facts, not empty ones
      expect(byDomain(details.deliveries)).toEqual([
        { id: a!.deliveryId, domain: 'a.test', attempts: 1 },
        { id: b!.deliveryId, domain: 'b.test', attempts: 1 },
      ]);
    });

    it('lists done messages too when asked, oldest first, each with its outcome from its recipients', async () => {
      /** settle - queue a message and give every recipient its final result (one claim per domain, all due now). */
      async function settle(results: Record<string, 'delivered' | 'bounced'>): Promise<string> {
        const { id, at } = await queue(Object.keys(results));
        for (const claimed of await claim(at)) {
          expect(claimed.messageId).toBe(id);
          expect(await record(claimed, at, claimed.recipients.map((r) => outcome(r.address, results[r.address]!)), at)).toBe(true);
        }
        return id;
      }
      const delivered = await settle({ 'one@a.test': 'delivered', 'two@b.test': 'delivered' });
      const bounced = await settle({ 'gone@a.test': 'bounced' });
      const partly = await settle({ 'ok@a.test': 'delivered', 'gone@a.test': 'bounced', 'far@b.test': 'delivered' });
      const held = await queue(['r@a.test']);
      await store.holdMessages({ ids: [held.id] });
      const waiting = await queue(['r@b.test']);

      expect(await states()).toEqual([[held.id, 'held'], [waiting.id, 'queued']]);
      expect(await store.countDone()).toBe(3);
      expect(await store.listMessages({ includeDone: false })).toEqual(await store.listMessages());
      const all = await store.listMessages({ includeDone: true });
      expect(all.map((m) => [m.id, m.state, m.outcome])).toEqual([
        [delivered, 'done', 'delivered'],
        [bounced, 'done', 'bounced'],
        [partly, 'done', 'partly bounced'],
        [held.id, 'held', undefined],
        [waiting.id, 'queued', undefined],
      ]);
      expect(all[2]).toEqual({
        id: partly, mailFrom: 'alice@example.org', recipients: ['ok@a.test', 'gone@a.test', 'far@b.test'], size: expect.any(Number),
        receivedAt: expect.any(Date), state: 'done', outcome: 'partly bounced',
        recipientStates: [
          { address: 'ok@a.test', state: 'delivered', reply: REPLY.delivered },
          { address: 'gone@a.test', state: 'bounced', reply: REPLY.bounced },
          { address: 'far@b.test', state: 'delivered', reply: REPLY.delivered },
        ],
      });
      expect(all[4]).not.toHaveProperty('outcome'); // absent, not undefined: a listing not done keeps its old shape
      expect((await store.showMessage(bounced))!.outcome).toBe('bounced');
      expect(await store.showMessage(waiting.id)).not.toHaveProperty('outcome');
    });

    // What postqueue -p prints under a deferred message: why it waits, and (ours) when it is tried again.
    it('lists a deferred message with each recipient’s state and last reply, and its earliest next attempt', async () => {
      const { id, at } = await queue(['later@a.test', 'ok@a.test', 'new@b.test']);
      const claimed = (await claim(at)).find((c) => c.domain === 'a.test')!;
      expect(await record(claimed, at, [outcome('later@a.test', 'deferred'), outcome('ok@a.test', 'delivered')], at + 300_000)).toBe(true);
      const [listed] = await store.listMessages();
      expect(listed).toMatchObject({
        id,
        state: 'deferred',
        recipientStates: [
          { address: 'later@a.test', state: 'deferred', reply: REPLY.deferred },
          { address: 'ok@a.test', state: 'delivered', reply: REPLY.delivered },
          { address: 'new@b.test', state: 'queued' },
        ],
      });
      expect(listed!.recipientStates[2]).not.toHaveProperty('reply');
      // b.test's delivery, still leased to this worker and not recorded, is due first, and its lease shows.
      expect(listed!.nextAttemptAt!.getTime()).toBeLessThan(at + 300_000);
      expect(listed!.leasedUntil).toEqual(new Date(at + LEASE));
      await store.holdMessages({ ids: [id] });
      expect((await store.listMessages())[0]).not.toHaveProperty('nextAttemptAt');
    });

    it('records an attempt that reached no host (no address, no TLS)', async () => {
      const { id, at } = await queue(['r@a.test']);
      const [claimed] = await claim(at);
      const noHost = attemptWith(at, { host: undefined, ip: undefined, port: undefined, tls: undefined, outcome: 'deferred', reply: 'DNS: SERVFAIL for a.test' });
      expect(await store.recordAttempt({ deliveryId: claimed!.deliveryId, owner: WORKER }, { attempts: [noHost], recipients: [outcome('r@a.test', 'deferred')], nextAttemptAt: new Date(at + 1) })).toBe(true);
      const [shown] = (await store.showMessage(id))!.attempts;
      expect(shown).toEqual({ startedAt: noHost.startedAt, endedAt: noHost.endedAt, policy: noHost.policy, reply: 'DNS: SERVFAIL for a.test', outcome: 'deferred', deliveryId: claimed!.deliveryId, domain: 'a.test' });
      expect(Object.keys(shown!).sort()).toEqual(['deliveryId', 'domain', 'endedAt', 'outcome', 'policy', 'reply', 'startedAt']);
    });

    // The operator's bounce (operator-bounce.ts) takes named messages whatever their due time, held ones too.
    it('claims the unleased deliveries of named messages, due or not, held or not; passes over unknown, done and leased ones', async () => {
      const leased = await queue(['r@l.test']);
      const [other] = await claim(leased.at, 'worker-b');
      const done = await queue(['r@c.test']);
      await finishAll(done.at);
      const partly = await queue(['ok@a.test', 'later@a.test', 'r@b.test']);
      const held = await queue(['r@h.test']);
      expect(await store.holdMessages({ ids: [held.id] })).toEqual([held.id]);
      const [first, second] = byDomain(await claim(partly.at));
      await store.releaseLease({ deliveryId: second!.deliveryId, owner: WORKER });
      expect(await record(first!, partly.at, [outcome('ok@a.test', 'delivered'), outcome('later@a.test', 'deferred')], partly.at + DAY)).toBe(true);

      // Before any of them is due again; the deferred delivery's attempt count and its pending recipient only.
      const options = { now: new Date(partly.at + 1), leaseMs: LEASE, owner: 'operator' };
      const claimed = byDomain(await store.claimMessages([leased.id, done.id, partly.id, held.id, '0000000000000000', 'not an id'], options));
      expect(claimed.map((c) => [c.messageId, c.domain, c.attempts, c.recipients.map((r) => r.address), c.leaseOwner])).toEqual([
        [partly.id, 'a.test', 1, ['later@a.test'], 'operator'],
        [partly.id, 'b.test', 0, ['r@b.test'], 'operator'],
        [held.id, 'h.test', 0, ['r@h.test'], 'operator'],
      ]);
      // Leased now: nobody else claims them, and a second claim of the messages gets nothing.
      expect(await claim(partly.at + 2, 'worker-c')).toEqual([]);
      expect(await store.claimMessages([partly.id, held.id], options)).toEqual([]);
      // The operator records them (a held message too), and they are done.
      for (const c of claimed) {
        const bounced = c.recipients.map((r) => outcome(r.address, 'bounced'));
        expect(await store.recordAttempt({ deliveryId: c.deliveryId, owner: 'operator' }, { attempts: [], recipients: bounced, nextAttemptAt: options.now })).toBe(true);
      }
      expect((await store.showMessage(held.id))!.state).toBe('done');
      expect((await store.showMessage(partly.id))!.recipientStates.map((r) => r.state)).toEqual(['delivered', 'bounced', 'bounced']);

      // The other worker's lease, once lapsed, is claimable; before, it is not.
      expect(await store.claimMessages([leased.id], { ...options, now: new Date(leased.at + LEASE - 1) })).toEqual([]);
      expect((await store.claimMessages([leased.id], { ...options, now: new Date(leased.at + LEASE) })).map((c) => c.deliveryId)).toEqual([other!.deliveryId]);
      await expect(store.claimMessages([leased.id], { ...options, owner: '' })).rejects.toThrow('claimMessages: owner must not be empty');
    });

    it('holds and releases messages, returning the ids that changed', async () => {
      const done = await queue(['r@c.test']);
      await finishAll(done.at);
      const m1 = await queue(['r@a.test']);
      const m2 = await queue(['r@b.test']);

      expect(await store.holdMessages({ ids: [m1.id, '0000000000000000', 'not an id', done.id, m1.id] })).toEqual([m1.id]);
      expect(await store.holdMessages({ ids: [m1.id] })).toEqual([]);
      expect(await states()).toEqual([[m1.id, 'held'], [m2.id, 'queued']]);
      expect(await store.holdMessages({ all: true })).toEqual([m2.id]);
      expect(await claim(m2.at + DAY)).toEqual([]);

      expect(await store.releaseMessages({ ids: [m2.id, done.id, '0000000000000000'] })).toEqual([m2.id]);
      expect(await store.releaseMessages({ all: true })).toEqual([m1.id]);
      expect(await store.releaseMessages({ all: true })).toEqual([]);
      expect(await states()).toEqual([[m1.id, 'queued'], [m2.id, 'queued']]);
      expect((await store.showMessage(done.id))!.state).toBe('done');
    });

    it('retries the pending deliveries of queued messages at `now`, but not held or done ones', async () => {
      const done = await queue(['r@c.test']);
      await finishAll(done.at);
      const m1 = await queue(['r@a.test']);
      const [claimed] = await claim(m1.at);
      expect(await record(claimed!, m1.at, [outcome('r@a.test', 'deferred')], m1.at + DAY)).toBe(true);
      const m2 = await queue(['r@b.test']);
      await store.holdMessages({ ids: [m2.id] });
      const now = m2.at + 1000;
      expect(await claim(now)).toEqual([]);

      expect(await store.retryMessages({ ids: [m1.id, m2.id, done.id, '0000000000000000'] }, new Date(now))).toEqual([m1.id]);
      expect(await store.nextDueAt()).toEqual(new Date(now));
      expect((await claim(now)).map((c) => c.messageId)).toEqual([m1.id]);
      // A retry does not break a lease: the attempt in flight records its own next attempt.
      expect(await store.retryMessages({ all: true }, new Date(now))).toEqual([m1.id]);
      expect(await claim(now, 'worker-b')).toEqual([]);
      // Released later, the held message is due as it always was.
      await store.releaseMessages({ ids: [m2.id] });
      expect((await claim(now, 'worker-b')).map((c) => c.messageId)).toEqual([m2.id]);
    });

    it('suspends a dead destination: its due deliveries move on, their pending recipients deferred; nothing else changes', async () => {
      const leased = await queue(['r@a.test']);
      const [inFlight] = await claim(leased.at, 'worker-b');
      const later = await queue(['later@a.test']);
      const [tried] = await claim(later.at);
      expect(await record(tried!, later.at, [outcome('later@a.test', 'deferred')], later.at + DAY)).toBe(true);
      const partly = await queue(['done@a.test', 'again@a.test']);
      const [first] = await claim(partly.at);
      expect(await record(first!, partly.at, [outcome('done@a.test', 'delivered'), outcome('again@a.test', 'deferred')], partly.at + 1)).toBe(true);
      const held = await queue(['r@a.test']);
      await store.holdMessages({ ids: [held.id] });
      const both = await queue(['x@a.test', 'y@a.test', 'z@b.test']);
      const now = both.at + 1000;
      const wait = 300_000;
      expect(await store.suspendDestination('a.test', { ...SUSPEND, now: new Date(now), minWaitMs: wait })).toBe(2);

      // Due now: b.test's delivery alone.
      const [toB] = await claim(now);
      expect(await claim(now)).toEqual([]);
      expect([toB!.messageId, toB!.domain]).toEqual([both.id, 'b.test']);
      const listed = new Map((await store.listMessages()).map((m) => [m.id, m]));
      expect(listed.get(both.id)).toMatchObject({
        state: 'deferred',
        recipientStates: [
          { address: 'x@a.test', state: 'deferred', reply: SUSPENDED },
          { address: 'y@a.test', state: 'deferred', reply: SUSPENDED },
          { address: 'z@b.test', state: 'queued' },
        ],
      });
      // A recipient delivered stays delivered; the one pending waits with the others.
      expect(listed.get(partly.id)).toMatchObject({
        nextAttemptAt: new Date(now + wait),
        recipientStates: [
          { address: 'done@a.test', state: 'delivered', reply: REPLY.delivered },
          { address: 'again@a.test', state: 'deferred', reply: SUSPENDED },
        ],
      });
      // Held, not due, or leased: as they were.
      expect(listed.get(held.id)!.recipientStates).toEqual([{ address: 'r@a.test', state: 'queued' }]);
      expect(listed.get(later.id)).toMatchObject({ nextAttemptAt: new Date(later.at + DAY), recipientStates: [{ address: 'later@a.test', state: 'deferred', reply: REPLY.deferred }] });
      expect(listed.get(leased.id)).toMatchObject({ leasedUntil: new Date(leased.at + LEASE), recipientStates: [{ address: 'r@a.test', state: 'queued' }] });
      // No attempt was made: a recipient never tried has no time of a last attempt, one tried keeps its own.
      const shown = await store.showMessage(both.id);
      expect(shown!.recipientStates[0]).not.toHaveProperty('updatedAt');
      expect((await store.showMessage(partly.id))!.recipientStates[1]!.updatedAt).toEqual(attemptWith(partly.at).endedAt);
      expect(await record(inFlight!, now, [outcome('r@a.test', 'delivered')], now, 'worker-b')).toBe(true);
      expect(await record(toB!, now, [outcome('z@b.test', 'delivered')], now)).toBe(true);

      // Due again after the wait, with no attempt counted.
      expect(await store.nextDueAt()).toEqual(new Date(now + wait));
      expect(await claim(now + wait - 1)).toEqual([]);
      const again = await claim(now + wait);
      expect(again.map((c) => [c.messageId, c.attempts, c.recipients.map((r) => r.address)]).sort()).toEqual(
        [[both.id, 0, ['x@a.test', 'y@a.test']], [partly.id, 1, ['again@a.test']]].sort(),
      );
    });

    // Postfix's queue manager: "Since we look at actual time in queue, not time since last delivery attempt, backoff
    // times will be distributed."
    it('waits each suspended delivery its message’s time in the queue, within the shortest and longest wait, and not past its lifetime', async () => {
      const options = { ...SUSPEND, minWaitMs: 1000, maxWaitMs: 10_000, lifetimeMs: DAY };
      const cases: [domain: string, age: number, changes: Partial<typeof options>, wait: number | undefined][] = [
        ['young.test', 10, {}, 1000],
        ['aged.test', 2000, {}, 2000],
        ['old.test', 20_000, {}, 10_000],
        ['ending.test', 2000, { lifetimeMs: 2500 }, 500],
        ['ended.test', 3000, { lifetimeMs: 3000 }, undefined],
      ];
      for (const [domain, age, changes, wait] of cases) {
        const { id, at } = await queue([`r@${domain}`]);
        const now = at + age;
        expect(await store.suspendDestination(domain, { ...options, ...changes, now: new Date(now) }), domain).toBe(wait === undefined ? 0 : 1);
        expect((await store.showMessage(id))!.deliveries[0]!.nextAttemptAt, domain).toEqual(new Date(wait === undefined ? at : now + wait));
      }
    });

    it('suspends in transactions of SUSPEND_BATCH deliveries, the event loop free between them, every due one in the end', async () => {
      const count = 2 * SUSPEND_BATCH + 1;
      const queued = await Promise.all(Array.from({ length: count }, (_, i) => queue([`r${i}@a.test`])));
      const now = Math.max(...queued.map((q) => q.at)) + 1;
      let turns = 0;
      let counting = true;
      const countTurn = () => {
        if (!counting) return;
        turns++;
        setImmediate(countTurn);
      };
      setImmediate(countTurn);
      const moved = await store.suspendDestination('a.test', { ...SUSPEND, now: new Date(now) });
      counting = false;
      expect(moved).toBe(count);
      expect(turns).toBeGreaterThanOrEqual(2);
      expect(await claim(now, WORKER, count)).toEqual([]);
      expect(await claim(now + SUSPEND.minWaitMs, WORKER, count)).toHaveLength(count);
    });

    it('refuses a suspension that could not mean anything sensible', async () => {
      const now = new Date();
      await expect(store.suspendDestination('a.test', { ...SUSPEND, now, reply: 'suspended' })).rejects.toThrow('suspendDestination: reply must start with a 4.x.y enhanced code');
      await expect(store.suspendDestination('a.test', { ...SUSPEND, now: new Date(NaN) })).rejects.toThrow('suspendDestination: now is not a valid date');
      await expect(store.suspendDestination('a.test', { ...SUSPEND, now, minWaitMs: 0 })).rejects.toThrow('suspendDestination: minWaitMs must be a whole number > 0, not 0');
      await expect(store.suspendDestination('a.test', { ...SUSPEND, now, maxWaitMs: SUSPEND.minWaitMs - 1 })).rejects.toThrow('suspendDestination: maxWaitMs (299999) must not be below minWaitMs (300000)');
    });

    it('deletes messages with their history and bodies; a worker holding a lease then cannot record', async () => {
      const done = await queue(['r@c.test']);
      await finishAll(done.at);
      const m1 = await queue(['r@a.test']);
      const m2 = await queue(['r@b.test']);
      await store.holdMessages({ ids: [m2.id] });
      const [claimed] = await claim(m1.at);

      expect(await store.deleteMessages({ ids: [m1.id, '0000000000000000'] })).toEqual([m1.id]);
      expect(await store.showMessage(m1.id)).toBeUndefined();
      await expect(readAll(store.readBody(m1.id))).rejects.toThrow();
      expect(await record(claimed!, m1.at, [outcome('r@a.test', 'delivered')])).toBe(false);
      expect(await store.deleteMessages({ ids: [m1.id] })).toEqual([]);

      // "all" is the queue as listed: held messages included, the history of done ones not.
      expect(await store.deleteMessages({ all: true })).toEqual([m2.id]);
      expect(await store.listMessages()).toEqual([]);
      expect((await store.showMessage(done.id))!.state).toBe('done');
      expect(await store.deleteMessages({ ids: [done.id] })).toEqual([done.id]);
      expect(await store.showMessage(done.id)).toBeUndefined();
      expect(await store.nextDueAt()).toBeUndefined();
    });

    it('records an attempt in flight when its message was held meanwhile', async () => {
      const { id, at } = await queue(['r@a.test']);
      const [claimed] = await claim(at);
      await store.holdMessages({ ids: [id] });
      expect(await record(claimed!, at, [outcome('r@a.test', 'delivered')])).toBe(true);
      expect((await store.showMessage(id))!.state).toBe('done');
      expect(await store.releaseMessages({ ids: [id] })).toEqual([]);
    });

    it('says when the next unheld delivery is due, counting a lease until it lapses', async () => {
      expect(await store.nextDueAt()).toBeUndefined();
      const { id, at } = await queue(['r@a.test', 's@b.test']);
      expect(await store.nextDueAt()).toEqual(new Date(at));
      await store.holdMessages({ ids: [id] });
      expect(await store.nextDueAt()).toBeUndefined();
      await store.releaseMessages({ ids: [id] });

      const [first] = await claim(at, WORKER, 1);
      expect(await store.nextDueAt()).toEqual(new Date(at)); // the other one is still due
      const [second] = await claim(at, WORKER, 1);
      expect(await store.nextDueAt()).toEqual(new Date(at + LEASE));
      const firstAddress = first!.recipients[0]!.address;
      expect(await record(first!, at, [outcome(firstAddress, 'deferred')], at + 10 * LEASE)).toBe(true);
      expect(await store.nextDueAt()).toEqual(new Date(at + LEASE));
      await store.releaseLease({ deliveryId: second!.deliveryId, owner: WORKER });
      expect(await store.nextDueAt()).toEqual(new Date(at));
      const secondAddress = second!.recipients[0]!.address;
      const [again] = await claim(at);
      expect(await record(again!, at, [outcome(secondAddress, 'bounced')])).toBe(true);
      expect(await store.nextDueAt()).toEqual(new Date(at + 10 * LEASE));
    });

    it('never hands one delivery to two claimers: 20 parallel claims by two stores over 50 deliveries', async () => {
      const peer = await current().openPeer();
      const recipients = Array.from({ length: 10 }, (_, i) => `r@d${i}.test`);
      let latest = 0;
      for (let i = 0; i < 5; i++) latest = Math.max(latest, (await queue(recipients)).at);

      const batches = await Promise.all(Array.from({ length: 20 }, (_, i) => claim(latest, `worker-${i}`, 3, i % 2 === 0 ? store : peer)));
      const ids = batches.flat().map((c) => c.deliveryId);
      expect(ids).toHaveLength(50);
      expect(new Set(ids).size).toBe(50);
      batches.forEach((batch, i) => expect(batch.every((c) => c.leaseOwner === `worker-${i}`)).toBe(true));
      expect(await claim(latest, 'worker-late')).toEqual([]);
    });

    it('purges messages done before the cutoff, longest done first, a batch at a time, and never one not done', async () => {
      /** claimOf - the delivery of message `id` to `domain` due at `now`; the other deliveries claimed with it are given back. */
      async function claimOf(id: string, now: number, domain = 'a.test'): Promise<ClaimedDelivery> {
        const claimed = await claim(now);
        const wanted = claimed.find((c) => c.messageId === id && c.domain === domain);
        for (const other of claimed) if (other !== wanted) await store.releaseLease({ deliveryId: other.deliveryId, owner: WORKER });
        if (!wanted) throw new Error(`no delivery of ${id} to ${domain} due at ${now}`);
        return wanted;
      }
      /** doneAt - queue a message and deliver it with an attempt that ends at `end`: it is done then. */
      async function doneAt(end: number): Promise<string> {
        const { id } = await queue(['r@a.test']);
        await deliverMessage(store, id, end);
        return id;
      }
      const t = Date.now() + DAY;
      const waiting = await queue(['w@a.test']);
      const held = await queue(['h@a.test']);
      await store.holdMessages({ ids: [held.id] });
      const deferred = await queue(['d@a.test']);
      expect(await record(await claimOf(deferred.id, deferred.at), deferred.at, [outcome('d@a.test', 'deferred')], t + DAY)).toBe(true);
      const partly = await queue(['p@a.test', 'p@b.test']);
      expect(await record(await claimOf(partly.id, partly.at), partly.at, [outcome('p@a.test', 'delivered')], partly.at)).toBe(true);
      // Done in the order second, first, third: the purge follows when they became done, not when they arrived.
      const first = await doneAt(t + 10);
      const second = await doneAt(t);
      const third = await doneAt(t + 20);
      const notDone = [waiting.id, held.id, deferred.id, partly.id];
      const historyBefore = await Promise.all(notDone.map((id) => store.showMessage(id)));
      expect(historyBefore.map((m) => m!.attempts.length)).toEqual([0, 0, 1, 1]);

      expect(await store.purgeDone(new Date(t + 15), 1)).toBe(1);
      expect(await store.showMessage(second)).toBeUndefined();
      expect((await store.showMessage(first))!.state).toBe('done');
      expect(await store.purgeDone(new Date(t + 15), 10)).toBe(1);
      expect(await store.showMessage(first)).toBeUndefined();
      expect(await store.purgeDone(new Date(t + 20), 10)).toBe(0); // done at the cutoff itself: kept
      expect((await store.showMessage(third))!.attempts).toHaveLength(1);
      expect(await store.purgeDone(new Date(t + 21), 10)).toBe(1);
      expect(await store.showMessage(third)).toBeUndefined();

      expect(await store.purgeDone(new Date(t + 100 * DAY), 100)).toBe(0);
      expect((await store.listMessages({ includeDone: true })).map((m) => m.id)).toEqual(notDone);
      expect(await Promise.all(notDone.map((id) => store.showMessage(id)))).toEqual(historyBefore);
      // The rest of a message that was partly delivered is still to be delivered.
      expect((await claimOf(partly.id, partly.at, 'b.test')).recipients.map((r) => r.address)).toEqual(['p@b.test']);
    });

    it('purges each done message once when two stores sweep at the same moment', async () => {
      const peer = await current().openPeer();
      const recipients = Array.from({ length: 7 }, (_, i) => `r@d${i}.test`);
      const { id, at } = await queue(recipients);
      await finishAll(at);
      const others = [];
      for (let i = 0; i < 6; i++) {
        const next = await queue(['r@a.test']);
        await finishAll(next.at);
        others.push(next.id);
      }
      const cutoff = new Date(Date.now() + DAY);
      const counts = await Promise.all([store.purgeDone(cutoff, 4), peer.purgeDone(cutoff, 4)]);
      expect(counts[0] + counts[1]).toBe(7);
      expect(await store.listMessages({ includeDone: true })).toEqual([]);
      for (const gone of [id, ...others]) expect(await peer.showMessage(gone)).toBeUndefined();
    });

    it('refuses a purge with an invalid cutoff or a limit that is not a whole number >= 1', async () => {
      await expect(store.purgeDone(new Date(Number.NaN), 1)).rejects.toThrow(/doneBefore is not a valid date/);
      for (const limit of [0, -1, 1.5, Number.POSITIVE_INFINITY]) {
        await expect(store.purgeDone(new Date(), limit)).rejects.toThrow(/limit must be a whole number >= 1/);
      }
    });

    it('shows nothing for an unknown id', async () => {
      expect(await store.showMessage('0000000000000000')).toBeUndefined();
      expect(await store.showMessage('not an id')).toBeUndefined();
    });
  });
}

const SUSPENDED = '4.4.1 delivery temporarily suspended: connect to mx.a.test[192.0.2.25]:25: connection refused';
/** suspendDestination's options but `now`: retry.initial, retry.max and retry.lifetime's defaults. */
const SUSPEND = { minWaitMs: 300_000, maxWaitMs: 4_000_000, lifetimeMs: 5 * DAY, reply: SUSPENDED };
const REPLY = { delivered: '250 2.0.0 Ok: queued as 4Xyz', deferred: '451 4.3.0 Try again later', bounced: '550 5.1.1 No such user' } as const;

/** outcome - a recipient's result with the usual reply for it. */
function outcome(address: string, result: RecipientOutcome['result']): RecipientOutcome {
  return { address, result, reply: REPLY[result] };
}

/** byDomain - claims or deliveries sorted by domain (ties in due time have no order the contract fixes). */
function byDomain<T extends { domain: string }>(items: T[]): T[] {
  return [...items].sort((x, y) => x.domain.localeCompare(y.domain));
}
