// The HTTP listener (node:http, loopback by default): the operator's and the
// orchestrator's way in.
//
//   GET    /metrics                       Prometheus text (no token)
//   GET    /healthz, /readyz              health.ts reports, 200 or 503 (no token)
//   GET    /mail/config-v1.1.xml          Mozilla autoconfig, when http.autoconfig
//          /.well-known/autoconfig/mail/config-v1.1.xml
//   GET    /api/queue                     `postern queue list --json`; ?all=1: `queue list --all --json`
//   GET    /api/queue/:id                 `queue show ID --json`; 404 if unknown
//   POST   /api/queue/:id/retry|hold|release|bounce
//   DELETE /api/queue/:id                 {verb, changed, unchanged}; 404 if unknown
//   POST   /api/queue/retry|hold|release|delete|bounce  body {"ids": [...]} or {"all": true}
//   POST   /api/queue/flush               retry every message (body optional)
//
// The queue API wants `Authorization: Bearer <http.token>`, compared in
// constant time; with no token configured it is off (403), a missing or
// wrong token gets 401 with WWW-Authenticate (RFC 6750 §3). What a verb does
// is not decided here: QueueApi is the CLI's code (src/cli/queue.ts).
//
// How it fails: listen() rejects naming http.host:port when it cannot bind;
// a request never takes the server down: bad input is 400 (bad JSON, a
// malformed id), 413 (body over 64 KiB), 404/405, and an error inside a
// handler is logged and answered 500.
//
//   createHttpServer - the listener, not yet listening.
//   autoconfigXml    - the Thunderbird autoconfig document for our submission ports.
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { HealthChecks } from './health.ts';
import type { MessageSelector, QueueVerb } from '../queue/queue-store.ts';
import type { Logger } from './logger.ts';


/** The queue operations the API exposes; implemented by the CLI's code, so both give the same answers. */
export interface QueueApi {
  isQueueId(id: string): boolean;
  /** list - includeDone: the done messages too (`queue list --all`). */
  list(options: { includeDone: boolean }): Promise<unknown>;
  /** show - undefined for an unknown id. */
  show(id: string): Promise<unknown>;
  change(verb: QueueVerb, selector: MessageSelector): Promise<unknown>;
}

export interface HttpServerDeps {
  host: string;
  port: number;
  /** Empty: the queue API answers 403. */
  token: string;
  /** metrics - the exposition, read at scrape time. */
  metrics(): Promise<{ contentType: string; body: string }>;
  health: HealthChecks;
  queue: QueueApi;
  /** The autoconfig document; absent: those paths are 404. */
  autoconfig?: string;
  logger: Logger;
}

export interface HttpListener {
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
}

const MAX_BODY = 64 * 1024;
const AUTOCONFIG_PATHS = new Set(['/mail/config-v1.1.xml', '/.well-known/autoconfig/mail/config-v1.1.xml']);
const BULK_VERBS = new Set(['retry', 'hold', 'release', 'delete', 'bounce', 'flush']);
const ONE_VERBS = new Set(['retry', 'hold', 'release', 'bounce']);

/** An answer to send: status, JSON (or text) body, extra headers. */
interface Answer {
  status: number;
  json?: unknown;
  text?: { contentType: string; body: string };
  headers?: Record<string, string>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/** createHttpServer - the listener, not yet listening. */
export function createHttpServer(deps: HttpServerDeps): HttpListener {
  const log = deps.logger.child({ component: 'http' });
  const tokenDigest = deps.token ? sha256(deps.token) : undefined;

  async function route(req: IncomingMessage): Promise<Answer> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    if (path === '/metrics') return only(method, 'GET', async () => ({ status: 200, text: await deps.metrics() }));
    if (path === '/healthz') return only(method, 'GET', async () => report(await deps.health.live()));
    if (path === '/readyz') return only(method, 'GET', async () => report(await deps.health.ready()));
    if (AUTOCONFIG_PATHS.has(path) && deps.autoconfig) {
      const xml = deps.autoconfig;
      return only(method, 'GET', () => Promise.resolve({ status: 200, text: { contentType: 'application/xml; charset=utf-8', body: xml } }));
    }
    if (path === '/api/queue' || path.startsWith('/api/queue/')) {
      authorize(req, path);
      return routeQueue(req, method, path.split('/').slice(3).map(decodeSegment), url.searchParams);
    }
    throw new HttpError(404, `no such endpoint: ${path}`);
  }

