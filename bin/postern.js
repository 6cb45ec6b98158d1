#!/usr/bin/env -S node --max-semi-space-size=4
// The `postern` command: runs the compiled entry point (`npm run build`
// makes dist/ from src/; `npm start` and `npm test` build first).
// The young generation is capped at 4 MB per semi-space (V8's default grows
// to 16): with 100 KB messages the heap stayed near 30 MB instead of 54, and
// peak RSS in the bench was 139-140 MB against 150-171 without the flag, at
// the same throughput (bench/README.md, "Memory"). Run this file itself
// (npm start, npx postern, the image) for the flag to apply;
// `node bin/postern.js` runs without it.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('postern: dist/main.js is missing; run `npm run build` first (npm start does).\n');
  process.exit(1);
}
await import(entry.href);
