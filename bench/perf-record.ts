// The CPU of a running Postern as Linux's `perf` counts it, for the
// runners' --perf. V8's own profiler (--profile) samples the event loop by
// wall time, and on two busy cores it blames whatever call gave the core
// away (a socket write that wakes the reader, a call to the thread pool);
// perf counts CPU, the kernel's and the thread pool's included
// (bench/ROUNDS.md, "Eighth round"). Postern runs with --perf-basic-prof
// then, so its JavaScript frames have names.
//
//   startPerfRecord - `perf record -g` on a process until stop(), into a file.
//   perfTopSymbols  - the symbols with the most CPU of their own, as `perf report` lists them.
//
// How it fails: startPerfRecord rejects when perf does not start (Debian's
// linux-perf package) and stop() when perf exits with an error;
// perfTopSymbols rejects when `perf report` fails.
import { spawn, spawnSync } from 'node:child_process';

export interface PerfRecording {
  /** Where the samples go. */
  readonly file: string;
  /** stop - end the recording (SIGINT, as perf expects) and resolve once the file is written. */
  stop(): Promise<void>;
}

/** startPerfRecord - sample `pid` and its threads (cpu-clock, 999 Hz, call stacks) into `file`. */
export function startPerfRecord(pid: number, file: string): Promise<PerfRecording> {
  const child = spawn('perf', ['record', '-e', 'cpu-clock', '-F', '999', '-g', '-p', String(pid), '-o', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  return new Promise((resolve, reject) => {
    child.once('error', (error) => reject(new Error(`perf did not start (Debian's linux-perf package): ${error.message}`)));
    child.once('spawn', () =>
      resolve({
        file,
        async stop() {
          child.kill('SIGINT');
          const { code, signal } = await exited;
          // Attached with -p, perf ends on SIGINT with 128 + 2 once the file is written.
          if (code !== 0 && code !== 130 && signal !== 'SIGINT') throw new Error(`perf record exited ${code ?? signal}: ${stderr.trim()}`);
        },
      }),
    );
  });
}

/** perfTopSymbols - the first `count` lines of `perf report`'s self time by symbol. */
export function perfTopSymbols(file: string, count: number): string {
  const report = spawnSync('perf', ['report', '-i', file, '--stdio', '--no-children', '--sort', 'dso,sym', '-g', 'none'], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
  if (report.status !== 0) throw new Error(`perf report -i ${file} failed: ${report.stderr.trim()}`);
  return report.stdout
    .split('\n')
    .filter((line) => /^\s+\d+\.\d+%/.test(line))
    .slice(0, count)
    .join('\n');
}
