// The bench's certificates: one CA and one ECDSA P-256 server certificate
// (names localhost and 127.0.0.1) that Postfix, Postern and the sink all
// present, so the TLS scenarios compare relays, not key types. Made with
// Postern's own dev-certs module (no openssl binary needed).
//
//   writeBenchCertificates - write ca.crt, server.crt, server.key into a directory.
//
// How it fails: rejects with the fs error when the directory is not writable.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateCertificateAuthority, issueServerCertificate } from '../src/tls/dev-certs.ts';

export interface BenchCertificates {
  caFile: string;
  certFile: string;
  keyFile: string;
  caPem: string;
  certPem: string;
  keyPem: string;
}

/** writeBenchCertificates - a fresh CA and server certificate as PEM files in dir. */
export async function writeBenchCertificates(dir: string): Promise<BenchCertificates> {
  await mkdir(dir, { recursive: true });
  const ca = await generateCertificateAuthority({ commonName: 'Postern bench CA' });
  const server = await issueServerCertificate(ca, { names: ['localhost', '127.0.0.1'] });
  const files = { caFile: join(dir, 'ca.crt'), certFile: join(dir, 'server.crt'), keyFile: join(dir, 'server.key') };
  await writeFile(files.caFile, ca.certPem);
  await writeFile(files.certFile, server.certPem);
  // 0600: Postfix's smtpd reads it as root before dropping privileges; Postern runs as the same user as the bench.
  await writeFile(files.keyFile, server.keyPem, { mode: 0o600 });
  return { ...files, caPem: ca.certPem, certPem: server.certPem, keyPem: server.keyPem };
}
