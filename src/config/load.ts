// Loading: embedded defaults, then the YAML file (--config FILE, or
// ./postern.yaml when present), then POSTERN_* environment variables.
// Fails with ConfigError listing every problem, each naming the key, the
// value, where it came from and what is allowed. Unknown keys in the file
// are errors (a typo must not silently fall back to a default); unknown
// POSTERN_* variables are returned as warnings.
import { existsSync, readFileSync } from 'node:fs';
import { parseDocument, type YAMLError } from 'yaml';
import type { Config } from './config.ts';
import { errorMessage, printableCredentialUrl, redactUrlPassword } from '../observability/logger.ts';
import { CONFIG_KEYS, envName, type ConfigKey } from './keys.ts';

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadOptions {
  /** Explicit --config FILE; must exist. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  /** Where ./postern.yaml is looked for. */
  cwd?: string;
}

export interface LoadedConfig {
  config: Config;
  /** The file read, if any. */
  source?: string;
  warnings: string[];
}

const KEYS_BY_PATH = new Map(CONFIG_KEYS.map((k) => [k.path, k]));
const ENV_NAMES = new Set(CONFIG_KEYS.map((k) => envName(k.path)));
// Variables that belong to Postern but are not config keys.
const OTHER_ENV = /^POSTERN_(CONFIG|TEST_.*|LOG_PRETTY)$/;

/** loadConfig - defaults + file + environment, validated; throws ConfigError. */
export function loadConfig(options: LoadOptions = {}): LoadedConfig {
  const env = options.env ?? process.env;
  const problems: string[] = [];
  const values = new Map<string, { value: unknown; from: string }>();

  const file = options.file ?? env.POSTERN_CONFIG ?? defaultFile(options.cwd ?? process.cwd());
  if (file !== undefined) {
    for (const [path, value] of readFileValues(file, problems)) values.set(path, { value, from: file });
  }
  const warnings: string[] = [];
  for (const [name, raw] of Object.entries(env)) {
    if (!name.startsWith('POSTERN_') || raw === undefined) continue;
    if (!ENV_NAMES.has(name)) {
      if (!OTHER_ENV.test(name)) warnings.push(`unknown environment variable ${name} ignored`);
      continue;
    }
    const k = CONFIG_KEYS.find((c) => envName(c.path) === name)!;
    const parsed = parseEnvValue(k, raw);
    if (parsed.ok) values.set(k.path, { value: parsed.value, from: `environment ${name}` });
    else problems.push(`${k.path} = ${shownValue(k, raw)} (environment ${name}): ${quotedWithoutCredentials(parsed.allowed)}`);
  }

  const config: Record<string, unknown> = {};
  for (const k of CONFIG_KEYS) {
    const given = values.get(k.path);
    const result = k.check(given ? given.value : k.default);
    if (result.ok) setPath(config, k.path, result.value);
    else problems.push(`${k.path} = ${shownValue(k, given?.value)} (${given?.from ?? 'default'}): must be ${quotedWithoutCredentials(result.allowed)}`);
  }
  const from = (path: string) => values.get(path)?.from ?? 'default';
  checkPortsDistinct(config as unknown as Config, from, problems);
  checkQueueUrl(config as unknown as Config, from('queue.url'), problems);
  checkCombinations(config as unknown as Config, from, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  return { config: config as unknown as Config, source: file, warnings };
}

/** Entries of a map value (a route, an SNI entry) whose values an error never shows, whatever the map. */
const SECRET_ENTRY = /pass|secret|token/i;

/**
 * shownValue - a value as an error names it: a secret key's never (a mistyped password is still one), a URL's
 * without its password, nor a password before an "@" anywhere ("user:pw@smtp.example.com" given as a host), nor a
 * map entry named like a secret (a route given `auth: { pass }`, which routes do not take).
 */
function shownValue(k: ConfigKey, value: unknown): string {
  if (k.secret) return '(a secret, not shown)';
  if (k.credentialUrl) return typeof value === 'string' ? JSON.stringify(printableCredentialUrl(value)) : '(not a string, not shown)';
  return JSON.stringify(value, (name, entry: unknown) => {
    if (name !== '' && SECRET_ENTRY.test(name)) return '(not shown)';
    return typeof entry === 'string' ? withoutCredentials(entry) : entry;
  });
}

/** withoutCredentials - a text without a URL's password, nor one before an "@" (up to the last: a password may hold "@" and spaces). */
function withoutCredentials(text: string): string {
  return redactUrlPassword(text).replace(/^([^\s:@/]+):.*@/s, '$1:***@');
}

/** quotedWithoutCredentials - what is allowed, as a check words it, with each quoted value in it (a bad list entry) withoutCredentials. */
function quotedWithoutCredentials(allowed: string): string {
  return allowed.replace(/"(?:[^"\\]|\\.)*"/g, (quoted) => {
    try {
      return JSON.stringify(withoutCredentials(JSON.parse(quoted) as string));
    } catch {
      // Quotes in a check's prose, not a JSON string.
      return quoted;
    }
  });
}

