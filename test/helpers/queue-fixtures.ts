// Fixtures for the queue-store suites: envelopes, attempts, bodies as
// streams (well-formed, failing, random and large), reading them back, and
// a batch of messages to many domains for the concurrent-claim tests.
import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { AttemptRecord, QueueStore, StoredEnvelope } from '../../src/queue/queue-store.ts';

/** envelopeWith - a complete envelope, with the given fields changed. */
export function envelopeWith(changes: Partial<StoredEnvelope>): StoredEnvelope {
  return {
    mailFrom: 'alice@example.org',
    recipients: ['bob@example.com'],
    bodyType: '8BITMIME',
    smtpUtf8: false,
    client: { address: '192.0.2.10', helo: 'client.example.org', listener: 'submission', authUser: 'alice', tlsVersion: 'TLSv1.3', tlsCipher: 'TLS_AES_256_GCM_SHA384' },
    ...changes,
  };
}

/** commitMessage - write and commit one message; returns its id. */
export async function commitMessage(store: QueueStore, chunks: Buffer[], envelope: StoredEnvelope): Promise<string> {
  const draft = store.beginMessage();
  await draft.writeBody(bodyOf(chunks));
  await draft.commit(envelope);
  return draft.id;
}

/** bodyOf - a byte stream delivering these chunks as they are. */
export function bodyOf(chunks: Buffer[]): Readable {
  return Readable.from(chunks, { objectMode: false });
}

/** failingBody - a stream that sends some bytes, then errors like a dropped client. */
export function failingBody(prefix: Buffer, error: Error): Readable {
  let sent = false;
  return new Readable({
    read() {
      if (sent) {
        this.destroy(error);
        return;
      }
      sent = true;
      this.push(prefix);
    },
  });
}

/** randomBody - a stream of `size` random bytes, hashed as they are produced. */
export function randomBody(size: number, chunkSize = 64 * 1024): { stream: Readable; sha256: () => string } {
  const hash = createHash('sha256');
  let left = size;
  const stream = new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const chunk = randomBytes(Math.min(chunkSize, left));
      left -= chunk.length;
      hash.update(chunk);
      this.push(chunk);
    },
  });
  return { stream, sha256: () => hash.copy().digest('hex') };
}

/** readAll - a (small) stream's bytes; rejects if the stream errors. */
export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** digest - sha256 and length of a stream, without holding it. */
export async function digest(stream: Readable): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk as Buffer);
    size += (chunk as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

/** attemptWith - a complete attempt (delivered over verified TLS at `at`), with the given fields changed. */
export function attemptWith(at: number, changes: Partial<AttemptRecord> = {}): AttemptRecord {
  return {
    startedAt: new Date(at),
    endedAt: new Date(at + 1500),
    host: 'mx.a.test',
    ip: '192.0.2.25',
    port: 25,
    tls: { version: 'TLSv1.3', cipher: 'TLS_AES_256_GCM_SHA384', verified: true },
    policy: { level: 'verify', source: 'policy map' },
    reply: '250 2.0.0 Ok: queued as 4Xyz',
    outcome: 'delivered',
    ...changes,
  };
}

/** receivedAtOf - when the store received a message, in ms (deliveries are first due then). */
export async function receivedAtOf(store: QueueStore, id: string): Promise<number> {
  const details = await store.showMessage(id);
  if (!details) throw new Error(`no message ${id}`);
  return details.receivedAt.getTime();
}

/** commitToManyDomains - `messages` messages, each to one address at each of `domains` domains, committed through the stores in turn; returns when the last was received (all are due then). */
export async function commitToManyDomains(stores: QueueStore[], options: { messages: number; domains: number }): Promise<number> {
  const recipients = Array.from({ length: options.domains }, (_, i) => `r@d${i}.test`);
  let lastReceived = 0;
  for (let i = 0; i < options.messages; i++) {
    const id = await commitMessage(stores[i % stores.length]!, [Buffer.from('b')], envelopeWith({ recipients }));
    lastReceived = Math.max(lastReceived, await receivedAtOf(stores[0]!, id));
  }
  return lastReceived;
}

/**
 * deliverMessage - claim every delivery of message `id` due at its arrival and record all its recipients
 * delivered by an attempt ending at `doneAt` (default: 1.5 s after arrival), so it is done then; deliveries
 * of other messages claimed on the way are given back untouched. Throws if a record is refused.
 */
export async function deliverMessage(store: QueueStore, id: string, doneAt?: number): Promise<void> {
  const at = await receivedAtOf(store, id);
  const end = doneAt ?? at + 1500;
  const owner = 'fixture-deliverer';
  for (const claimed of await store.claimDue({ now: new Date(at), limit: 1000, leaseMs: 60_000, owner })) {
    const claim = { deliveryId: claimed.deliveryId, owner };
    if (claimed.messageId !== id) {
      await store.releaseLease(claim);
      continue;
    }
    const recipients = claimed.recipients.map((r) => ({ address: r.address, result: 'delivered' as const, reply: '250 2.0.0 Ok' }));
    const attempts = [attemptWith(end - 1500, { endedAt: new Date(end) })];
    if (!(await store.recordAttempt(claim, { attempts, recipients, nextAttemptAt: new Date(end) }))) throw new Error(`delivery ${claimed.deliveryId} of ${id} not recorded`);
  }
}
