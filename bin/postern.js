#!/usr/bin/env -S node --max-semi-space-size=4 --initial-old-space-size=48
// The `postern` command: runs the compiled entry point (`npm run build`
// makes dist/ from src/; `npm start` and `npm test` build first).
// The young generation is capped at 4 MB per semi-space (V8's default grows
// to 16): with 100 KB messages the heap stayed near 30 MB instead of 54, and
// peak RSS in the bench was 139-140 MB against 150-171 without the flag, at
// the same throughput (bench/ROUNDS.md, "Memory").
// The old generation's limit starts at 48 MB, not at what a 14 MB heap
// gets: below it V8 began a full collection for every 16 MB or so of mail
// moved (socket reads and body-file reads are new buffers), with the heap
// itself at 14 of its 26 MB. With smtp-source as the client that was 86-89
// ms of CPU per 10 MB message (55-60 with the flag); at 100 KB the flag
// saved 10-20%. The price: garbage waits for the higher limit, about 15 MB
// more RSS in a long run at 4 KB (bench/ROUNDS.md, "Ninth round").
// Run this file itself (npm start, npx postern, the image) for the flags to
// apply; `node bin/postern.js` runs without them.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('postern: dist/main.js is missing; run `npm run build` first (npm start does).\n');
  process.exit(1);
}
await import(entry.href);
