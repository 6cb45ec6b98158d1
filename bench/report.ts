// The bench's tables: one Markdown table per scenario, Postfix and Postern
// side by side (medians over the runs), the ratio Postern/Postfix for each
// metric, the issue's target for it with ✓ or ✗, and the no-relay ceiling
// (the load straight into the sink) where it was measured. Pure: builds
// strings from measurements.
//
//   renderScenario - the table (and any problems seen) of one scenario.
//   renderHeader   - what was run, where, with which versions.
//
// How it fails: a metric nobody measured prints "n/a"; it never throws.
import type { Measurement, ServerKind } from './measure.ts';
import type { Scenario } from './scenarios.ts';
import { median } from './stats.ts';

type Metric = keyof Measurement;

interface Row {
  label: string;
  metric: Metric;
  digits: number;
  /** The target, given the Postern value and the ratio Postern/Postfix: [text, met]; undefined: none for this scenario. */
  target?: (scenario: Scenario, postern: number, ratio: number) => [string, boolean] | undefined;
  ceiling?: boolean;
  /** Only in scenarios where this holds. */
  when?: (scenario: Scenario) => boolean;
}

const atLeastTwice = (s: Scenario, _p: number, ratio: number): [string, boolean] | undefined => (s.throughputTargets ? ['≥ 2×', ratio >= 2] : undefined);
const atMostHalf = (_s: Scenario, _p: number, ratio: number): [string, boolean] => ['≤ 0.5×', ratio <= 0.5];
const under = (limit: number) => (s: Scenario, postern: number): [string, boolean] | undefined => (s.latencyTargets ? [`< ${limit} ms`, postern < limit] : undefined);

const THROUGHPUT_ROWS: Row[] = [
  { label: 'accepted msg/s', metric: 'acceptRate', digits: 0, target: atLeastTwice, ceiling: true },
  { label: 'end-to-end msg/s', metric: 'e2eRate', digits: 0, target: atLeastTwice },
  { label: 'session setup p50 (ms): connect to ready for MAIL', metric: 'sessionSetupP50', digits: 1, ceiling: true },
  { label: 'accept latency p50 (ms)', metric: 'acceptP50', digits: 1, ceiling: true },
  { label: 'accept latency p99 (ms)', metric: 'acceptP99', digits: 1, ceiling: true },
  { label: 'end-to-end latency p50 (ms)', metric: 'e2eP50', digits: 0, target: under(50) },
  { label: 'end-to-end latency p99 (ms)', metric: 'e2eP99', digits: 0, target: under(250) },
  { label: 'CPU ms per message', metric: 'cpuMsPerMessage', digits: 2, target: atMostHalf },
  { label: 'load generator + sink CPU ms per message', metric: 'toolsCpuMsPerMessage', digits: 2, ceiling: true },
  { label: 'peak RSS, all processes (MB)', metric: 'peakRssMb', digits: 0, target: (s, p) => [`< ${s.rssTargetMb} MB`, p < s.rssTargetMb] },
  { label: 'peak PSS (MB)', metric: 'peakPssMb', digits: 0 },
  { label: 'connections opened to the sink', metric: 'sinkConnections', digits: 0 },
  { label: 'inbound TLS sessions resumed (%)', metric: 'inboundResumedPct', digits: 0, ceiling: true, when: (s) => s.resume },
  { label: 'undelivered at the drain timeout', metric: 'undelivered', digits: 0 },
  { label: 'refused by the relay', metric: 'refused', digits: 0 },
];

const IDLE_ROWS: Row[] = [
  { label: 'connections held', metric: 'idleOpened', digits: 0 },
  { label: 'RSS added (MB)', metric: 'idleAddedRssMb', digits: 1, target: (s, p) => [`< ${s.rssTargetMb} MB`, p < s.rssTargetMb] },
  { label: 'PSS added (MB)', metric: 'idleAddedPssMb', digits: 1 },
  { label: 'RSS with the connections (MB)', metric: 'peakRssMb', digits: 0 },
  { label: 'PSS with the connections (MB)', metric: 'peakPssMb', digits: 0 },
];

