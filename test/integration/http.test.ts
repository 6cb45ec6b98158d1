// The HTTP listener of a running relay (in this process, every port 0 on
// 127.0.0.1): the queue API with and without its token and the effect of
// each verb on the store, /metrics as Prometheus text that moves when mail
// flows, /healthz and /readyz (a smarthost down, up, or refusing our
// login; the once-a-minute cache seen through checkedAt), the autoconfig
// document, and `postern health`'s exit codes.
// Nothing waits on a timer for correctness: the clock the relay reads is the
// test's, and deliveries run through scheduler.runDue().
import { execFile } from 'node:child_process';
import { createServer, type AddressInfo, type Socket } from 'node:net';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { probeGreeting } from '../../src/observability/health.ts';
import { openQueueStore } from '../../src/queue/open-store.ts';
import type { QueueStore } from '../../src/queue/queue-store.ts';
import { POSTERN_BIN } from '../helpers/child-relay.ts';
import { parseMetrics } from '../helpers/prometheus-text.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { closedPort, startSink as startSinkOnly, type Sink } from '../helpers/smarthost-sink.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const TOKEN = 'test-token-1f0c9a';
const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup();
});

/** started - a test relay stopped after the file's tests. */
async function started(extra: Record<string, unknown>, options: Parameters<typeof startTestRelay>[1] = {}): Promise<TestRelay> {
  const relay = await startTestRelay(extra, options);
  cleanups.push(() => relay.stop());
  return relay;
}

interface HttpAnswer {
  status: number;
  headers: Headers;
  text: string;
  /** The parsed body (JSON.parse's type: tests read into it freely); undefined when it is not JSON. */
  json: ReturnType<typeof JSON.parse>;
}

/** call - one HTTP request to a relay's listener. */
async function call(relay: TestRelay, path: string, options: { method?: string; token?: string; body?: string | object } = {}): Promise<HttpAnswer> {
  const res = await fetch(`http://127.0.0.1:${relay.httpPort}${path}`, {
    method: options.method ?? 'GET',
    headers: options.token === undefined ? {} : { authorization: `Bearer ${options.token}` },
    body: options.body === undefined ? undefined : typeof options.body === 'string' ? options.body : JSON.stringify(options.body),
  });
  const text = await res.text();
  let json: HttpAnswer['json'];
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: res.status, headers: res.headers, text, json };
}

/** send - one message over STARTTLS on the relay port; resolves with its queue id. */
async function send(relay: TestRelay, to: string): Promise<string> {
  const transport = nodemailer.createTransport({ host: '127.0.0.1', port: relay.ports.relay, requireTLS: true, tls: { ca: relay.ca.certPem, servername: 'localhost' } });
  const info = await transport.sendMail({ from: 'sender@example.test', to, subject: 'http test', text: 'hello\n' });
  return /queued as (\w+)/.exec(info.response)![1]!;
}

/** withStore - a second handle on the relay's queue, as `postern queue` opens it. */
async function withStore<T>(relay: TestRelay, work: (store: QueueStore) => Promise<T>): Promise<T> {
  const store = await openQueueStore(relay.config);
  try {
    return await work(store);
  } finally {
    await store.close();
  }
}

async function scrape(relay: TestRelay): Promise<Map<string, number>> {
  const answer = await call(relay, '/metrics');
  expect(answer.status).toBe(200);
  expect(answer.headers.get('content-type')).toMatch(/^text\/plain; version=0\.0\.4/);
  return parseMetrics(answer.text);
}

/** until - re-check a condition as the relay's event loop turns (a session is counted when its socket has closed). */
async function until<T>(read: () => Promise<T>, ok: (value: T) => boolean): Promise<T> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const value = await read();
    if (ok(value) || Date.now() > deadline) return value;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** startSink - a smarthost stopped after the file's tests. */
async function startSink(): Promise<Sink> {
  const sink = await startSinkOnly();
  cleanups.push(() => sink.close());
  return sink;
}

function relayhostSettings(sink: Sink, pass = 'relay-pass') {
  return {
    outbound: {
      enabled: true,
      relayhost: { host: '127.0.0.1', port: sink.port, tls: 'verify', auth: { user: 'relay-user', pass } },
      tls: { caFile: sink.caFile },
    },
  };
}

// --- the tests ---------------------------------------------------------------------------------

