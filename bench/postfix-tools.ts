// The comparison as an outside harness would make it, with Postfix's own
// test tools instead of ours: smtp-source sends (HELO, no PIPELINING, 80-byte
// lines, by default one message per connection), the relay forwards to
// smtp-sink, which counts. Postfix and Postern run alternately, each fresh,
// in the same run. What it reports per case, medians of the runs: accepted
// msg/s (smtp-source's wall time), end-to-end msg/s (until smtp-sink has
// every message), CPU per message of the relay's process tree over both,
// peak RSS of that tree, and the ratio Postern/Postfix.
// Plaintext only: smtp-source has no STARTTLS.
//
//   npx tsx bench/postfix-tools.ts [--messages N] [--sessions C] [--sizes 4096,102400] [--reuse no,yes] [--runs R] [--relays postfix,postern] [--sink-delay S] [--recipients N] [--warm-up N] [--profile] [--perf]
//
// --warm-up N: messages each relay gets before it is measured (default
// 3,000, scenarios.ts WARM_UP_MESSAGES; 100 shows a relay just started).
//
// --sink-delay S: smtp-sink waits S seconds before it answers each DATA
// (smtp-sink -w), a next hop slower than the senders, such as a smarthost
// far away: what the relay's queue is for.
// --recipients N: smtp-source -r N, N recipients per message (1rcpt@sink.test,
// 2rcpt@sink.test, ...: one destination, so one transaction to the next hop).
// --profile: Postern runs under node --cpu-prof; each run's profile goes to
// /tmp/postern-bench-profiles/tools-<size>-<one|shared>-<n>/ (`npx tsx bench/profile.ts FILE`).
// --perf: `perf record` samples Postern's CPU from the end of the warm-up to
// the last delivery, into /tmp/postern-bench-profiles/tools-<size>-<one|shared>-<n>.perf.data,
// and the top symbols are printed (perf-record.ts says why perf). perf's own
// CPU is not in the relay's, but it shares the cores: read the rates of such
// a run as a profile's, not as a measurement.
//
// Needs Debian's postfix package (smtp-source, smtp-sink, a private Postfix
// instance as in run.ts), `script` (util-linux: smtp-sink prints its counter
// only to a terminal) and root. Clean-up as in run.ts (cleanup.ts).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { writeBenchCertificates, type BenchCertificates } from './certs.ts';
import { Cleanup } from './cleanup.ts';
import { startPostfix, stopPostfixNow } from './postfix-instance.ts';
import { freePort } from './probe.ts';
import { snapshotPostern, startPostern, stopPosternNow } from './postern-instance.ts';
import { perfTopSymbols, startPerfRecord } from './perf-record.ts';
import { startMemorySampler, treeCpuMs } from './proc-tree.ts';
import { warmUpFrom, warmUpSize } from './scenarios.ts';
import { median, nowMs } from './stats.ts';

type Relay = 'postfix' | 'postern';

interface Case {
  size: number;
  /** smtp-source -d: the session sends its next message over the same connection. */
  reuse: boolean;
}

interface Result {
  accepted: number;
  endToEnd: number;
  cpuMsPerMessage: number;
  peakRssMb: number;
}

const { values: args } = parseArgs({
  options: {
    messages: { type: 'string', default: '3000' },
    sessions: { type: 'string', default: '20' },
    sizes: { type: 'string', default: '4096,102400' },
    runs: { type: 'string', default: '3' },
    relays: { type: 'string', default: 'postfix,postern' },
    reuse: { type: 'string', default: 'no,yes' },
    'sink-delay': { type: 'string', default: '0' },
    recipients: { type: 'string', default: '1' },
    profile: { type: 'boolean', default: false },
    perf: { type: 'boolean', default: false },
    'warm-up': { type: 'string' },
  },
});
const MESSAGES = Number(args.messages);
const SESSIONS = Number(args.sessions);
const WARM_UP = warmUpFrom(args['warm-up']);
const RUNS = Number(args.runs);
const SINK_DELAY = Number(args['sink-delay']);
if (!Number.isInteger(SINK_DELAY) || SINK_DELAY < 0) throw new Error(`--sink-delay: ${args['sink-delay']} is not a whole number of seconds`);
const RECIPIENTS = Number(args.recipients);
if (!Number.isInteger(RECIPIENTS) || RECIPIENTS < 1) throw new Error(`--recipients: ${args.recipients} is not a whole number from 1`);
const RELAYS = args.relays.split(',').map((name): Relay => {
  if (name !== 'postfix' && name !== 'postern') throw new Error(`--relays: ${name} is not postfix or postern`);
  return name;
});
/** Measurements made so far: each gets a directory of its own under the bench's. */
let measurements = 0;
/** Where --profile and --perf write. */
const PROFILES = '/tmp/postern-bench-profiles';

