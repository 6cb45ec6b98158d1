// The bench runner (issue 6): Postfix and Postern side by side in the same
// run, alternating, each started fresh per measurement, with the load
// generator and the sink as separate processes, everything on 127.0.0.1.
// Prints one Markdown table per scenario (medians over the runs, the ratio
// Postern/Postfix, the issue's targets).
//
//   npm run bench        quick: plaintext and STARTTLS 4 KB, 3,000 messages, 1 run
//   npm run bench:full   every scenario, 5,000 messages, 3 runs
//   tsx bench/run.ts [--full] [--runs N] [--messages N] [--scenarios a,b]
//                    [--servers postfix,postern,direct] [--soak MINUTES]
//                    [--drain SECONDS] [--warm-up N] [--profile] [--out FILE] [--json FILE] [--keep]
//
// --warm-up N: messages each relay gets before it is measured (default
// 3,000, scenarios.ts WARM_UP_MESSAGES; 100 shows a relay just started).
//
// How it fails: a server that cannot start is reported in its table and
// the bench goes on; anything else ends the bench with exit 1. Every way
// out (return, exception, SIGINT/SIGTERM, exit) stops Postfix and Postern
// and removes the temp directory (kept with --keep).
import { execFileSync } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { cpus, release } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeBenchCertificates } from './certs.ts';
import { Cleanup } from './cleanup.ts';
import { forkBenchChild, type ChildChannel } from './ipc.ts';
import { emptyMeasurement, measureIdle, measureThroughput, warmTools, type BenchContext, type Measurement, type ServerKind } from './measure.ts';
import { snapshotPostern } from './postern-instance.ts';
import { summarizeProfile } from './profile.ts';
import { renderHeader, renderScenario } from './report.ts';
import { scenariosFor, warmUpFrom, type Scenario } from './scenarios.ts';
import { runSoak } from './soak.ts';

const PROFILE_DIR = '/tmp/postern-bench-profiles';

function parseOptions() {
  const { values } = parseArgs({
    options: {
      full: { type: 'boolean', default: false },
      runs: { type: 'string' },
      messages: { type: 'string' },
      scenarios: { type: 'string' },
      servers: { type: 'string', default: 'postfix,postern,direct' },
      soak: { type: 'string' },
      profile: { type: 'boolean', default: false },
      out: { type: 'string' },
      json: { type: 'string' },
      keep: { type: 'boolean', default: false },
      drain: { type: 'string' },
      'warm-up': { type: 'string' },
    },
  });
  return {
    full: values.full,
    runs: Number(values.runs ?? (values.full ? 3 : 1)),
    scenarios: scenariosFor({ full: values.full, only: values.scenarios?.split(','), messages: values.messages ? Number(values.messages) : undefined }),
    servers: values.servers.split(',') as ServerKind[],
    soakMinutes: values.soak ? Number(values.soak) : undefined,
    profile: values.profile,
    out: values.out,
    json: values.json,
    keep: values.keep,
    /** Seconds to wait, after the load, for the sink to have every accepted message. */
    drain: values.drain ? Number(values.drain) : undefined,
    warmUp: warmUpFrom(values['warm-up']),
  };
}

/** serverOrder - direct first, then the relays alternating by run and scenario (neither always goes first). */
function serverOrder(servers: ServerKind[], run: number, scenarioIndex: number): ServerKind[] {
  const relays: ServerKind[] = (run + scenarioIndex) % 2 === 1 ? ['postfix', 'postern'] : ['postern', 'postfix'];
  return [...servers.filter((s) => s === 'direct'), ...relays.filter((s) => servers.includes(s))];
}

function progress(m: Measurement): string {
  if (m.idleOpened !== undefined) return `${m.idleOpened} idle connections: +${m.idleAddedRssMb?.toFixed(1)} MB RSS, +${m.idleAddedPssMb?.toFixed(1)} MB PSS`;
  const f = (v: number, d = 0) => (Number.isFinite(v) ? v.toFixed(d) : 'n/a');
  return `accepted ${f(m.acceptRate)} msg/s, end to end ${f(m.e2eRate)} msg/s, e2e p50 ${f(m.e2eP50)} ms, p99 ${f(m.e2eP99)} ms, CPU ${f(m.cpuMsPerMessage, 2)} ms/msg, RSS ${f(m.peakRssMb)} MB${m.undelivered ? `, ${m.undelivered} undelivered` : ''}${m.problems.length ? ` (${m.problems[0]})` : ''}`;
}