describe('queue API', () => {
  let relay: TestRelay;
  let noToken: TestRelay;
  beforeAll(async () => {
    [relay, noToken] = await Promise.all([
      started({ http: { token: TOKEN, autoconfig: true }, relay: { localDomains: ['local.test'] } }),
      started({}),
    ]);
  });

  it('is off without http.token (403), wants the token (401 with WWW-Authenticate: Bearer), and answers with it', async () => {
    const off = await call(noToken, '/api/queue', { token: 'anything' });
    expect(off.status).toBe(403);
    expect(off.json).toEqual({ error: 'set http.token to enable the queue API' });

    const missing = await call(relay, '/api/queue');
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toMatch(/^Bearer /);
    for (const token of ['wrong', TOKEN.slice(0, -1), TOKEN + 'x', '']) {
      const wrong = await call(relay, '/api/queue', { token });
      expect(wrong.status, token).toBe(401);
      expect(wrong.headers.get('www-authenticate')).toMatch(/^Bearer /);
    }
    // The verbs are behind the token too, before anything is parsed.
    expect((await call(relay, '/api/queue/hold', { method: 'POST', body: { all: true } })).status).toBe(401);
    expect((await call(relay, '/api/queue/flush', { method: 'POST', token: 'wrong' })).status).toBe(401);
    // Each refusal is in the log with where it came from, and no token is.
    const refused = relay.logs.filter((l) => l.msg === 'queue API request refused');
    expect(refused.map((l) => [l.method, l.path, l.reason, l.remoteAddress])).toEqual([
      ['GET', '/api/queue', 'no token', '127.0.0.1'],
      ...['wrong', TOKEN.slice(0, -1), TOKEN + 'x'].map(() => ['GET', '/api/queue', 'wrong token', '127.0.0.1']),
      ['GET', '/api/queue', 'no token', '127.0.0.1'],
      ['POST', '/api/queue/hold', 'no token', '127.0.0.1'],
      ['POST', '/api/queue/flush', 'wrong token', '127.0.0.1'],
    ]);
    expect(JSON.stringify(relay.logs)).not.toContain(TOKEN.slice(0, -1));

    const ok = await call(relay, '/api/queue', { token: TOKEN });
    expect(ok.status).toBe(200);
    expect(Array.isArray(ok.json)).toBe(true);
    // /metrics and health need no token.
    expect((await call(relay, '/metrics')).status).toBe(200);
    expect((await call(relay, '/healthz')).status).toBe(200);
  });

  it('takes the token from http.tokenFile (Docker secrets), the final newline dropped', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'postern-token-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    await writeFile(join(dir, 'token'), 'from-a-file\n', { mode: 0o600 });
    const fromFile = await started({ http: { tokenFile: join(dir, 'token') } });
    expect((await call(fromFile, '/api/queue', { token: 'from-a-file' })).status).toBe(200);
    expect((await call(fromFile, '/api/queue', { token: TOKEN })).status).toBe(401);
    // An empty one would turn the API off without a word, over http.token too: the relay does not start.
    await writeFile(join(dir, 'empty'), '\n', { mode: 0o600 });
    await expect(startTestRelay({ http: { token: TOKEN, tokenFile: join(dir, 'empty') } })).rejects.toThrow(`http.tokenFile = ${JSON.stringify(join(dir, 'empty'))}: the file is empty`);
  });

  it('lists and shows messages with the JSON of `postern queue list/show --json`', async () => {
    const id = await send(relay, 'listed@local.test');
    const list = await call(relay, '/api/queue', { token: TOKEN });
    const mine = (list.json as { id: string }[]).find((m) => m.id === id);
    const stored = (await relay.queued()).find((m) => m.id === id)!;
    expect(mine).toEqual({
      id, sender: 'sender@example.test', recipients: ['listed@local.test'], size: stored.size, receivedAt: stored.receivedAt.toISOString(), state: 'queued',
      recipientStates: [{ address: 'listed@local.test', state: 'queued' }], nextAttemptAt: stored.nextAttemptAt!.toISOString(),
    });

    const shown = await call(relay, `/api/queue/${id}`, { token: TOKEN });
    expect(shown.status).toBe(200);
    const details = await withStore(relay, (store) => store.showMessage(id));
    expect(shown.json).toEqual(JSON.parse(JSON.stringify(details)));

    expect((await call(relay, '/api/queue/0000000000000000', { token: TOKEN })).status).toBe(404);
    const bad = await call(relay, '/api/queue/..%2F..%2Fetc', { token: TOKEN });
    expect(bad.status).toBe(400);
    expect(bad.json.error).toMatch(/not a queue id/);
  });

  it('holds, releases, retries and deletes one message, with the effect in the store', async () => {
    const id = await send(relay, 'one@local.test');
    const state = async () => (await relay.queued()).find((m) => m.id === id)?.state;

    expect((await call(relay, `/api/queue/${id}/hold`, { method: 'POST', token: TOKEN })).json).toEqual({ verb: 'hold', changed: [id], unchanged: [] });
    expect(await state()).toBe('held');
    expect((await call(relay, `/api/queue/${id}/hold`, { method: 'POST', token: TOKEN })).json).toEqual({ verb: 'hold', changed: [], unchanged: [id] });
    // retry leaves a held message held (the CLI's rule).
    expect((await call(relay, `/api/queue/${id}/retry`, { method: 'POST', token: TOKEN })).json).toEqual({ verb: 'retry', changed: [], unchanged: [id] });
    expect((await call(relay, `/api/queue/${id}/release`, { method: 'POST', token: TOKEN })).json).toEqual({ verb: 'release', changed: [id], unchanged: [] });
    expect(await state()).toBe('queued');

    // Deferred a day by a worker; retry makes it due now.
    const dayLater = await deferADay(relay, id);
    expect(await state()).toBe('deferred');
    const before = Date.now();
    expect((await call(relay, `/api/queue/${id}/retry`, { method: 'POST', token: TOKEN })).json).toEqual({ verb: 'retry', changed: [id], unchanged: [] });
    const due = (await withStore(relay, (store) => store.showMessage(id)))!.deliveries[0]!.nextAttemptAt!;
    expect(due.getTime()).toBeLessThan(dayLater);
    expect(due.getTime()).toBeGreaterThanOrEqual(before);

    expect((await call(relay, `/api/queue/${id}`, { method: 'DELETE', token: TOKEN })).json).toEqual({ verb: 'delete', changed: [id], unchanged: [] });
    expect(await state()).toBeUndefined();
    // Each change in the relay's log, as postsuper logs it; not the hold that changed nothing.
    expect(relay.logs.filter((l) => l.queueId === id && l.component === 'queue-api').map((l) => l.msg)).toEqual([
      'placed on hold by the operator',
      'released from hold by the operator',
      'set to be tried now by the operator',
      'removed by the operator',
    ]);
    expect((await call(relay, `/api/queue/${id}`, { token: TOKEN })).status).toBe(404);
    expect((await call(relay, `/api/queue/${id}`, { method: 'DELETE', token: TOKEN })).status).toBe(404);
    expect((await call(relay, `/api/queue/${id}/hold`, { method: 'POST', token: TOKEN })).status).toBe(404);
  });

  it('bounces a held message to its sender: a report queued to the sender, the relay\'s log naming the operator', async () => {
    const id = await send(relay, 'held@local.test');
    expect((await call(relay, `/api/queue/${id}/hold`, { method: 'POST', token: TOKEN })).json).toEqual({ verb: 'hold', changed: [id], unchanged: [] });
    expect((await call(relay, '/api/queue/bounce', { method: 'POST', token: TOKEN, body: { ids: [id, '0000000000000000'] } })).json).toEqual({ verb: 'bounce', changed: [id], unchanged: ['0000000000000000'] });

    const details = (await withStore(relay, (store) => store.showMessage(id)))!;
    expect(details).toMatchObject({ state: 'done', outcome: 'bounced' });
    expect(details.recipientStates).toEqual([expect.objectContaining({ address: 'held@local.test', state: 'bounced', reply: "5.0.0 returned to the sender by the relay's operator before any attempt" })]);
    const reports = (await relay.queued()).filter((m) => m.mailFrom === '' && m.recipients.includes('sender@example.test'));
    expect(reports).toHaveLength(1);
    const logged = relay.logs.find((l) => l.msg === 'returned to the sender by the operator' && l.queueId === id);
    expect(logged).toMatchObject({ component: 'queue-api', report: reports[0]!.id, results: [{ rcpt: 'held@local.test', result: 'bounced' }] });
    // Done: a second bounce leaves it, as the other verbs leave a done message.
    expect((await call(relay, `/api/queue/${id}/bounce`, { method: 'POST', token: TOKEN })).json).toEqual({ verb: 'bounce', changed: [], unchanged: [id] });
    await call(relay, '/api/queue/delete', { method: 'POST', token: TOKEN, body: { all: true } });
  });

  it('applies verbs to ids or to all, flushes, and deletes in bulk', async () => {
    await call(relay, '/api/queue/delete', { method: 'POST', token: TOKEN, body: { all: true } });
    const [a, b, c] = [await send(relay, 'a@local.test'), await send(relay, 'b@local.test'), await send(relay, 'c@local.test')];
    const states = async () => Object.fromEntries((await relay.queued()).map((m) => [m.id, m.state]));

    const held = await call(relay, '/api/queue/hold', { method: 'POST', token: TOKEN, body: { ids: [a, b, '0000000000000000'] } });
    expect(held.json).toEqual({ verb: 'hold', changed: [a, b], unchanged: ['0000000000000000'] });
    expect(await states()).toEqual({ [a]: 'held', [b]: 'held', [c]: 'queued' });
    expect((await call(relay, '/api/queue/release', { method: 'POST', token: TOKEN, body: { all: true } })).json).toEqual({ verb: 'release', changed: [a, b], unchanged: [] });
    expect(await states()).toEqual({ [a]: 'queued', [b]: 'queued', [c]: 'queued' });

    const dayLater = await deferADay(relay, c);
    // flush is retry --all, reported as the CLI reports it.
    const flushed = await call(relay, '/api/queue/flush', { method: 'POST', token: TOKEN });
    expect(flushed.json).toEqual({ verb: 'retry', changed: [a, b, c], unchanged: [] });
    expect((await withStore(relay, (store) => store.showMessage(c)))!.deliveries[0]!.nextAttemptAt!.getTime()).toBeLessThan(dayLater);
    expect((await call(relay, '/api/queue/retry', { method: 'POST', token: TOKEN, body: { ids: [a] } })).json).toEqual({ verb: 'retry', changed: [a], unchanged: [] });

    expect((await call(relay, '/api/queue/delete', { method: 'POST', token: TOKEN, body: { ids: [a] } })).json).toEqual({ verb: 'delete', changed: [a], unchanged: [] });
    expect(await states()).toEqual({ [b]: 'queued', [c]: 'deferred' });
    expect((await call(relay, '/api/queue/delete', { method: 'POST', token: TOKEN, body: { all: true } })).json).toEqual({ verb: 'delete', changed: [b, c], unchanged: [] });
    expect(await relay.queued()).toEqual([]);
  });

  it('answers 400 to bad JSON, a bad body or malformed ids, 405 to a wrong method, 404 to an unknown path', async () => {
    const post = (path: string, body?: string | object) => call(relay, path, { method: 'POST', token: TOKEN, body });
    const cases: [string, string | object | undefined, RegExp][] = [
      ['/api/queue/hold', '{"ids": [', /bad JSON/],
      ['/api/queue/hold', undefined, /"ids"/],
      ['/api/queue/hold', { ids: 'ABC' }, /"ids"/],
      ['/api/queue/hold', { ids: [] }, /"ids"/],
      ['/api/queue/hold', { all: 'yes' }, /"ids"/],
      ['/api/queue/hold', { ids: ['0000000000000000'], all: true }, /"ids"/],
      ['/api/queue/delete', { ids: ['0000000000000000', '../x', 7] }, /not queue ids: \["\.\.\/x",7\]/],
      ['/api/queue/flush', { ids: ['0000000000000000'] }, /flush/],
    ];
    for (const [path, body, error] of cases) {
      const answer = await post(path, body);
      expect(answer.status, JSON.stringify(body)).toBe(400);
      expect(answer.json.error).toMatch(error);
    }
    expect((await post('/api/queue/delete', { ids: Array.from({ length: 10_001 }, () => '0000000000000000') })).status).toBe(413);

    const wrongMethod = await call(relay, '/api/queue/hold', { token: TOKEN });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get('allow')).toBe('POST');
    expect((await call(relay, '/api/queue', { method: 'POST', token: TOKEN })).status).toBe(405);
    expect((await call(relay, '/metrics', { method: 'POST' })).status).toBe(405);
    expect((await call(relay, '/api/queue/0000000000000000/bounce', { method: 'POST', token: TOKEN })).status).toBe(404);
    expect((await call(relay, '/nothing-here')).status).toBe(404);
  });

  it('serves the Thunderbird autoconfig document when http.autoconfig is on', async () => {
    for (const path of ['/mail/config-v1.1.xml', '/.well-known/autoconfig/mail/config-v1.1.xml']) {
      const answer = await call(relay, `${path}?emailaddress=alice%40local.test`);
      expect(answer.status).toBe(200);
      expect(answer.headers.get('content-type')).toMatch(/^application\/xml/);
      const xml = answer.text;
      expect(xml).toMatch(/^<\?xml version="1\.0" encoding="UTF-8"\?>\n<clientConfig version="1\.1">/);
      expect(xml).toContain('<domain>local.test</domain>');
      const servers = [...xml.matchAll(/<outgoingServer type="smtp">([\s\S]*?)<\/outgoingServer>/g)].map((m) => m[1]!);
      expect(servers).toHaveLength(2);
      const field = (server: string, name: string) => new RegExp(`<${name}>([^<]*)</${name}>`).exec(server)?.[1];
      expect(servers.map((s) => [field(s, 'hostname'), field(s, 'port'), field(s, 'socketType'), field(s, 'authentication'), field(s, 'username')])).toEqual([
        ['relay.test', String(relay.ports.submissions), 'SSL', 'password-cleartext', '%EMAILLOCALPART%'],
        ['relay.test', String(relay.ports.submission), 'STARTTLS', 'password-cleartext', '%EMAILLOCALPART%'],
      ]);
    }
    expect((await call(noToken, '/mail/config-v1.1.xml')).status).toBe(404);
  });
});

