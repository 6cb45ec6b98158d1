// Health: what /healthz and /readyz answer (and `postern health` prints).
//
//   live  (/healthz) - the process is alive and every SMTP listener answers:
//                      a connection to each gets a 220 greeting within 2 s
//                      (over TLS for an implicit-TLS port), or the 421 4.7.0
//                      of a listener at its connection limit (busy: said in
//                      the answer, still alive). Cached for 5 s,
//                      so a busy orchestrator does not open a session per
//                      probe.
//   ready (/readyz)  - the queue is writable (a read of its stats and a
//                      small draft written and discarded, every time: it is
//                      cheap) and its disk has the room MAIL FROM asks for
//                      (else every MAIL FROM gets 452 4.3.1, and an
//                      orchestrator should send the mail elsewhere). When a smarthost is set, the answer also says
//                      whether it is reachable with its TLS level and
//                      credentials (waited for at most 2 s; past that the
//                      answer says pending, and the next one has it),
//                      without making the relay unready: mail
//                      for a smarthost that is down waits in the queue, as
//                      in Postfix's, and a relay taken out of service (or
//                      restarted) by its orchestrator then would refuse it
//                      at the senders instead. The smarthost is asked at
//                      most once a minute; the result is kept with the time
//                      it was taken (checkedAt), good or bad.
// Checks that are already running are shared, never started twice.
//
// This module does not know the queue or outbound: the composition root
// hands it the listener addresses, the store (by its shape) and a smarthost
// probe.
//
// How it fails: live() and ready() never reject; every failure becomes a
// report with ok false and the reason, which the HTTP server answers 503.
//
//   createHealthChecks - live() and ready() over the relay's parts.
//   reachableHost      - loopback for a listener bound to every address.
//   probeGreeting      - connect to an SMTP port and wait for its 220.
//   checkQueueWritable - a store round trip that proves it can store a message.
import { connect as netConnect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import { connect as tlsConnect } from 'node:tls';
import { errorMessage } from './logger.ts';

export interface ProbeTarget {
  name: string;
  host: string;
  port: number;
  /** TLS from the first byte (submissions). */
  implicitTls: boolean;
  /** The peers the listener wants a PROXY line from (smtp.proxyProtocol): the probe, from one of them, sends "PROXY UNKNOWN" first. */
  proxyLineFrom?: (address: string) => boolean;
}

export type CheckResult = { ok: true; detail?: string } | { ok: false; error: string };

/** What the smarthost probe reports: where it went and, when it got in, the TLS version. */
export type RelayhostResult = { ok: true; address: string; tls?: string } | { ok: false; error: string };

export interface HealthReport {
  ok: boolean;
  body: Record<string, unknown>;
}

/** The part of a QueueStore the readiness check uses (by shape: this module does not import the queue). */
export interface WritableQueue {
  stats(): Promise<unknown>;
  beginMessage(): { writeBody(body: Readable): Promise<number>; discard(): Promise<void> };
}

export interface HealthDeps {
  listeners: ProbeTarget[];
  queue: WritableQueue;
  /** Whether the queue's disk has the room MAIL FROM asks for (the composition root's rule: inbound/policy.ts decideQueueSpace). */
  queueRoom: () => Promise<CheckResult>;
  /** Present when outbound.relayhost.host is set and this node delivers. */
  relayhost?: { name: string; probe: () => Promise<RelayhostResult> };
  now: () => Date;
  greetingTimeoutMs?: number;
  liveTtlMs?: number;
  relayhostTtlMs?: number;
  /** How long /readyz waits for a smarthost answer it does not have yet (2 s); past that it says pending. */
  relayhostWaitMs?: number;
}

export interface HealthChecks {
  live(): Promise<HealthReport>;
  ready(): Promise<HealthReport>;
}

/** createHealthChecks - live() and ready() over the relay's parts. */
export function createHealthChecks(deps: HealthDeps): HealthChecks {
  const greetingTimeoutMs = deps.greetingTimeoutMs ?? 2000;
  const live = cached(deps.liveTtlMs ?? 5000, deps.now, async () => {
    const results = await Promise.all(deps.listeners.map(async (l) => [l, await probeGreeting(l, greetingTimeoutMs)] as const));
    return Object.fromEntries(results.map(([l, r]) => [l.name, { address: `${l.host}:${l.port}`, ...r }]));
  });
  const relayhost = deps.relayhost;
  const smarthost = relayhost ? cached(deps.relayhostTtlMs ?? 60_000, deps.now, () => relayhost.probe()) : undefined;

  return {
    async live() {
      const { value, checkedAt } = await live();
      const failed = Object.entries(value).filter(([, r]) => !r.ok).map(([name]) => name);
      return { ok: failed.length === 0, body: { status: failed.length ? 'failing' : 'ok', checkedAt, listeners: value, ...(failed.length ? { failed } : {}) } };
    },
    async ready() {
      // The smarthost's answer never makes the relay unready, so it is not waited for long: a silent one took its
      // connect timeout, longer than a container's or an orchestrator's probe waits. It is kept for the next call.
      const asked = smarthost?.();
      asked?.catch(() => undefined);
      const [writable, room, host] = await Promise.all([checkQueueWritable(deps.queue), deps.queueRoom(), asked && Promise.race([asked, delay(deps.relayhostWaitMs ?? 2000)])]);
      const queue = writable.ok ? room : writable;
      const body: Record<string, unknown> = { queue: { ...queue, checkedAt: deps.now().toISOString() } };
      if (relayhost && asked) body.relayhost = host ? { host: relayhost.name, ...host.value, checkedAt: host.checkedAt } : { host: relayhost.name, pending: true };
      return { ok: queue.ok, body: { status: queue.ok ? 'ready' : 'not ready', ...body } };
    },
  };
}

/** delay - undefined after `ms`, without holding the process open. */
function delay(ms: number): Promise<undefined> {
  return new Promise((resolve) => {
    setTimeout(() => resolve(undefined), ms).unref();
  });
}

/** cached - a check run at most once per ttl; concurrent callers share the run in flight. */
function cached<T>(ttlMs: number, now: () => Date, run: () => Promise<T>): () => Promise<{ value: T; checkedAt: string }> {
  let last: { value: T; at: number } | undefined;
  let running: Promise<{ value: T; at: number }> | undefined;
  return async () => {
    if (last && now().getTime() - last.at < ttlMs) return { value: last.value, checkedAt: new Date(last.at).toISOString() };
    running ??= (async () => {
      const at = now().getTime();
      try {
        return (last = { value: await run(), at });
      } finally {
        running = undefined;
      }
    })();
    const result = await running;
    return { value: result.value, checkedAt: new Date(result.at).toISOString() };
  };
}

/** reachableHost - where to reach a listener bound to every address: loopback of the same family. */
export function reachableHost(bindHost: string): string {
  return bindHost === '0.0.0.0' ? '127.0.0.1' : bindHost === '::' ? '::1' : bindHost;
}

/** probeGreeting - connect to an SMTP port and wait for its 220 (RFC 5321 §4.3.1), then QUIT. */
export function probeGreeting(target: ProbeTarget, timeoutMs: number): Promise<CheckResult> {
  const host = reachableHost(target.host);
  return new Promise((resolve) => {
    const tcp = netConnect({ host, port: target.port });
    let socket: Socket = tcp;
    let text = '';
    let settled = false;
    const finish = (result: CheckResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (result.ok) socket.end('QUIT\r\n');
      else socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => finish({ ok: false, error: `no greeting within ${timeoutMs / 1000} s` }), timeoutMs);
    tcp.on('error', (err) => finish({ ok: false, error: err.message }));
    tcp.once('connect', () => {
      // The listener judges the probe by the address it came from (on Linux, a connection to 127.0.0.2 comes from
      // 127.0.0.1): from a peer smtp.proxyProtocol covers, a PROXY line goes first, before TLS, and says the probe
      // is who it is (UNKNOWN: the connection's own addresses).
      if (tcp.localAddress !== undefined && target.proxyLineFrom?.(tcp.localAddress)) tcp.write('PROXY UNKNOWN\r\n');
      // Our own certificate may be a dev one: the probe asks whether the port answers, not whom to trust.
      if (target.implicitTls) socket = tlsConnect({ socket: tcp, rejectUnauthorized: false });
      socket.setEncoding('latin1');
      socket.on('data', (chunk: string) => {
        text += chunk;
        // A reply ends with a line whose code is followed by a space (multiline replies use "220-").
        const last = text.split('\r\n').slice(0, -1).find((line) => /^\d{3}( |$)/.test(line));
        if (last) finish(greetingResult(last));
        else if (text.length > 4096) finish({ ok: false, error: 'greeting too long' });
      });
      socket.on('error', (err) => finish({ ok: false, error: err.message }));
      socket.on('close', () => finish({ ok: false, error: 'closed before the greeting' }));
    });
  });
}

/**
 * greetingResult - a 220 is a listener that answers; so is a 421 4.7.0 at the connection limit (busy, not broken: a
 * liveness probe failing then would have the orchestrator restart the relay at its busiest); anything else is not.
 */
function greetingResult(line: string): CheckResult {
  if (line.startsWith('220')) return { ok: true };
  if (/^421[ -]4\.7\.0 /.test(line)) return { ok: true, detail: `busy: ${line.slice(0, 200)}` };
  return { ok: false, error: `greeting: ${line.slice(0, 200)}` };
}

/** checkQueueWritable - read the stats, write a small draft and discard it: the store can take a message. */
export async function checkQueueWritable(queue: WritableQueue): Promise<CheckResult> {
  try {
    await queue.stats();
    const draft = queue.beginMessage();
    try {
      await draft.writeBody(Readable.from([Buffer.from('postern readiness probe\r\n')]));
    } finally {
      await draft.discard();
    }
    return { ok: true };
  } catch (err) {
    return { ok: false, error: errorMessage(err) };
  }
}
