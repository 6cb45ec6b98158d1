// The QueueStore contract: what every backend (sqlite now, postgres later)
// must do, as one vitest suite each backend runs in a few lines:
//
//   runQueueStoreContract('sqlite', async () => ({ store, reopen, openPeer, cleanup }));
//
// This file holds the message half (drafts, commit, bodies, listing); the
// delivery half (claims, leases, attempts, operator verbs) is in
// queue-delivery-contract.ts and registered from here, so a backend runs one
// call. Backend-specific facts (files, modes, schema) belong in the
// backend's own test file, not here.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isQueueId } from '../../src/queue/queue-id.ts';
import type { QueueStore } from '../../src/queue/queue-store.ts';
import { runDeliveryContract } from './queue-delivery-contract.ts';
import { attemptWith, bodyOf, commitMessage, digest, envelopeWith, failingBody, randomBody, readAll, receivedAtOf } from './queue-fixtures.ts';

export { attemptWith, bodyOf, commitMessage, commitToManyDomains, deliverMessage, digest, envelopeWith, failingBody, randomBody, readAll, receivedAtOf } from './queue-fixtures.ts';

export interface QueueStoreHarness {
  store: QueueStore;
  /** reopen - a new store on the same storage; the test has closed the previous one. */
  reopen: () => Promise<QueueStore>;
  /** openPeer - a second store on the same storage, open beside `store` (another worker or node). */
  openPeer: () => Promise<QueueStore>;
  /** cleanup - close whatever is still open and remove the storage. */
  cleanup: () => Promise<void>;
}

