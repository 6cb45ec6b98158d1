// Rewrites README.md's configuration reference from src/config/keys.ts
// (`npm run docs:config`); test/unit/readme.test.ts fails when they differ.
import { readFileSync, writeFileSync } from 'node:fs';
import { CONFIG_KEYS, envName } from '../src/config/keys.ts';

const readmePath = new URL('../README.md', import.meta.url);
const rows = CONFIG_KEYS.map((k) => {
  const shown = k.path === 'hostname' ? '(system host name)' : JSON.stringify(k.default);
  return `| \`${k.path}\` | \`${shown}\` | \`${envName(k.path)}\` | ${k.doc.replace(/\|/g, '\\|')} |`;
});
const readme = readFileSync(readmePath, 'utf8');
const start = readme.indexOf('| key | default | environment | meaning |');
if (start === -1) throw new Error('README.md has no configuration table');
const bodyStart = readme.indexOf('\n', readme.indexOf('\n', start) + 1) + 1;
let end = bodyStart;
while (readme.startsWith('| `', end)) end = readme.indexOf('\n', end) + 1;
writeFileSync(readmePath, readme.slice(0, bodyStart) + rows.join('\n') + '\n' + readme.slice(end));
