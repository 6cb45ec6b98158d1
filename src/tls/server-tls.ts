// Inbound TLS: the settings every listener uses, SNI, optional client
// certificates, and certificates reloaded from disk without a restart.
//
// createServerTls rejects when a file cannot be read or parsed, or a key does
// not match its certificate; the Error names the file and the problem.
// After start-up nothing throws: a changed file that is invalid, or a pair
// caught half-written (cert and key do not match), is logged with its file
// name and ignored; the previous certificate keeps being served and the next
// change to the directory is tried again.
// Why directories are watched: editors, `mv` and certbot replace a file
// (new inode), which ends a watch on the file itself; Kubernetes secret
// mounts swap a `..data` symlink, so any event in the directory triggers a
// re-read, and the bytes decide whether anything changed.
import { X509Certificate, createPrivateKey, type KeyObject } from 'node:crypto';
import { watch, type FSWatcher } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import tls from 'node:tls';
import type { Logger } from 'pino';
import { errorMessage } from '../observability/logger.ts';

/** Oldest protocol accepted inbound by default (TLS 1.0/1.1 are deprecated by RFC 8996). */
export const TLS_MIN_VERSION: tls.SecureVersion = 'TLSv1.2';

/** TLS 1.2 suites: forward secret (ECDHE) and AEAD only (Mozilla "intermediate"). */
const TLS12_CIPHERS = [
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** TLS 1.3 suites: all of them are forward secret and AEAD. */
const TLS13_CIPHERSUITES = 'TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256';

/** The `ciphers` option: Node takes the TLS 1.3 and 1.2 lists in one string. */
const TLS_CIPHERS = `${TLS13_CIPHERSUITES}:${TLS12_CIPHERS}`;

/**
 * What TLS 1.0 and 1.1 clients can speak, added only when tls.minVersion asks for them: CBC suites, forward
 * secret first. OpenSSL 3 allows these protocols only at security level 0.
 */
const LEGACY_CIPHERS = ['ECDHE-ECDSA-AES128-SHA', 'ECDHE-RSA-AES128-SHA', 'ECDHE-ECDSA-AES256-SHA', 'ECDHE-RSA-AES256-SHA', 'AES128-SHA', 'AES256-SHA'].join(':');

/** Key exchange groups, preferred first. */
const TLS_ECDH_CURVES = 'X25519:P-256:P-384';

// One session id context for every context we build: a client certificate
// request (verify mode) without one makes OpenSSL fail session resumption.
const SESSION_ID_CONTEXT = 'postern';
const RELOAD_DEBOUNCE_MS = 100;

export interface ServerTlsConfig {
  certFile: string;
  keyFile: string;
  /** Server name (or `*.example.com`, one label) → certificate and key files. */
  sni: Record<string, { cert: string; key: string }>;
  /** CA whose client certificates count as a relay credential. */
  clientCaFile?: string;
  /** tls.minVersion; absent: TLS_MIN_VERSION. */
  minVersion?: tls.SecureVersion;
}

/** What the default certificate reload hands to `smtpServer.updateSecureContext()`. */
export interface TlsMaterial {
  key: Buffer;
  cert: Buffer;
  /** Present when a client CA is configured, so a changed CA file reaches the listener too. */
  ca?: Buffer;
}

type SniCallback = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void) => void;

/** The TLS part of SMTPServer (or tls.createServer) options. */
export interface ServerTlsOptions {
  key: Buffer;
  cert: Buffer;
  ca?: Buffer;
  minVersion: tls.SecureVersion;
  ciphers: string;
  honorCipherOrder: true;
  ecdhCurve: string;
  sessionIdContext: string;
  SNICallback: SniCallback;
  requestCert: boolean;
  rejectUnauthorized: false;
}

export interface ServerTls {
  /** options - TLS settings to spread into SMTPServer options, with the current default certificate. */
  options(): ServerTlsOptions;
  /** onReload - listener called after the default pair (or client CA) changed and was read successfully. */
  onReload(listener: (material: TlsMaterial) => void): void;
  /** fingerprint - SHA-256 fingerprint of the default certificate being served. */
  fingerprint(): string;
  /** notAfter - expiry of the default certificate being served. */
  notAfter(): Date;
  /** isClientCertificateTrusted - the peer presented a certificate that chains to the client CA. */
  isClientCertificateTrusted(socket: tls.TLSSocket): boolean;
  /** close - stop watching the certificate directories. */
  close(): void;
}

interface LoadedPair {
  key: Buffer;
  cert: Buffer;
  certificate: X509Certificate;
  context: tls.SecureContext;
}

interface State {
  ca: Buffer | undefined;
  protocols: ProtocolSettings;
  primary: LoadedPair;
  sni: Map<string, LoadedPair>;
}

