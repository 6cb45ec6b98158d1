// Requests between the runner and its bench children (the load generator
// and the sink), over Node's IPC channel with structured-clone
// serialization (typed arrays cross without JSON). Each request carries an
// id and the child answers with the same id.
//
//   forkBenchChild - start bench/<file>.ts under tsx and wait for its "ready" message.
//   ChildChannel   - the runner's end: request(body) → the child's answer.
//   serveRequests  - the child's end: answer each request; exit when the runner goes away.
//
// How it fails: request() rejects when the child answers with an error or
// exits first; forkBenchChild rejects when the child exits before ready.
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

interface Envelope {
  rid: number;
  body?: unknown;
  error?: string;
}

type Pending = { resolve(value: unknown): void; reject(err: Error): void };

/** ChildChannel - numbered requests to one child, answers matched by number. */
export class ChildChannel {
  #next = 1;
  readonly #pending = new Map<number, Pending>();
  #gone: Error | undefined;

  constructor(readonly child: ChildProcess, readonly name: string) {
    child.on('message', (message: Envelope) => {
      const pending = this.#pending.get(message.rid);
      if (!pending) return;
      this.#pending.delete(message.rid);
      if (message.error !== undefined) pending.reject(new Error(`${name}: ${message.error}`));
      else pending.resolve(message.body);
    });
    child.once('exit', (code, signal) => {
      this.#gone = new Error(`${name} exited (${signal ?? code ?? 'unknown'})`);
      for (const pending of this.#pending.values()) pending.reject(this.#gone);
      this.#pending.clear();
    });
  }

  /** request - send one request and wait for its answer. */
  request<T>(body: unknown): Promise<T> {
    if (this.#gone) return Promise.reject(this.#gone);
    const rid = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(rid, { resolve: (value) => resolve(value as T), reject });
      this.child.send({ rid, body } satisfies Envelope);
    });
  }

  /** close - end the child (it exits on disconnect) and wait for it. */
  async close(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    if (this.child.connected) this.child.disconnect();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

/** forkBenchChild - run bench/<file> under tsx with an IPC channel; resolves with the channel and the child's ready payload. */
export async function forkBenchChild<T>(file: string, args: string[] = []): Promise<{ channel: ChildChannel; ready: T }> {
  const path = fileURLToPath(new URL(file, import.meta.url));
  const child = fork(path, [...args, '--ipc'], { execArgv: ['--import', 'tsx'], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const channel = new ChildChannel(child, file);
  const ready = await new Promise<T>((resolve, reject) => {
    const onMessage = (message: Envelope) => {
      if (message.rid !== 0) return;
      child.off('message', onMessage);
      resolve(message.body as T);
    };
    child.on('message', onMessage);
    child.once('exit', (code, signal) => reject(new Error(`${file} exited (${signal ?? code ?? 'unknown'}) before it was ready`)));
  });
  return { channel, ready };
}

/** serveRequests - in a child: announce ready, answer every request with the handler's result, exit when the parent disconnects. */
export function serveRequests(ready: unknown, handler: (body: unknown) => Promise<unknown>): void {
  const send = (message: Envelope) => {
    if (process.connected) process.send!(message);
  };
  process.on('message', (message: Envelope) => {
    handler(message.body).then(
      (body) => send({ rid: message.rid, body }),
      (err: unknown) => send({ rid: message.rid, error: err instanceof Error ? err.stack ?? err.message : String(err) }),
    );
  });
  process.on('disconnect', () => process.exit(0));
  send({ rid: 0, body: ready });
}

/** isIpcChild - whether this process was started by forkBenchChild (run by the runner, not from a shell). */
export function isIpcChild(): boolean {
  return typeof process.send === 'function' && process.argv.includes('--ipc');
}