async function measureScenario(ctx: BenchContext, scenario: Scenario, index: number, options: ReturnType<typeof parseOptions>): Promise<Measurement[]> {
  const measurements: Measurement[] = [];
  for (let run = 1; run <= options.runs; run++) {
    for (const server of serverOrder(options.servers, run, index)) {
      if (ctx.cleanup.stopping) return measurements;
      if (scenario.kind === 'idle' && server === 'direct') continue;
      process.stderr.write(`${scenario.name} run ${run}/${options.runs} ${server}: `);
      const measure = scenario.kind === 'idle' ? measureIdle : measureThroughput;
      const m = await measure(ctx, server, scenario, run).catch((err: unknown) => emptyMeasurement(scenario.name, server, run, `could not run: ${(err as Error).message}`));
      process.stderr.write(`${progress(m)}\n`);
      measurements.push(m);
    }
  }
  return measurements;
}

async function startChildren(ctx: Pick<BenchContext, 'certs' | 'cleanup'>): Promise<Pick<BenchContext, 'sink' | 'load' | 'loadPid'>> {
  const closeLater = (name: string, channel: ChildChannel) => ctx.cleanup.add(name, () => channel.close(), () => void channel.child.kill('SIGKILL'));
  const sink = await forkBenchChild<{ plainPort: number; tlsPort: number; pid: number }>('./sink.ts', ['--cert', ctx.certs.certFile, '--key', ctx.certs.keyFile]);
  closeLater('sink', sink.channel);
  const load = await forkBenchChild<{ pid: number }>('./load.ts');
  closeLater('load generator', load.channel);
  return { sink: { channel: sink.channel, ...sink.ready }, load: load.channel, loadPid: load.ready.pid };
}

/** gitRevision - the commit Postern was snapshotted from, and whether src/ had uncommitted changes. */
function gitRevision(): string {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src', 'bin'], { encoding: 'utf8' }).trim();
    return dirty ? `${head} + uncommitted changes in src/` : head;
  } catch {
    return 'unknown';
  }
}

async function main(): Promise<void> {
  const options = parseOptions();
  const cleanup = new Cleanup();
  cleanup.install();
  const base = await cleanup.tempDir('postern-bench-', options.keep);
  const certs = await writeBenchCertificates(join(base, 'certs'));
  const posternRoot = await snapshotPostern(join(base, 'postern'));
  const children = await startChildren({ certs, cleanup });
  const ctx: BenchContext = { base, certs, cleanup, posternRoot, ...children, drainTimeoutMs: (options.drain ?? (options.full ? 300 : 45)) * 1000, warmUpMessages: options.warmUp, profileDir: options.profile ? PROFILE_DIR : undefined };

  const command = process.env.npm_lifecycle_event?.startsWith('bench') ? `npm run ${process.env.npm_lifecycle_event}` : `tsx bench/run.ts ${process.argv.slice(2).join(' ')}`;
  const postfix = execFileSync('postconf', ['-h', 'mail_version'], { encoding: 'utf8' }).trim();
  const revision = gitRevision();
  const output = [
    renderHeader({ date: new Date().toISOString().slice(0, 16).replace('T', ' '), cpus: cpus().length, kernel: release(), node: process.versions.node, postfix, mode: options.full ? 'full' : 'quick', command, revision, warmUp: options.warmUp }),
  ];
  process.stdout.write(output[0]! + '\n');
  await warmTools(ctx);
  const all: Measurement[] = [];
  for (const [index, scenario] of options.scenarios.entries()) {
    if (cleanup.stopping) break;
    const measurements = await measureScenario(ctx, scenario, index, options);
    all.push(...measurements);
    const table = renderScenario(scenario, measurements);
    output.push(table);
    process.stdout.write(`\n${table}\n`);
  }
  if (options.soakMinutes !== undefined) {
    const soak = await runSoak(ctx, { minutes: options.soakMinutes, measured: all, servers: options.servers.filter((s) => s !== 'direct') });
    output.push(soak);
    process.stdout.write(`\n${soak}\n`);
  }
  if (options.profile) {
    for (const file of (await readdir(PROFILE_DIR).catch(() => [])).filter((f) => f.endsWith('.cpuprofile'))) {
      const summary = await summarizeProfile(join(PROFILE_DIR, file), 20);
      output.push(summary);
      process.stdout.write(`\n${summary}\n`);
    }
  }
  if (options.out) await writeFile(options.out, output.join('\n'));
  if (options.json) await writeFile(options.json, JSON.stringify(all, null, 2));
  await cleanup.runAll();
}

await main();
