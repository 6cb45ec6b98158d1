// Every configuration key, declared once: its default, what it accepts and
// one line of documentation (README's reference is checked against this
// table by a test). The environment variable of a key is derived from its
// path: listeners.relay.port -> POSTERN_LISTENERS_RELAY_PORT.
import { hostname as osHostname } from 'node:os';
import { INBOUND_TLS_VERSIONS, type DomainTlsLevel, type RouteConfig } from './config.ts';
import { check, type Check } from './values.ts';

export type EnvKind = 'string' | 'number' | 'boolean' | 'list' | 'json';

export interface ConfigKey {
  path: string;
  default: unknown;
  check: Check<unknown>;
  env: EnvKind;
  doc: string;
  /** A secret: an error about its value never shows the value. */
  secret?: true;
  /** A URL that holds credentials: an error shows it without its password, and not at all if it is not a URL. */
  credentialUrl?: true;
}

function key<T>(path: string, defaultValue: T, valueCheck: Check<T>, env: EnvKind, doc: string): ConfigKey {
  return { path, default: defaultValue, check: valueCheck, env, doc };
}

/** secret - a key whose value an error never shows. */
function secret(k: ConfigKey): ConfigKey {
  return { ...k, secret: true };
}

/** credentialUrl - a key whose value is a URL that may hold a password. */
function credentialUrl(k: ConfigKey): ConfigKey {
  return { ...k, credentialUrl: true };
}

/** An EHLO name: a host name, or an address literal (RFC 5321 §4.1.1.1). */
const heloName: Check<string> = (v) =>
  typeof v === 'string' && (check.hostName()(v).ok || /^\[(?:\d{1,3}(?:\.\d{1,3}){3}|IPv6:[0-9a-f:.]+)\]$/i.test(v))
    ? { ok: true, value: v }
    : { ok: false, allowed: 'a host name such as mail.example.com, or an address literal such as [192.0.2.1] (empty: hostname)' };

// 0 asks the system for a free port (tests).
const port = check.integer(0, 65535);
/** A port to connect to: 0, which a listener may take (any free port), names none. */
const remotePort = check.integer(1, 65535);

function listenerKeys(name: string, defaultPort: number, role: string): ConfigKey[] {
  return [
    key(`listeners.${name}.enabled`, true, check.boolean(), 'boolean', `Whether the ${name} listener (${role}) runs.`),
    key(`listeners.${name}.host`, '127.0.0.1', check.hostAddress(), 'string', `Address the ${name} listener binds to.`),
    key(`listeners.${name}.port`, defaultPort, port, 'number', `Port of the ${name} listener.`),
  ];
}

const sniMap: Check<Record<string, { cert: string; key: string }>> = (v) => {
  const allowed = 'a map of server name to { cert: FILE, key: FILE }';
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { ok: false, allowed };
  for (const [name, pair] of Object.entries(v as Record<string, unknown>)) {
    const p = pair as Record<string, unknown> | null;
    if (!name || !p || typeof p.cert !== 'string' || typeof p.key !== 'string') return { ok: false, allowed: `${allowed} (bad entry: ${name})` };
    const unknown = unknownKeys(p, ['cert', 'key']);
    if (unknown) return { ok: false, allowed: `${allowed} (${name}: ${unknown})` };
  }
  return { ok: true, value: v as Record<string, { cert: string; key: string }> };
};

/** unknownKeys - "unknown key "tsl"" for the first key of an entry not among `known`; undefined when there is none. */
function unknownKeys(entry: object, known: readonly string[]): string | undefined {
  const unknown = Object.keys(entry).find((k) => !known.includes(k));
  return unknown === undefined ? undefined : `unknown key ${JSON.stringify(unknown)}; the keys are ${known.join(', ')}`;
}

const TLS_LEVELS = ['none', 'may', 'encrypt', 'verify'] as const;
const DOMAIN_TLS_LEVELS = [...TLS_LEVELS, 'mta-sts'] as const;

