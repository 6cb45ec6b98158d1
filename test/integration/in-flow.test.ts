// In-flow control with a real relay whose delivery is held by its slots:
// one delivery slot (all of them, or all of the destination's), and a next
// hop that never greets, so the queue stops taking mail out. That is the
// next hop's pace, not this process's: once the delivery in the slot has
// run SLOW_DELIVERY_MS, MAIL FROM is answered at once however many
// messages wait (the queue takes the burst, as Postfix's active queue
// does), and no in-flow delay is logged. Waiting for tokens while the
// slots are free is test/unit/in-flow.test.ts's.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SLOW_DELIVERY_MS } from '../../src/queue/in-flow.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';
import { NEXT_HOP_NAME, startNextHop } from '../helpers/next-hop.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay } from '../helpers/test-relay.ts';

describe('smtp.inFlowDelay', () => {
  let dns: DnsServer;
  beforeAll(async () => {
    dns = await startDnsServer({ [NEXT_HOP_NAME]: { a: ['127.0.0.1'] } });
  });
  afterAll(async () => {
    await dns?.close();
  });

  // The one slot: all of them (concurrency), or all of the destination's (perDestination).
  it.each([{ concurrency: 1 }, { perDestination: 1 }])('does not slow MAIL FROM while the queue waits for the next hop, and accepts every message (%o)', async (slots) => {
    const stuck = await startNextHop('slow-greeting', { greetingDelayMs: 60_000 });
    const relay = await startTestRelay({
      relay: { localDomains: ['dest.test'] },
      smtp: { reverseLookup: false, inFlowDelay: '1s' },
      outbound: {
        enabled: true, ...slots, connectTimeout: '60s',
        routes: { 'dest.test': { host: NEXT_HOP_NAME, port: stuck.port, tls: 'none' } },
        dns: { servers: [dns.address] },
      },
    });
    let c: RawSmtp | undefined;
    try {
      c = await RawSmtp.connect(relay.ports.relay);
      const client = c;
      expect((await client.reply()).code).toBe(220);
      expect((await client.command('EHLO client.test')).code).toBe(250);
      const send = async (i: number) => {
        expect((await client.command('MAIL FROM:<sender@example.test>')).text).toBe('250 2.1.0 Accepted');
        expect((await client.command('RCPT TO:<rcpt@dest.test>')).text).toBe('250 2.1.5 Accepted');
        expect((await client.command('DATA')).code).toBe(354);
        expect((await client.command(`Subject: ${i}\r\n\r\nbody\r\n.`)).text).toMatch(/^250 2\.0\.0 Ok: queued as /);
      };
      await send(1);
      // The scheduler takes the first message into its one slot, which stays full.
      await waitFor(() => stuck.connections.length === 1);
      await new Promise((resolve) => setTimeout(resolve, SLOW_DELIVERY_MS + 100));
      for (let i = 2; i <= 31; i++) await send(i);
      expect(relay.logs.filter((l) => l.msg === 'in-flow delay: delivery is behind arrivals')).toHaveLength(0);
      expect((await relay.queued()).length).toBe(31);
    } finally {
      c?.close();
      // The stuck next hop first: the relay's stop waits for the delivery in flight, which then fails at once.
      await stuck.close();
      await relay.stop();
    }
  });
});

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
