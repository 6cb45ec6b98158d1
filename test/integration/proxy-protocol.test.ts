// smtp.proxyProtocol: a load balancer at 127.0.0.2 opens each connection with
// a PROXY v1 line; the client it names is who the relay judges, logs and
// records. Every other peer (127.0.0.1 here) speaks SMTP from the first byte,
// so a client cannot claim another address.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { queueShow } from '../helpers/next-hop.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const BALANCER = '127.0.0.2';
let relay: TestRelay;

beforeAll(async () => {
  relay = await startTestRelay({ smtp: { proxyProtocol: [`${BALANCER}/32`], proxyProtocolTimeout: '1s' }, relay: { localDomains: ['local.test'] }, log: { level: 'debug' } });
});
afterAll(async () => relay?.stop());

/** throughBalancer - a session as the balancer opens it for `client` (a v1 line, or a v2 header); after the greeting. */
async function throughBalancer(port: number, client: string, tls = false, version: 1 | 2 = 1): Promise<RawSmtp> {
  const c = await RawSmtp.connect(port, { localAddress: BALANCER });
  c.write(version === 1 ? `PROXY TCP4 ${client} 127.0.0.1 40001 ${port}\r\n` : proxyV2(client, port));
  if (tls) await c.upgrade({ ca: relay.ca.certPem });
  expect((await c.reply()).code).toBe(220);
  return c;
}

/** proxyV2 - the binary header AWS's NLB sends: PROXY, TCP over IPv4, client and listener address and port. */
function proxyV2(client: string, port: number): Buffer {
  const block = Buffer.alloc(12);
  Buffer.from(client.split('.').map(Number)).copy(block, 0);
  Buffer.from([127, 0, 0, 1]).copy(block, 4);
  block.writeUInt16BE(40001, 8);
  block.writeUInt16BE(port, 10);
  return Buffer.concat([Buffer.from('0d0a0d0a000d0a515549540a', 'hex'), Buffer.from([0x21, 0x11, 0, 12]), block]);
}