const routeMap: Check<Record<string, RouteConfig>> = (v) => {
  const allowed = 'a map of domain (or "*") to { host, port?, tls?: none|may|encrypt|verify, secure? }';
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { ok: false, allowed };
  for (const [domain, route] of Object.entries(v as Record<string, unknown>)) {
    const r = route as Record<string, unknown> | null;
    const bad = (why: string) => ({ ok: false as const, allowed: `${allowed} (${domain}: ${why})` });
    if (domain !== '*' && !check.domain()(domain).ok) return bad('not a domain');
    if (!r || typeof r !== 'object' || typeof r.host !== 'string' || r.host === '') return bad('host is required');
    // A misspelt "tls" would leave the route at outbound.tls.level, "may" by default: a typo must not weaken it.
    const unknown = unknownKeys(r, ['host', 'port', 'tls', 'secure']);
    if (unknown) return bad(unknown);
    if (!check.hostOrIp('')(r.host).ok) return bad('host must be a host name or IP address, without brackets or a port');
    if (r.port !== undefined && !remotePort(r.port).ok) return bad('port must be 1-65535');
    if (r.tls !== undefined && !(TLS_LEVELS as readonly unknown[]).includes(r.tls)) return bad(`tls must be one of ${TLS_LEVELS.join(', ')}`);
    if (r.secure !== undefined && typeof r.secure !== 'boolean') return bad('secure must be true or false');
  }
  return { ok: true, value: v as Record<string, RouteConfig> };
};

const tlsPolicyMap: Check<Record<string, DomainTlsLevel>> = (v) => {
  const allowed = `a map of domain to one of ${DOMAIN_TLS_LEVELS.join(', ')}`;
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { ok: false, allowed };
  for (const [domain, level] of Object.entries(v as Record<string, unknown>)) {
    if (!check.domain()(domain).ok || !(DOMAIN_TLS_LEVELS as readonly unknown[]).includes(level)) return { ok: false, allowed: `${allowed} (bad entry: ${domain})` };
  }
  return { ok: true, value: v as Record<string, DomainTlsLevel> };
};

const oauth2Settings: Check<Record<string, string>> = (v) => {
  const allowed = 'a map with clientId, clientSecret, refreshToken (and optionally accessUrl, serviceClient, privateKey) as nodemailer takes them';
  if (v === null || typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) return { ok: false, allowed };
  return { ok: true, value: v as Record<string, string> };
};

