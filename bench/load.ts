// The load generator: N messages over C concurrent sessions of at most M
// messages each, S bytes each, plaintext or STARTTLS (with or without TLS
// session resumption: one ticket store shared by all connections),
// optionally paced to a fixed rate (the soak). Every message carries
// "X-Bench-Id: <prefix>.<index>" so the sink can match its arrival.
// Per message it records when MAIL FROM was sent, when the final "." left,
// when the reply came and the reply code (times on nowMs's clock).
//
//   runLoad             - send the messages; resolves when every session is done.
//   holdIdleConnections - open sessions (greeted and EHLO'd) and leave them idle.
//   releaseIdleConnections - QUIT them.
//   buildMessage        - the bytes of message i of a given size.
//
// How it fails: a session that cannot open or breaks is counted and
// retried with a new one (the message in flight is recorded as code 0);
// after too many such errors runLoad gives up on the remaining messages
// and reports them unsent. It never rejects for a server's refusal.
//
// Run by the runner over IPC, or from a shell:
//   tsx bench/load.ts --port 2525 --messages 1000 --concurrency 20 --per-session 10 --size 4096 [--starttls] [--resume]
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { isIpcChild, serveRequests } from './ipc.ts';
import { openSession, type Session, type SessionOptions } from './smtp-client.ts';
import { nowMs, percentile } from './stats.ts';

export interface LoadOptions {
  host: string;
  port: number;
  messages: number;
  concurrency: number;
  perSession: number;
  size: number;
  starttls: boolean;
  /** Reuse TLS session tickets across connections. */
  resume: boolean;
  /** PEM of the CA that signed the server certificates; absent: not verified. */
  ca?: string;
  /** X-Bench-Id is `${idPrefix}.${index}`. */
  idPrefix: string;
  /** Messages per second, started at an even pace; absent: as fast as the server takes them. */
  rate?: number;
  timeoutMs?: number;
}

export interface LoadResult {
  /** Per message index, ms on nowMs's clock; NaN where the message was not sent. */
  start: Float64Array;
  dataEnd: Float64Array;
  replied: Float64Array;
  /** Reply code to the final "." (or the refused envelope command); 0: not sent or connection lost. */
  code: Int16Array;
  sessions: number;
  /** Per session: connect → greeting → EHLO (→ STARTTLS → EHLO) done, ms. */
  sessionSetup: number[];
  tlsResumed: number;
  sessionErrors: number;
  /** The first few session errors, for the report. */
  errorSamples: string[];
  /** Non-2xx replies, first few. */
  refusalSamples: string[];
  startedAt: number;
  endedAt: number;
}

const FROM = 'bench@load.test';
const TO = 'sink@example.test';

/** buildMessage - a message factory for one size: headers per message (with its id), the body shared. */
export function buildMessage(size: number): (id: string) => Buffer[] {
  const date = new Date().toUTCString().replace('GMT', '+0000');
  const headers = (id: string) =>
    `From: <${FROM}>\r\nTo: <${TO}>\r\nSubject: bench ${id}\r\nDate: ${date}\r\nMessage-ID: <${id}@load.test>\r\nX-Bench-Id: ${id}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n`;
  const line = 'The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGHIJKLMNOPQRSTU\r\n';
  const bodySize = Math.max(line.length, size - headers('x'.repeat(24)).length);
  const body = Buffer.alloc(bodySize);
  for (let at = 0; at < bodySize; at += line.length) body.write(line, at, 'latin1');
  // Never leave a partial last line: the content ends with CRLF before ".".
  body.write('\r\n', bodySize - 2, 'latin1');
  return (id) => [Buffer.from(headers(id), 'latin1'), body];
}

