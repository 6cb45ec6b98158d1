// The README's configuration reference stays in step with the key table.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { CONFIG_KEYS, envName } from '../../src/config/keys.ts';

const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

describe('README configuration reference', () => {
  it.each(CONFIG_KEYS.map((k) => [k.path, k] as const))('documents %s with its default and environment variable', (_path, k) => {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${k.path}\` |`));
    expect(row, `a row for ${k.path} (run npm run docs:config)`).toBeDefined();
    expect(row).toContain(`\`${envName(k.path)}\``);
    if (k.path !== 'hostname') expect(row).toContain(`\`${JSON.stringify(k.default)}\``);
  });
  it('documents no key that does not exist', () => {
    const documented = [...readme.matchAll(/^\| `([a-zA-Z.]+)` \| `/gm)].map((m) => m[1]);
    expect(documented.filter((p) => !CONFIG_KEYS.some((k) => k.path === p))).toEqual([]);
  });
});
