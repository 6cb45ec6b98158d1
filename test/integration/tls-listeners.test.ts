// Inbound TLS on the running listeners: protocol floor, live certificate
// reload without dropping sessions, client certificates as a relay
// credential, and what openssl s_client (a client that is not Node) sees.
import { spawn } from 'node:child_process';
import { rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certificateFingerprint, generateCertificateAuthority, issueClientCertificate, issueServerCertificate } from '../../src/tls/dev-certs.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';


// openssl - run openssl with stdin closed (s_client then ends after the handshake); exit code and all output.
function openssl(args: string[]): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve) => {
    const child = spawn('openssl', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.stdin.end();
    child.on('close', (code) => resolve({ code, output }));
  });
}
let relay: TestRelay;

beforeAll(async () => {
  relay = await startTestRelay();
});
afterAll(async () => relay?.stop());

async function starttlsSession(port: number) {
  const c = await RawSmtp.connect(port);
  await c.reply();
  await c.command('EHLO client.test');
  await c.startTls({ ca: relay.ca.certPem });
  return c;
}

function peerFingerprint(c: RawSmtp): string {
  return (c.socket as TLSSocket).getPeerX509Certificate()!.fingerprint256;
}

async function until(condition: () => boolean | Promise<boolean>, what: string, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('protocol floor', () => {
  it('refuses TLS 1.1 on the implicit-TLS port and negotiates TLS 1.3 by default', async () => {
    const old = tlsConnect({ host: '127.0.0.1', port: relay.ports.submissions, ca: relay.ca.certPem, servername: 'localhost', minVersion: 'TLSv1', maxVersion: 'TLSv1.1' });
    await expect(new Promise((resolve, reject) => old.once('secureConnect', resolve).once('error', reject))).rejects.toThrow();
    const c = await RawSmtp.connect(relay.ports.submissions, { tls: { ca: relay.ca.certPem } });
    expect((c.socket as TLSSocket).getProtocol()).toBe('TLSv1.3');
    c.close();
  });

  it('openssl s_client -starttls smtp sees TLS 1.3, a verified chain, and is refused TLS 1.1 and CBC suites', async () => {
    const caFile = join(relay.dir, 'ca.crt');
    const connect = ['s_client', '-starttls', 'smtp', '-connect', `127.0.0.1:${relay.ports.relay}`, '-servername', 'localhost', '-brief'];
    const ok = await openssl([...connect, '-CAfile', caFile, '-verify_return_error']);
    expect(ok.output).toMatch(/Protocol version: TLSv1\.3/);
    expect(ok.output).toMatch(/Verification: OK/);
    expect(ok.code).toBe(0);
    const tls12 = await openssl([...connect, '-tls1_2', '-CAfile', caFile]);
    expect(tls12.output).toMatch(/Protocol version: TLSv1\.2\n.*Ciphersuite: ECDHE-ECDSA-(AES\d+-GCM-SHA\d+|CHACHA20-POLY1305)/);
    const tls11 = await openssl([...connect, '-tls1_1']);
    expect(tls11.code).not.toBe(0);
    expect(tls11.output).not.toMatch(/Protocol version/);
    const cbc = await openssl([...connect, '-tls1_2', '-cipher', 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES128-SHA:AES128-GCM-SHA256:AES128-SHA']);
    expect(cbc.code).not.toBe(0);
    expect(cbc.output).not.toMatch(/Protocol version/);
  });
});

// An opt-in for old devices that try STARTTLS and cannot fall back (Postfix on Debian negotiates TLS 1.0 too).
describe('tls.minVersion TLSv1', () => {
  let legacy: TestRelay;
  beforeAll(async () => {
    legacy = await startTestRelay({ tls: { minVersion: 'TLSv1' } });
  });
  afterAll(async () => legacy?.stop());

  it('lets a TLS 1.0 client with a CBC suite through STARTTLS, and still prefers TLS 1.3', async () => {
    const old = await RawSmtp.connect(legacy.ports.relay);
    await old.reply();
    await old.command('EHLO client.test');
    expect((await old.startTls({ ca: legacy.ca.certPem, minVersion: 'TLSv1', maxVersion: 'TLSv1', ciphers: 'ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0' })).code).toBe(220);
    expect([(old.socket as TLSSocket).getProtocol(), (old.socket as TLSSocket).getCipher().name]).toEqual(['TLSv1', 'ECDHE-ECDSA-AES128-SHA']);
    expect((await old.command('EHLO client.test')).code).toBe(250);
    old.close();
    const current = await RawSmtp.connect(legacy.ports.submissions, { tls: { ca: legacy.ca.certPem } });
    expect((current.socket as TLSSocket).getProtocol()).toBe('TLSv1.3');
    current.close();
  });
});

describe('certificate reload', () => {
  it('serves a replaced certificate on the next STARTTLS while an open session keeps working', async () => {
    const before = await starttlsSession(relay.ports.relay);
    const oldFingerprint = peerFingerprint(before);
    const fresh = await issueServerCertificate(relay.ca, { names: ['localhost', '127.0.0.1'] });
    // Replace as operators (and certbot) do: write aside, then rename over.
    await writeFile(join(relay.dir, 'server.key.new'), fresh.keyPem, { mode: 0o600 });
    await writeFile(join(relay.dir, 'server.crt.new'), fresh.certPem);
    await rename(join(relay.dir, 'server.key.new'), join(relay.dir, 'server.key'));
    await rename(join(relay.dir, 'server.crt.new'), join(relay.dir, 'server.crt'));
    const expected = certificateFingerprint(fresh.certPem);
    expect(expected).not.toBe(oldFingerprint);
    await until(async () => {
      const probe = await starttlsSession(relay.ports.relay);
      const seen = peerFingerprint(probe);
      probe.close();
      return seen === expected;
    }, 'the new certificate to be served');
    // The session opened before the reload still completes a transaction.
    expect((await before.command('EHLO client.test')).code).toBe(250);
    expect((await before.command('MAIL FROM:<a@example.test>')).code).toBe(250);
    expect((await before.command('RCPT TO:<b@example.org>')).code).toBe(250);
    expect((await before.command('DATA')).code).toBe(354);
    expect((await before.command('Subject: across a reload\r\n\r\nhi\r\n.')).text).toMatch(/^250 2\.0\.0 Ok: queued as /);
    before.close();
  });
});

describe('client certificates', () => {
  let certRelay: TestRelay;
  let clientCa: Awaited<ReturnType<typeof generateCertificateAuthority>>;
  beforeAll(async () => {
    clientCa = await generateCertificateAuthority({ commonName: 'client CA' });
    const caDir = relay.dir;
    await writeFile(join(caDir, 'client-ca.crt'), clientCa.certPem);
    // Trust nobody by network, so only the certificate can open the relay.
    certRelay = await startTestRelay({ tls: { clientCa: join(caDir, 'client-ca.crt') }, relay: { trustedNetworks: ['192.0.2.0/24'] } });
  });
  afterAll(async () => certRelay?.stop());

  async function rcptWith(cert?: { certPem: string; keyPem: string }) {
    const c = await RawSmtp.connect(certRelay.ports.relay);
    await c.reply();
    await c.command('EHLO client.test');
    await c.startTls({ ca: certRelay.ca.certPem, ...(cert ? { cert: cert.certPem, key: cert.keyPem } : {}) });
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<app@example.test>');
    const reply = await c.command('RCPT TO:<far@example.org>');
    c.close();
    return reply.text;
  }

  it('lets a client with a certificate from the client CA relay like an authenticated user', async () => {
    expect(await rcptWith(await issueClientCertificate(clientCa, { commonName: 'app-server' }))).toMatch(/^250 /);
  });
  it('treats no certificate, or one from another CA, as a stranger', async () => {
    expect(await rcptWith()).toBe('554 5.7.1 Relay access denied');
    const otherCa = await generateCertificateAuthority({ commonName: 'other CA' });
    expect(await rcptWith(await issueClientCertificate(otherCa, { commonName: 'intruder' }))).toBe('554 5.7.1 Relay access denied');
  });
});
