// Postern as a separate process, started the way users start it
// (bin/postern.js serve --config FILE, or npm start), for tests that kill it.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import type { ListenerName } from '../../src/config/config.ts';

export const POSTERN_BIN = fileURLToPath(new URL('../../bin/postern.js', import.meta.url));

export interface ChildRelay {
  process: ChildProcess;
  ports: Record<ListenerName, number>;
  /** exited - resolves with the exit code or signal. */
  exited: Promise<number | NodeJS.Signals | null>;
}

const REPO = fileURLToPath(new URL('../..', import.meta.url));

/**
 * startChildRelay - spawn `postern serve` and wait for its "postern ready" log line; with `viaNpmStart`, as the
 * README's `npm start` (the process is npm's).
 */
export async function startChildRelay(configFile: string, env: NodeJS.ProcessEnv = {}, viaNpmStart = false): Promise<ChildRelay> {
  const [command, args] = viaNpmStart ? ['npm', ['start', '--silent', '--', '--config', configFile]] : [process.execPath, [POSTERN_BIN, 'serve', '--config', configFile]];
  const child = spawn(command, args, { cwd: REPO, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const ports = await new Promise<Record<ListenerName, number>>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on('line', (line) => {
      // npm's own lines are not JSON.
      if (!line.startsWith('{')) return;
      const entry = JSON.parse(line) as { msg?: string; listeners?: { name: ListenerName; port: number }[] };
      if (entry.msg === 'postern ready') resolve(Object.fromEntries(entry.listeners!.map((l) => [l.name, l.port])) as Record<ListenerName, number>);
    });
    void exited.then((how) => reject(new Error(`postern exited (${String(how)}) before it was ready: ${stderr}`)));
  });
  return { process: child, ports, exited };
}

/** queueCli - `postern queue ARGS` in a child process on a relay's queue; exit code and stdout. */
export async function queueCli(relay: { dir: string; config: { queue: { path: string } } }, ...args: string[]): Promise<{ code: number; out: string }> {
  const file = join(relay.dir, 'cli.yaml');
  await writeFile(file, stringify({ queue: { path: relay.config.queue.path } }));
  return new Promise((resolve) => {
    execFile(process.execPath, [POSTERN_BIN, 'queue', ...args, '--config', file], (err, stdout) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, out: stdout });
    });
  });
}
