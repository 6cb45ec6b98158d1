// `postern queue list --all` and GET /api/queue?all=1: a message delivered
// to a next hop (a test SMTP server on loopback, named by a loopback DNS
// server) leaves the plain listing, which then says how many finished
// messages --all shows; --all lists it as done, with its outcome.
// Deliveries run through scheduler.runDue(), never the relay's timer.
import { afterAll, describe, expect, it } from 'vitest';
import { queueCli } from '../helpers/child-relay.ts';
import { startDnsServer } from '../helpers/dns-server.ts';
import { driveByHand, NEXT_HOP_NAME, startNextHop, submitMessage } from '../helpers/next-hop.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const TOKEN = 'test-token-queue-list-all';
const cleanups: (() => Promise<unknown>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

describe('listing finished messages', () => {
  let relay: TestRelay;


  /** api - GET a queue API path with the token; the status and parsed body. */
  async function api(path: string): Promise<{ status: number; json: unknown }> {
    const res = await fetch(`http://127.0.0.1:${relay.httpPort}${path}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    return { status: res.status, json: await res.json() };
  }

  it('shows a delivered message with --all and ?all=1, and hints at it when the queue is empty', async () => {
    const hop = await startNextHop('plain');
    cleanups.push(() => hop.close());
    const dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] } });
    cleanups.push(() => dns.close());
    relay = await startTestRelay({
      http: { token: TOKEN },
      outbound: { enabled: true, routes: { 'example.test': { host: NEXT_HOP_NAME, port: hop.port, tls: 'may' } }, dns: { servers: [dns.address] } },
    });
    cleanups.push(() => relay.stop());
    const scheduler = await driveByHand(relay);

    expect(await queueCli(relay, 'list')).toEqual({ code: 0, out: 'Mail queue is empty\n' }); // nothing finished yet: no hint
    const id = await submitMessage(relay, { from: 'a@sender.test', to: ['rcpt@example.test'], marker: 'list-all' });
    expect((await queueCli(relay, 'list')).out).toMatch(new RegExp(`^${id}  queued `, 'm'));
    await scheduler.runDue();
    await hop.waitForMessages(1);

    expect(await queueCli(relay, 'list')).toEqual({ code: 0, out: 'Mail queue is empty\n(1 finished message: postern queue list --all)\n' });
    expect(JSON.parse((await queueCli(relay, 'list', '--json')).out)).toEqual([]);

    const all = JSON.parse((await queueCli(relay, 'list', '--all', '--json')).out) as Record<string, unknown>[];
    expect(all).toEqual([
      {
        id, sender: 'a@sender.test', recipients: ['rcpt@example.test'], size: expect.any(Number), receivedAt: expect.any(String), state: 'done', outcome: 'delivered',
        recipientStates: [{ address: 'rcpt@example.test', state: 'delivered', reply: expect.stringMatching(/^250 /) }],
      },
    ]);
    const table = (await queueCli(relay, 'list', '--all')).out;
    expect(table).toMatch(new RegExp(`^${id}  done: delivered  `, 'm'));
    expect(table).toMatch(/^-- 1 message\n$/m);
    expect((await queueCli(relay, 'show', id)).out).toMatch(new RegExp(`^Message ${id} \\(done: delivered\\)`));

    expect(await api('/api/queue')).toEqual({ status: 200, json: [] });
    expect(await api('/api/queue?all=1')).toEqual({ status: 200, json: all });
    expect(await api('/api/queue?all=0')).toEqual({ status: 200, json: [] });
    expect(await api('/api/queue?all=maybe')).toMatchObject({ status: 400 });
  });
});
