// One measurement: one relay (Postfix, Postern, or none: the load straight
// into the sink, the ceiling) under one scenario, fresh: its own temp
// directory and queue, started for this run and stopped after it.
//
// Throughput: a warm-up (ctx.warmUpMessages, drained), then the load;
// the measurement ends when the sink has every accepted message, or when
// the drain timeout passes after the load ended (the rest count as
// undelivered, and the end-to-end figures cover what arrived). CPU is the
// server tree's CPU between the start of the load and that moment; memory
// is sampled every 100 ms over the same window.
// Idle: the server's memory before and after 1,000 sessions (greeted,
// EHLO'd) are opened and left idle.
//
//   startTarget        - the server of a measurement, up and registered for clean-up.
//   measureThroughput  - accepted and end-to-end rate, latencies, CPU/message, peak memory.
//   measureIdle        - memory added by idle connections.
//   warmTools          - run the load generator and the sink hot (JIT) before anything is measured.
//
// How it fails: rejects when a server cannot start (the caller reports and
// goes on); refusals and undelivered messages are counted in the measurement.
import { copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { BenchCertificates } from './certs.ts';
import type { Cleanup } from './cleanup.ts';
import type { ChildChannel } from './ipc.ts';
import type { LoadOptions, LoadRequest, LoadResult } from './load.ts';
import { startPostern, stopPosternNow } from './postern-instance.ts';
import { startPostfix, stopPostfixNow } from './postfix-instance.ts';
import { freePort } from './probe.ts';
import { startMemorySampler, treeCpuMs, treeMemory } from './proc-tree.ts';
import { ALL_SCENARIOS, warmUpSize, type Scenario } from './scenarios.ts';
import type { Arrivals, SinkCounters, SinkRequest } from './sink.ts';
import { percentile } from './stats.ts';

export type ServerKind = 'postfix' | 'postern' | 'direct';

export interface BenchContext {
  base: string;
  certs: BenchCertificates;
  sink: { channel: ChildChannel; plainPort: number; tlsPort: number; pid: number };
  load: ChildChannel;
  loadPid: number;
  cleanup: Cleanup;
  /** The Postern snapshot every measurement runs (postern-instance.ts snapshotPostern). */
  posternRoot: string;
  /** Keep Postern's CPU profiles (node --cpu-prof) here. */
  profileDir?: string;
  drainTimeoutMs: number;
  /** Messages each relay gets, drained, before a throughput run is measured (scenarios.ts warmUpFrom). */
  warmUpMessages: number;
}

export interface Measurement {
  scenario: string;
  server: ServerKind;
  run: number;
  sent: number;
  accepted: number;
  refused: number;
  arrived: number;
  /** Accepted but not at the sink when the measurement ended (the drain timeout passed). */
  undelivered: number;
  duplicates: number;
  acceptRate: number;
  e2eRate: number;
  acceptP50: number;
  acceptP99: number;
  e2eP50: number;
  e2eP99: number;
  cpuMsPerMessage: number;
  /** CPU of the load generator and the sink per message: what the relay's neighbours on the same cores used. */
  toolsCpuMsPerMessage: number;
  peakRssMb: number;
  peakPssMb: number;
  /** Connections the relay opened to the sink, and how many messages each carried on average. */
  sinkConnections: number;
  inboundSessions: number;
  /** Median time from connect to a session ready for MAIL (greeting, EHLO, STARTTLS), ms. */
  sessionSetupP50: number;
  inboundTlsResumed: number;
  /** Share of the load's STARTTLS sessions that resumed a TLS session (%). */
  inboundResumedPct: number;
  idleOpened?: number;
  idleAddedRssMb?: number;
  idleAddedPssMb?: number;
  problems: string[];
}

export interface Target {
  port: number;
  /** Root of the server's process tree; absent for direct (the sink is not the server under test). */
  rootPid?: number;
  stop(): Promise<void>;
}

/** startTarget - start the server of one measurement in dir; the sink gets plaintext or STARTTLS mail as the scenario says. */
export async function startTarget(ctx: BenchContext, server: ServerKind, dir: string, scenario: Scenario): Promise<Target> {
  const sinkPort = scenario.starttls ? ctx.sink.tlsPort : ctx.sink.plainPort;
  if (server === 'direct') return { port: sinkPort, stop: () => Promise.resolve() };
  await mkdir(dir, { recursive: true });
  if (server === 'postfix') {
    const instance = await startPostfix({ dir, port: await freePort(), sinkPort, certs: ctx.certs });
    const stop = ctx.cleanup.add(`postfix ${dir}`, () => instance.stop(), () => stopPostfixNow(instance));
    return { port: instance.port, rootPid: instance.rootPid, stop };
  }
  const profileDir = ctx.profileDir ? join(dir, 'profile') : undefined;
  const instance = await startPostern({ root: ctx.posternRoot, dir, sinkPort, sinkTls: scenario.starttls ? 'may' : 'none', certs: ctx.certs, profileDir });
  const stop = ctx.cleanup.add(`postern ${dir}`, () => instance.stop(), () => stopPosternNow(instance));
  const keepTo = ctx.profileDir;
  return {
    port: instance.port,
    rootPid: instance.rootPid,
    async stop() {
      await stop();
      if (profileDir && keepTo) await keepProfiles(profileDir, keepTo, dir);
    },
  };
}

// keepProfiles - the main thread's profile (CPU.<date>.<time>.<pid>.0.<seq>.cpuprofile; tsx's loader thread writes another).
async function keepProfiles(from: string, to: string, dir: string): Promise<void> {
  await mkdir(to, { recursive: true });
  const label = dir.split('/').pop()!;
  const files = (await readdir(from).catch(() => [])).filter((f) => /^CPU\.\d+\.\d+\.\d+\.0\.\d+\.cpuprofile$/.test(f));
  for (const [i, file] of files.entries()) await copyFile(join(from, file), join(to, `${label}${i ? `-${i}` : ''}.cpuprofile`));
}

function loadOptions(scenario: Scenario, port: number, ctx: BenchContext, idPrefix: string): LoadOptions {
  return {
    host: '127.0.0.1',
    port,
    messages: scenario.messages,
    concurrency: scenario.concurrency,
    perSession: scenario.perSession,
    size: scenario.size,
    starttls: scenario.starttls,
    resume: scenario.resume,
    ca: ctx.certs.caPem,
    idPrefix,
  };
}

/** sendAndDrain - run a load and wait until the sink has every accepted message. */
async function sendAndDrain(ctx: BenchContext, options: LoadOptions, timeoutMs: number): Promise<{ result: LoadResult; accepted: number; arrived: number }> {
  const result = await ctx.load.request<LoadResult>({ type: 'run', options } satisfies LoadRequest);
  const accepted = result.code.filter((c) => c >= 200 && c < 300).length;
  const arrived = await ctx.sink.channel.request<number>({ type: 'wait', prefix: options.idPrefix, count: accepted, timeoutMs } satisfies SinkRequest);
  return { result, accepted, arrived };
}

/** warmTools - a few thousand messages straight into the sink, plaintext and STARTTLS, so neither bench tool is measured cold. */
export async function warmTools(ctx: BenchContext): Promise<void> {
  const rounds: [number, boolean][] = [[4000, false], [1000, true]];
  for (const [messages, starttls] of rounds) {
    const port = starttls ? ctx.sink.tlsPort : ctx.sink.plainPort;
    const options = loadOptions({ ...ALL_SCENARIOS[0]!, messages, starttls }, port, ctx, `tools-warm-${starttls ? 'tls' : 'plain'}`);
    await sendAndDrain(ctx, options, 30_000);
    await ctx.sink.channel.request<Arrivals>({ type: 'collect', prefix: options.idPrefix } satisfies SinkRequest);
  }
  await ctx.sink.channel.request<SinkCounters>({ type: 'counters' } satisfies SinkRequest);
}

/** startRun - the server fresh for one run, in a directory named after the run (the label also prefixes its message ids). */
async function startRun(ctx: BenchContext, server: ServerKind, scenario: Scenario, run: number): Promise<{ label: string; dir: string; target: Target }> {
  const label = `${scenario.name}-${server}-r${run}`;
  const dir = join(ctx.base, label);
  return { label, dir, target: await startTarget(ctx, server, dir, scenario) };
}

/** measureThroughput - one run of a throughput scenario against one server. */
export async function measureThroughput(ctx: BenchContext, server: ServerKind, scenario: Scenario, run: number): Promise<Measurement> {
  const { label, dir, target } = await startRun(ctx, server, scenario, run);
  try {
    const warm = loadOptions(scenario, target.port, ctx, `${label}-warm`);
    warm.messages = ctx.warmUpMessages;
    warm.size = warmUpSize(scenario.size);
    await sendAndDrain(ctx, warm, ctx.drainTimeoutMs);
    await ctx.sink.channel.request<Arrivals>({ type: 'collect', prefix: warm.idPrefix } satisfies SinkRequest);
    await ctx.sink.channel.request<SinkCounters>({ type: 'counters' } satisfies SinkRequest);

    const cpuBefore = target.rootPid ? treeCpuMs(target.rootPid) : NaN;
    const toolsBefore = treeCpuMs(ctx.loadPid) + treeCpuMs(ctx.sink.pid);
    const sampler = target.rootPid ? startMemorySampler(target.rootPid) : undefined;
    const options = loadOptions(scenario, target.port, ctx, label);
    const { result, accepted } = await sendAndDrain(ctx, options, ctx.drainTimeoutMs);
    const cpuAfter = target.rootPid ? treeCpuMs(target.rootPid) : NaN;
    const toolsAfter = treeCpuMs(ctx.loadPid) + treeCpuMs(ctx.sink.pid);
    const memory = sampler?.stop();
    const arrivals = await ctx.sink.channel.request<Arrivals>({ type: 'collect', prefix: label } satisfies SinkRequest);
    const counters = await ctx.sink.channel.request<SinkCounters>({ type: 'counters' } satisfies SinkRequest);
    return {
      ...summarize(result, arrivals, server === 'direct'),
      scenario: scenario.name,
      server,
      run,
      accepted,
      cpuMsPerMessage: (cpuAfter - cpuBefore) / accepted,
      toolsCpuMsPerMessage: (toolsAfter - toolsBefore) / accepted,
      peakRssMb: memory?.peakRssMb ?? NaN,
      peakPssMb: memory?.peakPssMb ?? NaN,
      sinkConnections: server === 'direct' ? NaN : counters.connections,
    };
  } finally {
    await target.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

type Summary = Omit<Measurement, 'scenario' | 'server' | 'run' | 'accepted' | 'cpuMsPerMessage' | 'toolsCpuMsPerMessage' | 'peakRssMb' | 'peakPssMb' | 'sinkConnections'>;

/** summarize - rates and latencies from the load's records and the sink's arrivals. */
export function summarize(result: LoadResult, arrivals: Arrivals, direct: boolean): Summary {
  const n = result.code.length;
  const arrivedAt = new Float64Array(n).fill(NaN);
  for (let k = 0; k < arrivals.index.length; k++) arrivedAt[arrivals.index[k]!] = arrivals.time[k]!;
  const acceptLatency: number[] = [];
  const e2eLatency: number[] = [];
  let firstStart = Infinity;
  let lastReply = -Infinity;
  let lastArrival = -Infinity;
  let accepted = 0;
  let refused = 0;
  let undelivered = 0;
  let sent = 0;
  for (let i = 0; i < n; i++) {
    const code = result.code[i]!;
    if (code === 0) continue;
    sent++;
    firstStart = Math.min(firstStart, result.start[i]!);
    if (code < 200 || code >= 300) {
      refused++;
      continue;
    }
    accepted++;
    lastReply = Math.max(lastReply, result.replied[i]!);
    acceptLatency.push(result.replied[i]! - result.dataEnd[i]!);
    const arrived = arrivedAt[i]!;
    if (Number.isNaN(arrived)) {
      undelivered++;
      continue;
    }
    lastArrival = Math.max(lastArrival, arrived);
    // End to end = from the client's 250 (accepted) to the arrival at the next hop.
    e2eLatency.push(arrived - result.replied[i]!);
  }
  const problems = [...result.errorSamples.map((e) => `session: ${e}`), ...result.refusalSamples.map((r) => `refused: ${r}`)];
  if (result.sessionErrors > result.errorSamples.length) problems.push(`${result.sessionErrors} session errors in all`);
  if (undelivered > 0) problems.push(`${undelivered} accepted messages had not reached the sink when the drain timeout passed`);
  return {
    sent,
    refused,
    arrived: accepted - undelivered,
    undelivered,
    duplicates: arrivals.duplicates,
    acceptRate: accepted / ((lastReply - firstStart) / 1000),
    e2eRate: direct ? NaN : (accepted - undelivered) / ((lastArrival - firstStart) / 1000),
    acceptP50: percentile(acceptLatency, 50),
    acceptP99: percentile(acceptLatency, 99),
    e2eP50: direct ? NaN : percentile(e2eLatency, 50),
    e2eP99: direct ? NaN : percentile(e2eLatency, 99),
    inboundSessions: result.sessions,
    sessionSetupP50: percentile(result.sessionSetup, 50),
    inboundTlsResumed: result.tlsResumed,
    inboundResumedPct: result.sessions ? (100 * result.tlsResumed) / result.sessions : NaN,
    problems,
  };
}

/** measureIdle - memory added by the scenario's idle connections (greeted, EHLO'd, then silent). */
export async function measureIdle(ctx: BenchContext, server: ServerKind, scenario: Scenario, run: number): Promise<Measurement> {
  const { label, dir, target } = await startRun(ctx, server, scenario, run);
  try {
    const warm = loadOptions(scenario, target.port, ctx, `${label}-warm`);
    warm.messages = 100;
    await sendAndDrain(ctx, warm, ctx.drainTimeoutMs);
    await ctx.sink.channel.request<Arrivals>({ type: 'collect', prefix: warm.idPrefix } satisfies SinkRequest);
    await settle(2000);
    const before = treeMemory(target.rootPid!, true);
    const opened = await ctx.load.request<{ opened: number; errors: string[] }>({ type: 'idle-open', host: '127.0.0.1', port: target.port, count: scenario.idleConnections ?? 1000 } satisfies LoadRequest);
    await settle(2000);
    const after = treeMemory(target.rootPid!, true);
    await ctx.load.request<number>({ type: 'idle-close' } satisfies LoadRequest);
    return {
      ...emptyMeasurement(scenario.name, server, run),
      idleOpened: opened.opened,
      idleAddedRssMb: after.rssMb - before.rssMb,
      idleAddedPssMb: (after.pssMb ?? NaN) - (before.pssMb ?? NaN),
      peakRssMb: after.rssMb,
      peakPssMb: after.pssMb ?? NaN,
      problems: opened.errors.map((e) => `idle connection: ${e}`),
    };
  } finally {
    await target.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

function settle(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** emptyMeasurement - a measurement with nothing measured (a server that failed to start, or the idle scenario's unused fields). */
export function emptyMeasurement(scenario: string, server: ServerKind, run: number, problem?: string): Measurement {
  const none = { acceptRate: NaN, e2eRate: NaN, acceptP50: NaN, acceptP99: NaN, e2eP50: NaN, e2eP99: NaN, cpuMsPerMessage: NaN, toolsCpuMsPerMessage: NaN, peakRssMb: NaN, peakPssMb: NaN, sinkConnections: NaN };
  const counts = { sent: 0, accepted: 0, refused: 0, arrived: 0, undelivered: 0, duplicates: 0, inboundSessions: 0, sessionSetupP50: NaN, inboundTlsResumed: 0, inboundResumedPct: NaN };
  return { scenario, server, run, ...none, ...counts, problems: problem ? [problem] : [] };
}