/** createServerTls - read and check the certificate files, then watch them for changes. */
export async function createServerTls(config: ServerTlsConfig, logger: Logger): Promise<ServerTls> {
  const sniFiles = new Map(Object.entries(config.sni).map(([name, files]) => [normalizeSniKey(name), files]));
  const ca = config.clientCaFile === undefined ? undefined : await loadCa(config.clientCaFile);
  const protocols = protocolSettings(config.minVersion ?? TLS_MIN_VERSION);
  const state: State = { ca, protocols, primary: await loadPair(config.certFile, config.keyFile, ca, protocols), sni: new Map() };
  for (const [name, files] of sniFiles) state.sni.set(name, await loadPair(files.cert, files.key, ca, protocols));
  warnIfExpiring(logger, config.certFile, state.primary.certificate);

  const listeners: ((material: TlsMaterial) => void)[] = [];
  const reloader = startWatching({ config, sniFiles, state, logger, listeners });

  const SNICallback: SniCallback = (servername, cb) => {
    const pair = findSniPair(state.sni, servername);
    cb(null, (pair ?? state.primary).context);
  };

  return {
    options: () => ({
      ...contextOptions(state.ca, state.protocols),
      key: state.primary.key,
      cert: state.primary.cert,
      SNICallback,
      requestCert: state.ca !== undefined,
      // Never refuse at the handshake: an untrusted client certificate only
      // means "not a relay credential"; the session goes on like any other.
      rejectUnauthorized: false,
    }),
    onReload: (listener) => {
      listeners.push(listener);
    },
    fingerprint: () => state.primary.certificate.fingerprint256,
    notAfter: () => new Date(state.primary.certificate.validTo),
    isClientCertificateTrusted: (socket) =>
      state.ca !== undefined && socket.authorized && Object.keys(socket.getPeerCertificate()).length > 0,
    close: () => {
      listeners.length = 0;
      reloader.close();
    },
  };
}

// findSniPair - exact name first, then a wildcard covering one left-most label.
function findSniPair(sni: Map<string, LoadedPair>, servername: string): LoadedPair | undefined {
  const name = servername.toLowerCase().replace(/\.$/, '');
  const exact = sni.get(name);
  if (exact) return exact;
  const dot = name.indexOf('.');
  return dot > 0 ? sni.get(`*${name.slice(dot)}`) : undefined;
}

function normalizeSniKey(name: string): string {
  const key = name.trim().toLowerCase().replace(/\.$/, '');
  // RFC 6125 §6.4.3, as browsers apply it: "*" only as the whole left-most label.
  if (key === '' || key.slice(1).includes('*') || (key.startsWith('*') && !/^\*\.[^.]+\.[^.]+/.test(key))) {
    throw new Error(`tls sni: invalid server name "${name}" (a wildcard must be "*.domain.tld")`);
  }
  return key;
}

type ProtocolSettings = { minVersion: tls.SecureVersion; ciphers: string };

/** protocolSettings - the protocol floor and suites for tls.minVersion: AEAD only from TLS 1.2 up; below, the legacy suites too. */
export function protocolSettings(minVersion: tls.SecureVersion): ProtocolSettings {
  if (minVersion === 'TLSv1' || minVersion === 'TLSv1.1') return { minVersion, ciphers: `${TLS_CIPHERS}:${LEGACY_CIPHERS}:@SECLEVEL=0` };
  return { minVersion, ciphers: TLS_CIPHERS };
}

function contextOptions(ca: Buffer | undefined, protocols: ProtocolSettings) {
  return {
    ...protocols,
    honorCipherOrder: true as const,
    ecdhCurve: TLS_ECDH_CURVES,
    sessionIdContext: SESSION_ID_CONTEXT,
    ...(ca === undefined ? {} : { ca }),
  };
}

// loadPair - read, parse and match a certificate and key; build their context.
async function loadPair(certFile: string, keyFile: string, ca: Buffer | undefined, protocols: ProtocolSettings): Promise<LoadedPair> {
  const cert = await readOrThrow(certFile);
  const key = await readOrThrow(keyFile);
  return checkPair({ certFile, keyFile, cert, key, ca, protocols });
}

function checkPair(p: { certFile: string; keyFile: string; cert: Buffer; key: Buffer; ca: Buffer | undefined; protocols: ProtocolSettings }): LoadedPair {
  let certificate: X509Certificate;
  try {
    certificate = new X509Certificate(p.cert);
  } catch (err) {
    throw new Error(`${p.certFile}: not a PEM certificate (${errorMessage(err)})`);
  }
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(p.key);
  } catch (err) {
    throw new Error(`${p.keyFile}: not a usable private key; encrypted keys are not supported (${errorMessage(err)})`);
  }
  if (!certificate.checkPrivateKey(privateKey)) {
    throw new Error(`${p.keyFile}: private key does not match the certificate in ${p.certFile}`);
  }
  try {
    const context = tls.createSecureContext({ ...contextOptions(p.ca, p.protocols), key: p.key, cert: p.cert });
    return { key: p.key, cert: p.cert, certificate, context };
  } catch (err) {
    throw new Error(`${p.certFile}: rejected by OpenSSL (${errorMessage(err)})`);
  }
}