  // authorize - the bearer token, compared as SHA-256 digests so neither content nor length leaks through timing.
  // A request refused for its token is logged with its address, never the token: someone guessing shows in the log,
  // as failed SMTP logins do.
  function authorize(req: IncomingMessage, path: string): void {
    if (!tokenDigest) throw new HttpError(403, 'set http.token to enable the queue API');
    const match = /^Bearer +(\S+) *$/i.exec(req.headers.authorization ?? '');
    const refusal = !match ? 'no token' : !timingSafeEqual(sha256(match[1]!), tokenDigest) ? 'wrong token' : undefined;
    if (!refusal) return;
    log.warn({ remoteAddress: req.socket.remoteAddress, method: req.method, path, reason: refusal }, 'queue API request refused');
    if (!match) throw new HttpError(401, 'a bearer token is required', { 'WWW-Authenticate': 'Bearer realm="postern"' });
    throw new HttpError(401, 'wrong token', { 'WWW-Authenticate': 'Bearer realm="postern", error="invalid_token"' });
  }

  async function routeQueue(req: IncomingMessage, method: string, rest: string[], query: URLSearchParams): Promise<Answer> {
    const [first, second, ...extra] = rest;
    if (extra.length > 0 || rest.includes('')) throw new HttpError(404, 'no such endpoint');
    if (first === undefined) return only(method, 'GET', async () => ({ status: 200, json: await deps.queue.list({ includeDone: flagOf(query, 'all') }) }));
    if (second === undefined && BULK_VERBS.has(first)) {
      return only(method, 'POST', async () => {
        const body = await readJson(req);
        if (first === 'flush') return { status: 200, json: await deps.queue.change('retry', flushSelector(body)) };
        return { status: 200, json: await deps.queue.change(first as QueueVerb, selectorOf(body)) };
      });
    }
    const id = checkedId(first);
    if (second === undefined) {
      if (method === 'GET') return { status: 200, json: await known(id) };
      if (method === 'DELETE') return changeOne('delete', id);
      throw notAllowed('GET, DELETE');
    }
    if (!ONE_VERBS.has(second)) throw new HttpError(404, `no such verb: ${second}`);
    return only(method, 'POST', () => changeOne(second as QueueVerb, id));
  }

  async function known(id: string): Promise<unknown> {
    const details = await deps.queue.show(id);
    if (details === undefined) throw new HttpError(404, `no message ${id} in the queue`);
    return details;
  }

  async function changeOne(verb: QueueVerb, id: string): Promise<Answer> {
    await known(id);
    return { status: 200, json: await deps.queue.change(verb, { ids: [id] }) };
  }

  function checkedId(id: string): string {
    if (!deps.queue.isQueueId(id)) throw new HttpError(400, `not a queue id: ${JSON.stringify(id.slice(0, 64))}`);
    return id;
  }

  // flagOf - a boolean query parameter: absent, 0 or false is false; 1, true or empty (?all) is true; else 400.
  function flagOf(query: URLSearchParams, name: string): boolean {
    const value = query.get(name);
    if (value === null || value === '0' || value === 'false') return false;
    if (value === '' || value === '1' || value === 'true') return true;
    throw new HttpError(400, `${name} must be 1 or 0, not ${JSON.stringify(value.slice(0, 64))}`);
  }

  function selectorOf(body: unknown): MessageSelector {
    const b = body as { ids?: unknown; all?: unknown } | null;
    const shape = 'the body must be {"ids": ["ID", ...]} or {"all": true}';
    if (!b || typeof b !== 'object' || Array.isArray(b)) throw new HttpError(400, shape);
    const keys = Object.keys(b);
    if (keys.length === 1 && b.all === true) return { all: true };
    // No count limit beyond the body's size (64 KiB: some 3,500 ids); {"all": true} is the way to say more.
    if (keys.length !== 1 || !Array.isArray(b.ids) || b.ids.length === 0) throw new HttpError(400, shape);
    const bad = b.ids.filter((id) => typeof id !== 'string' || !deps.queue.isQueueId(id));
    if (bad.length > 0) throw new HttpError(400, `not queue ids: ${JSON.stringify(bad.slice(0, 10))}`);
    return { ids: b.ids as string[] };
  }