/** runQueueStoreContract - register the shared QueueStore suite for one backend. */
export function runQueueStoreContract(backendName: string, open: () => Promise<QueueStoreHarness>): void {
  describe(`QueueStore contract: ${backendName}`, () => {
    let harness: QueueStoreHarness;
    let store: QueueStore;

    beforeEach(async () => {
      harness = await open();
      store = harness.store;
    });
    afterEach(async () => {
      await harness.cleanup();
    });

    it('lists a committed message with its envelope and size', async () => {
      const envelope = envelopeWith({ mailFrom: 'sender@example.org', recipients: ['a@Example.COM', 'b@example.net', 'c@example.com'] });
      const before = Date.now();
      const body = Buffer.from('Subject: hi\r\n\r\nhello\r\n');
      const id = await commitMessage(store, [body], envelope);
      const after = Date.now();

      const list = await store.listMessages();
      expect(list).toEqual([
        {
          id, mailFrom: 'sender@example.org', recipients: ['a@Example.COM', 'b@example.net', 'c@example.com'], size: body.length, receivedAt: expect.any(Date), state: 'queued',
          recipientStates: ['a@Example.COM', 'b@example.net', 'c@example.com'].map((address) => ({ address, state: 'queued' })),
          nextAttemptAt: expect.any(Date),
        },
      ]);
      const receivedAt = list[0]!.receivedAt.getTime();
      expect(receivedAt).toBeGreaterThanOrEqual(before);
      expect(receivedAt).toBeLessThanOrEqual(after);
    });

    it('keeps the null sender and non-ASCII addresses as given', async () => {
      const id = await commitMessage(store, [Buffer.from('x')], envelopeWith({ mailFrom: '', recipients: ['用户@例子.广告', 'Postmaster'], smtpUtf8: true }));
      expect(await store.listMessages()).toMatchObject([{ id, mailFrom: '', recipients: ['用户@例子.广告', 'Postmaster'] }]);
    });

    it('returns the body byte for byte: NUL, bare LF and CR, non-UTF-8, a lone dot line', async () => {
      const chunks = [
        Buffer.from('Subject: bytes\r\n\r\n'),
        Buffer.from([0x00, 0x0a, 0x0d, 0x41, 0x0d]), // NUL, bare LF, bare CR, 'A', CR split from…
        Buffer.from([0x0a, 0xff, 0xfe, 0xc3, 0x28, 0x80]), // …its LF; bytes that are not UTF-8
        Buffer.from('\r\n.\r\n..\r\nend'), // the store never interprets SMTP framing
      ];
      const expected = Buffer.concat(chunks);
      const draft = store.beginMessage();
      expect(await draft.writeBody(bodyOf(chunks))).toBe(expected.length);
      await draft.commit(envelopeWith({}));

      const stored = await readAll(store.readBody(draft.id));
      expect(stored.equals(expected)).toBe(true);
      expect((await store.listMessages())[0]!.size).toBe(expected.length);
    });

    it('streams a 25 MB body through unchanged', async () => {
      const size = 25 * 1024 * 1024;
      const generated = randomBody(size);
      const draft = store.beginMessage();
      expect(await draft.writeBody(generated.stream)).toBe(size);
      await draft.commit(envelopeWith({}));

      const read = await digest(store.readBody(draft.id));
      expect(read).toEqual({ sha256: generated.sha256(), size });
    });

    it('does not list or serve a draft that was not committed', async () => {
      const committed = await commitMessage(store, [Buffer.from('kept')], envelopeWith({}));
      const draft = store.beginMessage();
      await draft.writeBody(bodyOf([Buffer.from('not yet')]));

      expect((await store.listMessages()).map((m) => m.id)).toEqual([committed]);
      await expect(readAll(store.readBody(draft.id))).rejects.toThrow();
      await draft.discard();
    });

    it('rejects writeBody when the client stream errors, and discard then leaves nothing', async () => {
      const draft = store.beginMessage();
      const dropped = failingBody(Buffer.alloc(200_000, 0x61), new Error('client dropped mid-DATA'));
      await expect(draft.writeBody(dropped)).rejects.toThrow('client dropped mid-DATA');
      await draft.discard();
      await draft.discard(); // idempotent

      expect(await store.listMessages()).toEqual([]);
      await expect(readAll(store.readBody(draft.id))).rejects.toThrow();
      await expect(draft.commit(envelopeWith({}))).rejects.toThrow();
      await store.close();
      const again = await harness.reopen();
      expect(await again.listMessages()).toEqual([]);
    });

    it('lets a draft be discarded before writeBody, and then refuses to use it', async () => {
      const draft = store.beginMessage();
      await draft.discard();
      await expect(draft.writeBody(bodyOf([Buffer.from('late')]))).rejects.toThrow();
      expect(await store.listMessages()).toEqual([]);
    });

    it('discards a written draft: not listed, not readable, not committable', async () => {
      const draft = store.beginMessage();
      await draft.writeBody(bodyOf([Buffer.from('refused by policy')]));
      await draft.discard();
      await expect(draft.commit(envelopeWith({}))).rejects.toThrow();
      expect(await store.listMessages()).toEqual([]);
      await expect(readAll(store.readBody(draft.id))).rejects.toThrow();
    });

    it('serves a body it committed from memory only to a delivery it holds a lease on, until its record or release', async () => {
      const bodies = [Buffer.from('Subject: one\r\n\r\nin memory\r\n'), Buffer.from('Subject: two\r\n\r\nin memory too\r\n')];
      const leased = [await commitMessage(store, [bodies[0]!], envelopeWith({ recipients: ['r@a.test'] })), await commitMessage(store, [bodies[1]!], envelopeWith({ recipients: ['r@b.test'] }))];
      const unleased = await commitMessage(store, [Buffer.from('not leased')], envelopeWith({ recipients: ['r@c.test'] }));
      const at = await receivedAtOf(store, leased[1]!);
      const claims = await store.claimDue({ now: new Date(at), limit: 2, leaseMs: 60_000, owner: 'w' });
      expect(claims.map((c) => c.messageId)).toEqual(leased);
      // Deleted by another worker or node: the queue's copy is gone, so only memory can still answer.
      const peer = await harness.openPeer();
      expect((await peer.deleteMessages({ ids: [...leased, unleased] })).sort()).toEqual([...leased, unleased].sort());
      for (const [i, id] of leased.entries()) expect((await readAll(store.readBody(id))).equals(bodies[i]!)).toBe(true);
      await expect(readAll(store.readBody(unleased))).rejects.toThrow();
      // The record is refused (the delivery is gone) and still ends the lease, as a release does.
      const deferred = { address: 'r@a.test', result: 'deferred' as const, reply: '451 4.3.0 later' };
      expect(await store.recordAttempt({ deliveryId: claims[0]!.deliveryId, owner: 'w' }, { attempts: [attemptWith(at)], recipients: [deferred], nextAttemptAt: new Date(at) })).toBe(false);
      await store.releaseLease({ deliveryId: claims[1]!.deliveryId, owner: 'w' });
      for (const id of leased) await expect(readAll(store.readBody(id))).rejects.toThrow();
    });

    it('keeps a committed message when discard is called afterwards', async () => {
      const draft = store.beginMessage();
      await draft.writeBody(bodyOf([Buffer.from('already accepted')]));
      await draft.commit(envelopeWith({}));
      await draft.discard(); // e.g. a session's clean-up running after the 250
      expect((await store.listMessages()).map((m) => m.id)).toEqual([draft.id]);
      expect((await readAll(store.readBody(draft.id))).toString()).toBe('already accepted');
    });

    it('refuses commit before writeBody, a second writeBody, and an envelope without recipients', async () => {
      const draft = store.beginMessage();
      await expect(draft.commit(envelopeWith({}))).rejects.toThrow();
      await draft.writeBody(bodyOf([Buffer.from('once')]));
      await expect(draft.writeBody(bodyOf([Buffer.from('twice')]))).rejects.toThrow();
      await expect(draft.commit(envelopeWith({ recipients: [] }))).rejects.toThrow();
      expect(await store.listMessages()).toEqual([]);
      await draft.discard();
    });

    it('keeps messages across close and reopen, and drops the drafts close discarded', async () => {
      const first = await commitMessage(store, [Buffer.from('first body')], envelopeWith({ recipients: ['one@example.com'] }));
      const second = await commitMessage(store, [Buffer.from('second body')], envelopeWith({ recipients: ['two@example.com', 'three@example.net'] }));
      const pending = store.beginMessage();
      await pending.writeBody(bodyOf([Buffer.from('never committed')]));
      const listed = await store.listMessages();

      await store.close();
      await expect(pending.commit(envelopeWith({}))).rejects.toThrow();
      const again = await harness.reopen();

      expect(await again.listMessages()).toEqual(listed);
      expect(listed.map((m) => m.id)).toEqual([first, second]);
      expect((await readAll(again.readBody(first))).toString()).toBe('first body');
      expect((await readAll(again.readBody(second))).toString()).toBe('second body');
      await expect(readAll(again.readBody(pending.id))).rejects.toThrow();
    });

    it('gives every draft a distinct, well-formed queue id', async () => {
      const drafts = Array.from({ length: 2000 }, () => store.beginMessage());
      const ids = new Set(drafts.map((d) => d.id));
      expect(ids.size).toBe(2000);
      expect([...ids].filter((id) => !isQueueId(id))).toEqual([]);
      await Promise.all(drafts.map((d) => d.discard()));
    });

    it('lists oldest first, by commit, not by when the draft began', async () => {
      const drafts = Array.from({ length: 5 }, () => store.beginMessage());
      for (const draft of drafts) await draft.writeBody(bodyOf([Buffer.from(draft.id)]));
      const commitOrder = [...drafts].reverse();
      for (const draft of commitOrder) await draft.commit(envelopeWith({}));

      expect((await store.listMessages()).map((m) => m.id)).toEqual(commitOrder.map((d) => d.id));
    });

    it('errors the body stream of an unknown or malformed id', async () => {
      await commitMessage(store, [Buffer.from('present')], envelopeWith({}));
      await expect(readAll(store.readBody('0000000000000000'))).rejects.toThrow();
      await expect(readAll(store.readBody('../../etc/passwd'))).rejects.toThrow();
      await expect(readAll(store.readBody(''))).rejects.toThrow();
    });

    it('counts the messages not done by the state `queue list` shows, and names the oldest (stats, for /metrics)', async () => {
      expect(await store.stats()).toEqual({ byState: { queued: 0, deferred: 0, held: 0 } });
      expect((await store.stats()).oldestReceivedAt).toBeUndefined();

      const ids: string[] = [];
      for (const name of ['done', 'deferred', 'held', 'queued', 'queued-too']) {
        ids.push(await commitMessage(store, [Buffer.from(name)], envelopeWith({ recipients: [`${name}@a.test`] })));
      }
      const [doneId, deferredId, heldId] = ids;
      const at = await Promise.all(ids.map((id) => receivedAtOf(store, id)));
      const claims = await store.claimDue({ now: new Date(Math.max(...at)), limit: 100, leaseMs: 60_000, owner: 'w' });
      const claimOf = (id: string | undefined) => claims.find((c) => c.messageId === id)!;
      const result = (address: string, outcome: 'delivered' | 'deferred') => ({
        attempts: [attemptWith(at[0]!)],
        recipients: [{ address, result: outcome, reply: outcome === 'delivered' ? '250 2.0.0 Ok' : '451 4.3.0 later' }],
        nextAttemptAt: new Date(at[0]! + 300_000),
      });
      expect(await store.recordAttempt({ deliveryId: claimOf(doneId).deliveryId, owner: 'w' }, result('done@a.test', 'delivered'))).toBe(true);
      expect(await store.recordAttempt({ deliveryId: claimOf(deferredId).deliveryId, owner: 'w' }, result('deferred@a.test', 'deferred'))).toBe(true);
      expect(await store.holdMessages({ ids: [heldId!] })).toEqual([heldId]);

      // The done message was the oldest: the oldest not done is the deferred one.
      expect(await store.stats()).toEqual({ byState: { queued: 2, deferred: 1, held: 1 }, oldestReceivedAt: new Date(at[1]!) });
      await store.deleteMessages({ all: true });
      expect(await store.stats()).toEqual({ byState: { queued: 0, deferred: 0, held: 0 } });
    });

    describe('MTA-STS policies kept between restarts', () => {
      const T = Date.parse('2026-06-01T00:00:00Z');
      const HOUR = 3_600_000;
      const keep = (domain: string, policy: string | undefined, until: number, now = T, limit = 100) =>
        store.keepStsPolicy(domain, policy === undefined ? undefined : { policy, until: new Date(until) }, { now: new Date(now), limit });

      it('keeps a policy across close and reopen, one per domain, the latest to lapse first, and not once lapsed', async () => {
        await keep('a.test', 'policy a', T + HOUR);
        await keep('b.test', 'policy b, first', T + 2 * HOUR);
        await keep('b.test', 'policy b', T + 3 * HOUR);
        await store.close();
        const again = await harness.reopen();
        expect(await again.keptStsPolicies(new Date(T), 100)).toEqual([
          { domain: 'b.test', policy: 'policy b', until: new Date(T + 3 * HOUR) },
          { domain: 'a.test', policy: 'policy a', until: new Date(T + HOUR) },
        ]);
        expect((await again.keptStsPolicies(new Date(T + HOUR), 100)).map((p) => p.domain)).toEqual(['b.test']);
        expect((await again.keptStsPolicies(new Date(T), 1)).map((p) => p.domain)).toEqual(['b.test']);
        expect(await again.keptStsPolicies(new Date(T), 100, 'a.test')).toEqual([{ domain: 'a.test', policy: 'policy a', until: new Date(T + HOUR) }]);
        expect(await again.keptStsPolicies(new Date(T + HOUR), 100, 'a.test')).toEqual([]);
        expect(await again.keptStsPolicies(new Date(T), 100, 'c.test')).toEqual([]);
      });

      it('forgets a domain’s policy (max_age 0), and drops the lapsed and those past the limit when one is kept', async () => {
        await keep('gone.test', 'p', T + HOUR);
        await keep('gone.test', undefined, 0);
        await keep('lapsed.test', 'p', T + HOUR);
        await keep('soon.test', 'p', T + 3 * HOUR);
        await keep('late.test', 'p', T + 5 * HOUR);
        // At T + 2 hours lapsed.test has lapsed, and goes although the limit has room for it.
        await keep('new.test', 'p', T + 4 * HOUR, T + 2 * HOUR, 4);
        const peer = await harness.openPeer();
        expect((await peer.keptStsPolicies(new Date(T), 100)).map((p) => p.domain)).toEqual(['late.test', 'new.test', 'soon.test']);
        // With a limit of 3, the soonest to lapse goes.
        await keep('newer.test', 'p', T + 6 * HOUR, T + 2 * HOUR, 3);
        expect((await peer.keptStsPolicies(new Date(T), 100)).map((p) => p.domain)).toEqual(['newer.test', 'late.test', 'new.test']);
        await peer.close();
      });
    });

    runDeliveryContract(() => harness);
  });
}