async function loadCa(file: string): Promise<Buffer> {
  const ca = await readOrThrow(file);
  try {
    new X509Certificate(ca);
  } catch (err) {
    throw new Error(`${file}: not a PEM certificate (${errorMessage(err)})`);
  }
  return ca;
}

async function readOrThrow(file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (err) {
    throw new Error(`${file}: cannot read (${errorMessage(err)})`);
  }
}

function warnIfExpiring(logger: Logger, certFile: string, certificate: X509Certificate): void {
  const notAfter = new Date(certificate.validTo);
  if (notAfter.getTime() < Date.now()) {
    logger.warn({ certFile, notAfter: notAfter.toISOString() }, 'TLS certificate has expired; clients that verify will refuse it');
  }
}

interface WatchContext {
  config: ServerTlsConfig;
  sniFiles: Map<string, { cert: string; key: string }>;
  state: State;
  logger: Logger;
  listeners: ((material: TlsMaterial) => void)[];
}

// startWatching - watch each directory holding a file, debounce, re-read.
function startWatching(w: WatchContext): { close(): void } {
  const files = [w.config.certFile, w.config.keyFile, ...[...w.sniFiles.values()].flatMap((f) => [f.cert, f.key])];
  if (w.config.clientCaFile !== undefined) files.push(w.config.clientCaFile);
  let timer: NodeJS.Timeout | undefined;
  let running = false;
  let again = false;
  let closed = false;

  const run = async (): Promise<void> => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        await reloadChanged(w);
      } while (again && !closed);
    } finally {
      running = false;
    }
  };
  const schedule = (): void => {
    if (closed) return;
    clearTimeout(timer);
    timer = setTimeout(() => void run(), RELOAD_DEBOUNCE_MS);
  };
  const watchers: FSWatcher[] = [];
  for (const dir of new Set(files.map((f) => dirname(f)))) {
    const onError = (err: unknown): void => {
      w.logger.error({ dir, err: errorMessage(err) }, 'cannot watch TLS certificate directory; changes there need a restart');
    };
    // Out of inotify watches (ENOSPC) is no reason to refuse to serve mail.
    try {
      watchers.push(watch(dir, schedule).on('error', onError));
    } catch (err) {
      onError(err);
    }
  }
  return {
    close: () => {
      closed = true;
      clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
    },
  };
}

// reloadChanged - re-read every file; replace what changed and is valid.
async function reloadChanged(w: WatchContext): Promise<void> {
  const { config, state, logger } = w;
  let caChanged = false;
  const caFile = config.clientCaFile;
  if (caFile !== undefined) {
    const ca = await tryLoad(logger, caFile, () => loadCa(caFile));
    if (ca && !(state.ca?.equals(ca) ?? false)) {
      state.ca = ca;
      caChanged = true;
    }
  }
  const primary = await reloadPair(w, config.certFile, config.keyFile, state.primary, caChanged);
  if (primary) {
    state.primary = primary;
    logger.info(
      { certFile: config.certFile, fingerprint: primary.certificate.fingerprint256, notAfter: primary.certificate.validTo },
      'TLS certificate reloaded',
    );
    warnIfExpiring(logger, config.certFile, primary.certificate);
  }
  for (const [name, files] of w.sniFiles) {
    const old = state.sni.get(name);
    const pair = old && (await reloadPair(w, files.cert, files.key, old, caChanged));
    if (pair) {
      state.sni.set(name, pair);
      logger.info({ servername: name, certFile: files.cert, fingerprint: pair.certificate.fingerprint256 }, 'TLS SNI certificate reloaded');
    }
  }
  if (primary || caChanged) {
    const material: TlsMaterial = { key: state.primary.key, cert: state.primary.cert, ...(state.ca ? { ca: state.ca } : {}) };
    for (const listener of w.listeners) {
      try {
        listener(material);
      } catch (err) {
        logger.error({ err: errorMessage(err) }, 'TLS reload listener failed');
      }
    }
  }
}

// reloadPair - the new pair if its bytes changed (or the CA did) and it is valid.
async function reloadPair(
  w: WatchContext,
  certFile: string,
  keyFile: string,
  old: LoadedPair,
  force: boolean,
): Promise<LoadedPair | undefined> {
  return tryLoad(w.logger, certFile, async () => {
    const cert = await readOrThrow(certFile);
    const key = await readOrThrow(keyFile);
    if (!force && cert.equals(old.cert) && key.equals(old.key)) return undefined;
    return checkPair({ certFile, keyFile, cert, key, ca: w.state.ca, protocols: w.state.protocols });
  });
}

async function tryLoad<T>(logger: Logger, file: string, load: () => Promise<T>): Promise<T | undefined> {
  try {
    return await load();
  } catch (err) {
    logger.error({ file, err: errorMessage(err) }, 'TLS file reload failed; still serving the previous certificate');
    return undefined;
  }
}
