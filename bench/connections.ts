// What a connection costs a relay, without mail: each session connects,
// reads the greeting, says HELO, then QUIT, and waits for the close.
// Postfix and Postern run alternately, each fresh, in the same run (as in
// postfix-tools.ts); a warm-up round first. Per relay, medians of the runs:
// connections per second, and CPU per connection of the relay's process
// tree (all its processes: Postfix's master, smtpd and the rest; Postern's
// one process). With smtp-source and a connection per message, Postern's
// CPU per message is far above what it is when messages share a
// connection; this says how much of that the connection itself is.
//
//   npx tsx bench/connections.ts [--connections N] [--sessions C] [--runs R] [--relays postfix,postern] [--profile]
//
// --profile: Postern runs under node --cpu-prof; each run's profile goes to
// /tmp/postern-bench-profiles/connections-<n>/ (`npx tsx bench/profile.ts FILE`).
//
// Needs Debian's postfix package and root (a private Postfix instance, as in
// run.ts). Loopback only. Clean-up as in run.ts (cleanup.ts).
import { connect } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeBenchCertificates, type BenchCertificates } from './certs.ts';
import { Cleanup } from './cleanup.ts';
import { startPostfix, stopPostfixNow } from './postfix-instance.ts';
import { freePort } from './probe.ts';
import { snapshotPostern, startPostern, stopPosternNow } from './postern-instance.ts';
import { treeCpuMs } from './proc-tree.ts';
import { median, nowMs } from './stats.ts';

type Relay = 'postfix' | 'postern';

const { values: args } = parseArgs({
  options: {
    connections: { type: 'string', default: '4000' },
    sessions: { type: 'string', default: '20' },
    runs: { type: 'string', default: '3' },
    relays: { type: 'string', default: 'postfix,postern' },
    profile: { type: 'boolean', default: false },
  },
});
const CONNECTIONS = Number(args.connections);
const SESSIONS = Number(args.sessions);
const RUNS = Number(args.runs);
const RELAYS = args.relays.split(',').map((name): Relay => {
  if (name !== 'postfix' && name !== 'postern') throw new Error(`--relays: ${name} is not postfix or postern`);
  return name;
});

/** oneSession - connect, greeting, HELO, QUIT, close; rejects on anything else. */
function oneSession(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const expected = ['220', '250', '221'];
    let text = '';
    socket.on('data', (data: Buffer) => {
      text += data.toString('latin1');
      for (let end = text.indexOf('\r\n'); end !== -1; end = text.indexOf('\r\n')) {
        const line = text.slice(0, end);
        text = text.slice(end + 2);
        if (line[3] === '-') continue;
        const code = expected.shift();
        if (!line.startsWith(`${code} `)) return socket.destroy(new Error(`expected ${code}, got: ${line}`));
        if (code === '220') socket.write('HELO load.bench.test\r\n');
        if (code === '250') socket.write('QUIT\r\n');
      }
    });
    socket.once('error', reject);
    socket.once('close', () => (expected.length === 0 ? resolve() : reject(new Error(`closed before ${expected[0]}`))));
  });
}

/** connectMany - `count` sessions, `sessions` at a time; resolves with the wall time in ms. */
async function connectMany(port: number, count: number, sessions: number): Promise<number> {
  let left = count;
  const started = nowMs();
  await Promise.all(
    Array.from({ length: sessions }, async () => {
      while (left > 0) {
        left--;
        await oneSession(port);
      }
    }),
  );
  return nowMs() - started;
}

interface Result {
  perSecond: number;
  cpuUsPerConnection: number;
}

async function measure(relay: Relay, run: number, dir: string, posternRoot: string, certs: BenchCertificates, cleanup: Cleanup): Promise<Result> {
  // No mail is sent: the next hop is a closed port.
  const sinkPort = await freePort();
  const instance = relay === 'postfix' ? await startPostfix({ dir, port: await freePort(), sinkPort, certs }) : await startPostern({ root: posternRoot, dir, sinkPort, sinkTls: 'none', certs, ...(args.profile ? { profileDir: `/tmp/postern-bench-profiles/connections-${run + 1}` } : {}) });
  const stop = cleanup.add(`${relay} ${dir}`, () => instance.stop(), () => ('configDir' in instance ? stopPostfixNow(instance) : stopPosternNow(instance)));
  try {
    await connectMany(instance.port, Math.min(500, CONNECTIONS), SESSIONS);
    const cpuBefore = treeCpuMs(instance.rootPid);
    const wallMs = await connectMany(instance.port, CONNECTIONS, SESSIONS);
    const cpuMs = treeCpuMs(instance.rootPid) - cpuBefore;
    return { perSecond: (CONNECTIONS * 1000) / wallMs, cpuUsPerConnection: (cpuMs * 1000) / CONNECTIONS };
  } finally {
    await stop();
  }
}

async function main(): Promise<void> {
  const cleanup = new Cleanup();
  cleanup.install();
  const base = await cleanup.tempDir('postern-connections-bench-');
  const certs = await writeBenchCertificates(join(base, 'certs'));
  const posternRoot = await snapshotPostern(join(base, 'postern'));
  const results: Record<Relay, Result[]> = { postfix: [], postern: [] };
  for (let run = 0; run < RUNS && !cleanup.stopping; run++) {
    const order = run % 2 === 0 ? RELAYS : [...RELAYS].reverse();
    for (const relay of order) {
      const result = await measure(relay, run, join(base, `${relay}-${run}`), posternRoot, certs, cleanup);
      results[relay].push(result);
      process.stderr.write(`run ${run + 1}/${RUNS} ${relay}: ${result.perSecond.toFixed(0)} connections/s, ${result.cpuUsPerConnection.toFixed(0)} µs of CPU per connection\n`);
    }
  }
  const lines = [
    `## A connection without mail: greeting, HELO, QUIT (${new Date().toISOString().slice(0, 16).replace('T', ' ')})`,
    '',
    `${CONNECTIONS} connections, ${SESSIONS} at a time; medians of ${RUNS} runs.`,
    '',
    '| relay | connections/s | CPU µs per connection |',
    '|---|--:|--:|',
    ...RELAYS.map((relay) => `| ${relay} | ${median(results[relay].map((r) => r.perSecond)).toFixed(0)} | ${median(results[relay].map((r) => r.cpuUsPerConnection)).toFixed(0)} |`),
    '',
  ];
  process.stdout.write(lines.join('\n'));
  await cleanup.runAll();
}

await main();
