// Postern for the bench, started the way users start it:
// `node bin/postern.js serve --config FILE` as a child process, its queue
// under the bench's temp directory (same disk as Postfix's), the relay
// listener alone on 127.0.0.1 (port 0), every domain routed to the sink,
// outbound on, reverse lookups and HTTP off. Everything else is Postern's
// default (outbound.concurrency 100, perDestination 20, log level info), so
// the bench measures what a user gets; POSTERN_* variables in the bench's
// environment still override, as for any start.
//
//   snapshotPostern - copy the working tree's src/ and bin/ aside (others edit src/ while a bench runs).
//   startPostern - write the config, spawn, wait for "postern ready" in its log.
//   PosternInstance.stop - SIGTERM (graceful: a --cpu-prof profile is written), SIGKILL after 20 s.
//   stopPosternNow - synchronous SIGKILL for process 'exit' handlers.
//
// How it fails: startPostern rejects when the process exits before it is
// ready, or is not ready within 30 s; the log's tail is quoted.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { copyFile, cp, mkdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { buildDist } from '../scripts/build.ts';
import type { BenchCertificates } from './certs.ts';

const REPO = fileURLToPath(new URL('..', import.meta.url));

/**
 * snapshotPostern - the Postern every measurement of one bench runs: dist/
 * (built from src/ first), bin/ and package.json copied into dir at the
 * start (node_modules linked), so an edit made in the repository during a
 * long bench cannot change, or break, Postern halfway through. Resolves with the snapshot's root.
 */
export async function snapshotPostern(dir: string): Promise<string> {
  buildDist();
  await mkdir(dir, { recursive: true });
  for (const part of ['dist', 'bin']) await cp(join(REPO, part), join(dir, part), { recursive: true });
  await copyFile(join(REPO, 'package.json'), join(dir, 'package.json'));
  await symlink(join(REPO, 'node_modules'), join(dir, 'node_modules'));
  return dir;
}

export interface PosternOptions {
  /** The Postern to run: a snapshotPostern directory (default: the repository itself). */
  root?: string;
  dir: string;
  sinkPort: number;
  /** TLS level towards the sink: none (plaintext scenarios) or may (STARTTLS offered by the sink). */
  sinkTls: 'none' | 'may';
  certs: BenchCertificates;
  /** Write a V8 CPU profile (node --cpu-prof) into this directory at exit. */
  profileDir?: string;
  /** Name JavaScript frames for perf (node --perf-basic-prof: a map in /tmp/perf-PID.map). */
  perfMap?: boolean;
}

export interface PosternInstance {
  port: number;
  rootPid: number;
  logFile: string;
  stop(): Promise<void>;
  child: ChildProcess;
}

/** posternConfig - the settings the bench needs; the rest stays at Postern's defaults. */
function posternConfig(options: PosternOptions): Record<string, unknown> {
  return {
    hostname: 'postern.bench.test',
    listeners: { relay: { host: '127.0.0.1', port: 0 }, submission: { enabled: false }, submissions: { enabled: false } },
    tls: { cert: options.certs.certFile, key: options.certs.keyFile },
    queue: { backend: 'sqlite', path: join(options.dir, 'data', 'queue.db') },
    relay: { users: join(options.dir, 'data', 'users.json') },
    // 1,000 idle connections (the memory scenario; loopback is trusted, so the per-IP limit spares it); 10 MB messages.
    limits: { connections: 5000, messageSize: 52428800 },
    smtp: { reverseLookup: false },
    outbound: { enabled: true, routes: { '*': { host: '127.0.0.1', port: options.sinkPort, tls: options.sinkTls } } },
    http: { enabled: false },
  };
}

/** startPostern - a running Postern whose relay listener is ready. */
export async function startPostern(options: PosternOptions): Promise<PosternInstance> {
  await mkdir(join(options.dir, 'data'), { recursive: true });
  const configFile = join(options.dir, 'postern.yaml');
  await writeFile(configFile, stringify(posternConfig(options)));
  const logFile = join(options.dir, 'postern.log');
  const log = openSync(logFile, 'a');
  const bin = join(options.root ?? REPO, 'bin', 'postern.js');
  const profileFlags = [...(options.profileDir ? ['--cpu-prof', '--cpu-prof-dir', options.profileDir] : []), ...(options.perfMap ? ['--perf-basic-prof'] : [])];
  const child = spawn(process.execPath, [...(await shebangFlags(bin)), ...profileFlags, bin, 'serve', '--config', configFile], {
    cwd: options.dir,
    stdio: ['ignore', log, log],
  });
  closeSync(log);
  const exited = new Promise<string>((resolve) => child.once('exit', (code, signal) => resolve(String(signal ?? code))));
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  };
  try {
    const port = await waitForReady(logFile, exited, 30_000);
    return { port, rootPid: child.pid!, logFile, stop, child };
  } catch (err) {
    await stop();
    throw err;
  }
}

async function waitForReady(logFile: string, exited: Promise<string>, timeoutMs: number): Promise<number> {
  let exitedWith: string | undefined;
  void exited.then((how) => (exitedWith = how));
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && exitedWith === undefined) {
    const port = readyPort(readFileSync(logFile, 'utf8'));
    if (port !== undefined) return port;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  const tail = readFileSync(logFile, 'utf8').slice(-2000);
  throw new Error(`postern ${exitedWith ? `exited (${exitedWith})` : `not ready in ${timeoutMs} ms`}:\n${tail}`);
}

function readyPort(log: string): number | undefined {
  for (const line of log.split('\n')) {
    if (!line.includes('"postern ready"')) continue;
    const entry = JSON.parse(line) as { listeners?: { name: string; port: number }[] };
    return entry.listeners?.find((l) => l.name === 'relay')?.port;
  }
  return undefined;
}

/** stopPosternNow - SIGKILL, for process 'exit' handlers. */
export function stopPosternNow(instance: Pick<PosternInstance, 'child'>): void {
  if (instance.child.exitCode === null && instance.child.signalCode === null) instance.child.kill('SIGKILL');
}

/** shebangFlags - the node flags on bin/postern.js's `#!/usr/bin/env -S node …` line: Postern runs with them as users run it. */
async function shebangFlags(bin: string): Promise<string[]> {
  const first = (await readFile(bin, 'utf8')).split('\n', 1)[0]!;
  const match = /^#!\/usr\/bin\/env -S node((?: --?[\w-]+(?:=\S+)?)*)$/.exec(first);
  if (!match) throw new Error(`${bin}: first line is not "#!/usr/bin/env -S node [flags]": ${first}`);
  return match[1]!.trim().split(/\s+/).filter(Boolean);
}