describe('/metrics', () => {
  let relay: TestRelay;
  beforeAll(async () => {
    // 127.0.0.1 is not trusted here: mail to other domains is relaying, and denied.
    relay = await started({ relay: { localDomains: ['local.test'], trustedNetworks: ['192.0.2.0/24'] } });
    await relay.addUser('alice', 'correct horse');
  });

  it('is Prometheus text with every Postern metric, HELP and TYPE included', async () => {
    const answer = await call(relay, '/metrics');
    parseMetrics(answer.text);
    for (const [name, type] of [
      ['postern_messages_accepted_total', 'counter'],
      ['postern_messages_rejected_total', 'counter'],
      ['postern_deliveries_total', 'counter'],
      ['postern_deliveries_suspended_total', 'counter'],
      ['postern_queue_messages', 'gauge'],
      ['postern_queue_oldest_message_age_seconds', 'gauge'],
      ['postern_smtp_sessions_total', 'counter'],
      ['postern_delivery_latency_seconds', 'histogram'],
      ['postern_tls_certificate_expiry_seconds', 'gauge'],
      ['postern_auth_failures_total', 'counter'],
    ]) {
      expect(answer.text).toContain(`# TYPE ${name} ${type}\n`);
      expect(answer.text).toMatch(new RegExp(`^# HELP ${name} .+$`, 'm'));
    }
    const samples = parseMetrics(answer.text);
    for (const result of ['delivered', 'deferred', 'bounced']) expect(samples.get(`postern_deliveries_total{result="${result}"}`)).toBe(0);
    expect(samples.get('postern_deliveries_suspended_total')).toBe(0);
    // The test certificate is valid for a while yet.
    expect(samples.get('postern_tls_certificate_expiry_seconds')).toBeGreaterThan(86400);
  });

  it('counts an accepted message, the queue it joined and its session', async () => {
    const before = await scrape(relay);
    const id = await send(relay, 'counted@local.test');
    const after = await scrape(relay);
    expect(after.get('postern_messages_accepted_total')).toBe(before.get('postern_messages_accepted_total')! + 1);
    expect(after.get('postern_queue_messages{state="queued"}')).toBe((before.get('postern_queue_messages{state="queued"}') ?? 0) + 1);
    expect(after.get('postern_queue_messages{state="held"}')).toBe(0);
    expect(after.get('postern_queue_oldest_message_age_seconds')).toBeGreaterThanOrEqual(0);
    expect((await relay.queued()).map((m) => m.id)).toContain(id);

    const series = 'postern_smtp_sessions_total{direction="inbound",tls="TLSv1.3"}';
    const counted = await until(() => scrape(relay), (m) => m.get(series)! > before.get(series)!);
    expect(counted.get(series)).toBe(before.get(series)! + 1);
  });

  it('counts a denied relay by its reason, and a failed AUTH', async () => {
    const before = await scrape(relay);
    const c = await RawSmtp.connect(relay.ports.relay);
    await c.reply();
    await c.command('EHLO client.test');
    await c.command('MAIL FROM:<a@example.test>');
    expect((await c.command('RCPT TO:<b@example.org>')).text).toBe('554 5.7.1 Relay access denied');
    c.close();
    const submission = await RawSmtp.connect(relay.ports.submissions, { tls: { ca: relay.ca.certPem } });
    await submission.reply();
    await submission.command('EHLO client.test');
    expect((await submission.command(`AUTH PLAIN ${Buffer.from('\0alice\0wrong').toString('base64')}`)).code).toBe(535);
    submission.close();

    const after = await scrape(relay);
    const denied = 'postern_messages_rejected_total{reason="relay-denied"}';
    expect(after.get(denied)).toBe((before.get(denied) ?? 0) + 1);
    expect(after.get('postern_auth_failures_total')).toBe(before.get('postern_auth_failures_total')! + 1);
    expect(after.get('postern_messages_accepted_total')).toBe(before.get('postern_messages_accepted_total'));
  });
});