export const CONFIG_KEYS: readonly ConfigKey[] = [
  key('hostname', osHostname(), check.hostName(), 'string', 'Name in the greeting, Received headers and the dev certificate.'),
  ...listenerKeys('relay', 2525, 'STARTTLS offered, no AUTH, relays for trusted networks'),
  ...listenerKeys('submission', 2587, 'STARTTLS and AUTH required'),
  ...listenerKeys('submissions', 2465, 'implicit TLS, AUTH required'),
  key('tls.cert', 'certs/server.crt', check.string('a file path'), 'string', 'Server certificate (PEM, chain allowed); at this default path, generated with a dev CA on first start when missing; a path set to another must exist.'),
  key('tls.key', 'certs/server.key', check.string('a file path'), 'string', 'Private key of tls.cert (PEM).'),
  key('tls.sni', {}, sniMap, 'json', 'Extra certificates per SNI name: { "mail.example.com": { cert, key } }.'),
  key(
    'tls.minVersion',
    'TLSv1.2',
    check.oneOf(INBOUND_TLS_VERSIONS),
    'string',
    'Oldest TLS version the listeners accept. TLSv1 or TLSv1.1 (an opt-in, for old printers and scanners that try STARTTLS and cannot fall back) also allows their CBC suites, on every listener.',
  ),
  key('tls.clientCa', '', check.optionalString('a file path (empty: client certificates are not requested)'), 'string', 'CA whose client certificates may relay like an authenticated user.'),
  key('queue.backend', 'sqlite', check.oneOf(['sqlite', 'postgres'] as const), 'string', 'Queue store: sqlite (embedded, one node) or postgres (several nodes share it).'),
  key('queue.path', 'data/queue.db', check.string('a file path'), 'string', 'SQLite queue file; bodies up to 128 KB are stored in it, larger ones in messages/ beside it.'),
  credentialUrl(key('queue.url', '', check.optionalString('a postgres:// URL'), 'string', 'PostgreSQL connection URL for queue.backend postgres (postgres://user@host:5432/db).')),
  key('queue.keepDone', 7 * 86400, check.duration(366 * 86400, { zero: true }), 'string', 'How long a delivered or bounced message\'s history (envelope, recipients, attempts: `queue show`) is kept before it is removed; 0: at the next sweep, within a second (Postfix keeps none: its log is the history).'),
  key('queue.minFree', 0, check.integer(0, Number.MAX_SAFE_INTEGER), 'number', 'Bytes the SQLite queue\'s file system must keep free: below the larger of this and 1.5 × limits.messageSize, or when a MAIL FROM\'s SIZE would go below it, MAIL FROM gets 452 4.3.1 (Postfix queue_minfree), so that delivery results can still be recorded. Free here is what the disk has less what the queue will take by itself: its WAL growing to about 64 MB, and the next checkpoint adding to the database file.'),
  key('relay.trustedNetworks', ['127.0.0.0/8', '::1/128'], check.list(check.network(), 'CIDR networks'), 'list', 'Clients in these networks may relay anywhere without AUTH.'),
  key('relay.localDomains', [], check.list(check.domain(), 'domain names'), 'list', 'Domains accepted from anyone (mail for them is not relaying).'),
  key('relay.senderDomains', [], check.list(check.domain(), 'domain names'), 'list', 'When set, the only sender (MAIL FROM) domains the clients that may relay (trusted networks, logged-in users) send from; others get 553 5.7.1. "*.example.com" takes its subdomains. The null sender always passes. Empty: any domain.'),
  key('relay.users', 'data/users.json', check.string('a file path'), 'string', 'User file written by `postern users`; scrypt hashes.'),
  key('limits.messageSize', 26214400, check.integer(1024, 2 ** 31), 'number', 'Largest message in bytes (SIZE); larger gets 552 5.3.4.'),
  key('limits.recipients', 100, check.integer(1, 10000), 'number', 'Recipients per message; more get 452 4.5.3.'),
  key('limits.connectionsPerIp', 20, check.integer(1, 100000), 'number', 'Simultaneous connections from one IP (an IPv6 client: its /84) outside relay.trustedNetworks; more get 421 4.7.0 (Postfix smtpd_client_connection_count_limit; trusted networks are exempt, as $mynetworks is).'),
  key('limits.connections', 1000, check.integer(1, 1000000), 'number', 'Simultaneous connections in all.'),
  key('limits.idleTimeout', 300, check.duration(3600), 'string', 'Idle time before 421 4.4.2 and close (Postfix smtpd_timeout).'),
  key('limits.authFailuresPerConnection', 3, check.integer(1, 100), 'number', 'Failed AUTH attempts in one session; the next AUTH gets 421 and the session closes.'),
  key('limits.authFailuresPerIp', 10, check.integer(1, 10000), 'number', 'Failed AUTH attempts from one IP (an IPv6 client: its /84) within authLockout before it is locked out (relay.trustedNetworks are exempt, as $mynetworks is from Postfix\'s rate limits).'),
  key('limits.authLockout', 300, check.duration(86400), 'string', 'How long an IP stays locked out after too many failed AUTH attempts.'),
  key('dns.servers', [], check.list(check.resolverAddress(), 'DNS server IP addresses, each with an optional port (192.0.2.53, 127.0.0.1:5353, [::1]:5353)'), 'list', 'DNS servers for every lookup; empty: the system resolver.'),
  key('smtp.reverseLookup', true, check.boolean(), 'boolean', 'Look up client hostnames (PTR) for the Received header; a name is used only if it resolves back to the client\'s address, else unknown (as Postfix).'),
  key('smtp.greetingPause', 0, check.duration(60, { zero: true }), 'string', 'Wait before the 220 greeting; a client that talks first gets 421 (Postfix postscreen_greet_wait; 0: greet at once, as smtpd does).'),
  key('smtp.inFlowDelay', 1, check.duration(10, { zero: true }), 'string', 'When this process falls behind delivering, wait up to this long before answering each MAIL FROM (Postfix in_flow_delay); not while slow deliveries hold every slot of a destination (or, every slot busy, half of them): the queue then takes up to 20,000 messages more. 0: never wait.'),
  key('smtp.proxyProtocol', [], check.list(check.network(), 'CIDR networks'), 'list', 'Load balancers (HAProxy, Traefik, nginx stream) whose connections open with a PROXY protocol header (v1 or v2): the client\'s address is taken from it, for trusted networks, limits, logs and Received (Postfix smtpd_upstream_proxy_protocol). Only a peer in these networks may send one, and it must. Empty: none.'),
  key('smtp.proxyProtocolTimeout', 5, check.duration(300), 'string', 'How long a peer of smtp.proxyProtocol may take to send its PROXY line; then 421 4.3.0 and a warning naming it (Postfix smtpd_upstream_proxy_timeout).'),
  key('smtp.bareLineFeed', 'normalize', check.oneOf(['normalize', 'reject'] as const), 'string', 'Bare CR or LF in DATA: normalize to CRLF (Postfix 3.9+) or reject with 550 5.5.2.'),
  key('outbound.enabled', true, check.boolean(), 'boolean', 'Whether this process delivers queued mail (off: accept only).'),
  key('outbound.concurrency', 100, check.integer(1, 1000), 'number', 'Deliveries in flight at once (Postfix default_process_limit).'),
  key('outbound.perDestination', 20, check.integer(1, 1000), 'number', 'Deliveries in flight to one destination domain at once (Postfix default_destination_concurrency_limit).'),
  key('outbound.recipientsPerTransaction', 50, check.integer(1, 1000), 'number', 'Recipients of one destination sent in one SMTP transaction (Postfix smtp_destination_recipient_limit).'),
  key('outbound.port', 25, remotePort, 'number', 'Port for MX and implicit-MX deliveries (Postfix smtp_tcp_port).'),
  key('outbound.heloName', '', check.optional(heloName), 'string', 'Name in our EHLO; empty: hostname.'),
  key('outbound.connectTimeout', 30, check.duration(600), 'string', 'Time to connect to a next hop (Postfix smtp_connect_timeout); the greeting has outbound.socketTimeout.'),
  key('outbound.socketTimeout', 300, check.duration(3600), 'string', 'Time to wait for any one reply, the greeting included (Postfix smtp_helo_timeout and the command timeouts); twice that for the reply to the end of data (smtp_data_done_timeout, RFC 5321 §4.5.3.2), at most 20 s for RSET (smtp_rset_timeout).'),
  key('outbound.connectionCacheTime', 2, check.duration(300), 'string', 'How long an idle connection to a next hop is kept for the next message to it (Postfix smtp_connection_cache_time_limit).'),
  key('outbound.stopTimeout', 20, check.duration(3600, { zero: true }), 'string', 'On SIGTERM, how long deliveries in flight may take to finish; those still running then have their leases given back, to be tried again (keep it under the orchestrator\'s grace period).'),
  key('outbound.lease', 600, check.duration(86400), 'string', 'How long a claimed delivery stays with one worker before another may take it over (a restart takes back at once those of gone processes of its own machine).'),
  key('outbound.retry.initial', 300, check.duration(86400), 'string', 'Wait before the first retry (Postfix minimal_backoff_time).'),
  key('outbound.retry.max', 4000, check.duration(86400), 'string', 'Longest wait between retries (Postfix maximal_backoff_time).'),
  key('outbound.retry.lifetime', 432000, check.duration(100 * 86400), 'string', 'Give up and bounce after this long in the queue (Postfix maximal_queue_lifetime).'),
  key('outbound.relayhost.host', '', check.optional(check.hostOrIp('a host name or IP address, without brackets or a port (the port goes in outbound.relayhost.port); empty: no smarthost')), 'string', 'Smarthost for all mail; empty: routes, then MX.'),
  key('outbound.relayhost.port', 587, remotePort, 'number', 'Smarthost port.'),
  key('outbound.relayhost.secure', false, check.boolean(), 'boolean', 'Implicit TLS to the smarthost (port 465).'),
  key('outbound.relayhost.tls', 'encrypt', check.oneOf(TLS_LEVELS), 'string', 'TLS level towards the smarthost (credentials never go in plaintext).'),
  key('outbound.relayhost.auth.user', '', check.optionalString(), 'string', 'Smarthost login; empty: no AUTH.'),
  secret(key('outbound.relayhost.auth.pass', '', check.optionalString(), 'string', 'Smarthost password (never logged).')),
  key('outbound.relayhost.auth.passFile', '', check.optionalString('a file path'), 'string', 'File holding the smarthost password (Docker secrets); read at start.'),
  secret(key('outbound.relayhost.auth.oauth2', {}, oauth2Settings, 'json', 'XOAUTH2 for the smarthost (Gmail, Microsoft 365): clientId, clientSecret, refreshToken, accessUrl; nodemailer refreshes tokens.')),
  key('outbound.routes', {}, routeMap, 'json', 'Per recipient domain next hops, like Postfix transport maps: { "example.test": { host, port, tls }, "*": {...} }.'),
  key('outbound.tlsPolicies', {}, tlsPolicyMap, 'json', 'Per recipient domain TLS level: { "bank.example": verify, "gmail.com": mta-sts }.'),
  key('outbound.mtaStsPort', 443, remotePort, 'number', 'Port of the HTTPS hosts MTA-STS policies are fetched from (443; another only for tests and private setups).'),
  key('outbound.tls.level', 'may', check.oneOf(DOMAIN_TLS_LEVELS), 'string', 'Default TLS level: none, may (opportunistic), encrypt, verify, or mta-sts (the recipient domain\'s MTA-STS policy, RFC 8461: verify for the MX hosts it names where it says enforce; may where it has none).'),
  key('outbound.tls.caFile', '', check.optionalString('a file path'), 'string', 'Extra CAs for the verify level, added to the system CAs.'),
  key('outbound.dns.servers', [], check.list(check.resolverAddress(), 'DNS server IP addresses, each with an optional port (192.0.2.53, 127.0.0.1:5353, [::1]:5353)'), 'list', 'DNS servers for MX lookups; empty: dns.servers.'),
  key('outbound.allowPrivateTargets', false, check.boolean(), 'boolean', 'Allow MX targets on loopback or private addresses (internal networks, tests); routes may always name them.'),
  key('outbound.ownAddresses', [], check.list(check.ipAddress(), 'IP addresses'), 'list', 'Addresses that reach this relay from outside through NAT, a port mapping or a load balancer (Postfix proxy_interfaces): an MX at one of them is this relay, so mail for its domain loops back (5.4.6) and backup MX hosts after it are not tried. The relay\'s own listener addresses and hostname count without it.'),
  key('http.enabled', true, check.boolean(), 'boolean', 'Whether the HTTP listener (admin API, /metrics, /healthz, /readyz) runs.'),
  key('http.host', '127.0.0.1', check.hostAddress(), 'string', 'Address the HTTP listener binds to.'),
  key('http.port', 8025, port, 'number', 'Port of the HTTP listener.'),
  secret(key('http.token', '', check.optionalString('a secret string (empty: the queue API is off)'), 'string', 'Bearer token for the queue API; /metrics and health need none.')),
  key('http.tokenFile', '', check.optionalString('a file path'), 'string', 'File holding http.token (Docker secrets); read at start.'),
  key('http.autoconfig', false, check.boolean(), 'boolean', 'Serve Mozilla-style autoconfig (/mail/config-v1.1.xml) for Thunderbird.'),
  key('log.level', 'info', check.oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const), 'string', 'Log level.'),
];

/** envName - the environment variable that overrides a key. */
export function envName(path: string): string {
  return 'POSTERN_' + path.split('.').map((part) => part.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()).join('_');
}