function medianOf(measurements: Measurement[], server: ServerKind, metric: Metric): number {
  return median(measurements.filter((m) => m.server === server).map((m) => Number(m[metric] ?? NaN)));
}

function format(value: number, digits: number): string {
  if (!Number.isFinite(value)) return 'n/a';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** renderScenario - the scenario's Markdown table, medians over its runs, plus problems seen. */
export function renderScenario(scenario: Scenario, measurements: Measurement[]): string {
  const runs = new Set(measurements.map((m) => m.run)).size;
  const hasCeiling = measurements.some((m) => m.server === 'direct');
  const rows = scenario.kind === 'idle' ? IDLE_ROWS : THROUGHPUT_ROWS;
  const shape =
    scenario.kind === 'idle'
      ? `${scenario.idleConnections} connections`
      : `${scenario.messages} messages of ${sizeText(scenario.size)}, ${scenario.concurrency} concurrent sessions × ${scenario.perSession} messages`;
  const lines = [
    `### ${scenario.title}`,
    '',
    `${shape}; ${runs} run${runs === 1 ? '' : 's'}, medians.`,
    '',
    `| metric | Postfix | Postern | Postern/Postfix | target |${hasCeiling ? ' no relay |' : ''}`,
    `|---|--:|--:|--:|---|${hasCeiling ? '--:|' : ''}`,
  ];
  for (const row of rows.filter((r) => r.when?.(scenario) ?? true)) {
    const postfix = medianOf(measurements, 'postfix', row.metric);
    const postern = medianOf(measurements, 'postern', row.metric);
    const ratio = postern / postfix;
    const target = row.target?.(scenario, postern, ratio);
    const measured = Number.isFinite(postern) && (row.target !== atLeastTwice && row.target !== atMostHalf ? true : Number.isFinite(ratio));
    const targetText = target ? `${target[0]} ${measured ? (target[1] ? '✓' : '✗') : '?'}` : '';
    const ceiling = hasCeiling ? ` ${row.ceiling ? format(medianOf(measurements, 'direct', row.metric), row.digits) : ''} |` : '';
    lines.push(`| ${row.label} | ${format(postfix, row.digits)} | ${format(postern, row.digits)} | ${Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : 'n/a'} | ${targetText} |${ceiling}`);
  }
  const problems = [...new Set(measurements.flatMap((m) => m.problems.map((p) => `${m.server} run ${m.run}: ${p}`)))];
  if (problems.length > 0) lines.push('', ...problems.slice(0, 12).map((p) => `- ${p}`));
  return lines.join('\n') + '\n';
}

function sizeText(bytes: number): string {
  return bytes >= 1024 * 1024 ? `${bytes / (1024 * 1024)} MB` : `${bytes / 1024} KB`;
}

/** renderHeader - the run's setting: machine, versions, durability, what the numbers mean. */
export function renderHeader(facts: { date: string; cpus: number; kernel: string; node: string; postfix: string; mode: string; command: string; revision: string; warmUp: number }): string {
  return [
    `## Postern vs Postfix, ${facts.mode} (${facts.date})`,
    '',
    `\`${facts.command}\` on ${facts.cpus} CPUs, Linux ${facts.kernel}, Node ${facts.node}, Postfix ${facts.postfix}, Postern ${facts.revision}. ` +
      'Both relays on 127.0.0.1, queues on the same disk, 250 only after fsync; next hop: the bench sink on loopback. ' +
      `Each relay measured after ${facts.warmUp.toLocaleString('en-US')} warm-up messages. ` +
      'Postern/Postfix > 1 is better for rates, < 1 for latency, CPU and memory.',
    '',
  ].join('\n');
}
