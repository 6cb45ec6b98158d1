#!/usr/bin/env node
// The `postern` command: runs the compiled entry point (`npm run build`
// makes dist/ from src/; `npm start` and `npm test` build first).
import { existsSync } from 'node:fs';

const entry = new URL('../dist/main.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('postern: dist/main.js is missing; run `npm run build` first (npm start does).\n');
  process.exit(1);
}
await import(entry.href);
