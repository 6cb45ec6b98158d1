// The bench's scenarios, as data (issue 6): the four throughput scenarios
// (plaintext and STARTTLS, 4 KB and 100 KB: 5,000 messages over 20
// concurrent sessions of 10 messages), STARTTLS with TLS session
// resumption, 10 MB messages over 20 sessions, and 1,000 idle
// connections. The quick set (`npm run bench`) is the two 4 KB scenarios
// with 3,000 messages and one run. (With 1,000, a fresh process's first
// messages weighed too much: plaintext 4 KB took 0.94 ms of CPU per message
// against 0.63 in the full run of the same code.)
//
//   scenariosFor - the scenarios of the quick or the full bench, optionally filtered by name.
//   warmUpFrom   - the runners' --warm-up option, or WARM_UP_MESSAGES (3,000): what each relay gets, drained, before it is measured.
//   warmUpSize   - the size of those messages for a scenario of a given size: at most 100 KB.
//
// How it fails: scenariosFor throws on an unknown scenario name, warmUpFrom
// on a --warm-up that is not a whole number of at least 1.
import type { LoadOptions } from './load.ts';

/** A scenario is a load (the generator's own options) plus what it is judged by. */
export interface Scenario extends Pick<LoadOptions, 'messages' | 'concurrency' | 'perSession' | 'size' | 'starttls' | 'resume'> {
  name: string;
  title: string;
  kind: 'throughput' | 'idle';
  /**
   * The throughput targets (≥ 2× Postfix's rates) apply: its four scenarios and the resumed variant, not
   * 10 MB messages, where twice Postfix's rate is more than the load generator moves straight into the sink.
   */
  throughputTargets: boolean;
  /** The latency targets (p50 < 50 ms, p99 < 250 ms) apply. */
  latencyTargets: boolean;
  /** Peak RSS target in MB for Postern. */
  rssTargetMb: number;
  /** Idle scenario: connections held open. */
  idleConnections?: number;
}

const KB = 1024;

/**
 * Messages each relay gets, drained, before a run is measured (at most 100 KB each): a relay is measured as it
 * runs for days, not while it starts. V8 compiles Postern's hot paths over its first few thousand messages;
 * after a warm-up of 100, the next 3,000 plaintext 4 KB messages cost 1.08–1.23 ms of CPU each, after 3,000
 * they cost 0.62–0.79 (bench/ROUNDS.md, "Nineteenth round"). Postfix gets the same warm-up.
 */
const WARM_UP_MESSAGES = 3000;

/** warmUpFrom - the --warm-up option's value (`--warm-up 100` measures a relay nearly cold, as a harness that starts it would). */
export function warmUpFrom(option: string | undefined): number {
  if (option === undefined) return WARM_UP_MESSAGES;
  const messages = Number(option);
  if (!Number.isInteger(messages) || messages < 1) throw new Error(`--warm-up: ${option} is not a whole number of messages of at least 1`);
  return messages;
}

/** warmUpSize - the warm-up's message size: the scenario's, at most 100 KB (3,000 messages of 10 MB would take minutes and warm nothing more). */
export function warmUpSize(size: number): number {
  return Math.min(size, 100 * KB);
}

/** Messages per scenario in the quick bench. */
const QUICK_MESSAGES = 3000;

const throughput = (name: string, title: string, size: number, starttls: boolean, extra: Partial<Scenario> = {}): Scenario => ({
  name,
  title,
  kind: 'throughput',
  messages: 5000,
  concurrency: 20,
  perSession: 10,
  size,
  starttls,
  resume: false,
  throughputTargets: true,
  latencyTargets: size <= 4 * KB,
  rssTargetMb: 150,
  ...extra,
});

export const ALL_SCENARIOS: readonly Scenario[] = [
  throughput('plain-4k', 'plaintext, 4 KB', 4 * KB, false),
  throughput('plain-100k', 'plaintext, 100 KB', 100 * KB, false),
  throughput('tls-4k', 'STARTTLS in and out, 4 KB', 4 * KB, true),
  throughput('tls-100k', 'STARTTLS in and out, 100 KB', 100 * KB, true),
  throughput('tls-4k-resume', 'STARTTLS in and out, 4 KB, client resumes TLS sessions', 4 * KB, true, { resume: true }),
  throughput('big-10m', '10 MB messages, 20 concurrent sessions', 10 * KB * KB, false, { messages: 100, perSession: 5, throughputTargets: false, rssTargetMb: 300 }),
  { ...throughput('idle-1000', '1,000 idle connections (memory)', 4 * KB, false), kind: 'idle', idleConnections: 1000, rssTargetMb: 100 },
];

const QUICK = ['plain-4k', 'tls-4k'];

/** scenariosFor - the quick set (3,000 messages) or the full set; `only` picks by name from the full set. */
export function scenariosFor(options: { full: boolean; only?: string[]; messages?: number }): Scenario[] {
  const names = options.only ?? (options.full ? ALL_SCENARIOS.map((s) => s.name) : QUICK);
  return names.map((name) => {
    const scenario = ALL_SCENARIOS.find((s) => s.name === name);
    if (!scenario) throw new Error(`unknown scenario ${name}; known: ${ALL_SCENARIOS.map((s) => s.name).join(', ')}`);
    const messages = options.messages ?? (options.full || scenario.kind !== 'throughput' || scenario.size > 100 * KB ? scenario.messages : QUICK_MESSAGES);
    return { ...scenario, messages };
  });
}
