// Where Postern's time goes: a summary of a V8 CPU profile (node
// --cpu-prof, written by the Postern child when the runner is given
// --profile). Self time per function, inclusive time per function (each
// sample counted once per function on its stack), and self time per area
// (a package under node_modules, a directory of src/, Node's internals,
// the garbage collector, idle).
//
//   summarizeProfile - the three tables of one .cpuprofile as Markdown.
//
// How it fails: rejects when the file is not a readable CPU profile.
//   tsx bench/profile.ts FILE.cpuprofile [TOP]
import { readFile } from 'node:fs/promises';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** areaOf - the package, src/ (or compiled dist/) directory or runtime part a script URL belongs to. */
function areaOf(url: string, name: string): string {
  if (!url) return name.startsWith('(') ? name : '(native)';
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg) return pkg[1]!;
  const src = /\/(src|dist|bench)\/([^/]+)\//.exec(url) ?? /\/(src|dist)\/([^/]+\.[tj]s)/.exec(url);
  if (src) return `${src[1]}/${src[2]}`;
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0]}`;
  return url.split('/').slice(-2).join('/');
}

function functionKey(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url ? `${url.replace(/^file:\/\/.*?\/(node_modules|src|dist)\//, '$1/').replace(/^file:\/\//, '')}:${lineNumber + 1}` : '';
  return `${functionName || '(anonymous)'}${where ? ` ${where}` : ''}`;
}

function table(title: string, entries: [string, number][], total: number, top: number): string[] {
  const lines = [`| ${title} | ms | % |`, '|---|--:|--:|'];
  for (const [name, us] of entries.sort((a, b) => b[1] - a[1]).slice(0, top)) lines.push(`| \`${name}\` | ${(us / 1000).toFixed(0)} | ${((100 * us) / total).toFixed(1)} |`);
  return lines;
}

/** summarizeProfile - self, inclusive and per-area time of a .cpuprofile, as Markdown tables. */
export async function summarizeProfile(file: string, top = 25): Promise<string> {
  const profile = JSON.parse(await readFile(file, 'utf8')) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const area = new Map<string, number>();
  let total = 0;
  let idle = 0;
  profile.samples.forEach((id, i) => {
    const us = profile.timeDeltas[i] ?? 0;
    const node = byId.get(id);
    if (!node) return;
    total += us;
    if (node.callFrame.functionName === '(idle)') idle += us;
    const key = functionKey(node);
    self.set(key, (self.get(key) ?? 0) + us);
    const a = areaOf(node.callFrame.url, node.callFrame.functionName);
    area.set(a, (area.get(a) ?? 0) + us);
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const k = functionKey(byId.get(at)!);
      if (seen.has(k) || k.startsWith('(root)')) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + us);
    }
  });
  return [
    `Profile ${file}: ${(total / 1000).toFixed(0)} ms sampled, ${(idle / 1000).toFixed(0)} ms idle (${((100 * idle) / total).toFixed(0)}%).`,
    '',
    ...table('area (self time)', [...area], total, top),
    '',
    ...table('function (self time)', [...self].filter(([k]) => !k.startsWith('(idle)')), total, top),
    '',
    ...table('function (inclusive time)', [...inclusive].filter(([k]) => !k.startsWith('(idle)') && !k.startsWith('(program)')), total, top),
    '',
  ].join('\n');
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [file, top] = process.argv.slice(2);
  if (!file) throw new Error('usage: tsx bench/profile.ts FILE.cpuprofile [TOP]');
  process.stdout.write(await summarizeProfile(file, top ? Number(top) : 25));
}