/** smtp-sink on loopback, counting what it accepted (its -c counter needs a terminal: `script` gives it one). */
class SmtpSink {
  count = 0;
  readonly #child: ChildProcess;
  /** The command line up to the address, which pkill finds it by. */
  readonly #listen: string;

  constructor(readonly port: number) {
    this.#listen = `smtp-sink -u nobody ${SINK_DELAY > 0 ? `-w ${SINK_DELAY} ` : ''}-c 127.0.0.1:${port}`;
    this.#child = spawn('script', ['-qfc', `${this.#listen} 1000`, '/dev/null'], { stdio: ['ignore', 'pipe', 'inherit'] });
    this.#child.once('error', (error) => {
      process.stderr.write(`smtp-sink (through script) did not start: ${error.message}\n`);
      process.exitCode = 1;
    });
    // The counter line is rewritten in place ("sess=… quit=… mesg=N\r"); a chunk may end inside one.
    let text = '';
    this.#child.stdout!.on('data', (data: Buffer) => {
      text = (text + data.toString()).slice(-200);
      const counts = [...text.matchAll(/mesg=(\d+)\s/g)];
      if (counts.length > 0) this.count = Number(counts[counts.length - 1]![1]);
    });
  }

  async waitFor(count: number, timeoutMs: number): Promise<number> {
    const deadline = nowMs() + timeoutMs;
    while (this.count < count && nowMs() < deadline) await new Promise((resolve) => setTimeout(resolve, 5));
    return nowMs();
  }

  /** stop - smtp-sink itself (a child of `script`), then script. */
  stop(): void {
    spawnSync('pkill', ['-f', `${this.#listen} `]);
    this.#child.kill();
  }
}

function smtpSource(port: number, messages: number, sessions: number, testCase: Case): Promise<void> {
  const args = ['-s', String(sessions), '-m', String(messages), '-l', String(testCase.size), '-f', 'sender@source.test', '-t', 'rcpt@sink.test', '-r', String(RECIPIENTS)];
  if (testCase.reuse) args.push('-d');
  return new Promise((resolve, reject) => {
    const child = spawn('smtp-source', [...args, `127.0.0.1:${port}`], { stdio: 'inherit' });
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`smtp-source exited ${code}`))));
  });
}

async function measure(relayName: Relay, testCase: Case, base: string, certs: BenchCertificates, posternRoot: string, cleanup: Cleanup): Promise<Result> {
  const dir = join(base, `${relayName}-${++measurements}`);
  await mkdir(dir);
  const sink = new SmtpSink(await freePort());
  const stopSink = cleanup.add(`smtp-sink ${sink.port}`, () => Promise.resolve(sink.stop()), () => sink.stop());
  try {
    const relay =
      relayName === 'postfix'
        ? await startPostfix({ dir, port: await freePort(), sinkPort: sink.port, certs })
        : await startPostern({ root: posternRoot, dir, sinkPort: sink.port, sinkTls: 'none', certs, profileDir: profileDirFor(testCase), perfMap: args.perf });
    const stopRelay = cleanup.add(`${relayName} ${dir}`, () => relay.stop(), () => ('configDir' in relay ? stopPostfixNow(relay) : stopPosternNow(relay)));
    try {
      await smtpSource(relay.port, WARM_UP, SESSIONS, { ...testCase, size: warmUpSize(testCase.size) });
      await sink.waitFor(WARM_UP, 120_000);
      if (sink.count < WARM_UP) throw new Error(`${relayName}: only ${sink.count} of ${WARM_UP} warm-up messages reached smtp-sink`);
      const before = sink.count;
      const perf = args.perf && relayName === 'postern' ? await startPerfRecord(relay.rootPid, await perfFileFor(testCase)) : undefined;
      const cpuBefore = treeCpuMs(relay.rootPid);
      const memory = startMemorySampler(relay.rootPid);
      const started = nowMs();
      await smtpSource(relay.port, MESSAGES, SESSIONS, testCase);
      const acceptedAt = nowMs();
      const deliveredAt = await sink.waitFor(before + MESSAGES, 300_000);
      const cpu = treeCpuMs(relay.rootPid) - cpuBefore;
      const peaks = memory.stop();
      if (perf) {
        await perf.stop();
        process.stderr.write(`perf: ${perf.file} (perf report -i ${perf.file}); CPU of its own by symbol:\n${perfTopSymbols(perf.file, 25)}\n`);
      }
      if (sink.count < before + MESSAGES) throw new Error(`${relayName}: only ${sink.count - before} of ${MESSAGES} messages reached smtp-sink`);
      return {
        accepted: (MESSAGES * 1000) / (acceptedAt - started),
        endToEnd: (MESSAGES * 1000) / (deliveredAt - started),
        cpuMsPerMessage: cpu / MESSAGES,
        peakRssMb: peaks.peakRssMb,
      };
    } finally {
      await stopRelay();
    }
  } finally {
    await stopSink();
  }
}