// A balancer on the relay's own host: smtp.proxyProtocol covers loopback, where the probe connects from.
describe('/healthz with smtp.proxyProtocol covering its own address', () => {
  // A listener on 127.0.0.2 judges the probe by its source, 127.0.0.1 on Linux, not by the listener's address.
  it.each([[['127.0.0.1/32']], [['127.0.0.2/32']]])('sends the PROXY line by the address it connects from (networks %j, listeners on 127.0.0.2)', async (networks) => {
    const host = { host: '127.0.0.2', port: 0 };
    const relay = await started({ listeners: { relay: host, submission: host, submissions: host }, smtp: { proxyProtocol: networks } });
    const answer = await call(relay, '/healthz');
    expect(Object.values(answer.json.listeners as Record<string, { ok: boolean }>).map((l) => l.ok)).toEqual([true, true, true]);
    expect(answer.status).toBe(200);
  });

  it('opens each probe with a PROXY line, TLS after it on the implicit-TLS port, and is 200', async () => {
    const relay = await started({ smtp: { proxyProtocol: ['127.0.0.0/8'] } });
    const answer = await call(relay, '/healthz');
    expect(answer.json.listeners).toEqual({
      relay: { ok: true, address: `127.0.0.1:${relay.ports.relay}` },
      submission: { ok: true, address: `127.0.0.1:${relay.ports.submission}` },
      submissions: { ok: true, address: `127.0.0.1:${relay.ports.submissions}` },
    });
    expect(answer.status).toBe(200);
  });
});

