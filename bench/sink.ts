// The sink: the next hop both relays deliver to, an SMTP server on
// 127.0.0.1 (smtp-server) with two listeners: one offers STARTTLS with the
// bench certificate, one hides it (plaintext scenarios). For every message
// it records the time the whole content had arrived (just before its 250),
// keyed by the X-Bench-Id header; it counts connections, TLS sessions, TLS
// resumptions and messages, so outbound connection reuse shows.
//
//   startSink   - both listeners up; resolves with their ports and the arrival book.
//   ArrivalBook - arrivals by id prefix: wait for a count, collect, forget.
//
// How it fails: startSink rejects when a port cannot be bound. A message
// without X-Bench-Id is counted as unmatched; the same id twice is counted
// as a duplicate (the first arrival stands). It accepts everything.
//
// Run by the runner over IPC, or from a shell (prints arrivals per second):
//   tsx bench/sink.ts [--cert FILE --key FILE]
import { readFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { parseArgs } from 'node:util';
import { SMTPServer, type SMTPServerOptions } from 'smtp-server';
import { installGreetingPause, type GreetingPauseOption } from '../src/smtp/greeting-pause.ts';
import { isIpcChild, serveRequests } from './ipc.ts';
import { nowMs } from './stats.ts';

export interface SinkCounters {
  connections: number;
  tlsSessions: number;
  tlsResumed: number;
  messages: number;
  unmatched: number;
}

export interface Arrivals {
  index: Int32Array;
  time: Float64Array;
  duplicates: number;
}

interface PrefixBook {
  times: Map<number, number>;
  duplicates: number;
  waiters: { count: number; resolve(arrived: number): void }[];
}

const ID_HEADER = Buffer.from('\r\nX-Bench-Id: ');
const HEAD_LIMIT = 64 * 1024;

/** ArrivalBook - arrival times by X-Bench-Id (`prefix.index`), with waiters per prefix. */
export class ArrivalBook {
  readonly #books = new Map<string, PrefixBook>();
  counters: SinkCounters = { connections: 0, tlsSessions: 0, tlsResumed: 0, messages: 0, unmatched: 0 };

  #book(prefix: string): PrefixBook {
    let book = this.#books.get(prefix);
    if (!book) this.#books.set(prefix, (book = { times: new Map(), duplicates: 0, waiters: [] }));
    return book;
  }

  /** record - one message arrived at `time`; id undefined when it had no X-Bench-Id. */
  record(id: string | undefined, time: number): void {
    this.counters.messages++;
    const dot = id ? id.lastIndexOf('.') : -1;
    if (!id || dot < 0) {
      this.counters.unmatched++;
      return;
    }
    const book = this.#book(id.slice(0, dot));
    const index = Number(id.slice(dot + 1));
    if (book.times.has(index)) {
      book.duplicates++;
      return;
    }
    book.times.set(index, time);
    if (book.waiters.length === 0) return;
    book.waiters = book.waiters.filter((w) => {
      if (book.times.size < w.count) return true;
      w.resolve(book.times.size);
      return false;
    });
  }

  /** waitFor - resolves with the arrival count once `count` arrived for the prefix, or at the timeout. */
  waitFor(prefix: string, count: number, timeoutMs: number): Promise<number> {
    const book = this.#book(prefix);
    if (book.times.size >= count) return Promise.resolve(book.times.size);
    return new Promise((resolve) => {
      const waiter = { count, resolve };
      book.waiters.push(waiter);
      setTimeout(() => {
        book.waiters = book.waiters.filter((w) => w !== waiter);
        resolve(book.times.size);
      }, timeoutMs).unref();
    });
  }

  /** collect - the arrivals of a prefix; the book forgets them. */
  collect(prefix: string): Arrivals {
    const book = this.#book(prefix);
    this.#books.delete(prefix);
    const index = new Int32Array(book.times.size);
    const time = new Float64Array(book.times.size);
    let at = 0;
    for (const [i, t] of book.times) {
      index[at] = i;
      time[at++] = t;
    }
    return { index, time, duplicates: book.duplicates };
  }

  /** takeCounters - the counters since the last take. */
  takeCounters(): SinkCounters {
    const counters = this.counters;
    this.counters = { connections: 0, tlsSessions: 0, tlsResumed: 0, messages: 0, unmatched: 0 };
    return counters;
  }
}

/** findBenchId - the X-Bench-Id value in a message's first bytes, if there. */
function findBenchId(head: Buffer): string | undefined {
  const at = head.indexOf(ID_HEADER);
  if (at < 0) return undefined;
  const from = at + ID_HEADER.length;
  const end = head.indexOf('\r\n', from);
  return end < 0 ? undefined : head.toString('latin1', from, end);
}

