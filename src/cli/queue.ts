// `postern queue list|shape|show|cat|retry|hold|release|delete|bounce|flush`: the operator's
// view of the queue, for people (text) or machines (--json). Works beside a
// running relay: the relay's scheduler sees the changes on its next look
// (at most a second later). The relay's HTTP queue API is this same code
// (createQueueApi), so both answer with the same JSON.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { pipeline } from 'node:stream/promises';
import type { Config } from '../config/config.ts';
import { durationMs } from '../config/values.ts';
import type { QueueApi } from '../observability/http-server.ts';
import { silentLogger } from '../observability/logger.ts';
import { leaseOwnerName } from '../queue/lease-owner.ts';
import { openQueueStore } from '../queue/open-store.ts';
import { bounceMessages, type BounceContext } from '../queue/operator-bounce.ts';
import { isQueueId } from '../queue/queue-id.ts';
import { cleanReply } from '../smtp/replies.ts';
import { formatShape, queueShape, recipientDomains } from './queue-shape.ts';
import type { MessageDetails, MessageSelector, MessageState, QueuedMessageSummary, QueueStore, QueueVerb } from '../queue/queue-store.ts';

type Output = { json?: boolean };

async function withStore<T>(config: Config, work: (store: QueueStore) => Promise<T>): Promise<T> {
  // A queue no relay created is a wrong path or schema: said so, not shown as an empty queue.
  const store = await openQueueStore(config, { existing: true });
  try {
    return await work(store);
  } finally {
    await store.close();
  }
}

function print(text: string): void {
  process.stdout.write(text);
}

/** Which messages `queue list` shows: those with a recipient still to be tried in `domain`, or from `sender` ('<>': the null sender). */
export interface ListFilter {
  domain?: string;
  sender?: string;
}

/**
 * listQueue - print the queue, oldest first; with --all the done messages too, with their outcome; with a
 * filter only the messages it selects; with --ids only their ids, one a line (for `queue VERB -`). An empty
 * plain listing says how many finished messages `--all` would show.
 */
export async function listQueue(config: Config, options: Output & ListFilter & { all?: boolean; ids?: boolean }): Promise<void> {
  const includeDone = options.all === true;
  const filtered = options.domain !== undefined || options.sender !== undefined;
  const { messages, finished } = await withStore(config, async (store) => {
    const listed = selectMessages(await store.listMessages({ includeDone }), options);
    if (options.json || options.ids || includeDone || filtered || listed.length > 0) return { messages: listed, finished: 0 };
    return { messages: listed, finished: await store.countDone() };
  });
  if (options.json) print(JSON.stringify(messages.map(summaryJson), null, 2) + '\n');
  else if (options.ids) print(messages.map((m) => `${m.id}\n`).join(''));
  else if (filtered && messages.length === 0) print('No message matches\n');
  else print(formatTable(messages, Date.now()) + (finished > 0 ? `(${finished} finished message${finished === 1 ? '' : 's'}: postern queue list --all)\n` : ''));
}

/**
 * selectMessages - the messages a filter selects. A domain matches a recipient not yet delivered or bounced
 * (any recipient of a done message), ignoring case and a final dot; a sender matches the whole address,
 * ignoring case.
 */
export function selectMessages(messages: QueuedMessageSummary[], filter: ListFilter): QueuedMessageSummary[] {
  const domain = filter.domain?.toLowerCase().replace(/\.$/, '');
  const sender = filter.sender === undefined ? undefined : filter.sender === '<>' ? '' : filter.sender.toLowerCase();
  return messages.filter((m) => {
    if (sender !== undefined && m.mailFrom.toLowerCase() !== sender) return false;
    return domain === undefined || recipientDomains(m).includes(domain);
  });
}

/** shapeQueue - `queue shape`: messages not done by destination domain and age (Postfix's qshape); with a sender filter, its messages only. */
export async function shapeQueue(config: Config, options: Pick<ListFilter, 'sender'>): Promise<void> {
  const messages = await withStore(config, async (store) => selectMessages(await store.listMessages(), options));
  print(formatShape(queueShape(messages, new Date())));
}

/** showMessage - everything about one message, attempts and TLS facts included; exit 1 if unknown. */
export async function showMessage(config: Config, id: string, options: Output): Promise<void> {
  const details = await withStore(config, (store) => store.showMessage(id));
  if (!details) {
    process.stderr.write(`postern: no message ${id} in the queue\n`);
    process.exitCode = 1;
    return;
  }
  print(options.json ? JSON.stringify(details, null, 2) + '\n' : formatDetails(details));
}