/** profileDirFor - where this measurement's CPU profile goes, with --profile (written when Postern stops). */
function profileDirFor(testCase: Case): string | undefined {
  if (!args.profile) return undefined;
  const dir = join(PROFILES, measurementName(testCase));
  process.stderr.write(`profile: ${dir}\n`);
  return dir;
}

/** perfFileFor - where this measurement's perf recording goes, with --perf. */
async function perfFileFor(testCase: Case): Promise<string> {
  await mkdir(PROFILES, { recursive: true });
  return join(PROFILES, `${measurementName(testCase)}.perf.data`);
}

/** measurementName - tools-<size>-<one|shared>-<n>, the name of this measurement's profile or recording. */
function measurementName(testCase: Case): string {
  return `tools-${testCase.size}-${testCase.reuse ? 'shared' : 'one'}-${measurements}`;
}

function describeCase(testCase: Case): string {
  const size = testCase.size >= 1024 ? `${Math.round(testCase.size / 1024)} KB` : `${testCase.size} B`;
  return `${size}, ${testCase.reuse ? 'messages share a connection (smtp-source -d)' : 'one message per connection (smtp-source default)'}`;
}

function table(testCase: Case, results: Record<Relay, Result[]>): string {
  const row = (name: string, pick: (r: Result) => number, digits: number, better: 'higher' | 'lower') => {
    const [postfix, postern] = (['postfix', 'postern'] as const).map((relay) => median(results[relay].map(pick)));
    const ratio = postern! / postfix!;
    const format = (v: number) => v.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
    return `| ${name} | ${format(postfix!)} | ${format(postern!)} | ${ratio.toFixed(2)}× (${better} is better) |`;
  };
  return [
    `#### ${describeCase(testCase)}`,
    '',
    `${MESSAGES} messages${RECIPIENTS > 1 ? ` of ${RECIPIENTS} recipients each` : ''} over ${SESSIONS} concurrent smtp-source sessions, next hop smtp-sink${SINK_DELAY > 0 ? `, which waits ${SINK_DELAY} s before it answers each DATA` : ''}; each relay measured after ${WARM_UP.toLocaleString('en-US')} warm-up messages; medians of ${RUNS} runs.`,
    '',
    '| metric | Postfix | Postern | Postern/Postfix |',
    '|---|--:|--:|--:|',
    row('accepted msg/s', (r) => r.accepted, 0, 'higher'),
    row('end-to-end msg/s', (r) => r.endToEnd, 0, 'higher'),
    row('CPU ms per message', (r) => r.cpuMsPerMessage, 2, 'lower'),
    row('peak RSS (MB)', (r) => r.peakRssMb, 0, 'lower'),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const cleanup = new Cleanup();
  cleanup.install();
  const base = await cleanup.tempDir('postern-tools-bench-');
  const certs = await writeBenchCertificates(join(base, 'certs'));
  const posternRoot = await snapshotPostern(join(base, 'postern'));
  const cases: Case[] = args.sizes.split(',').flatMap((size) => args.reuse.split(',').map((reuse) => ({ size: Number(size), reuse: reuse === 'yes' })));
  const out: string[] = [`## Postfix's smtp-source → relay → smtp-sink (${new Date().toISOString().slice(0, 16).replace('T', ' ')})`, ''];
  for (const testCase of cases) {
    const results: Record<Relay, Result[]> = { postfix: [], postern: [] };
    for (let run = 0; run < RUNS && !cleanup.stopping; run++) {
      // Alternate which relay goes first.
      const order = run % 2 === 0 ? RELAYS : [...RELAYS].reverse();
      for (const relay of order) {
        const result = await measure(relay, testCase, base, certs, posternRoot, cleanup);
        results[relay].push(result);
        process.stderr.write(
          `${describeCase(testCase)} run ${run + 1}/${RUNS} ${relay}: accepted ${result.accepted.toFixed(0)} msg/s, end to end ${result.endToEnd.toFixed(0)} msg/s, CPU ${result.cpuMsPerMessage.toFixed(2)} ms/msg, RSS ${result.peakRssMb.toFixed(0)} MB\n`,
        );
      }
    }
    if (RELAYS.length === 2) out.push(table(testCase, results));
  }
  process.stdout.write(out.join('\n'));
  await cleanup.runAll();
}

await main();