/** runLoad - send options.messages messages; resolves with the per-message record. */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const n = options.messages;
  const result: LoadResult = {
    start: new Float64Array(n).fill(NaN),
    dataEnd: new Float64Array(n).fill(NaN),
    replied: new Float64Array(n).fill(NaN),
    code: new Int16Array(n),
    sessions: 0,
    sessionSetup: [],
    tlsResumed: 0,
    sessionErrors: 0,
    errorSamples: [],
    refusalSamples: [],
    startedAt: nowMs(),
    endedAt: 0,
  };
  const message = buildMessage(options.size);
  const sessionOptions = sessionOptionsOf(options);
  const maxErrors = Math.max(50, n / 10);
  let next = 0;
  const noteError = (err: unknown) => {
    result.sessionErrors++;
    if (result.errorSamples.length < 5) result.errorSamples.push(err instanceof Error ? err.message : String(err));
  };

  const worker = async () => {
    while (next < n && result.sessionErrors < maxErrors) {
      let session: Session;
      const opening = nowMs();
      try {
        session = await openSession(sessionOptions);
      } catch (err) {
        noteError(err);
        continue;
      }
      result.sessionSetup.push(nowMs() - opening);
      result.sessions++;
      if (session.tlsResumed) result.tlsResumed++;
      try {
        for (let m = 0; m < options.perSession && next < n; m++) {
          const i = next++;
          if (options.rate) await waitUntil(result.startedAt + (i * 1000) / options.rate);
          const id = `${options.idPrefix}.${i}`;
          const times = await session.send({ from: FROM, to: TO, content: message(id) });
          result.start[i] = times.start;
          result.dataEnd[i] = times.dataEnd;
          result.replied[i] = times.replied;
          result.code[i] = times.reply.code;
          if (times.reply.code >= 300 && result.refusalSamples.length < 5) result.refusalSamples.push(`${times.reply.code} ${times.reply.text}`);
          if (times.reply.code === 421) break;
        }
        await session.quit();
      } catch (err) {
        noteError(err);
        session.destroy();
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  result.endedAt = nowMs();
  return result;
}

function sessionOptionsOf(options: LoadOptions): SessionOptions {
  let ticket: Buffer | undefined;
  return {
    host: options.host,
    port: options.port,
    ehloName: 'load.test',
    starttls: options.starttls,
    ca: options.ca,
    tlsSessions: options.resume ? { get: () => ticket, set: (session) => (ticket = session) } : undefined,
    timeoutMs: options.timeoutMs ?? 120_000,
  };
}

function waitUntil(at: number): Promise<void> {
  const wait = at - nowMs();
  return wait > 0 ? new Promise((resolve) => setTimeout(resolve, wait)) : Promise.resolve();
}

const idle: Session[] = [];

/** holdIdleConnections - open `count` sessions (greeting and EHLO done) and keep them; resolves with how many opened. */
export async function holdIdleConnections(options: { host: string; port: number; count: number }): Promise<{ opened: number; errors: string[] }> {
  const errors: string[] = [];
  const sessionOptions: SessionOptions = { host: options.host, port: options.port, ehloName: 'idle.test', starttls: false, timeoutMs: 30 * 60_000 };
  let left = options.count;
  // 50 at a time: a burst of 1,000 SYNs would overflow a listen backlog of 100 (Postfix's default).
  const opener = async () => {
    while (left > 0) {
      left--;
      try {
        idle.push(await openSession(sessionOptions));
      } catch (err) {
        if (errors.length < 5) errors.push(err instanceof Error ? err.message : String(err));
      }
    }
  };
  await Promise.all(Array.from({ length: 50 }, opener));
  return { opened: idle.length, errors };
}

/** releaseIdleConnections - QUIT every idle session. */
export async function releaseIdleConnections(): Promise<number> {
  const sessions = idle.splice(0);
  await Promise.all(sessions.map((s) => s.quit().catch(() => s.destroy())));
  return sessions.length;
}

export type LoadRequest =
  | { type: 'run'; options: LoadOptions }
  | { type: 'idle-open'; host: string; port: number; count: number }
  | { type: 'idle-close' };

function handle(request: LoadRequest): Promise<unknown> {
  if (request.type === 'run') return runLoad(request.options);
  if (request.type === 'idle-open') return holdIdleConnections(request);
  return releaseIdleConnections();
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      host: { type: 'string', default: '127.0.0.1' },
      port: { type: 'string' },
      messages: { type: 'string', default: '1000' },
      concurrency: { type: 'string', default: '20' },
      'per-session': { type: 'string', default: '10' },
      size: { type: 'string', default: '4096' },
      starttls: { type: 'boolean', default: false },
      resume: { type: 'boolean', default: false },
      ca: { type: 'string' },
      rate: { type: 'string' },
    },
  });
  if (!values.port) throw new Error('--port is required');
  const result = await runLoad({
    host: values.host,
    port: Number(values.port),
    messages: Number(values.messages),
    concurrency: Number(values.concurrency),
    perSession: Number(values['per-session']),
    size: Number(values.size),
    starttls: values.starttls,
    resume: values.resume,
    ca: values.ca ? readFileSync(values.ca, 'utf8') : undefined,
    idPrefix: `cli${process.pid}`,
    rate: values.rate ? Number(values.rate) : undefined,
  });
  const accepted = [...result.code.keys()].filter((i) => result.code[i]! >= 200 && result.code[i]! < 300);
  const latencies = accepted.map((i) => result.replied[i]! - result.dataEnd[i]!);
  const seconds = (result.endedAt - result.startedAt) / 1000;
  process.stdout.write(
    `${accepted.length}/${result.code.length} accepted in ${seconds.toFixed(2)} s: ${(accepted.length / seconds).toFixed(0)} msg/s; ` +
      `accept latency p50 ${percentile(latencies, 50).toFixed(1)} ms, p99 ${percentile(latencies, 99).toFixed(1)} ms; ` +
      `${result.sessions} sessions (${result.tlsResumed} TLS resumed), ${result.sessionErrors} session errors ${result.errorSamples.join('; ')} ${result.refusalSamples.join('; ')}\n`,
  );
}

if (isIpcChild()) serveRequests({ pid: process.pid }, (body) => handle(body as LoadRequest));
else if (import.meta.url === `file://${process.argv[1]}`) await main();