describe('smtp.proxyProtocol', () => {
  it('judges the client the PROXY line names: not trusted, so no relaying; its address in the Received header and the log', async () => {
    const c = await throughBalancer(relay.ports.relay, '192.0.2.7');
    await c.command('EHLO client.test');
    expect((await c.command('MAIL FROM:<a@example.org>')).code).toBe(250);
    expect((await c.command('RCPT TO:<b@example.org>')).text).toBe('554 5.7.1 Relay access denied');
    expect((await c.command('RCPT TO:<b@local.test>')).code).toBe(250);
    await c.command('DATA');
    const queued = await c.command('Subject: through a balancer\r\n\r\nhello\r\n.');
    expect(queued.text).toMatch(/^250 2\.0\.0 Ok: queued as /);
    c.close();
    const id = /queued as (\w+)/.exec(queued.text)![1]!;
    expect((await queueShow(relay, id)).envelope.client.address).toBe('192.0.2.7');
    expect((await relay.body(id)).toString('latin1')).toMatch(/^Received: from client\.test \(unknown \[192\.0\.2\.7\]\)/);
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'queued', queueId: id, ip: '192.0.2.7' }));
  });

  it('lets a client of the trusted networks relay through the balancer, on the implicit-TLS port too', async () => {
    const plain = await throughBalancer(relay.ports.relay, '127.0.0.9');
    await plain.command('EHLO client.test');
    await plain.command('MAIL FROM:<a@example.org>');
    expect((await plain.command('RCPT TO:<b@example.org>')).code).toBe(250);
    plain.close();

    const secure = await throughBalancer(relay.ports.submissions, '192.0.2.8', true);
    expect((await secure.command('EHLO client.test')).lines).toContain('250-AUTH PLAIN LOGIN');
    expect((await secure.command('MAIL FROM:<a@example.org>')).text).toBe('530 5.7.0 Authentication required');
    secure.close();
  });

  // AWS's Network Load Balancer sends only version 2: binary, read here rather than by smtp-server.
  it('reads a version 2 header on every port: the client it names is judged and recorded', async () => {
    const c = await throughBalancer(relay.ports.relay, '192.0.2.17', false, 2);
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<a@example.org>');
    expect((await c.command('RCPT TO:<b@example.org>')).text).toBe('554 5.7.1 Relay access denied');
    expect((await c.command('RCPT TO:<b@local.test>')).code).toBe(250);
    await c.command('DATA');
    const queued = await c.command('Subject: v2\r\n\r\nhello\r\n.');
    c.close();
    const id = /queued as (\w+)/.exec(queued.text)![1]!;
    expect((await queueShow(relay, id)).envelope.client.address).toBe('192.0.2.17');

    const secure = await throughBalancer(relay.ports.submissions, '127.0.0.18', true, 2);
    expect((await secure.command('EHLO client.test')).code).toBe(250);
    secure.close();
    expect(relay.logs).toContainEqual(expect.objectContaining({ ip: '127.0.0.18', listener: 'submissions' }));
  });

  it('keeps the balancer\'s address for a version 2 LOCAL header (its own health check), and closes on a bad one', async () => {
    const local = await RawSmtp.connect(relay.ports.relay, { localAddress: BALANCER });
    local.write(Buffer.from('0d0a0d0a000d0a515549540a20000000', 'hex'));
    expect((await local.reply()).code).toBe(220);
    local.close();

    const bad = await RawSmtp.connect(relay.ports.relay, { localAddress: BALANCER });
    bad.write(Buffer.from('0d0a0d0a000d0a515549540a2112000c00000000000000000000000000', 'hex'));
    await bad.closedByServer();
    expect(bad.unread()).toBe('');
    expect(relay.logs).toContainEqual(expect.objectContaining({ level: 40, ip: BALANCER, error: 'PROXY header for a transport other than TCP' }));
  });

  // A balancer set up without send-proxy: its clients wait for a greeting that does not come. Postfix answers 421
  // after smtpd_upstream_proxy_timeout and logs it; so does Postern, after smtp.proxyProtocolTimeout.
  it('answers 421 4.3.0 to a balancer\'s connection that sends no PROXY line in time, and warns naming the balancer', async () => {
    const c = await RawSmtp.connect(relay.ports.relay, { localAddress: BALANCER });
    expect((await c.reply()).text).toBe('421 4.3.0 relay.test Error: no PROXY protocol line from the load balancer');
    await c.closedByServer();
    expect(relay.logs).toContainEqual(expect.objectContaining({ level: 40, ip: BALANCER, msg: expect.stringMatching(/^no PROXY line within 1 s; is the load balancer sending it/) }));
  });

  it('closes a balancer\'s connection that starts with anything else, and warns; one closed at once is a debug line', async () => {
    const c = await RawSmtp.connect(relay.ports.relay, { localAddress: BALANCER });
    c.write('EHLO client.test\r\n');
    await c.closedByServer();
    expect(c.unread()).not.toMatch(/^2/);
    expect(relay.logs).toContainEqual(expect.objectContaining({ level: 40, ip: BALANCER, error: 'Invalid PROXY header', msg: expect.stringMatching(/^connection did not start with a PROXY line/) }));

    const warnings = relay.logs.filter((l) => l.level === 40).length;
    const check = await RawSmtp.connect(relay.ports.relay, { localAddress: BALANCER });
    check.close();
    await expect.poll(() => relay.logs.some((l) => l.msg === 'closed before its PROXY line (a TCP health check?)')).toBe(true);
    expect(relay.logs.filter((l) => l.level === 40)).toHaveLength(warnings);
  });

  // proxy-protocol.txt §2.1: after UNKNOWN "the receiver must ignore anything presented before the CRLF"
  // and use the connection's own addresses (smtp-server took the ones after it).
  it('keeps the balancer\'s own address for PROXY UNKNOWN, whatever addresses follow it', async () => {
    const c = await RawSmtp.connect(relay.ports.relay, { localAddress: BALANCER });
    c.write('PROXY UNKNOWN 192.0.2.99 127.0.0.1 40001 2525\r\n');
    expect((await c.reply()).code).toBe(220);
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<a@example.org>');
    // 127.0.0.2 is trusted by default (127.0.0.0/8): it relays as itself; 192.0.2.99 would not.
    expect((await c.command('RCPT TO:<b@example.org>')).code).toBe(250);
    await c.command('DATA');
    const queued = await c.command('Subject: a balancer\'s own\r\n\r\nhello\r\n.');
    c.close();
    const id = /queued as (\w+)/.exec(queued.text)![1]!;
    expect((await queueShow(relay, id)).envelope.client.address).toBe(BALANCER);
    expect(relay.logs.some((l) => JSON.stringify(l).includes('192.0.2.99'))).toBe(false);
  });

  it('closes a balancer\'s connection whose PROXY line ends in a bare LF, or names a client of the other family or with a zone id, warns, and serves on', async () => {
    for (const [line, error] of [
      ['PROXY TCP4 192.0.2.7 127.0.0.1 40001 2525\n', 'PROXY line not ended by CRLF'],
      ['PROXY TCP4 2001:db8::7 127.0.0.1 40001 2525\r\n', 'PROXY line with a client address that is not IPv4'],
      // A review found that this one ended the whole process (an exception in the socket's event).
      ['PROXY TCP6 fe80::1%eth0 ::1 40001 2525\r\n', 'PROXY line with a client address that is not IPv6'],
    ] as const) {
      const c = await RawSmtp.connect(relay.ports.relay, { localAddress: BALANCER });
      c.write(`${line}EHLO client.test\r\n`);
      await c.closedByServer();
      expect(c.unread()).toBe('');
      expect(relay.logs).toContainEqual(expect.objectContaining({ level: 40, ip: BALANCER, error, msg: expect.stringMatching(/^connection did not start with a PROXY line/) }));
    }
    const after = await RawSmtp.connect(relay.ports.relay);
    expect((await after.reply()).code).toBe(220);
    after.close();
  });

  it('takes a PROXY line from any other peer as the unknown command it is: it cannot claim another address', async () => {
    const c = await RawSmtp.connect(relay.ports.relay);
    expect((await c.reply()).code).toBe(220);
    expect((await c.command('PROXY TCP4 192.0.2.99 127.0.0.1 40001 2525')).code).toBe(502);
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<a@example.org>');
    // 127.0.0.1 is trusted by default: it relays as itself.
    expect((await c.command('RCPT TO:<b@example.org>')).code).toBe(250);
    c.close();
    expect(relay.logs.some((l) => l.ip === '192.0.2.99')).toBe(false);
  });
});