// checkCombinations - settings that are each allowed but say nothing together: a wait between retries that can never
// be reached, a smarthost password without a user (no AUTH would be made).
function checkCombinations(config: Config, from: (path: string) => string, problems: string[]): void {
  const retry = config.outbound?.retry;
  if (retry && retry.initial > retry.max) {
    problems.push(`outbound.retry.initial = ${retry.initial} s (${from('outbound.retry.initial')}): must not be more than outbound.retry.max (${retry.max} s, ${from('outbound.retry.max')})`);
  }
  const auth = config.outbound?.relayhost?.auth;
  // A key that failed its own check is not set here (its problem is named already). Not passFile: the compose file
  // names one for every node, and a smarthost without AUTH leaves it empty.
  if (auth && auth.user === '' && ((auth.pass ?? '') !== '' || Object.keys(auth.oauth2 ?? {}).length > 0)) {
    const given = (auth.pass ?? '') !== '' ? 'outbound.relayhost.auth.pass' : 'outbound.relayhost.auth.oauth2';
    problems.push(`outbound.relayhost.auth.user = "" (${from('outbound.relayhost.auth.user')}): must be set when ${given} is (${from(given)}; without a user no AUTH is made)`);
  }
}

// yamlProblem - a YAML error or warning by its code and place only: the library's message quotes the file (the
// offending line after it, a tag or block header within it), and that text may be a password.
function yamlProblem(found: YAMLError): string {
  const at = found.linePos ? ` at line ${found.linePos[0].line}, column ${found.linePos[0].col}` : '';
  return `YAML ${found.code}${at} (the text is not shown: it may hold a secret; quote a value that starts with ! & * | > % @ or holds ": ")`;
}

function defaultFile(cwd: string): string | undefined {
  const candidate = `${cwd}/postern.yaml`;
  return existsSync(candidate) ? candidate : undefined;
}

function readFileValues(file: string, problems: string[]): Map<string, unknown> {
  const out = new Map<string, unknown>();
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    problems.push(`${file}: cannot read configuration: ${errorMessage(err)}`);
    return out;
  }
  // Warnings too: an unquoted value starting with '!' is read as an unknown tag, and would silently be empty.
  const parsed = parseDocument(text);
  const found = [...parsed.errors, ...parsed.warnings];
  if (found.length > 0) {
    for (const problem of found) problems.push(`${file}: cannot read configuration: ${yamlProblem(problem)}`);
    return out;
  }
  const document: unknown = parsed.toJS();
  if (document == null) return out;
  if (typeof document !== 'object' || Array.isArray(document)) {
    problems.push(`${file}: the top level must be a map of keys`);
    return out;
  }
  flatten(document as Record<string, unknown>, '', out, problems, file);
  return out;
}

