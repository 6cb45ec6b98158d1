// Dev certificates: what we issue verifies with node:crypto, carries the
// names and usages a TLS peer checks, and ensureDevCertificates is idempotent.
import { X509Certificate, createPrivateKey } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  certificateFingerprint,
  ensureDevCertificates,
  generateCertificateAuthority,
  issueClientCertificate,
  issueServerCertificate,
  selfSignedCertificate,
  type PemCredentials,
} from '../../src/tls/dev-certs.ts';

let ca: PemCredentials;
let caCert: X509Certificate;

beforeAll(async () => {
  ca = await generateCertificateAuthority({ commonName: 'Postern test CA' });
  caCert = new X509Certificate(ca.certPem);
});

describe('generateCertificateAuthority', () => {
  it('is a self-signed P-256 CA', () => {
    expect(caCert.ca).toBe(true);
    expect(caCert.subject).toBe('CN=Postern test CA');
    expect(caCert.verify(caCert.publicKey)).toBe(true);
    expect(caCert.checkIssued(caCert)).toBe(true);
    const key = createPrivateKey(ca.keyPem);
    expect(key.asymmetricKeyType).toBe('ec');
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(caCert.checkPrivateKey(key)).toBe(true);
    // PKCS#8 (the header is assembled so no committed file carries a private-key marker).
    expect(ca.keyPem.split(/\r?\n/)[0]).toBe(['-----BEGIN', 'PRIVATE', 'KEY-----'].join(' '));
  });
});

