// Configuration: defaults, file, environment, and errors that name the key,
// the value, where it came from and what is allowed.
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, envName } from '../../src/config/keys.ts';
import { ConfigError, loadConfig } from '../../src/config/load.ts';
import { durationMs, parseDurationSeconds } from '../../src/config/values.ts';

function yamlFile(text: string): string {
  const file = join(mkdtempSync(join(tmpdir(), 'postern-config-')), 'postern.yaml');
  writeFileSync(file, text);
  return file;
}

function problems(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

const emptyDir = mkdtempSync(join(tmpdir(), 'postern-cwd-'));

describe('loadConfig', () => {
  it('starts on embedded defaults with no file and no environment', () => {
    const { config, source } = loadConfig({ env: {}, cwd: emptyDir });
    expect(source).toBeUndefined();
    expect(config.listeners).toEqual({
      relay: { enabled: true, host: '127.0.0.1', port: 2525 },
      submission: { enabled: true, host: '127.0.0.1', port: 2587 },
      submissions: { enabled: true, host: '127.0.0.1', port: 2465 },
    });
    expect(config.queue).toEqual({ backend: 'sqlite', path: 'data/queue.db', url: '', keepDone: 7 * 86400, minFree: 0 });
    expect(config.relay.trustedNetworks).toEqual(['127.0.0.0/8', '::1/128']);
    expect(config.limits).toMatchObject({ messageSize: 26214400, recipients: 100, connectionsPerIp: 20 });
    expect(config.smtp).toEqual({ reverseLookup: true, greetingPause: 0, inFlowDelay: 1, bareLineFeed: 'normalize', proxyProtocol: [], proxyProtocolTimeout: 5 });
  });

  it('reads the documented example file', () => {
    const file = yamlFile(`
hostname: relay.example.test
listeners:
  relay:       { host: 127.0.0.1, port: 2525 }
  submission:  { host: 127.0.0.1, port: 2587 }
  submissions: { host: 127.0.0.1, port: 2465, enabled: false }
tls: { cert: certs/server.crt, key: certs/server.key }
queue: { backend: sqlite, path: data/queue.db }
relay:
  trustedNetworks: [127.0.0.0/8, "::1/128"]
  localDomains: [example.test]
  users: data/users.json
limits: { messageSize: 26214400, recipients: 100, connectionsPerIp: 20 }
dns: { servers: [] }
smtp: { reverseLookup: true, bareLineFeed: normalize }
`);
    const { config } = loadConfig({ file, env: {} });
    expect(config.hostname).toBe('relay.example.test');
    expect(config.listeners.submissions.enabled).toBe(false);
    expect(config.relay.localDomains).toEqual(['example.test']);
  });

  it('lets POSTERN_* variables override the file', () => {
    const file = yamlFile('limits: { recipients: 5 }\n');
    const { config } = loadConfig({
      file,
      env: { POSTERN_LIMITS_RECIPIENTS: '7', POSTERN_RELAY_TRUSTED_NETWORKS: '10.0.0.0/8, 192.168.0.0/16', POSTERN_SMTP_REVERSE_LOOKUP: 'false', POSTERN_LIMITS_IDLE_TIMEOUT: '5m' },
    });
    expect(config.limits.recipients).toBe(7);
    expect(config.relay.trustedNetworks).toEqual(['10.0.0.0/8', '192.168.0.0/16']);
    expect(config.smtp.reverseLookup).toBe(false);
    expect(config.limits.idleTimeout).toBe(300);
  });

  it('names key, value, source and what is allowed', () => {
    const file = yamlFile('listeners: { relay: { port: 70000 } }\nsmtp: { bareLineFeed: allow }\nrelay: { trustedNetworks: [10.0.0.0/33] }\n');
    expect(problems(() => loadConfig({ file, env: { POSTERN_LIMITS_RECIPIENTS: 'many' } }))).toEqual([
      `limits.recipients = "many" (environment POSTERN_LIMITS_RECIPIENTS): must be a whole number`,
      `listeners.relay.port = 70000 (${file}): must be an integer from 0 to 65535`,
      `relay.trustedNetworks = ["10.0.0.0/33"] (${file}): must be a list of CIDR networks (bad entry: "10.0.0.0/33")`,
      `smtp.bareLineFeed = "allow" (${file}): must be one of normalize, reject`,
    ]);
  });

  it('takes DNS servers as IP addresses with an optional port, and names a bad one', () => {
    const servers = ['192.0.2.53', '127.0.0.1:5353', '::1', '[::1]:5353'];
    expect(loadConfig({ file: yamlFile(`dns: { servers: ${JSON.stringify(servers)} }\n`), env: {} }).config.dns.servers).toEqual(servers);
    for (const bad of ['not-an-ip', '127.0.0.1:0', '127.0.0.1:', '[127.0.0.1]:53']) {
      expect(problems(() => loadConfig({ file: yamlFile(`outbound: { dns: { servers: [${JSON.stringify(bad)}] } }\n`), env: {} }))).toEqual([
        expect.stringMatching(new RegExp(`^outbound\\.dns\\.servers = \\[${JSON.stringify(bad).replace(/[[\].]/g, '\\$&')}\\] \\(.*\\): must be a list of DNS server IP addresses`)),
      ]);
    }
  });

  it('refuses port 0 for a next hop, which names no port to connect to', () => {
    expect(problems(() => loadConfig({ file: yamlFile('outbound: { relayhost: { port: 0 }, routes: { "a.test": { host: h.test, port: 0 } } }\n'), env: {} }))).toEqual([
      expect.stringMatching(/^outbound\.relayhost\.port = 0 .*: must be an integer from 1 to 65535$/),
      expect.stringMatching(/^outbound\.routes = .*port must be 1-65535\)$/),
    ]);
  });

  // A misspelt "tls" left the route at outbound.tls.level ("may"): a typo silently weakened verify to opportunistic.
  it('refuses a key a route or an SNI entry does not have, naming it and the keys there are', () => {
    expect(problems(() => loadConfig({ file: yamlFile('outbound: { routes: { "bank.test": { host: mx.bank.test, tsl: verify } } }\n'), env: {} }))).toEqual([
      expect.stringMatching(/^outbound\.routes = .*\(bank\.test: unknown key "tsl"; the keys are host, port, tls, secure\)$/),
    ]);
    expect(problems(() => loadConfig({ file: yamlFile('tls: { sni: { "mail.test": { cert: a.pem, key: b.pem, chain: c.pem } } }\n'), env: {} }))).toEqual([
      expect.stringMatching(/^tls\.sni = .*\(mail\.test: unknown key "chain"; the keys are cert, key\)$/),
    ]);
  });

  it('takes smtp.greetingPause from 0 (greet at once) to 60 s, and names what is allowed otherwise', () => {
    expect(loadConfig({ file: yamlFile('smtp: { greetingPause: 0 }\n'), env: {} }).config.smtp.greetingPause).toBe(0);
    expect(loadConfig({ file: yamlFile('smtp: { greetingPause: 0.5s }\n'), env: {} }).config.smtp.greetingPause).toBe(0.5);
    expect(problems(() => loadConfig({ file: yamlFile('smtp: { greetingPause: 2m }\n'), env: {} }))).toEqual([
      expect.stringMatching(/^smtp\.greetingPause = "2m" \(.*\): must be a duration such as 0s, 300s, 5m, 2h or 5d \(at most 60s\)$/),
    ]);
  });

  it('takes queue.keepDone from 0 (removed at the next sweep) to 366 days, from the file or POSTERN_QUEUE_KEEP_DONE', () => {
    expect(loadConfig({ file: yamlFile('queue: { keepDone: 0 }\n'), env: {} }).config.queue.keepDone).toBe(0);
    expect(loadConfig({ env: { POSTERN_QUEUE_KEEP_DONE: '2d' }, cwd: emptyDir }).config.queue.keepDone).toBe(2 * 86400);
    expect(problems(() => loadConfig({ file: yamlFile('queue: { keepDone: forever }\n'), env: {} }))).toEqual([
      expect.stringMatching(/^queue\.keepDone = "forever" \(.*\): must be a duration such as 0s, 300s, 5m, 2h or 5d \(at most 31622400s\)$/),
    ]);
  });

  // A mistyped secret is still a secret: the error names the key and what is allowed, never the value.
  it('never shows the value of a secret key in an error', () => {
    const file = yamlFile('outbound:\n  relayhost:\n    host: smtp.example.com\n    auth:\n      user: relay\n      pass: 73519046\n      oauth2:\n        clientId: abc\n        clientSecret: 12345\n        refreshToken: SECRETREFRESH\nhttp:\n  token: 987654321\n');
    const found = problems(() => loadConfig({ file, env: {} }));
    expect(found.map((p) => p.split(' = ')[0])).toEqual(['outbound.relayhost.auth.pass', 'outbound.relayhost.auth.oauth2', 'http.token']);
    for (const secret of ['73519046', '12345', 'SECRETREFRESH', '987654321']) expect(found.join('\n')).not.toContain(secret);
    expect(found[0]).toBe(`outbound.relayhost.auth.pass = (a secret, not shown) (${file}): must be a string (empty for none)`);
  });

  // Nor a password given where a secret key is not: credentials before an "@" in a host, or a route's auth.
  it('never shows a password before an "@" in a value, nor a map entry named like a secret', () => {
    const hostFound = problems(() => loadConfig({ env: { POSTERN_OUTBOUND_RELAYHOST_HOST: 'mailuser:Hunter2pw@smtp.example.com' }, cwd: emptyDir }));
    expect(hostFound).toEqual([expect.stringContaining('outbound.relayhost.host = "mailuser:***@smtp.example.com" (environment POSTERN_OUTBOUND_RELAYHOST_HOST)')]);
    const file = yamlFile('outbound:\n  routes:\n    x.test: { host: 127.0.0.1, auth: { user: u, pass: RoutePw99 }, token: T0KEN77 }\n');
    const routeFound = problems(() => loadConfig({ file, env: {} })).join('\n');
    expect(routeFound).toContain('outbound.routes');
    for (const secret of ['Hunter2pw', 'RoutePw99', 'T0KEN77']) expect([...hostFound, routeFound].join('\n')).not.toContain(secret);
    // Nor where a check names a bad list entry.
    const entry = problems(() => loadConfig({ file: yamlFile('dns:\n  servers: ["alice:p@ss word@smtp.example:587"]\n'), env: {} })).join('\n');
    expect(entry).toContain('(bad entry: "alice:***@smtp.example:587")');
    expect(entry).not.toContain('ss word');
    for (const [password, part] of [['p@ssw0rd', 'ssw0rd'], ['hunter two', 'hunter']]) {
      const found = problems(() => loadConfig({ env: { POSTERN_OUTBOUND_RELAYHOST_HOST: `mailuser:${password}@smtp.example.com` }, cwd: emptyDir })).join('\n');
      expect(found).toContain('"mailuser:***@smtp.example.com"');
      expect(found).not.toContain(part);
    }
  });

  // Postfix writes relayhost = [host]:port; here the port has its own key, and "[host]:port" deferred every message.
  it.each([
    ['outbound.relayhost.host', '[127.0.0.1]:587', 'POSTERN_OUTBOUND_RELAYHOST_HOST'],
    ['outbound.relayhost.host', 'smtp.example.com:587', 'POSTERN_OUTBOUND_RELAYHOST_HOST'],
    ['outbound.heloName', 'my host <x>', 'POSTERN_OUTBOUND_HELO_NAME'],
    ['hostname', '*.example.com', 'POSTERN_HOSTNAME'],
  ])('refuses %s = %j', (path, value, variable) => {
    expect(problems(() => loadConfig({ env: { [variable]: value }, cwd: emptyDir }))).toEqual([expect.stringMatching(new RegExp(`^${path.replaceAll('.', '\\.')} = ${JSON.stringify(value).replace(/[[\]*.]/g, '\\$&')} \\(environment ${variable}\\): must be a host name`))]);
  });

  it.each(['mail_relay', 'smtp.example.com.', 'MAILPIT'])('takes %j as a smarthost (a Compose service name, a fully qualified name)', (host) => {
    expect(loadConfig({ env: { POSTERN_OUTBOUND_RELAYHOST_HOST: host }, cwd: emptyDir }).config.outbound.relayhost.host).toBe(host);
  });

  it('takes an address literal as the EHLO name', () => {
    expect(loadConfig({ env: { POSTERN_OUTBOUND_HELO_NAME: '[192.0.2.1]' }, cwd: emptyDir }).config.outbound.heloName).toBe('[192.0.2.1]');
  });

  it('takes a smarthost and routes named by host name or IP address', () => {
    const { config } = loadConfig({ env: { POSTERN_OUTBOUND_RELAYHOST_HOST: '2001:db8::25', POSTERN_OUTBOUND_ROUTES: '{"example.test":{"host":"mx.example.test"}}' }, cwd: emptyDir });
    expect(config.outbound.relayhost.host).toBe('2001:db8::25');
    expect(problems(() => loadConfig({ env: { POSTERN_OUTBOUND_ROUTES: '{"example.test":{"host":"[10.0.0.1]:25"}}' }, cwd: emptyDir }))[0]).toMatch(/\(example\.test: host must be a host name or IP address, without brackets or a port\)$/);
  });

  it('refuses settings that are each allowed but say nothing together', () => {
    expect(problems(() => loadConfig({ env: { POSTERN_OUTBOUND_RETRY_INITIAL: '2h', POSTERN_OUTBOUND_RETRY_MAX: '5m' }, cwd: emptyDir }))).toEqual([
      'outbound.retry.initial = 7200 s (environment POSTERN_OUTBOUND_RETRY_INITIAL): must not be more than outbound.retry.max (300 s, environment POSTERN_OUTBOUND_RETRY_MAX)',
    ]);
    expect(problems(() => loadConfig({ env: { POSTERN_OUTBOUND_RELAYHOST_AUTH_PASS: 'x' }, cwd: emptyDir }))).toEqual([
      'outbound.relayhost.auth.user = "" (default): must be set when outbound.relayhost.auth.pass is (environment POSTERN_OUTBOUND_RELAYHOST_AUTH_PASS; without a user no AUTH is made)',
    ]);
  });

  it('refuses unknown keys instead of silently using a default', () => {
    const file = yamlFile('limits: { recipents: 5 }\n');
    expect(problems(() => loadConfig({ file, env: {} }))[0]).toMatch(/^limits\.recipents \(.*\): unknown key; known keys here: limits\.messageSize, limits\.recipients/);
  });

  it('refuses two listeners on one port, saying where each came from', () => {
    const file = yamlFile('listeners: { submission: { port: 2525 } }\n');
    expect(problems(() => loadConfig({ file, env: {} }))).toEqual([
      `listeners.submission.port = 2525 (${file}): already used by listeners.relay.port on 127.0.0.1 (default); each listener needs its own port`,
    ]);
  });

  it('warns about unknown POSTERN_ variables', () => {
    const { warnings } = loadConfig({ env: { POSTERN_LISTENER_RELAY_PORT: '1' }, cwd: emptyDir });
    expect(warnings).toEqual(['unknown environment variable POSTERN_LISTENER_RELAY_PORT ignored']);
  });

  // The yaml library quotes the offending line after its message, and a tag or block header within it; any may be a
  // password's. An unknown tag is only a warning to it, and the value would silently be empty.
  it('names the code, line and column of a YAML error or warning, and nothing of the text', () => {
    const shown = (yaml: string): string[] => {
      const file = join(emptyDir, 'broken.yaml');
      writeFileSync(file, yaml);
      return problems(() => loadConfig({ file, env: {} })).map((p) => p.replace(`${file}: `, ''));
    };
    const hidden = '(the text is not shown: it may hold a secret; quote a value that starts with ! & * | > % @ or holds ": ")';
    expect(shown('outbound:\n  relayhost:\n    auth:\n      pass: "hunter2\n')).toEqual([`cannot read configuration: YAML MISSING_CHAR at line 5, column 1 ${hidden}`]);
    expect(shown('outbound:\n  relayhost:\n    auth:\n      pass: |hunter2\n')).toEqual([`cannot read configuration: YAML UNEXPECTED_TOKEN at line 4, column 14 ${hidden}`]);
    expect(shown('outbound:\n  relayhost:\n    auth:\n      pass: !hunter2\n')).toEqual([`cannot read configuration: YAML TAG_RESOLVE_FAILED at line 4, column 13 ${hidden}`]);
  });

  it('reports a missing explicit file', () => {
    expect(problems(() => loadConfig({ file: '/nonexistent/postern.yaml', env: {} }))[0]).toMatch(/^\/nonexistent\/postern.yaml: cannot read configuration: ENOENT/);
  });
});

describe('keys', () => {
  it('derives environment names from paths', () => {
    expect(envName('listeners.relay.port')).toBe('POSTERN_LISTENERS_RELAY_PORT');
    expect(envName('relay.trustedNetworks')).toBe('POSTERN_RELAY_TRUSTED_NETWORKS');
  });
  it('has a default that passes its own check for every key', () => {
    for (const k of CONFIG_KEYS) expect(k.check(k.default), k.path).toMatchObject({ ok: true });
  });
  it('parses durations', () => {
    expect([parseDurationSeconds('300s'), parseDurationSeconds('5m'), parseDurationSeconds('2h'), parseDurationSeconds('5d'), parseDurationSeconds(30), parseDurationSeconds('5 weeks')]).toEqual([300, 300, 7200, 432000, 30, undefined]);
  });
  // A lease is refused unless it is whole milliseconds: 4.1 minutes are 245.99999999999997 seconds.
  it('gives a duration with a fraction in whole milliseconds', () => {
    expect(['4.1m', '4.1d', '1.5s', '0.001s'].map((value) => durationMs(parseDurationSeconds(value)!))).toEqual([246_000, 354_240_000, 1500, 1]);
  });
});
