// Inbound TLS against real handshakes: protocol floor, AEAD-only TLS 1.2,
// SNI, live reload from disk (and refusing a bad pair), client certificates.
import { EventEmitter, once } from 'node:events';
import { mkdir, mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import tls from 'node:tls';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import {
  certificateFingerprint,
  generateCertificateAuthority,
  issueClientCertificate,
  issueServerCertificate,
  type PemCredentials,
} from '../../src/tls/dev-certs.ts';
import { createServerTls, protocolSettings, TLS_MIN_VERSION, type ServerTls, type ServerTlsConfig, type TlsMaterial } from '../../src/tls/server-tls.ts';

const WAIT_MS = 4_000;

interface Handshake {
  protocol: string | null;
  cipher: string;
  fingerprint: string;
  trusted: string;
}

/** Log lines as objects, with a way to wait for one. */
class LogCapture extends EventEmitter {
  readonly lines: Record<string, unknown>[] = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _enc, done) => {
      for (const text of chunk.toString().split('\n').filter(Boolean)) {
        const line = JSON.parse(text) as Record<string, unknown>;
        this.lines.push(line);
        this.emit('line', line);
      }
      done();
    },
  });
  readonly logger = pino({ level: 'info' }, this.stream);

  waitFor(match: (line: Record<string, unknown>) => boolean): Promise<Record<string, unknown>> {
    const seen = this.lines.find(match);
    if (seen) return Promise.resolve(seen);
    return withDeadline(
      new Promise((resolve) => {
        const onLine = (line: Record<string, unknown>): void => {
          if (!match(line)) return;
          this.off('line', onLine);
          resolve(line);
        };
        this.on('line', onLine);
      }),
      'log line',
    );
  }
}

function withDeadline<T>(promise: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), WAIT_MS);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

/** A tls.Server with the ServerTls options; tells each client whether its certificate counts. */
async function startServer(serverTls: ServerTls): Promise<{ server: tls.Server; port: number }> {
  const server = tls.createServer({ ...serverTls.options() }, (socket) => {
    socket.end(serverTls.isClientCertificateTrusted(socket) ? 'trusted\n' : 'untrusted\n');
  });
  server.on('tlsClientError', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  return { server, port: (server.address() as AddressInfo).port };
}

/** Connect, complete the handshake and read the server's one line. */
async function handshake(port: number, ca: string, options: tls.ConnectionOptions = {}): Promise<Handshake> {
  const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ...options });
  try {
    await withDeadline(once(socket, 'secureConnect'), 'handshake');
    const peer = socket.getPeerCertificate();
    const result = { protocol: socket.getProtocol(), cipher: socket.getCipher().name, fingerprint: peer.fingerprint256 };
    let trusted = '';
    for await (const chunk of socket) trusted += String(chunk);
    return { ...result, trusted: trusted.trim() };
  } finally {
    socket.destroy();
  }
}

async function writePem(path: string, pem: string): Promise<void> {
  // Write then rename, the way certbot, `mv` and editors replace a file.
  await writeFile(`${path}.tmp`, pem, { mode: 0o600 });
  await rename(`${path}.tmp`, path);
}

async function writePair(dir: string, creds: PemCredentials): Promise<{ cert: string; key: string }> {
  await mkdir(dir, { recursive: true });
  const files = { cert: join(dir, 'server.crt'), key: join(dir, 'server.key') };
  await writePem(files.key, creds.keyPem);
  await writePem(files.cert, creds.certPem);
  return files;
}

