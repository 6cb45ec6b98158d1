// Compiles src/ to dist/ (tsconfig.build.json), the JavaScript that
// bin/postern.js runs: plain Node, no TypeScript loader in the process
// (tsx's loader thread alone was ~25 MB of RSS). Incremental, so a build
// with nothing changed takes about a second. The tests and the bench call
// buildDist before they start Postern as a child process, so they never run
// a stale dist/.
//
//   buildDist - run tsc on tsconfig.build.json in the repository; throws with tsc's output if it fails.
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('..', import.meta.url));

export function buildDist(): void {
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  try {
    execFileSync(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: REPO, stdio: 'pipe' });
  } catch (error) {
    const output = (error as { stdout?: Buffer }).stdout?.toString() ?? '';
    throw new Error(`building dist/ failed (tsc -p tsconfig.build.json):\n${output}`, { cause: error });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) buildDist();
