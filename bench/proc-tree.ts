// What a server costs, read from /proc: the CPU time and memory of a
// process and all its descendants (Postfix: the master and every daemon it
// started; Postern: the node process).
//
//   listTree    - a pid and its descendants (via /proc/PID/task/TID/children).
//   treeCpuMs   - user + system CPU of the tree, including children it already reaped.
//   treeMemory  - resident memory of the tree: RSS summed, and PSS (shared pages split).
//   startMemorySampler - sample treeMemory every 100 ms (PSS every second); keeps the peaks.
//   isRunning   - alive and not a zombie.
//   snapshotTree / killSnapshot - remember a tree, later kill -9 those of its processes still alive
//                  (a pid is killed only if its start time still matches: never a reused pid).
//
// How it fails: processes come and go while we read; a pid that vanished
// mid-read counts as zero, never an error. A root pid that is gone gives
// an empty tree.
import { readdirSync, readFileSync } from 'node:fs';

const TICK_MS = 10; // USER_HZ is 100 on Linux (getconf CLK_TCK)
const PAGE_KB = 4;

function read(path: string): string | undefined {
  try {
    return readFileSync(path, 'latin1');
  } catch {
    return undefined;
  }
}

/** listTree - root and every descendant alive now. */
export function listTree(root: number): number[] {
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue;
    }
    out.push(pid);
    for (const tid of tasks) {
      const children = read(`/proc/${pid}/task/${tid}/children`);
      if (children) for (const child of children.trim().split(' ')) if (child) queue.push(Number(child));
    }
  }
  return out;
}

function statFields(pid: number): string[] | undefined {
  const stat = read(`/proc/${pid}/stat`);
  // The command name may hold spaces and parentheses: fields start after the last ")"; fields[0] is field 3 (state).
  return stat ? stat.slice(stat.lastIndexOf(')') + 2).split(' ') : undefined;
}

/** isRunning - the process exists and is not a zombie. */
export function isRunning(pid: number): boolean {
  const state = statFields(pid)?.[0];
  return state !== undefined && state !== 'Z' && state !== 'X';
}

export type TreeSnapshot = { pid: number; startTime: string }[];

/** snapshotTree - the tree's pids with their start times. */
export function snapshotTree(root: number): TreeSnapshot {
  return listTree(root).flatMap((pid) => {
    const fields = statFields(pid);
    return fields ? [{ pid, startTime: fields[19]! }] : [];
  });
}

/** killSnapshot - SIGKILL every process of the snapshot that is still the same process. */
export function killSnapshot(snapshot: TreeSnapshot): void {
  for (const { pid, startTime } of snapshot) {
    if (statFields(pid)?.[19] !== startTime) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone in between
    }
  }
}

/** cpuTicks - utime + stime + cutime + cstime of one process (fields 14-17 of /proc/PID/stat). */
function cpuTicks(pid: number): number {
  const fields = statFields(pid);
  if (!fields) return 0;
  // utime is field 14 → fields[11]; then stime, cutime, cstime.
  return Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]);
}

/**
 * treeCpuMs - CPU used so far by the tree. A process's cutime/cstime hold
 * the CPU of children it has reaped, so a Postfix daemon that exited
 * during the run still counts (through the master).
 */
export function treeCpuMs(root: number): number {
  return listTree(root).reduce((sum, pid) => sum + cpuTicks(pid), 0) * TICK_MS;
}

export interface TreeMemory {
  processes: number;
  rssMb: number;
  /** Proportional set size: shared pages divided among the processes sharing them; undefined when not read. */
  pssMb?: number;
}

/** treeMemory - RSS (and PSS when asked) summed over the tree. */
export function treeMemory(root: number, withPss: boolean): TreeMemory {
  const pids = listTree(root);
  let rssKb = 0;
  let pssKb = 0;
  for (const pid of pids) {
    const statm = read(`/proc/${pid}/statm`);
    if (statm) rssKb += Number(statm.split(' ')[1]) * PAGE_KB;
    if (withPss) {
      const rollup = read(`/proc/${pid}/smaps_rollup`);
      const match = rollup ? /^Pss:\s+(\d+) kB/m.exec(rollup) : null;
      if (match) pssKb += Number(match[1]);
    }
  }
  return { processes: pids.length, rssMb: rssKb / 1024, ...(withPss ? { pssMb: pssKb / 1024 } : {}) };
}

export interface MemoryPeaks {
  peakRssMb: number;
  peakPssMb: number;
  peakProcesses: number;
  /** Every sample: [ms since start, RSS MB] (the soak reports them per window). */
  samples: [number, number][];
}

/** startMemorySampler - sample the tree's memory until stop(); returns the peaks. */
export function startMemorySampler(root: number, options: { intervalMs?: number; pssEvery?: number } = {}): { stop(): MemoryPeaks } {
  const intervalMs = options.intervalMs ?? 100;
  const pssEvery = options.pssEvery ?? 10;
  const peaks: MemoryPeaks = { peakRssMb: 0, peakPssMb: 0, peakProcesses: 0, samples: [] };
  const started = Date.now();
  let count = 0;
  const sample = () => {
    const memory = treeMemory(root, count++ % pssEvery === 0);
    peaks.peakRssMb = Math.max(peaks.peakRssMb, memory.rssMb);
    peaks.peakPssMb = Math.max(peaks.peakPssMb, memory.pssMb ?? 0);
    peaks.peakProcesses = Math.max(peaks.peakProcesses, memory.processes);
    peaks.samples.push([Date.now() - started, memory.rssMb]);
  };
  sample();
  const timer = setInterval(sample, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      // One last look with PSS, so a short run still has a PSS figure.
      count = 0;
      sample();
      return peaks;
    },
  };
}
