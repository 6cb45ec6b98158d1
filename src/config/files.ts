// The files a configuration names, checked before anything starts: a
// certificate, a CA, a secret kept in a file (Docker secrets). `config check`
// and `serve` both run this check, so a check that passes is a start that
// does not stop on a missing file, and a start that would is refused as any
// other bad setting is (exit 78, naming the key and the value).
// The development certificates at the default paths are not checked: the
// start makes them when they are missing.
//
//   usesDevCertificates - tls.cert and tls.key at their defaults (pure).
//   namedFiles          - the files a configuration names, each with its key (pure).
//   fileProblems        - one problem per named file that cannot be read, or holds nothing where a secret must be.
import { readFileSync } from 'node:fs';
import type { Config } from './config.ts';
import { CONFIG_KEYS } from './keys.ts';

const DEFAULT_CERT = CONFIG_KEYS.find((k) => k.path === 'tls.cert')!.default;
const DEFAULT_KEY = CONFIG_KEYS.find((k) => k.path === 'tls.key')!.default;

export interface NamedFile {
  key: string;
  path: string;
  /** A secret: empty contents are a mistake (an unset variable when it was written), not a value. */
  secret?: boolean;
  /** Said after the problem. */
  hint?: string;
}

/** usesDevCertificates - whether tls.cert and tls.key are the defaults, where the start makes development certificates. */
export function usesDevCertificates(config: Config): boolean {
  return config.tls.cert === DEFAULT_CERT && config.tls.key === DEFAULT_KEY;
}

/** namedFiles - every file the configuration names and a start reads. */
export function namedFiles(config: Config): NamedFile[] {
  const files: NamedFile[] = [];
  if (!usesDevCertificates(config)) {
    const hint = `development certificates are made only at the defaults, ${String(DEFAULT_CERT)} and ${String(DEFAULT_KEY)}`;
    files.push({ key: 'tls.cert', path: config.tls.cert, hint }, { key: 'tls.key', path: config.tls.key, hint });
  }
  for (const [name, pair] of Object.entries(config.tls.sni)) files.push({ key: `tls.sni.${name}.cert`, path: pair.cert }, { key: `tls.sni.${name}.key`, path: pair.key });
  if (config.tls.clientCa) files.push({ key: 'tls.clientCa', path: config.tls.clientCa });
  if (config.outbound.tls.caFile) files.push({ key: 'outbound.tls.caFile', path: config.outbound.tls.caFile });
  const auth = config.outbound.relayhost.auth;
  if (auth.user && Object.keys(auth.oauth2).length === 0 && auth.passFile) files.push({ key: 'outbound.relayhost.auth.passFile', path: auth.passFile, secret: true });
  if (config.http.enabled && config.http.tokenFile) files.push({ key: 'http.tokenFile', path: config.http.tokenFile, secret: true });
  return files;
}

/** fileProblems - "KEY = PATH: why", for each named file that cannot be read, or is empty where a secret must be. */
export function fileProblems(config: Config): string[] {
  const problems: string[] = [];
  for (const file of namedFiles(config)) {
    let text: string;
    try {
      text = readFileSync(file.path, 'utf8');
    } catch (err) {
      const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
      problems.push(`${file.key} = ${JSON.stringify(file.path)}: cannot be read (${why})${file.hint ? `; ${file.hint}` : ''}`);
      continue;
    }
    if (file.secret && text.trim() === '') problems.push(`${file.key} = ${JSON.stringify(file.path)}: the file is empty; write the secret into it, or leave ${file.key} unset`);
  }
  return problems;
}