function createServer(book: ArrivalBook, tls: { key: string; cert: string } | undefined): SMTPServer {
  const options: SMTPServerOptions & GreetingPauseOption = {
    ...(tls ?? {}),
    // A real next hop (Postfix's smtpd) greets at once.
    greetingPauseMs: 0,
    secure: false,
    hideSTARTTLS: !tls,
    name: 'sink.bench.test',
    banner: 'bench sink',
    disableReverseLookup: true,
    authOptional: true,
    disabledCommands: ['AUTH'],
    logger: false,
    maxClients: 100_000,
    socketTimeout: 10 * 60_000,
    onConnect(_session, callback) {
      book.counters.connections++;
      callback();
    },
    onSecure(socket, _session, callback) {
      book.counters.tlsSessions++;
      if ((socket as TLSSocket).isSessionReused()) book.counters.tlsResumed++;
      callback();
    },
    onData(stream, _session, callback) {
      let head: Buffer | undefined = Buffer.alloc(0);
      let id: string | undefined;
      stream.on('data', (chunk: Buffer) => {
        if (!head) return;
        head = Buffer.concat([head, chunk]);
        id = findBenchId(head);
        // The header block ends at the first empty line; no need to look further.
        if (id !== undefined || head.length > HEAD_LIMIT || head.includes('\r\n\r\n')) head = undefined;
      });
      stream.on('end', () => {
        book.record(id, nowMs());
        callback(null, 'Ok: sunk');
      });
    },
  };
  return new SMTPServer(options);
}

function listen(server: SMTPServer, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.server.once('error', reject);
    server.listen(port, '127.0.0.1', () => resolve((server.server.address() as AddressInfo).port));
  });
}

export interface RunningSink {
  plainPort: number;
  tlsPort: number;
  book: ArrivalBook;
  close(): Promise<void>;
}

/** startSink - the plaintext and STARTTLS listeners on 127.0.0.1 (ports 0: chosen by the system). */
export async function startSink(options: { key?: string; cert?: string; plainPort?: number; tlsPort?: number }): Promise<RunningSink> {
  await installGreetingPause();
  const book = new ArrivalBook();
  const plain = createServer(book, undefined);
  const secure = createServer(book, options.key && options.cert ? { key: options.key, cert: options.cert } : undefined);
  const plainPort = await listen(plain, options.plainPort ?? 0);
  const tlsPort = await listen(secure, options.tlsPort ?? 0);
  return {
    plainPort,
    tlsPort,
    book,
    close: () => Promise.all([plain, secure].map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined),
  };
}

export type SinkRequest =
  | { type: 'wait'; prefix: string; count: number; timeoutMs: number }
  | { type: 'collect'; prefix: string }
  | { type: 'counters' };

async function serveRunner(): Promise<void> {
  const args = parseArgs({ options: { cert: { type: 'string' }, key: { type: 'string' }, ipc: { type: 'boolean' } } }).values;
  const sink = await startSink({ cert: args.cert && readFileSync(args.cert, 'utf8'), key: args.key && readFileSync(args.key, 'utf8') });
  serveRequests({ plainPort: sink.plainPort, tlsPort: sink.tlsPort, pid: process.pid }, (body) => {
    const request = body as SinkRequest;
    if (request.type === 'wait') return sink.book.waitFor(request.prefix, request.count, request.timeoutMs);
    if (request.type === 'collect') return Promise.resolve(sink.book.collect(request.prefix));
    return Promise.resolve(sink.book.takeCounters());
  });
}

async function main(): Promise<void> {
  const args = parseArgs({ options: { cert: { type: 'string' }, key: { type: 'string' }, port: { type: 'string' }, 'tls-port': { type: 'string' } } }).values;
  const sink = await startSink({
    cert: args.cert && readFileSync(args.cert, 'utf8'),
    key: args.key && readFileSync(args.key, 'utf8'),
    plainPort: Number(args.port ?? 0),
    tlsPort: Number(args['tls-port'] ?? 0),
  });
  process.stdout.write(`sink: plaintext on 127.0.0.1:${sink.plainPort}, STARTTLS on 127.0.0.1:${sink.tlsPort}\n`);
  setInterval(() => {
    const c = sink.book.takeCounters();
    if (c.messages > 0 || c.connections > 0) process.stdout.write(`${c.messages} msg/s, ${c.connections} connections, ${c.tlsSessions} TLS (${c.tlsResumed} resumed)\n`);
  }, 1000);
}

if (isIpcChild()) await serveRunner();
else if (import.meta.url === `file://${process.argv[1]}`) await main();
