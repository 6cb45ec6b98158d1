// Development certificates: a private CA and the leaves it issues, made with
// @peculiar/x509 on Node's WebCrypto (no openssl binary needed).
//
// generateCertificateAuthority, issueServerCertificate, issueClientCertificate
// and selfSignedCertificate are pure crypto: they reject only on bad input
// (no names, a CA key that is not ECDSA P-256/P-384, unreadable PEM).
// ensureDevCertificates writes files: it rejects with the fs error (EACCES,
// ENOSPC …) and never overwrites an existing server.crt/server.key pair,
// but for one of its own that does not name the configured hostname (issued
// anew by the same CA, with the names it had and that one; never a new CA).
// Each file is written to a temporary name and renamed, so a reader (the
// certificate watcher in server-tls.ts) never sees half a file.
// certificateFingerprint throws when the PEM is not a certificate.
import { X509Certificate as NodeX509Certificate, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import type * as X509 from '@peculiar/x509';

/** A certificate and its private key, both PEM; the key is PKCS#8. */
export interface PemCredentials {
  certPem: string;
  keyPem: string;
}

type X509Module = typeof X509;

const crypto = webcrypto as unknown as Crypto;
const DAY_MS = 24 * 60 * 60 * 1000;
// Clock skew between the machine that issues and the one that verifies: a
// certificate valid "from now" is rejected by a peer whose clock is behind.
const BACKDATE_MS = 5 * 60 * 1000;
// 825 days: the longest leaf lifetime Apple platforms accept for a TLS server.
const DEFAULT_LEAF_DAYS = 825;
const DEFAULT_CA_DAYS = 3650;
const EKU_SERVER_AUTH = '1.3.6.1.5.5.7.3.1';
const EKU_CLIENT_AUTH = '1.3.6.1.5.5.7.3.2';
const P256: EcKeyGenParams = { name: 'ECDSA', namedCurve: 'P-256' };
// Node's name for a CA key's curve → WebCrypto's, with the hash to sign with.
const CA_CURVES: Record<string, { namedCurve: string; hash: string }> = {
  prime256v1: { namedCurve: 'P-256', hash: 'SHA-256' },
  secp384r1: { namedCurve: 'P-384', hash: 'SHA-384' },
};

interface Signer {
  name: X509.X509CertificateCreateParamsName;
  key: CryptoKey;
  algorithm: EcdsaParams;
  authorityKeyId: X509.AuthorityKeyIdentifierExtension;
}

interface LeafOptions {
  commonName: string;
  names: string[];
  usage: string;
  validDays?: number;
  notBefore?: Date;
  keys?: CryptoKeyPair;
  selfSigned?: boolean;
}

/** generateCertificateAuthority - a self-signed ECDSA P-256 CA for dev and tests. */
export async function generateCertificateAuthority(opts: { commonName: string; validDays?: number }): Promise<PemCredentials> {
  const x509 = await loadX509();
  const keys = await generateKeys();
  const notBefore = new Date(Date.now() - BACKDATE_MS);
  const cert = await x509.X509CertificateGenerator.createSelfSigned(
    {
      serialNumber: randomSerial(),
      name: commonName(opts.commonName),
      notBefore,
      notAfter: new Date(notBefore.getTime() + (opts.validDays ?? DEFAULT_CA_DAYS) * DAY_MS),
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [
        new x509.BasicConstraintsExtension(true, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
      ],
    },
    crypto,
  );
  return { certPem: cert.toString('pem'), keyPem: await exportKey(x509, keys.privateKey) };
}

/** issueServerCertificate - a P-256 leaf for TLS servers (EKU serverAuth), names as DNS/IP SANs. */
export async function issueServerCertificate(
  ca: PemCredentials,
  opts: { names: string[]; validDays?: number; notBefore?: Date },
): Promise<PemCredentials> {
  const cn = requireFirstName(opts.names);
  const x509 = await loadX509();
  return issueLeaf(x509, await loadSigner(x509, ca), {
    commonName: cn,
    names: opts.names,
    usage: EKU_SERVER_AUTH,
    validDays: opts.validDays,
    notBefore: opts.notBefore,
  });
}

/** issueClientCertificate - a P-256 leaf for TLS clients (EKU clientAuth), e.g. a relay credential. */
export async function issueClientCertificate(
  ca: PemCredentials,
  opts: { commonName: string; validDays?: number },
): Promise<PemCredentials> {
  const x509 = await loadX509();
  return issueLeaf(x509, await loadSigner(x509, ca), {
    commonName: opts.commonName,
    names: [],
    usage: EKU_CLIENT_AUTH,
    validDays: opts.validDays,
  });
}

/** selfSignedCertificate - a server leaf signed by its own key (a "self-signed next hop"). */
export async function selfSignedCertificate(opts: { names: string[] }): Promise<PemCredentials> {
  const cn = requireFirstName(opts.names);
  const x509 = await loadX509();
  const keys = await generateKeys();
  const ski = await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto);
  const signer: Signer = {
    name: commonName(cn),
    key: keys.privateKey,
    algorithm: { name: 'ECDSA', hash: 'SHA-256' },
    authorityKeyId: new x509.AuthorityKeyIdentifierExtension(ski.keyId),
  };
  return issueLeaf(x509, signer, { commonName: cn, names: opts.names, usage: EKU_SERVER_AUTH, keys, selfSigned: true });
}

/**
 * ensureDevCertificates - create dir/{ca,server}.{crt,key} unless server.crt and server.key exist, or issue the server
 * pair anew when the one there is the dev CA's and does not name `hostname` (it was made before `hostname` was set:
 * clients that check the name failed). A pair the dev CA did not issue (the operator's own) is never replaced.
 */
export async function ensureDevCertificates(opts: {
  dir: string;
  hostname: string;
}): Promise<{ caFile: string; certFile: string; keyFile: string; created: boolean }> {
  const caFile = join(opts.dir, 'ca.crt');
  const caKeyFile = join(opts.dir, 'ca.key');
  const certFile = join(opts.dir, 'server.crt');
  const keyFile = join(opts.dir, 'server.key');
  const current = await readCredentials(certFile, keyFile);
  const reissue = current ? await reissueFor(current.certPem, { caFile, caKeyFile }, opts.hostname) : undefined;
  if (current && !reissue) return { caFile, certFile, keyFile, created: false };

  await mkdir(opts.dir, { recursive: true });
  // Reuse an existing dev CA: clients that already trust ca.crt keep working.
  let ca = await readCredentials(caFile, caKeyFile);
  if (!ca) {
    ca = await generateCertificateAuthority({ commonName: 'Postern development CA' });
    await writeAtomically(caKeyFile, ca.keyPem, 0o600);
    await writeAtomically(caFile, ca.certPem, 0o644);
  }
  const names = dedupeNames(['localhost', '127.0.0.1', '::1', ...(reissue?.keptNames ?? []), opts.hostname]);
  const server = await issueServerCertificate(ca, { names });
  // Key first: a watcher that sees the new cert then finds its key already there.
  await writeAtomically(keyFile, server.keyPem, 0o600);
  await writeAtomically(certFile, server.certPem, 0o644);
  return { caFile, certFile, keyFile, created: true };
}

/** certificateFingerprint - SHA-256 of the DER certificate, "AB:CD:…" uppercase. */
export function certificateFingerprint(certPem: string): string {
  return new NodeX509Certificate(certPem).fingerprint256;
}

// loadX509 - import @peculiar/x509 on first use, after reflect-metadata: its
// tsyringe registry refuses to load without that API (the library's README
// asks for the package). Loading lazily keeps this module free of side
// effects at import time.
async function loadX509(): Promise<X509Module> {
  await import('reflect-metadata');
  return import('@peculiar/x509');
}

// issueLeaf - sign a fresh (or given) key pair as an end-entity certificate.
async function issueLeaf(x509: X509Module, signer: Signer, opts: LeafOptions): Promise<PemCredentials> {
  const keys = opts.keys ?? (await generateKeys());
  const notBefore = opts.notBefore ?? new Date(Date.now() - BACKDATE_MS);
  // keyCertSign on a self-signed leaf lets OpenSSL see it as self-signed
  // (DEPTH_ZERO_SELF_SIGNED_CERT) and accept it pinned as its own anchor.
  const usages = x509.KeyUsageFlags.digitalSignature | (opts.selfSigned ? x509.KeyUsageFlags.keyCertSign : 0);
  const extensions: X509.Extension[] = [
    new x509.BasicConstraintsExtension(false, undefined, true),
    new x509.KeyUsagesExtension(usages, true),
    new x509.ExtendedKeyUsageExtension([opts.usage], false),
    await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    signer.authorityKeyId,
  ];
  if (opts.names.length > 0) {
    const sans = opts.names.map((n): X509.JsonGeneralName => ({ type: isIP(n) ? 'ip' : 'dns', value: n }));
    extensions.push(new x509.SubjectAlternativeNameExtension(sans, false));
  }
  const cert = await x509.X509CertificateGenerator.create(
    {
      serialNumber: randomSerial(),
      subject: commonName(opts.commonName),
      issuer: signer.name,
      notBefore,
      notAfter: new Date(notBefore.getTime() + (opts.validDays ?? DEFAULT_LEAF_DAYS) * DAY_MS),
      publicKey: keys.publicKey,
      signingKey: signer.key,
      signingAlgorithm: signer.algorithm,
      extensions,
    },
    crypto,
  );
  return { certPem: cert.toString('pem'), keyPem: await exportKey(x509, keys.privateKey) };
}

// loadSigner - the CA's name, WebCrypto signing key and key identifier.
async function loadSigner(x509: X509Module, ca: PemCredentials): Promise<Signer> {
  const caCert = new x509.X509Certificate(ca.certPem);
  const nodeKey = createPrivateKey(ca.keyPem);
  const curve = CA_CURVES[nodeKey.asymmetricKeyDetails?.namedCurve ?? ''];
  if (nodeKey.asymmetricKeyType !== 'ec' || !curve) {
    throw new Error('CA key must be ECDSA P-256 or P-384');
  }
  const pkcs8 = nodeKey.export({ type: 'pkcs8', format: 'der' });
  const key = await crypto.subtle.importKey('pkcs8', pkcs8, { name: 'ECDSA', namedCurve: curve.namedCurve }, false, ['sign']);
  // RFC 5280 §4.2.1.1: a leaf's AKI is its issuer's SKI.
  const ski = caCert.getExtension(x509.SubjectKeyIdentifierExtension);
  const authorityKeyId = ski
    ? new x509.AuthorityKeyIdentifierExtension(ski.keyId)
    : await x509.AuthorityKeyIdentifierExtension.create(caCert.publicKey, false, crypto);
  return { name: caCert.subjectName, key, algorithm: { name: 'ECDSA', hash: curve.hash }, authorityKeyId };
}

function generateKeys(): Promise<CryptoKeyPair> {
  return crypto.subtle.generateKey(P256, true, ['sign', 'verify']);
}

async function exportKey(x509: X509Module, key: CryptoKey): Promise<string> {
  const pkcs8 = await crypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(pkcs8, 'PRIVATE KEY');
}

// A positive 128-bit serial (RFC 5280 §4.1.2.2: positive, at most 20 octets;
// CA/B Forum asks for 64+ random bits). Top bit cleared keeps the DER integer
// positive; a non-zero first octet keeps it 16 octets long.
function randomSerial(): string {
  const bytes = randomBytes(16);
  bytes[0] = ((bytes[0] ?? 0) & 0x7f) | 0x01;
  return bytes.toString('hex');
}

// A structured name, so a hostname is never parsed as a DN string.
function commonName(cn: string): X509.JsonName {
  return [{ CN: [cn] }];
}

function requireFirstName(names: string[]): string {
  const first = names[0];
  if (first === undefined || first === '') throw new Error('a server certificate needs at least one name');
  return first;
}

function dedupeNames(names: string[]): string[] {
  const seen = new Set<string>();
  return names.filter((n) => {
    const key = n.trim().toLowerCase();
    if (key === '' || seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/**
 * reissueFor - for a server certificate the dev CA issued that does not name `hostname`, while the CA's key is there
 * to issue another: the DNS names to keep in the new one (a relay still running under the old name reloads it, and
 * must still be named); undefined when it is to stay as it is.
 */
async function reissueFor(certPem: string, ca: { caFile: string; caKeyFile: string }, hostname: string): Promise<{ keptNames: string[] } | undefined> {
  if (!(await exists(ca.caFile)) || !(await exists(ca.caKeyFile))) return undefined;
  const cert = new NodeX509Certificate(certPem);
  if (!cert.checkIssued(new NodeX509Certificate(await readFile(ca.caFile)))) return undefined;
  if ((isIP(hostname) ? cert.checkIP(hostname) : cert.checkHost(hostname, { subject: 'never' })) !== undefined) return undefined;
  // An IPv6 address is printed in full ("0:0:0:0:0:0:0:1"): written as a URL host writes it, "::1" is found again.
  const keptNames = (cert.subjectAltName ?? '').split(', ').flatMap((entry) => {
    if (entry.startsWith('DNS:')) return [entry.slice(4)];
    const ip = entry.startsWith('IP Address:') ? entry.slice('IP Address:'.length) : undefined;
    if (ip === undefined || isIP(ip) === 0) return [];
    return [isIP(ip) === 6 ? new URL(`http://[${ip}]`).hostname.slice(1, -1) : ip];
  });
  return { keptNames };
}

async function readCredentials(certFile: string, keyFile: string): Promise<PemCredentials | undefined> {
  if (!(await exists(certFile)) || !(await exists(keyFile))) return undefined;
  return { certPem: await readFile(certFile, 'utf8'), keyPem: await readFile(keyFile, 'utf8') };
}

// writeAtomically - write a new temporary file, then rename it over the target.
async function writeAtomically(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  // mode only applies when a file is created, hence a fresh name and 'wx'.
  await writeFile(tmp, data, { mode, flag: 'wx' });
  await rename(tmp, path);
}
