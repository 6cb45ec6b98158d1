// In-flow control with a real relay: delivery is stuck (one delivery slot,
// a next hop that never greets), so the queue stops taking mail out. The
// first 21 transactions (20 tokens, and one for the delivery the scheduler
// took) are answered at once; the 22nd MAIL FROM waits up to
// smtp.inFlowDelay, is then accepted all the same, and the wait is logged.
// Nothing is ever refused for it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { NEXT_HOP_NAME, startNextHop, type NextHop } from '../helpers/next-hop.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

describe('smtp.inFlowDelay', () => {
  let dns: DnsServer;
  let stuck: NextHop;
  let relay: TestRelay;

  beforeAll(async () => {
    stuck = await startNextHop('slow-greeting', { greetingDelayMs: 60_000 });
    dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] } });
    relay = await startTestRelay({
      relay: { localDomains: ['dest.test'] },
      smtp: { reverseLookup: false, inFlowDelay: '1s' },
      outbound: {
        enabled: true, concurrency: 1, connectTimeout: '60s',
        routes: { 'dest.test': { host: NEXT_HOP_NAME, port: stuck.port, tls: 'none' } },
        dns: { servers: [dns.address] },
      },
    });
  });
  afterAll(async () => {
    // The stuck next hop first: the relay's stop waits for the delivery in flight, which then fails at once.
    await stuck?.close();
    await relay?.stop();
    await dns?.close();
  });

  const delays = () => relay.logs.filter((l) => l.msg === 'in-flow delay: delivery is behind arrivals').length;

  it('slows MAIL FROM once the queue stops draining, and still accepts', async () => {
    const c = await RawSmtp.connect(relay.ports.relay);
    expect((await c.reply()).code).toBe(220);
    expect((await c.command('EHLO client.test')).code).toBe(250);
    for (let i = 1; i <= 22; i++) {
      expect((await c.command('MAIL FROM:<sender@example.test>')).text).toBe('250 2.1.0 Accepted');
      expect(delays()).toBe(i <= 21 ? 0 : 1);
      expect((await c.command('RCPT TO:<rcpt@dest.test>')).text).toBe('250 2.1.5 Accepted');
      expect((await c.command('DATA')).code).toBe(354);
      expect((await c.command(`Subject: ${i}\r\n\r\nbody\r\n.`)).text).toMatch(/^250 2\.0\.0 Ok: queued as /);
      // The scheduler takes the first message (its one slot) before the client goes on.
      if (i === 1) await waitFor(() => stuck.connections.length === 1);
    }
    c.close();
    expect((await relay.queued()).length).toBe(22);
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