describe('issueServerCertificate', () => {
  it('is signed by the CA and names every DNS name and IP address', async () => {
    const leaf = await issueServerCertificate(ca, { names: ['mx.example.com', 'localhost', '127.0.0.1', '::1'] });
    const cert = new X509Certificate(leaf.certPem);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(cert.subject).toBe('CN=mx.example.com');
    expect(cert.subjectAltName?.split(', ')).toEqual([
      'DNS:mx.example.com',
      'DNS:localhost',
      'IP Address:127.0.0.1',
      'IP Address:0:0:0:0:0:0:0:1',
    ]);
    expect(cert.checkHost('mx.example.com')).toBe('mx.example.com');
    expect(cert.checkIP('::1')).toBe('::1');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']); // Node names the EKU "keyUsage"
    const key = createPrivateKey(leaf.keyPem);
    expect(key.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
    expect(cert.checkPrivateKey(key)).toBe(true);
  });

  it('is valid from a few minutes ago for 825 days by default, with a random serial', async () => {
    const before = Date.now();
    const a = new X509Certificate((await issueServerCertificate(ca, { names: ['a.example'] })).certPem);
    const b = new X509Certificate((await issueServerCertificate(ca, { names: ['a.example'] })).certPem);
    const from = Date.parse(a.validFrom);
    const to = Date.parse(a.validTo);
    expect(from).toBeLessThan(before - 60_000);
    expect(from).toBeGreaterThan(before - 60 * 60_000);
    expect(to - from).toBe(825 * 24 * 60 * 60 * 1000);
    expect(a.serialNumber).not.toBe(b.serialNumber);
  });

  it('takes an explicit notBefore and validity', async () => {
    const notBefore = new Date('2020-01-01T00:00:00Z');
    const cert = new X509Certificate((await issueServerCertificate(ca, { names: ['old.example'], notBefore, validDays: 1 })).certPem);
    expect(Date.parse(cert.validFrom)).toBe(notBefore.getTime());
    expect(Date.parse(cert.validTo)).toBe(notBefore.getTime() + 24 * 60 * 60 * 1000);
  });

  it('refuses an empty name list', async () => {
    await expect(issueServerCertificate(ca, { names: [] })).rejects.toThrow(/at least one name/);
  });
});

describe('issueClientCertificate and selfSignedCertificate', () => {
  it('issues a clientAuth leaf from the CA', async () => {
    const cert = new X509Certificate((await issueClientCertificate(ca, { commonName: 'relay-client' })).certPem);
    expect(cert.subject).toBe('CN=relay-client');
    expect(cert.checkIssued(caCert)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(true);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
  });

  it('signs a self-signed leaf with its own key', async () => {
    const self = await selfSignedCertificate({ names: ['self.example'] });
    const cert = new X509Certificate(self.certPem);
    expect(cert.ca).toBe(false);
    expect(cert.verify(cert.publicKey)).toBe(true);
    expect(cert.verify(caCert.publicKey)).toBe(false);
    expect(cert.subjectAltName).toBe('DNS:self.example');
  });
});

describe('ensureDevCertificates', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'postern-dev-certs-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('creates the CA and server pair once, then reuses them', async () => {
    const certs = join(dir, 'certs');
    const first = await ensureDevCertificates({ dir: certs, hostname: 'relay.example.net' });
    expect(first).toEqual({
      caFile: join(certs, 'ca.crt'),
      certFile: join(certs, 'server.crt'),
      keyFile: join(certs, 'server.key'),
      created: true,
    });
    for (const key of ['ca.key', 'server.key']) {
      expect((await stat(join(certs, key))).mode & 0o777).toBe(0o600);
    }
    const serverPem = await readFile(first.certFile, 'utf8');
    const server = new X509Certificate(serverPem);
    const devCa = new X509Certificate(await readFile(first.caFile));
    expect(server.checkIssued(devCa)).toBe(true);
    expect(server.verify(devCa.publicKey)).toBe(true);
    expect(server.checkPrivateKey(createPrivateKey(await readFile(first.keyFile)))).toBe(true);
    expect(server.subjectAltName?.split(', ')).toEqual([
      'DNS:localhost',
      'IP Address:127.0.0.1',
      'IP Address:0:0:0:0:0:0:0:1',
      'DNS:relay.example.net',
    ]);

    const second = await ensureDevCertificates({ dir: certs, hostname: 'relay.example.net' });
    expect(second).toEqual({ ...first, created: false });
    expect(await readFile(first.certFile, 'utf8')).toBe(serverPem);
  });

  it('does not repeat a hostname that is already a default name', async () => {
    const certs = join(dir, 'localhost-only');
    const result = await ensureDevCertificates({ dir: certs, hostname: 'LOCALHOST' });
    const server = new X509Certificate(await readFile(result.certFile));
    expect(server.subjectAltName?.split(', ')).toEqual(['DNS:localhost', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1']);
  });

  // A pair made on a first start with defaults did not cover the hostname set later: clients checking it failed.
  it('issues the server pair anew, from the same CA, when the hostname is not in it; leaves one the CA did not issue', async () => {
    const certs = join(dir, 'renamed');
    const first = await ensureDevCertificates({ dir: certs, hostname: 'vm' });
    const caPem = await readFile(first.caFile, 'utf8');
    const renamed = await ensureDevCertificates({ dir: certs, hostname: 'relay.example.test' });
    expect(renamed.created).toBe(true);
    expect(await readFile(renamed.caFile, 'utf8')).toBe(caPem);
    const server = new X509Certificate(await readFile(renamed.certFile));
    expect(server.checkHost('relay.example.test')).toBe('relay.example.test');
    // A relay still running as "vm" reloads the new pair: it keeps the old name.
    expect(server.checkHost('vm')).toBe('vm');
    expect(server.checkIssued(new X509Certificate(caPem))).toBe(true);
    expect(server.checkPrivateKey(createPrivateKey(await readFile(renamed.keyFile)))).toBe(true);
    expect((await ensureDevCertificates({ dir: certs, hostname: 'RELAY.example.test' })).created).toBe(false);

    // An address it named is kept too, and the loopback addresses are not repeated.
    const byAddress = join(dir, 'by-address');
    await ensureDevCertificates({ dir: byAddress, hostname: '192.0.2.10' });
    const named = await ensureDevCertificates({ dir: byAddress, hostname: 'old.example' });
    expect(new X509Certificate(await readFile(named.certFile)).subjectAltName?.split(', ')).toEqual([
      'DNS:localhost',
      'IP Address:127.0.0.1',
      'IP Address:0:0:0:0:0:0:0:1',
      'IP Address:192.0.2.10',
      'DNS:old.example',
    ]);

    // Without the CA's key (kept offline) nothing is issued, and above all no new CA.
    const caKey = await readFile(join(certs, 'ca.key'));
    await rm(join(certs, 'ca.key'));
    const withoutKey = await readFile(renamed.certFile, 'utf8');
    expect((await ensureDevCertificates({ dir: certs, hostname: 'other.example.test' })).created).toBe(false);
    expect([await readFile(renamed.caFile, 'utf8'), await readFile(renamed.certFile, 'utf8')]).toEqual([caPem, withoutKey]);
    await writeFile(join(certs, 'ca.key'), caKey, { mode: 0o600 });

    const own = await selfSignedCertificate({ names: ['mail.example.org'] });
    await writeFile(renamed.certFile, own.certPem);
    await writeFile(renamed.keyFile, own.keyPem);
    expect((await ensureDevCertificates({ dir: certs, hostname: 'relay.example.test' })).created).toBe(false);
    expect(await readFile(renamed.certFile, 'utf8')).toBe(own.certPem);
  });

  it('reissues a missing server pair from the existing CA', async () => {
    const certs = join(dir, 'reissue');
    const first = await ensureDevCertificates({ dir: certs, hostname: 'a.example' });
    const caPem = await readFile(first.caFile, 'utf8');
    await rm(first.keyFile);
    const second = await ensureDevCertificates({ dir: certs, hostname: 'a.example' });
    expect(second.created).toBe(true);
    expect(await readFile(second.caFile, 'utf8')).toBe(caPem);
    const server = new X509Certificate(await readFile(second.certFile));
    expect(server.verify(new X509Certificate(caPem).publicKey)).toBe(true);
  });
});

describe('certificateFingerprint', () => {
  it('is the SHA-256 of the certificate as colon-separated uppercase hex', () => {
    const fingerprint = certificateFingerprint(ca.certPem);
    expect(fingerprint).toMatch(/^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    expect(fingerprint).toBe(caCert.fingerprint256);
  });

  it('throws on something that is not a certificate', () => {
    expect(() => certificateFingerprint('not a certificate')).toThrow();
  });
});
