// Intake against a real SQLite store: which failure a message that could
// not be kept is reported with. A client leaving mid-message is not the
// store's fault; a store that fails is, even when the client also left
// (a sick disk is slow first, and slow writes make clients give up).
// The DATA stream is a PassThrough standing in for smtp-server's, which
// smtp-server destroys with ECONNECTION when the connection closes.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { receiveMessage, type IntakeRequest } from '../../src/inbound/intake.ts';
import type { QueueStore } from '../../src/queue/queue-store.ts';
import { openSqliteStore } from '../../src/queue/sqlite/sqlite-store.ts';

let dir: string;
let store: QueueStore;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-intake-'));
  store = await openSqliteStore({ path: join(dir, 'queue.db') });
});
afterEach(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

function request(data: PassThrough): IntakeRequest {
  const client = { address: '127.0.0.1', helo: 'client.test', listener: 'relay' as const };
  return {
    store,
    data,
    envelope: { mailFrom: 'a@example.test', recipients: ['b@example.test'], bodyType: '7BIT', smtpUtf8: false, client },
    listener: 'relay',
    received: { helo: 'client.test', clientHostname: 'unknown', clientAddress: '127.0.0.1', protocol: 'ESMTP' },
    config: { hostname: 'relay.test', smtp: { reverseLookup: false, greetingPause: 0, inFlowDelay: 0, bareLineFeed: 'normalize', proxyProtocol: [], proxyProtocolTimeout: 5 }, limits: { messageSize: 26214400 } },
    now: new Date(),
  };
}

const clientGone = () => Object.assign(new Error('Connection closed before the message was received in full'), { code: 'ECONNECTION' });

/** A body larger than the store holds before it creates the body file (256 KB), in one chunk. */
const LARGE_BODY = Buffer.from(`Subject: large\r\n\r\n${'a line of a large message\r\n'.repeat(12_000)}`);

/** afterTicks - let the chunk reach the store and its file be asked for; no I/O can complete in between. */
async function afterTicks(n: number): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise<void>((resolve) => process.nextTick(resolve));
}

it('reports a client that left mid-message as lost, with nothing kept', async () => {
  const data = new PassThrough();
  const result = receiveMessage(request(data));
  data.write(LARGE_BODY);
  await afterTicks(5);
  data.destroy(clientGone());
  expect(await result).toEqual({ outcome: 'lost', receivedBytes: 0, bareLineEndings: false });
  expect(await store.listMessages()).toEqual([]);
});

it("reports the store's failure when its body file fails after the client left", async () => {
  // messages/ replaced by a file: creating the body file fails (ENOTDIR), after the client is gone.
  const messagesDir = join(dir, 'messages');
  await rm(messagesDir, { recursive: true });
  await writeFile(messagesDir, 'not a directory');
  const data = new PassThrough();
  const result = receiveMessage(request(data));
  data.write(LARGE_BODY);
  await afterTicks(5);
  data.destroy(clientGone());
  expect(await result).toMatchObject({ outcome: 'refused', reason: 'queue-write-failed', error: { code: 'ENOTDIR' } });
  expect(await store.listMessages()).toEqual([]);
});