describe('/healthz', () => {
  let relay: TestRelay;
  let clock = Date.now();
  beforeAll(async () => {
    // One client at a time per listener: a second connection hears 421, as a listener out of capacity does.
    relay = await started({ limits: { connections: 1 } }, { now: () => new Date(clock) });
  });

  it('is 200 while every listener greets with 220 or is busy at its connection limit, and caches for a few seconds', async () => {
    const ok = await call(relay, '/healthz');
    expect(ok.status).toBe(200);
    expect(ok.json).toEqual({
      status: 'ok',
      checkedAt: new Date(clock).toISOString(),
      listeners: {
        relay: { ok: true, address: `127.0.0.1:${relay.ports.relay}` },
        submission: { ok: true, address: `127.0.0.1:${relay.ports.submission}` },
        submissions: { ok: true, address: `127.0.0.1:${relay.ports.submissions}` },
      },
    });

    const occupant = await RawSmtp.connect(relay.ports.relay);
    expect((await occupant.reply()).code).toBe(220);
    // Within the cache time the answer is the one already taken.
    expect((await call(relay, '/healthz')).json).toEqual(ok.json);

    // At its connection limit a listener answers 421 4.7.0: busy, not broken; a liveness probe failing then would
    // have the orchestrator restart the relay at its busiest.
    clock += 6000;
    const busy = await call(relay, '/healthz');
    expect(busy.status).toBe(200);
    expect(busy.json).toMatchObject({ status: 'ok', listeners: { relay: { ok: true, detail: expect.stringMatching(/^busy: 421 4\.7\.0 /) }, submission: { ok: true }, submissions: { ok: true } } });

    occupant.close();
    // The listener notices the close on its own time: ask again (past the cache) until it has.
    const again = await until(() => {
      clock += 6000;
      return call(relay, '/healthz');
    }, (a) => a.json.listeners.relay.detail === undefined);
    expect(again.json.listeners.relay).toEqual({ ok: true, address: `127.0.0.1:${relay.ports.relay}` });
  });

  // What a probe makes of each greeting, from a server that says it byte for byte.
  it.each([
    ['220 mx ESMTP\r\n', { ok: true }],
    ['220-mx ESMTP\r\n220 ready\r\n', { ok: true }],
    ['421 4.7.0 mx Error: too many connections, try again later\r\n', { ok: true, detail: 'busy: 421 4.7.0 mx Error: too many connections, try again later' }],
    ['421 4.3.2 mx Service shutting down\r\n', { ok: false, error: 'greeting: 421 4.3.2 mx Service shutting down' }],
    ['554 5.3.2 mx No SMTP service here\r\n', { ok: false, error: 'greeting: 554 5.3.2 mx No SMTP service here' }],
  ])('probeGreeting takes %j as %j', async (greeting, expected) => {
    // Read what the probe sends (QUIT), or its end never arrives and the server never closes.
    const server = createServer((socket) => socket.resume().end(greeting));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      expect(await probeGreeting({ name: 'relay', host: '127.0.0.1', port, implicitTls: false }, 2000)).toEqual(expected);
    } finally {
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it('waits out a greeting pause longer than its own timeout', async () => {
    const paused = await started({ smtp: { greetingPause: '2s' } });
    const answer = await call(paused, '/healthz');
    expect(answer.json).toMatchObject({ status: 'ok' });
    expect(answer.status).toBe(200);
  });
});

describe('/readyz', () => {
  it('is 200 with a writable queue and no smarthost', async () => {
    const relay = await started({});
    const ready = await call(relay, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.json).toMatchObject({ status: 'ready', queue: { ok: true } });
    expect(ready.json.relayhost).toBeUndefined();
    // The probe's draft leaves nothing in the queue.
    expect(await relay.queued()).toEqual([]);
  });

  // /readyz said ready while every MAIL FROM got 452 4.3.1: an orchestrator kept sending mail to a node refusing it.
  it('is 503 while the queue\'s disk has less free than queue.minFree, as MAIL FROM is refused, and says why', async () => {
    const relay = await started({ queue: { minFree: 2 ** 52 } });
    const answer = await call(relay, '/readyz');
    expect(answer.status).toBe(503);
    expect(answer.json).toMatchObject({ status: 'not ready', queue: { ok: false } });
    expect(answer.json.queue.error).toMatch(/^queue file system has \d+ bytes free, less than the 4503599627370496 it keeps \(queue\.minFree or 1\.5 × limits\.messageSize\)$/);
  });

  // Mail for a smarthost that is down waits in the queue: taking the relay out of service would refuse it instead.
  it('is 200 when the smarthost does not answer, and says so', async () => {
    const port = await closedPort();
    const relay = await started({ outbound: { enabled: true, relayhost: { host: '127.0.0.1', port, tls: 'encrypt' } } });
    const answer = await call(relay, '/readyz');
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ status: 'ready', queue: { ok: true }, relayhost: { ok: false, host: `127.0.0.1:${port}` } });
    expect(answer.json.relayhost.error).toMatch(/ECONNREFUSED/);
  });

  // A smarthost that takes the connection and never greets held /readyz for its connect timeout, longer than a
  // container's health check or an orchestrator's probe waits: the relay read as unready after all.
  it('does not wait for a smarthost that never greets: says pending, and the relay is ready', async () => {
    const held: Socket[] = [];
    const silent = createServer((socket) => held.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => (held.forEach((s) => s.destroy()), silent.close(() => resolve()))));
    const port = (silent.address() as AddressInfo).port;
    const relay = await started({ outbound: { enabled: true, connectTimeout: 300, relayhost: { host: '127.0.0.1', port, tls: 'encrypt' } } });
    const answer = await call(relay, '/readyz');
    expect(answer.status).toBe(200);
    expect(answer.json).toMatchObject({ status: 'ready', queue: { ok: true }, relayhost: { host: `127.0.0.1:${port}`, pending: true } });
  });

  it('is 200 when the smarthost takes our STARTTLS (verified) and login; asks it at most once a minute', async () => {
    const sink = await startSink();
    let clock = Date.now();
    const relay = await started(relayhostSettings(sink), { now: () => new Date(clock) });
    const first = await call(relay, '/readyz');
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({
      status: 'ready',
      queue: { ok: true },
      relayhost: { ok: true, host: `127.0.0.1:${sink.port}`, address: `127.0.0.1:${sink.port}`, tls: 'TLSv1.3', checkedAt: new Date(clock).toISOString() },
    });
    expect([sink.sessions, sink.logins]).toEqual([1, 1]);

    clock += 59_000;
    const cached = await call(relay, '/readyz');
    expect(cached.json.relayhost.checkedAt).toBe(first.json.relayhost.checkedAt);
    expect(cached.json.queue.checkedAt).toBe(new Date(clock).toISOString());
    expect(sink.sessions).toBe(1);

    clock += 2_000;
    const fresh = await call(relay, '/readyz');
    expect(fresh.status).toBe(200);
    expect(fresh.json.relayhost.checkedAt).toBe(new Date(clock).toISOString());
    expect([sink.sessions, sink.logins]).toEqual([2, 2]);
  });

  it('is 200 when the smarthost refuses our credentials, and says so', async () => {
    const sink = await startSink();
    const relay = await started(relayhostSettings(sink, 'not-the-password'));
    const answer = await call(relay, '/readyz');
    expect(answer.status).toBe(200);
    expect(answer.json.relayhost).toMatchObject({ ok: false });
    expect(answer.json.relayhost.error).toMatch(/535/);
    expect(sink.logins).toBe(0);
  });
});

