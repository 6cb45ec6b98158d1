// Clean-up that runs however the bench ends: a normal return, an
// exception, SIGINT/SIGTERM, or process exit. Each action has an async
// form (stop gracefully, used on the normal path and on signals) and a
// synchronous one (kill -9, rm -rf) for the 'exit' event, where nothing
// asynchronous runs any more. An action runs at most once.
//
//   Cleanup.add     - register an action; returns a function that runs it now and forgets it.
//   Cleanup.runAll  - run every pending action, newest first.
//   Cleanup.install - hook process exit, signals and uncaught errors.
//   Cleanup.tempDir - a bench's working directory, removed on every way out.
//
// How it fails: an action that throws is reported on stderr and the
// others still run; runAll never rejects.

import { rmSync } from 'node:fs';
import { chmod, mkdtemp, rm } from 'node:fs/promises';

interface Action {
  name: string;
  run(): Promise<void>;
  runSync(): void;
  done: boolean;
}

/** Cleanup - a stack of clean-up actions. */
export class Cleanup {
  readonly #actions: Action[] = [];
  /** Set once a signal or an uncaught error started the clean-up: start nothing new. */
  stopping = false;

  /** add - register; the returned function runs the action now (async form) and removes it. */
  add(name: string, run: () => Promise<void>, runSync: () => void): () => Promise<void> {
    const action: Action = { name, run, runSync, done: false };
    this.#actions.push(action);
    return () => this.#runOne(action);
  }

  async #runOne(action: Action): Promise<void> {
    if (action.done) return;
    action.done = true;
    const at = this.#actions.indexOf(action);
    if (at >= 0) this.#actions.splice(at, 1);
    try {
      await action.run();
    } catch (err) {
      process.stderr.write(`bench clean-up "${action.name}" failed: ${(err as Error).message}; forcing\n`);
      action.runSync();
    }
  }

  /** runAll - every pending action, newest first. */
  async runAll(): Promise<void> {
    for (const action of [...this.#actions].reverse()) await this.#runOne(action);
  }

  /** runAllSync - every pending action's synchronous form (process 'exit'). */
  runAllSync(): void {
    for (const action of this.#actions.splice(0).reverse()) {
      if (action.done) continue;
      action.done = true;
      try {
        action.runSync();
      } catch (err) {
        process.stderr.write(`bench clean-up "${action.name}" failed: ${(err as Error).message}\n`);
      }
    }
  }

  /**
   * tempDir - a new directory /var/tmp/PREFIX…, removed on every way out unless `keep`. /var/tmp: the same
   * disk as /tmp here; 0755 because Postfix's daemons (user postfix) must reach the queue inside it.
   */
  async tempDir(prefix: string, keep = false): Promise<string> {
    const dir = await mkdtemp(`/var/tmp/${prefix}`);
    await chmod(dir, 0o755);
    if (!keep) this.add(`remove ${dir}`, () => rm(dir, { recursive: true, force: true }), () => rmSync(dir, { recursive: true, force: true }));
    return dir;
  }

  /** install - clean up on exit, on SIGINT/SIGTERM (then exit 130/143) and on an uncaught error (exit 1). */
  install(): void {
    process.on('exit', () => this.runAllSync());
    const stopOn = (signal: NodeJS.Signals, code: number) =>
      process.once(signal, () => {
        process.stderr.write(`\nbench: ${signal}, cleaning up\n`);
        this.stopping = true;
        void this.runAll().finally(() => process.exit(code));
      });
    stopOn('SIGINT', 130);
    stopOn('SIGTERM', 143);
    const fail = (err: unknown) => {
      process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      this.stopping = true;
      void this.runAll().finally(() => process.exit(1));
    };
    process.on('uncaughtException', fail);
    process.on('unhandledRejection', fail);
  }
}