let root: string;
let ca: PemCredentials;
let clientCa: PemCredentials;
let defaultPair: PemCredentials;
let sniPair: PemCredentials;
let wildcardPair: PemCredentials;
let config: ServerTlsConfig;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'postern-server-tls-'));
  [ca, clientCa] = await Promise.all([
    generateCertificateAuthority({ commonName: 'Server CA' }),
    generateCertificateAuthority({ commonName: 'Client CA' }),
  ]);
  [defaultPair, sniPair, wildcardPair] = await Promise.all([
    issueServerCertificate(ca, { names: ['localhost', '127.0.0.1'] }),
    issueServerCertificate(ca, { names: ['mail.example.org'] }),
    issueServerCertificate(ca, { names: ['*.example.net'] }),
  ]);
  const main = await writePair(join(root, 'main'), defaultPair);
  const sni = await writePair(join(root, 'sni'), sniPair);
  const wildcard = await writePair(join(root, 'wildcard'), wildcardPair);
  const clientCaFile = join(root, 'client-ca.crt');
  await writeFile(clientCaFile, clientCa.certPem);
  config = {
    certFile: main.cert,
    keyFile: main.key,
    sni: { 'Mail.Example.Org': sni, '*.example.net': wildcard },
    clientCaFile,
  };
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('handshakes', () => {
  let serverTls: ServerTls;
  let server: tls.Server;
  let port: number;
  beforeAll(async () => {
    serverTls = await createServerTls(config, pino({ level: 'silent' }));
    ({ server, port } = await startServer(serverTls));
  });
  afterAll(async () => {
    serverTls.close();
    server.close();
    await once(server, 'close');
  });

  it('refuses TLS 1.1 with a protocol version alert', async () => {
    const refused = once(server, 'tlsClientError');
    await expect(
      handshake(port, ca.certPem, { minVersion: 'TLSv1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    ).rejects.toThrow(/protocol version/);
    const [err] = (await refused) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ERR_SSL_UNSUPPORTED_PROTOCOL');
  });

  it('refuses TLS 1.2 with CBC-only suites', async () => {
    const refused = once(server, 'tlsClientError');
    await expect(
      handshake(port, ca.certPem, { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-RSA-AES128-SHA' }),
    ).rejects.toThrow(/handshake failure/);
    const [err] = (await refused) as [NodeJS.ErrnoException];
    expect(err.code).toBe('ERR_SSL_NO_SHARED_CIPHER');
  });

  it.each([
    ['ECDHE-ECDSA-AES128-GCM-SHA256'],
    ['ECDHE-ECDSA-AES256-GCM-SHA384'],
    ['ECDHE-ECDSA-CHACHA20-POLY1305'],
  ])('accepts TLS 1.2 with %s', async (cipher) => {
    const result = await handshake(port, ca.certPem, { maxVersion: 'TLSv1.2', ciphers: cipher });
    expect(result).toMatchObject({ protocol: 'TLSv1.2', cipher, fingerprint: certificateFingerprint(defaultPair.certPem) });
  });

  it('accepts TLS 1.3', async () => {
    const result = await handshake(port, ca.certPem, { minVersion: 'TLSv1.3' });
    expect(result.protocol).toBe('TLSv1.3');
    expect(result.cipher).toMatch(/^TLS_/);
  });

  it('serves the certificate configured for an SNI name, case-insensitively, and the default otherwise', async () => {
    const cases: [string | undefined, PemCredentials][] = [
      ['mail.example.org', sniPair],
      ['MAIL.EXAMPLE.ORG', sniPair],
      ['mx1.example.net', wildcardPair], // the wildcard covers one label…
      ['a.mx1.example.net', defaultPair], // …not two
      ['example.net', defaultPair],
      ['unknown.example.com', defaultPair],
      [undefined, defaultPair], // no SNI at all (connecting to an IP address)
    ];
    for (const [servername, pair] of cases) {
      const checkServerIdentity = (): undefined => undefined; // the name mismatch is the point here
      const result = await handshake(port, ca.certPem, { servername, checkServerIdentity });
      expect(result.fingerprint, servername).toBe(certificateFingerprint(pair.certPem));
    }
  });

  it('SNI contexts keep the protocol floor', async () => {
    await expect(
      handshake(port, ca.certPem, { servername: 'mail.example.org', maxVersion: 'TLSv1.2', ciphers: 'ECDHE-ECDSA-AES128-SHA256' }),
    ).rejects.toThrow(/handshake failure/);
  });

  it('trusts a client certificate only when it chains to the configured client CA', async () => {
    const fromClientCa = await issueClientCertificate(clientCa, { commonName: 'relay-client' });
    const fromOtherCa = await issueClientCertificate(ca, { commonName: 'stranger' });
    const good = await handshake(port, ca.certPem, { cert: fromClientCa.certPem, key: fromClientCa.keyPem });
    const other = await handshake(port, ca.certPem, { cert: fromOtherCa.certPem, key: fromOtherCa.keyPem });
    const none = await handshake(port, ca.certPem);
    expect([good.trusted, other.trusted, none.trusted]).toEqual(['trusted', 'untrusted', 'untrusted']);
  });

  it('describes the default certificate', () => {
    expect(serverTls.fingerprint()).toBe(certificateFingerprint(defaultPair.certPem));
    expect(serverTls.notAfter().getTime()).toBeGreaterThan(Date.now());
    expect(serverTls.options()).toMatchObject({
      minVersion: TLS_MIN_VERSION,
      honorCipherOrder: true,
      requestCert: true,
      rejectUnauthorized: false,
    });
  });
});

describe('without a client CA', () => {
  it('requests no client certificate and trusts none', async () => {
    const serverTls = await createServerTls({ ...config, clientCaFile: undefined }, pino({ level: 'silent' }));
    const { server, port } = await startServer(serverTls);
    try {
      expect(serverTls.options().requestCert).toBe(false);
      expect(serverTls.options().ca).toBeUndefined();
      const client = await issueClientCertificate(clientCa, { commonName: 'relay-client' });
      const result = await handshake(port, ca.certPem, { cert: client.certPem, key: client.keyPem });
      expect(result.trusted).toBe('untrusted');
    } finally {
      serverTls.close();
      server.close();
    }
  });
});

describe('bad files at start-up', () => {
  it.each([
    ['a missing certificate', (): Partial<ServerTlsConfig> => ({ certFile: join(root, 'nope.crt') }), /nope\.crt: cannot read/],
    ['a key that is not a key', (): Partial<ServerTlsConfig> => ({ keyFile: join(root, 'client-ca.crt') }), /client-ca\.crt: not a usable private key/],
    ['a certificate that is not one', (): Partial<ServerTlsConfig> => ({ certFile: config.keyFile }), /server\.key: not a PEM certificate/],
    ['a key for another certificate', (): Partial<ServerTlsConfig> => ({ keyFile: config.sni['*.example.net']!.key }), /wildcard\/server\.key: private key does not match the certificate in .*main\/server\.crt/],
    ['a broken SNI pair', (): Partial<ServerTlsConfig> => ({ sni: { 'a.example': { cert: config.certFile, key: join(root, 'sni', 'server.key') } } }), /sni\/server\.key: private key does not match/],
    ['a wildcard that is not one left-most label', (): Partial<ServerTlsConfig> => ({ sni: { 'mail.*.example': config.sni['mail.example.org']! } }), /invalid server name "mail\.\*\.example"/],
  ])('rejects %s, naming the file', async (_what, change, error) => {
    await expect(createServerTls({ ...config, ...change() }, pino({ level: 'silent' }))).rejects.toThrow(error);
  });
});

describe('reload', () => {
  let dir: string;
  let serverTls: ServerTls | undefined;
  let server: tls.Server | undefined;
  afterEach(async () => {
    serverTls?.close();
    server?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function start(): Promise<{ log: LogCapture; reloads: EventEmitter; port: number }> {
    dir = await mkdtemp(join(root, 'reload-'));
    const main = await writePair(join(dir, 'main'), defaultPair);
    const sni = await writePair(join(dir, 'sni'), sniPair);
    const log = new LogCapture();
    serverTls = await createServerTls({ certFile: main.cert, keyFile: main.key, sni: { 'mail.example.org': sni } }, log.logger);
    const started = await startServer(serverTls);
    server = started.server;
    const reloads = new EventEmitter();
    serverTls.onReload((material) => {
      // What smtp-server's updateSecureContext(material) does for its own contexts.
      started.server.setSecureContext({ ...serverTls!.options(), ...material });
      reloads.emit('reload', material);
    });
    return { log, reloads, port: started.port };
  }

  function nextReload(reloads: EventEmitter): Promise<TlsMaterial> {
    return withDeadline(once(reloads, 'reload').then(([material]) => material as TlsMaterial), 'onReload');
  }

  it('serves a replaced certificate to new connections after onReload', async () => {
    const { reloads, port } = await start();
    const renewed = await issueServerCertificate(ca, { names: ['localhost', '127.0.0.1'] });
    const reloaded = nextReload(reloads);
    await writePair(join(dir, 'main'), renewed);
    const material = await reloaded;
    expect(certificateFingerprint(material.cert.toString())).toBe(certificateFingerprint(renewed.certPem));
    expect(material.key.toString()).toBe(renewed.keyPem);
    expect(serverTls!.fingerprint()).toBe(certificateFingerprint(renewed.certPem));
    // No SNI: the server's own default context, swapped by setSecureContext.
    expect((await handshake(port, ca.certPem, { servername: undefined })).fingerprint).toBe(certificateFingerprint(renewed.certPem));
    // An SNI name with no certificate of its own: the SNICallback's default.
    const other = await handshake(port, ca.certPem, { servername: 'other.example', checkServerIdentity: () => undefined });
    expect(other.fingerprint).toBe(certificateFingerprint(renewed.certPem));
  });

  it('keeps serving the old pair when the new files do not match, and takes the next good one', async () => {
    const { log, reloads, port } = await start();
    let reloadCount = 0;
    reloads.on('reload', () => reloadCount++);
    const renewed = await issueServerCertificate(ca, { names: ['localhost', '127.0.0.1'] });
    const stranger = await issueServerCertificate(ca, { names: ['localhost'] });

    // A new certificate next to a key that belongs to something else.
    await writePair(join(dir, 'main'), { certPem: renewed.certPem, keyPem: stranger.keyPem });
    const error = await log.waitFor((l) => l.level === 50 && String(l.err).includes('does not match'));
    expect(error.file).toBe(join(dir, 'main', 'server.crt'));
    expect(String(error.err)).toContain(join(dir, 'main', 'server.key'));
    expect(reloadCount).toBe(0);
    expect(serverTls!.fingerprint()).toBe(certificateFingerprint(defaultPair.certPem));
    expect((await handshake(port, ca.certPem)).fingerprint).toBe(certificateFingerprint(defaultPair.certPem));

    // The matching key arrives: the next change is picked up.
    const reloaded = nextReload(reloads);
    await writePem(join(dir, 'main', 'server.key'), renewed.keyPem);
    expect(certificateFingerprint((await reloaded).cert.toString())).toBe(certificateFingerprint(renewed.certPem));
    expect((await handshake(port, ca.certPem)).fingerprint).toBe(certificateFingerprint(renewed.certPem));
  });

  it('reloads SNI certificates too', async () => {
    const { log, port } = await start();
    const renewed = await issueServerCertificate(ca, { names: ['mail.example.org'] });
    await writePair(join(dir, 'sni'), renewed);
    await log.waitFor((l) => l.msg === 'TLS SNI certificate reloaded');
    const result = await handshake(port, ca.certPem, { servername: 'mail.example.org' });
    expect(result.fingerprint).toBe(certificateFingerprint(renewed.certPem));
  });
});

describe('protocolSettings (tls.minVersion)', () => {
  it('keeps AEAD suites only from TLS 1.2 up, and adds the CBC suites of TLS 1.0/1.1 at security level 0 only below', () => {
    for (const version of ['TLSv1.3', 'TLSv1.2'] as const) {
      const settings = protocolSettings(version);
      expect(settings.minVersion).toBe(version);
      expect(settings.ciphers).not.toMatch(/-SHA(:|$)|SECLEVEL/);
    }
    for (const version of ['TLSv1.1', 'TLSv1'] as const) {
      expect(protocolSettings(version)).toEqual({ minVersion: version, ciphers: expect.stringMatching(/:ECDHE-ECDSA-AES128-SHA:.*:@SECLEVEL=0$/) });
    }
  });
});