// flatten - nested maps to dotted paths, stopping at known keys (whose value
// may itself be a map, such as tls.sni).
function flatten(node: Record<string, unknown>, prefix: string, out: Map<string, unknown>, problems: string[], file: string): void {
  for (const [name, value] of Object.entries(node)) {
    const path = prefix ? `${prefix}.${name}` : name;
    if (KEYS_BY_PATH.has(path)) {
      out.set(path, value);
    } else if (value !== null && typeof value === 'object' && !Array.isArray(value) && CONFIG_KEYS.some((k) => k.path.startsWith(path + '.'))) {
      flatten(value as Record<string, unknown>, path, out, problems, file);
    } else {
      const siblings = CONFIG_KEYS.filter((k) => k.path.startsWith(prefix ? prefix + '.' : '')).map((k) => k.path);
      problems.push(`${path} (${file}): unknown key; known keys here: ${[...new Set(siblings)].slice(0, 12).join(', ')}`);
    }
  }
}

function parseEnvValue(k: ConfigKey, raw: string): { ok: true; value: unknown } | { ok: false; allowed: string } {
  switch (k.env) {
    case 'string':
      return { ok: true, value: raw };
    case 'number':
      return /^-?\d+$/.test(raw.trim()) ? { ok: true, value: Number(raw) } : { ok: false, allowed: 'must be a whole number' };
    case 'boolean': {
      const v = raw.trim().toLowerCase();
      if (['true', '1', 'yes', 'on'].includes(v)) return { ok: true, value: true };
      if (['false', '0', 'no', 'off'].includes(v)) return { ok: true, value: false };
      return { ok: false, allowed: 'must be true or false' };
    }
    case 'list':
      return { ok: true, value: raw.split(',').map((s) => s.trim()).filter((s) => s.length > 0) };
    case 'json':
      try {
        return { ok: true, value: JSON.parse(raw) as unknown };
      } catch {
        return { ok: false, allowed: 'must be JSON' };
      }
  }
}

function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const parts = path.split('.');
  let node = target;
  for (const part of parts.slice(0, -1)) {
    node[part] ??= {};
    node = node[part] as Record<string, unknown>;
  }
  node[parts[parts.length - 1]!] = value;
}

function checkPortsDistinct(config: Config, from: (path: string) => string, problems: string[]): void {
  if (!config.listeners) return;
  const seen = new Map<string, string>();
  for (const [name, l] of Object.entries(config.listeners)) {
    if (!l?.enabled || l.port === 0) continue;
    const where = `${l.host}:${l.port}`;
    const other = seen.get(where);
    if (other) problems.push(`listeners.${name}.port = ${l.port} (${from(`listeners.${name}.port`)}): already used by listeners.${other}.port on ${l.host} (${from(`listeners.${other}.port`)}); each listener needs its own port`);
    seen.set(where, name);
  }
}

// checkQueueUrl - queue.backend postgres needs queue.url, a postgres:// URL, and queue.url needs queue.backend postgres:
// a node given only the URL kept a queue of its own, silently (the password never goes in the message).
function checkQueueUrl(config: Config, from: string, problems: string[]): void {
  const url = config.queue?.url;
  if (url === undefined) return;
  if (config.queue.backend !== 'postgres') {
    if (url !== '') problems.push(`queue.url = ${JSON.stringify(printableCredentialUrl(url))} (${from}): used only when queue.backend is postgres, and queue.backend is ${config.queue.backend}; set queue.backend to postgres (POSTERN_QUEUE_BACKEND), or leave queue.url empty`);
    return;
  }
  if (/^postgres(ql)?:\/\/./i.test(url)) return;
  problems.push(`queue.url = ${JSON.stringify(printableCredentialUrl(url))} (${from}): must be a postgres:// URL (postgres://user@host:5432/database) when queue.backend is postgres`);
}
