// The queue's free-space reader (src/queue/free-space.ts) on a real directory:
// what it reads, how long a reading serves, a reading still running, and a
// directory that is gone.
import { mkdir, mkdtemp, rm, statfs } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { createFreeSpaceReader, FREE_SPACE_MAX_AGE_MS } from '../../src/queue/free-space.ts';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'postern-free-space-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

it('reads the bytes available on the directory’s file system, as statfs gives them (bavail, not bfree)', async () => {
  const fs = await statfs(dir);
  const read = await createFreeSpaceReader(dir)();
  // Other processes write to the same disk between the two readings.
  expect(read).toBeGreaterThan(0);
  expect(Math.abs(read! - fs.bavail * fs.bsize)).toBeLessThan(64 * 1024 * 1024);
});

it('serves one reading for FREE_SPACE_MAX_AGE_MS after it came back, then reads again', async () => {
  let now = 1_000_000;
  const read = createFreeSpaceReader(dir, { now: () => now });
  const first = read();
  await first;
  now += FREE_SPACE_MAX_AGE_MS - 1;
  expect(read()).toBe(first);
  now += 1;
  const second = read();
  expect(second).not.toBe(first);
  expect(await second).toBeGreaterThan(0);
});

it('serves a reading still running to everyone who asks, however long it takes', async () => {
  let now = 0;
  const read = createFreeSpaceReader(dir, { now: () => now });
  const first = read();
  now += FREE_SPACE_MAX_AGE_MS * 100;
  expect(read()).toBe(first);
  await first;
});

it('reads a directory that is gone as not known, and reads again once it is back', async () => {
  let now = 0;
  const read = createFreeSpaceReader(dir, { now: () => now });
  await rm(dir, { recursive: true });
  expect(await read()).toBeUndefined();
  await mkdir(dir);
  expect(await read()).toBeUndefined();
  now += FREE_SPACE_MAX_AGE_MS;
  expect(await read()).toBeGreaterThan(0);
});

it('takes what the store will still take by itself (reserved) off each reading, and reads a reserve that fails as not known', async () => {
  const GB = 2 ** 30;
  let now = 0;
  let reserve = 0;
  const read = createFreeSpaceReader(dir, { now: () => now, reserved: () => Promise.resolve(reserve) });
  const plain = (await read())!;
  reserve = 100 * GB; // far more than other test files' writes move the disk by meanwhile
  now += FREE_SPACE_MAX_AGE_MS;
  const reserved = (await read())!;
  expect(Math.abs(plain - reserved - 100 * GB)).toBeLessThan(GB);

  const failing = createFreeSpaceReader(dir, {
    reserved: () => {
      throw new Error('stat failed');
    },
  });
  expect(await failing()).toBeUndefined();
});
