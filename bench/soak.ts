// The soak (issue 6, behind --soak MINUTES): each relay for that long at
// half its own maximum rate (its median end-to-end rate in this run's
// plaintext 4 KB scenario, or a short probe when that scenario was not
// run), plaintext 4 KB, 20 sessions of 10 messages. Memory must stay flat
// and latency stable: the table shows, per minute, the peak RSS and the
// accept and end-to-end latency percentiles of the messages sent in it.
//
//   runSoak - soak every relay in turn; resolves with the Markdown report.
//
// How it fails: a relay that cannot start gets a line saying so; the soak
// of the other relay still runs.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { LoadRequest, LoadResult } from './load.ts';
import { measureThroughput, startTarget, type BenchContext, type Measurement, type ServerKind } from './measure.ts';
import { startMemorySampler, type MemoryPeaks } from './proc-tree.ts';
import { ALL_SCENARIOS } from './scenarios.ts';
import type { Arrivals, SinkRequest } from './sink.ts';
import { median, percentile } from './stats.ts';

const PLAIN_4K = ALL_SCENARIOS.find((s) => s.name === 'plain-4k')!;

/** maxRate - the relay's end-to-end rate in this run's plain-4k measurements, or from a 1,000-message probe. */
async function maxRate(ctx: BenchContext, server: ServerKind, measured: Measurement[]): Promise<number> {
  const known = median(measured.filter((m) => m.scenario === 'plain-4k' && m.server === server).map((m) => m.e2eRate));
  if (Number.isFinite(known)) return known;
  const probe = await measureThroughput(ctx, server, { ...PLAIN_4K, messages: 1000 }, 0);
  return probe.e2eRate;
}

function windowTable(result: LoadResult, arrivals: Arrivals, memory: MemoryPeaks, minutes: number): string[] {
  const arrivedAt = new Map<number, number>();
  for (let k = 0; k < arrivals.index.length; k++) arrivedAt.set(arrivals.index[k]!, arrivals.time[k]!);
  const lines = ['| minute | messages | peak RSS, all processes (MB) | accept p50 (ms) | accept p99 (ms) | end-to-end p50 (ms) | end-to-end p99 (ms) | undelivered |', '|--:|--:|--:|--:|--:|--:|--:|--:|'];
  for (let w = 0; w < Math.ceil(minutes); w++) {
    const from = w * 60_000;
    const to = from + 60_000;
    const accept: number[] = [];
    const e2e: number[] = [];
    let undelivered = 0;
    for (let i = 0; i < result.code.length; i++) {
      const at = result.start[i]! - result.startedAt;
      if (!(at >= from && at < to) || result.code[i]! < 200 || result.code[i]! >= 300) continue;
      accept.push(result.replied[i]! - result.dataEnd[i]!);
      const arrived = arrivedAt.get(i);
      if (arrived === undefined) undelivered++;
      else e2e.push(arrived - result.replied[i]!);
    }
    const rss = Math.max(...memory.samples.filter(([t]) => t >= from && t < to).map(([, mb]) => mb));
    const f = (v: number) => (Number.isFinite(v) ? v.toFixed(0) : 'n/a');
    lines.push(`| ${w + 1} | ${accept.length} | ${f(rss)} | ${f(percentile(accept, 50))} | ${f(percentile(accept, 99))} | ${f(percentile(e2e, 50))} | ${f(percentile(e2e, 99))} | ${undelivered} |`);
  }
  return lines;
}

async function soakOne(ctx: BenchContext, server: ServerKind, minutes: number, measured: Measurement[]): Promise<string[]> {
  const rate = Math.max(1, Math.round((await maxRate(ctx, server, measured)) / 2));
  const label = `soak-${server}`;
  const dir = join(ctx.base, label);
  const target = await startTarget(ctx, server, dir, PLAIN_4K);
  try {
    const messages = Math.round(rate * minutes * 60);
    process.stderr.write(`soak ${server}: ${rate} msg/s for ${minutes} min (${messages} messages)\n`);
    const sampler = startMemorySampler(target.rootPid!, { intervalMs: 1000, pssEvery: 10 });
    const options = { host: '127.0.0.1', port: target.port, messages, concurrency: 20, perSession: 10, size: PLAIN_4K.size, starttls: false, resume: false, idPrefix: label, rate };
    const result = await ctx.load.request<LoadResult>({ type: 'run', options } satisfies LoadRequest);
    const accepted = result.code.filter((c) => c >= 200 && c < 300).length;
    await ctx.sink.channel.request<number>({ type: 'wait', prefix: label, count: accepted, timeoutMs: ctx.drainTimeoutMs } satisfies SinkRequest);
    const memory = sampler.stop();
    const arrivals = await ctx.sink.channel.request<Arrivals>({ type: 'collect', prefix: label } satisfies SinkRequest);
    return [`#### ${server}: ${rate} msg/s (half its maximum), ${minutes} min, ${accepted} of ${messages} accepted, peak RSS ${memory.peakRssMb.toFixed(0)} MB`, '', ...windowTable(result, arrivals, memory, minutes), ''];
  } finally {
    await target.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/** runSoak - the soak of each relay, one after the other. */
export async function runSoak(ctx: BenchContext, options: { minutes: number; measured: Measurement[]; servers: ServerKind[] }): Promise<string> {
  const lines = [`### Soak: plaintext 4 KB at half of each relay's maximum rate, ${options.minutes} minute${options.minutes === 1 ? '' : 's'}`, ''];
  for (const server of options.servers) {
    lines.push(...(await soakOne(ctx, server, options.minutes, options.measured).catch((err: unknown) => [`${server}: soak could not run: ${(err as Error).message}`, ''])));
  }
  return lines.join('\n');
}