  function flushSelector(body: unknown): MessageSelector {
    if (body === undefined || (typeof body === 'object' && body !== null && !Array.isArray(body) && (Object.keys(body).length === 0 || (body as { all?: unknown }).all === true))) {
      return { all: true };
    }
    throw new HttpError(400, 'flush retries every message: send no body, {} or {"all": true} (retry takes ids)');
  }

  const server = createServer((req, res) => {
    route(req)
      .then(
        (answer) => send(res, answer),
        (err: unknown) => {
          if (err instanceof HttpError) return send(res, { status: err.status, json: { error: err.message }, headers: err.headers });
          log.error({ err, method: req.method, url: req.url }, 'request failed');
          send(res, { status: 500, json: { error: 'internal error; see the relay log' } });
        },
      )
      // Not even the answer could be sent (the client left, or it did not serialize): drop the connection.
      .catch((err: unknown) => {
        log.warn({ err, method: req.method, url: req.url }, 'answer not sent');
        res.destroy();
      });
  });
  // Slow clients must not hold sockets forever (Slowloris).
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;

  return {
    listen() {
      return new Promise((resolve, reject) => {
        const onError = (err: Error) => reject(new Error(`http: cannot listen on ${deps.host}:${deps.port}: ${err.message}`));
        server.once('error', onError);
        server.listen(deps.port, deps.host, () => {
          server.off('error', onError);
          resolve(server.address() as AddressInfo);
        });
      });
    },
    close() {
      return new Promise((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      });
    },
  };
}

function decodeSegment(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    throw new HttpError(400, 'malformed percent-encoding in the path');
  }
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text).digest();
}

function report(result: { ok: boolean; body: unknown }): Answer {
  return { status: result.ok ? 200 : 503, json: result.body };
}

function notAllowed(allow: string): HttpError {
  return new HttpError(405, `method not allowed; use ${allow}`, { Allow: allow });
}

/** only - run the handler for this one method, else 405 naming it. */
function only(method: string, allowed: string, handler: () => Promise<Answer>): Promise<Answer> {
  if (method !== allowed) return Promise.reject(notAllowed(allowed));
  return handler();
}

/** readJson - the request body as JSON (undefined when empty); 413 past MAX_BODY, 400 when it does not parse. */
async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    // Past the limit the rest is read and dropped (requestTimeout bounds it), so the client gets to read our 413.
    if (size <= MAX_BODY) chunks.push(chunk as Buffer);
  }
  if (size > MAX_BODY) throw new HttpError(413, `request body over ${MAX_BODY} bytes`);
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new HttpError(400, `bad JSON: ${(err as Error).message}`);
  }
}

function send(res: ServerResponse, answer: Answer): void {
  const body = answer.text ? answer.text.body : JSON.stringify(answer.json, null, 2) + '\n';
  res.writeHead(answer.status, {
    'Content-Type': answer.text ? answer.text.contentType : 'application/json; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
    ...answer.headers,
  });
  res.end(body);
}

/** autoconfigXml - the Thunderbird autoconfig document for our submission ports (Mozilla "config-v1.1"). */
export function autoconfigXml(options: { hostname: string; domains: string[]; submissionPort?: number; submissionsPort?: number }): string {
  const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  const server = (port: number, socketType: 'SSL' | 'STARTTLS') =>
    [
      '    <outgoingServer type="smtp">',
      `      <hostname>${esc(options.hostname)}</hostname>`,
      `      <port>${port}</port>`,
      `      <socketType>${socketType}</socketType>`,
      '      <authentication>password-cleartext</authentication>',
      // Users are named as `postern users add alice` makes them: alice@example.test logs in as alice.
      '      <username>%EMAILLOCALPART%</username>',
      '    </outgoingServer>',
    ].join('\n');
  // Implicit TLS first: RFC 8314 §3.3 asks clients to prefer it over STARTTLS.
  const servers = [
    ...(options.submissionsPort !== undefined ? [server(options.submissionsPort, 'SSL')] : []),
    ...(options.submissionPort !== undefined ? [server(options.submissionPort, 'STARTTLS')] : []),
  ];
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<clientConfig version="1.1">',
    `  <emailProvider id="${esc(options.hostname)}">`,
    ...options.domains.map((d) => `    <domain>${esc(d)}</domain>`),
    `    <displayName>Postern (${esc(options.hostname)})</displayName>`,
    '    <displayShortName>Postern</displayShortName>',
    ...servers,
    '  </emailProvider>',
    '</clientConfig>',
    '',
  ].join('\n');
}