/**
 * printMessage - a message's stored bytes on stdout, as they go to the next hop (our Received header first;
 * Postfix's postcat -q); exit 1 if unknown, or done (its body is not kept).
 */
export async function printMessage(config: Config, id: string): Promise<void> {
  await withStore(config, async (store) => {
    const details = await store.showMessage(id);
    if (!details || details.state === 'done') {
      process.stderr.write(`postern: no message ${id} in the queue${details ? ' (it is done: its body is not kept)' : ''}\n`);
      process.exitCode = 1;
      return;
    }
    // `queue cat ID | head`: the reader has what it wanted; postcat is silent then too. Only stdout's EPIPE: one
    // from the queue's side (a database socket) is an error.
    let stdoutError: NodeJS.ErrnoException | undefined;
    const onStdoutError = (err: NodeJS.ErrnoException) => (stdoutError = err);
    process.stdout.on('error', onStdoutError);
    try {
      await pipeline(store.readBody(id), process.stdout, { end: false });
    } catch (err) {
      if (err !== stdoutError || stdoutError?.code !== 'EPIPE') throw err;
    } finally {
      process.stdout.off('error', onStdoutError);
    }
  });
}

/**
 * changeMessages - apply a verb to ids or to every message; names each id left unchanged with its reason (exit 1
 * when one is unknown, done, or held for a retry: whyUnchanged), and a retried message whose delivery is in flight.
 * The id `-` reads the ids from stdin, separated by white space (Postfix's postsuper -h -).
 */
export async function changeMessages(config: Config, verb: QueueVerb, given: string[], options: Output & { all?: boolean }): Promise<void> {
  const fromStdin = given.length === 1 && given[0] === '-';
  // Both is refused, as the HTTP API refuses it: `delete --all ID` must not empty the queue. No ids on stdin is
  // no message to change, as postsuper -h - takes an empty list.
  if (options.all ? given.length > 0 : given.length === 0) {
    process.stderr.write(`postern: queue ${verb} needs message ids or --all${options.all ? ', not both' : ''}\n`);
    process.exitCode = 3;
    return;
  }
  const ids = fromStdin ? (await readStdin()).split(/\s+/).filter(Boolean) : given;
  const selector: MessageSelector = options.all ? { all: true } : { ids };
  const now = new Date();
  // The leases a bounce takes are this process's: a relay restarted on this machine takes back what a crash left.
  const context: BounceContext = {
    now, hostname: config.hostname, leaseMs: durationMs(config.outbound.lease), log: silentLogger(),
    owner: leaseOwnerName({ machine: hostname(), pid: process.pid, token: randomBytes(4).toString('hex') }),
  };
  const { changed, unchanged, why, inFlight } = await withStore(config, async (store) => {
    const result = await changeResult(store, verb, selector, context);
    const states = await Promise.all(result.unchanged.map(async (id) => (await store.showMessage(id))?.state));
    // A leased delivery keeps its lease, and its attempt records its own next attempt (the store's retry leaves
    // it): say so, rather than let "retry: 1 message" promise an attempt that will not come. A bounce leaves it
    // to that attempt too.
    const named = (verb === 'retry' || verb === 'bounce') && !options.all ? result.changed : [];
    const leases = await Promise.all(named.map(async (id) => ({ id, lease: (await store.showMessage(id))?.deliveries.find((d) => d.leasedUntil && d.leasedUntil > now) })));
    return { ...result, why: states.map((state) => whyUnchanged(verb, state)), inFlight: leases.filter((l) => l.lease !== undefined) };
  });
  if (options.json) print(JSON.stringify({ verb, changed, unchanged }, null, 2) + '\n');
  else {
    print(`${verb}: ${changed.length} message${changed.length === 1 ? '' : 's'}${changed.length ? ` (${changed.join(', ')})` : ''}\n`);
    for (const { id, lease } of inFlight) {
      process.stderr.write(`postern: ${id}: an attempt is under way (${lease!.leasedBy ?? 'a worker'}, lease until ${lease!.leasedUntil!.toISOString()}); ${UNDER_WAY[verb]}\n`);
    }
    unchanged.forEach((id, i) => process.stderr.write(`postern: ${id} not changed: ${why[i]!.reason}\n`));
  }
  // Already as asked (hold on a held message) is no failure, as Postfix's postsuper has it; unknown or done is.
  if (why.some((w) => w.failed)) process.exitCode = 1;
}