// smtp-server closes a connection that has not reached its session within limits.idleTimeout, silently: a wait for
// the PROXY line as long or longer must still end in its 421 and its warning.
describe('smtp.proxyProtocolTimeout not below limits.idleTimeout', () => {
  let slow: TestRelay;
  beforeAll(async () => {
    slow = await startTestRelay({ smtp: { proxyProtocol: [`${BALANCER}/32`], proxyProtocolTimeout: '2s' }, limits: { idleTimeout: '1s' } });
  });
  afterAll(async () => slow?.stop());

  it('answers 421 4.3.0 and warns once, also to a balancer whose line stopped halfway', async () => {
    const c = await RawSmtp.connect(slow.ports.relay, { localAddress: BALANCER });
    c.write('PROXY TCP4 192.0.2.1');
    expect((await c.reply()).text).toBe('421 4.3.0 relay.test Error: no PROXY protocol line from the load balancer');
    await c.closedByServer();
    await expect.poll(() => slow.logs.filter((l) => l.level === 40).map((l) => l.msg)).toEqual([expect.stringMatching(/^no PROXY line within 2 s/)]);
  });
});

// Postfix 3.8's anvil counts IPv6 clients by their /84 (smtpd_client_ipv6_prefix_length): one host holds a /64, and
// counted by its full address it was never limited.
describe('limits.connectionsPerIp for IPv6 clients', () => {
  let limited: TestRelay;
  beforeAll(async () => {
    limited = await startTestRelay({ smtp: { proxyProtocol: [`${BALANCER}/32`] }, relay: { trustedNetworks: ['2001:db8:1::99/128'] }, limits: { connectionsPerIp: 3 } });
  });
  afterAll(async () => limited?.stop());

  const from = async (client: string) => {
    const c = await RawSmtp.connect(limited.ports.relay, { localAddress: BALANCER });
    c.write(`PROXY TCP6 ${client} ::1 40001 ${limited.ports.relay}\r\n`);
    return { c, reply: (await c.reply()).text };
  };

  it('counts the addresses of one /84 as one client, and another /84 apart', async () => {
    const sessions = [];
    for (const client of ['2001:db8::1', '2001:db8::2', '2001:db8::fff:1:2']) sessions.push(await from(client));
    sessions.push(await from('2001:db8::3'), await from('2001:db8:0:1::1'));
    for (const { c } of sessions) c.close();
    expect(sessions.map((s) => s.reply.slice(0, 3))).toEqual(['220', '220', '220', '421', '220']);
    expect(sessions[3]!.reply).toMatch(/^421 4\.7\.0 .*too many connections from your address/);
  });

  // Exempt from the limit, a trusted client is not counted either: its connections do not use up its neighbours'.
  it("does not count a trusted client's connections against the other addresses of its /84", async () => {
    const sessions = [];
    for (let i = 0; i < 3; i++) sessions.push(await from('2001:db8:1::99'));
    sessions.push(await from('2001:db8:1::5'));
    for (const { c } of sessions) c.close();
    expect(sessions.map((s) => s.reply.slice(0, 3))).toEqual(['220', '220', '220', '220']);
  });
});
