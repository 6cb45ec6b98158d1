// The users file (inbound/user-store.ts) with names that are also properties of every JavaScript object: they are
// names like any other, stored, listed and verified as such, and none is taken for a user that is not there.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { UserStore } from '../../src/inbound/user-store.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-users-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('knows no user "constructor" or "toString" it was never given', async () => {
  const users = new UserStore(join(dir, 'users.json'));
  await users.add('alice', 'pw');
  expect(await users.remove('constructor')).toBe(false);
  expect(await users.remove('toString')).toBe(false);
  expect(await users.verify('constructor', '')).toBe(false);
  expect(await users.list()).toEqual(['alice']);
});

it('stores, verifies and removes a user named "__proto__" like any other', async () => {
  const file = join(dir, 'users.json');
  await new UserStore(file).add('__proto__', 'secret');
  const users = new UserStore(file);
  expect(await users.list()).toEqual(['__proto__']);
  expect(await users.verify('__proto__', 'secret')).toBe(true);
  expect(await users.verify('__proto__', 'wrong')).toBe(false);
  expect(await users.remove('__proto__')).toBe(true);
  expect(await users.list()).toEqual([]);
});