/** What a verb leaves to an attempt under way, said after naming it. */
const UNDER_WAY: Partial<Record<QueueVerb, string>> = {
  retry: 'it sets its own next attempt: retry again once it ends',
  bounce: 'its recipients were left to it: bounce again once it ends',
};

/** whyUnchanged - why a verb left a message as it was (`state` undefined: no such message), and whether that is a failure. */
export function whyUnchanged(verb: QueueVerb, state: MessageState | undefined): { reason: string; failed: boolean } {
  if (state === undefined) return { reason: 'no such message in the queue', failed: true };
  if (state === 'done') return { reason: 'done: it was delivered or returned', failed: true };
  if (verb === 'hold' && state === 'held') return { reason: 'already held', failed: false };
  if (verb === 'release' && state !== 'held') return { reason: 'not held', failed: false };
  if (verb === 'retry' && state === 'held') return { reason: 'held: release it first', failed: true };
  if (verb === 'bounce') return { reason: 'an attempt is under way: bounce it again once it ends', failed: true };
  return { reason: `${state} (changed meanwhile?)`, failed: true };
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** applyVerb - the one place a verb meets the store (the CLI and the HTTP API share it); `context` says when, and who bounces. */
export function applyVerb(store: QueueStore, verb: QueueVerb, selector: MessageSelector, context: BounceContext): Promise<string[]> {
  switch (verb) {
    case 'hold':
      return store.holdMessages(selector);
    case 'release':
      return store.releaseMessages(selector);
    case 'retry':
      return store.retryMessages(selector, context.now);
    case 'delete':
      return store.deleteMessages(selector);
    case 'bounce':
      return bounceMessages(store, selector, context);
  }
}

/** What the log says of a message a verb changed, in postsuper's words (a bounce logs its own line, with its report). */
const CHANGED_WORDS: Record<Exclude<QueueVerb, 'bounce'>, string> = {
  hold: 'placed on hold by the operator',
  release: 'released from hold by the operator',
  retry: 'set to be tried now by the operator',
  delete: 'removed by the operator',
};

/**
 * changeResult - a verb applied, as `--json` and the HTTP API report it: the ids that changed and those that did not;
 * each change logged to context.log (the relay's log for the HTTP API), as Postfix's postsuper logs it.
 */
export async function changeResult(store: QueueStore, verb: QueueVerb, selector: MessageSelector, context: BounceContext): Promise<{ verb: QueueVerb; changed: string[]; unchanged: string[] }> {
  const changed = await applyVerb(store, verb, selector, context);
  if (verb !== 'bounce') for (const id of changed) context.log.info({ queueId: id }, CHANGED_WORDS[verb]);
  const unchanged = 'all' in selector ? [] : selector.ids.filter((id) => !changed.includes(id));
  return { verb, changed, unchanged };
}

/**
 * createQueueApi - the HTTP queue API over the relay's store: the same calls and JSON as `postern queue … --json`;
 * a bounce takes its leases as the relay's own owner, and logs to the relay's log.
 */
export function createQueueApi(store: QueueStore, bouncer: Omit<BounceContext, 'now'>, now: () => Date = () => new Date()): QueueApi {
  return {
    isQueueId,
    list: async (options) => (await store.listMessages(options)).map(summaryJson),
    show: (id) => store.showMessage(id),
    change: (verb, selector) => changeResult(store, verb, selector, { ...bouncer, now: now() }),
  };
}

function summaryJson(m: QueuedMessageSummary) {
  return {
    id: m.id,
    sender: m.mailFrom,
    recipients: m.recipients,
    size: m.size,
    receivedAt: m.receivedAt.toISOString(),
    state: m.state,
    ...(m.outcome !== undefined && { outcome: m.outcome }),
    recipientStates: m.recipientStates,
    ...(m.nextAttemptAt !== undefined && { nextAttemptAt: m.nextAttemptAt.toISOString() }),
    ...(m.leasedUntil !== undefined && { leasedUntil: m.leasedUntil.toISOString() }),
  };
}

/** stateText - the STATE column: the state, and for a done message what became of it ("done: delivered"). */
function stateText(m: QueuedMessageSummary): string {
  return m.outcome === undefined ? m.state : `${m.state}: ${m.outcome}`;
}

/**
 * formatTable - the human listing: one line per message; under one in flight, that it is (postqueue -p's "*");
 * under a deferred one, as postqueue -p gives the reason, each deferred recipient with its last reply and when
 * the next attempt is.
 */
function formatTable(messages: QueuedMessageSummary[], nowMs: number): string {
  if (messages.length === 0) return 'Mail queue is empty\n';
  const rows = messages.map((m) => [m.id, stateText(m), String(m.size), formatAge(nowMs - m.receivedAt.getTime()), m.mailFrom || '<>', m.recipients.join(', ')]);
  const header = ['ID', 'STATE', 'SIZE', 'AGE', 'SENDER', 'RECIPIENTS'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n';
  const entries = messages.map((m, i) => line(rows[i]!) + inFlight(m, nowMs) + whyDeferred(m, nowMs));
  return line(header) + entries.join('') + `-- ${messages.length} message${messages.length === 1 ? '' : 's'}\n`;
}

/** inFlight - the line under a message a worker is delivering now (its lease not lapsed). */
function inFlight(m: QueuedMessageSummary, nowMs: number): string {
  return m.leasedUntil !== undefined && m.leasedUntil.getTime() > nowMs ? `    being delivered now (lease until ${m.leasedUntil.toISOString()})\n` : '';
}

/** whyDeferred - the lines under a deferred message: each deferred recipient's last reply, then the next attempt. */
function whyDeferred(m: QueuedMessageSummary, nowMs: number): string {
  if (m.state !== 'deferred') return '';
  const waiting = m.recipientStates.filter((r) => r.state === 'deferred').map((r) => `    ${r.address}: ${r.reply === undefined ? 'no reply recorded' : cleanReply(r.reply)}\n`);
  const next = m.nextAttemptAt === undefined ? '' : `    next attempt ${m.nextAttemptAt.getTime() > nowMs ? `in ${formatAge(m.nextAttemptAt.getTime() - nowMs)}` : 'now'}\n`;
  return waiting.join('') + next;
}

/** formatDetails - `queue show` for people: envelope, recipients, then every attempt with its TLS record. */
export function formatDetails(d: MessageDetails): string {
  const out = [
    `Message ${d.id} (${stateText(d)}), ${d.size} bytes, received ${d.receivedAt.toISOString()}`,
    `  from ${d.mailFrom || '<>'} via ${d.envelope.client.listener} from ${d.envelope.client.address}${d.envelope.client.authUser ? ` as ${d.envelope.client.authUser}` : ''}${d.envelope.client.tlsVersion ? ` over ${d.envelope.client.tlsVersion}` : ' in plaintext'}`,
    `  body ${d.envelope.bodyType}${d.envelope.smtpUtf8 ? ', SMTPUTF8' : ''}${d.envelope.requireTls ? ', REQUIRETLS' : ''}`,
    'Recipients:',
    ...d.recipientStates.map((r) => `  ${r.address}: ${r.state}${r.reply ? ` (${cleanReply(r.reply)})` : ''}`),
    'Attempts:',
  ];
  if (d.attempts.length === 0) out.push('  none yet');
  for (const a of d.attempts) {
    const tls = a.tls ? `${a.tls.version} ${a.tls.cipher}, ${a.tls.verified ? 'verified' : `not verified (${a.tls.verifyError ?? 'unknown'})`}` : 'plaintext';
    out.push(
      `  ${a.startedAt.toISOString()} ${a.domain} -> ${a.host ?? '(no host)'}${a.ip ? ` [${a.ip}]:${a.port}` : ''}: ${a.outcome}`,
      `    TLS: ${a.host ? tls : '-'}; policy ${a.policy.level} (from ${a.policy.source})`,
      `    reply: ${cleanReply(a.reply)}`,
    );
  }
  const pending = d.deliveries.filter((x) => x.nextAttemptAt && d.state !== 'done');
  const now = Date.now();
  for (const x of pending) {
    const tries = `after ${x.attempts} attempt${x.attempts === 1 ? '' : 's'}`;
    // A lease not lapsed: a worker is delivering it now (or died holding it: the owner names its machine and pid).
    if (x.leasedUntil && x.leasedUntil.getTime() > now) out.push(`Being delivered to ${x.domain} now by ${x.leasedBy ?? 'a worker'} (${tries}; leased until ${x.leasedUntil.toISOString()})`);
    else if (d.state === 'held') out.push(`Held: no attempt for ${x.domain} until released (${tries})`);
    else out.push(`Next attempt for ${x.domain}: ${x.nextAttemptAt!.toISOString()} (${tries})`);
  }
  return out.join('\n') + '\n';
}

/** formatAge - "42s", "7m", "3h", "2d". */
function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