describe('delivery metrics', () => {
  it('counts a delivered recipient, its latency and the outbound session by TLS version', async () => {
    const sink = await startSink();
    const relay = await started(relayhostSettings(sink));
    const scheduler = relay.scheduler!;
    // Only runDue() delivers: the loop would race the test.
    await scheduler.stop();
    const before = await scrape(relay);
    await send(relay, 'far@example.org');
    expect(await scheduler.runDue()).toBe(1);
    expect(sink.messages).toBe(1);

    const after = await scrape(relay);
    expect(after.get('postern_deliveries_total{result="delivered"}')).toBe(before.get('postern_deliveries_total{result="delivered"}')! + 1);
    expect(after.get('postern_delivery_latency_seconds_count')).toBe(before.get('postern_delivery_latency_seconds_count')! + 1);
    expect(after.get('postern_delivery_latency_seconds_bucket{le="+Inf"}')).toBe(after.get('postern_delivery_latency_seconds_count'));
    const outbound = 'postern_smtp_sessions_total{direction="outbound",tls="TLSv1.3"}';
    expect(after.get(outbound)).toBe(before.get(outbound)! + 1);
    expect(after.get('postern_queue_messages{state="queued"}')).toBe(0);
  });
});

describe('postern health', () => {
  /** health - run `postern health` against a relay's HTTP port; its exit code and output. */
  async function health(port: number, args: string[] = []): Promise<{ code: number; stdout: string }> {
    const dir = await mkdtemp(join(tmpdir(), 'postern-health-'));
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const file = join(dir, 'postern.yaml');
    await writeFile(file, `hostname: relay.test\nhttp:\n  host: 127.0.0.1\n  port: ${port}\n`);
    const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('POSTERN_')));
    return new Promise((resolve, reject) => {
      execFile(process.execPath, [POSTERN_BIN, 'health', '--config', file, ...args], { env, timeout: 30_000 }, (err, stdout, stderr) => {
        if (err && typeof err.code !== 'number') return reject(new Error(`${err.message}\n${stderr}`));
        resolve({ code: err ? (err.code as number) : 0, stdout });
      });
    });
  }

  it('exits 0 for a healthy relay, 0 naming the smarthost when it is down, 1 when nothing answers', async () => {
    const port = await closedPort();
    const [healthy, unready] = await Promise.all([started({}), started({ outbound: { enabled: true, relayhost: { host: '127.0.0.1', port } } })]);

    const [ok, json, down, nobody] = await Promise.all([
      health(healthy.httpPort!),
      health(healthy.httpPort!, ['--json']),
      health(unready.httpPort!),
      closedPort().then((free) => health(free)),
    ]);
    expect(ok.code).toBe(0);
    expect(ok.stdout).toMatch(/^healthz: 200 ok\n {2}relay 127\.0\.0\.1:\d+: ok\n/);
    expect(ok.stdout).toMatch(/^readyz: 200 ready\n {2}queue: ok$/m);

    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ healthy: true, healthz: { status: 200, body: { status: 'ok' } }, readyz: { status: 200, body: { status: 'ready' } } });

    expect(down.code).toBe(0);
    expect(down.stdout).toMatch(/^healthz: 200 ok$/m);
    expect(down.stdout).toMatch(new RegExp(`^readyz: 200 ready\\n(.*\\n)* {2}relayhost 127\\.0\\.0\\.1:${port}: FAILED \\(mail waits in the queue\\): .*ECONNREFUSED`, 'm'));

    expect(nobody.code).toBe(1);
    expect(nobody.stdout).toMatch(/^healthz: no answer from http:\/\/127\.0\.0\.1:\d+\/healthz: .*ECONNREFUSED/m);
  });
});

/** deferADay - as a worker would: claim the message's delivery and record it deferred until a day later; returns that time. */
async function deferADay(relay: TestRelay, id: string): Promise<number> {
  return withStore(relay, async (store) => {
    const details = (await store.showMessage(id))!;
    const now = Math.max(Date.now(), details.receivedAt.getTime());
    const claims = await store.claimDue({ now: new Date(now), limit: 100, leaseMs: 60_000, owner: 'test-worker' });
    const claim = claims.find((c) => c.messageId === id)!;
    for (const other of claims.filter((c) => c !== claim)) await store.releaseLease({ deliveryId: other.deliveryId, owner: 'test-worker' });
    const later = now + 86_400_000;
    await store.recordAttempt(
      { deliveryId: claim.deliveryId, owner: 'test-worker' },
      {
        attempts: [{ startedAt: new Date(now), endedAt: new Date(now), policy: { level: 'may', source: 'test' }, reply: '451 4.3.0 later', outcome: 'deferred' }],
        recipients: claim.recipients.map((r) => ({ address: r.address, result: 'deferred' as const, reply: '451 4.3.0 later' })),
        nextAttemptAt: new Date(later),
      },
    );
    return later;
  });
}
