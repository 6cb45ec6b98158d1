// Group commit (group-commit.ts): which items share a batch, and when a
// batch waits for more. Real timers and the real event loop: the wait
// follows how busy the loop is, so one test keeps it busy and one leaves it
// idle.
import { afterEach, describe, expect, it } from 'vitest';
import { BUSY_UTILIZATION, createGroupCommit, keepWaiting, SPACING_STEP_MS, type BatchSpacing } from '../../src/queue/group-commit.ts';
import { COMMIT_SPACING, type WriteItem } from '../../src/queue/sqlite/sqlite-store.ts';
import { keepLoopBusy } from '../helpers/busy-loop.ts';

/** A runBatch that records its batches and holds the first one until `release` is called. */
function recordingBatches() {
  const batches: string[][] = [];
  let release!: () => void;
  const firstHeld = new Promise<void>((resolve) => (release = resolve));
  const runBatch = async (items: string[]) => {
    batches.push(items);
    if (batches.length === 1) await firstHeld;
    return items.map((item) => `done ${item}`);
  };
  return { batches, runBatch, release: () => release() };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * secondDuringFirst - 'a' alone in a first batch that takes `firstBatchMs`, 'b' added while it is in flight;
 * resolves once the first batch is done, the event loop kept busy throughout unless `busy` is false.
 */
async function secondDuringFirst(spacing: BatchSpacing<string>, { busy = true, firstBatchMs = 5 } = {}) {
  const { batches, runBatch, release } = recordingBatches();
  const commit = createGroupCommit(runBatch, spacing);
  if (busy) stopBusy = keepLoopBusy();
  const a = commit.add('a');
  await sleep(5);
  const b = commit.add('b');
  await sleep(firstBatchMs - 5);
  release();
  await a;
  return { batches, commit, b };
}

let stopBusy: (() => void) | undefined;
afterEach(() => stopBusy?.());

describe('createGroupCommit', () => {
  it('answers each item with its own result; items added while a batch is in flight form the next one', async () => {
    const { batches, runBatch, release } = recordingBatches();
    const commit = createGroupCommit(runBatch);
    const a = commit.add('a');
    await sleep(5);
    const bc = [commit.add('b'), commit.add('c')];
    release();
    expect(await Promise.all([a, ...bc])).toEqual(['done a', 'done b', 'done c']);
    expect(batches).toEqual([['a'], ['b', 'c']]);
    await commit.idle();
  });

  it('starts the next batch at once when the items that came in do not show several writers', async () => {
    const { batches, commit, b } = await secondDuringFirst({ ms: 1_000, concurrent: () => false });
    await sleep(50);
    await Promise.all([b, commit.add('c')]);
    expect(batches).toEqual([['a'], ['b'], ['c']]);
  });

  it('with several writers and a busy event loop, holds the next batch back to gather what arrives, up to the spacing from the last start', async () => {
    // The first batch takes 100 ms: the next may start 300 ms after it started, not after it ended.
    const { batches, commit, b } = await secondDuringFirst({ ms: 300, concurrent: (_batch, arrived) => arrived.length > 0 }, { firstBatchMs: 100 });
    await sleep(50);
    const c = commit.add('c');
    await sleep(200);
    await Promise.all([b, c, commit.add('d')]);
    expect(batches).toEqual([['a'], ['b', 'c'], ['d']]);
  });

  it('with several writers but an idle event loop, starts the next batch without waiting for the spacing', async () => {
    const { batches, commit, b } = await secondDuringFirst({ ms: 2_000, concurrent: (_batch, arrived) => arrived.length > 0 }, { busy: false });
    await new Promise((resolve) => setImmediate(resolve));
    expect(batches).toEqual([['a'], ['b']]); // no step of waiting either: the loop idled through the first batch
    await sleep(100);
    await Promise.all([b, commit.add('c')]);
    expect(batches).toEqual([['a'], ['b'], ['c']]);
  });

  it('does not hold the next item back when nothing arrived during the last batch', async () => {
    const { batches, runBatch, release } = recordingBatches();
    const commit = createGroupCommit(runBatch, { ms: 1_000, concurrent: () => true });
    stopBusy = keepLoopBusy();
    release();
    await commit.add('a');
    const b = commit.add('b');
    await sleep(20);
    expect(batches).toEqual([['a'], ['b']]);
    await b;
  });

  it('idle() waits for a batch held back by spacing', async () => {
    const { batches, commit, b } = await secondDuringFirst({ ms: 300, concurrent: () => true });
    await commit.idle();
    expect(batches).toEqual([['a'], ['b']]);
    await expect(b).resolves.toBe('done b');
  });
});

describe('keepWaiting', () => {
  it('waits another step only while a whole step is left and the loop stayed busy', () => {
    expect(keepWaiting(10, 2, 1)).toBe(true);
    expect(keepWaiting(10, 2, BUSY_UTILIZATION)).toBe(true);
    expect(keepWaiting(10, 2, BUSY_UTILIZATION - 0.01)).toBe(false);
    expect(keepWaiting(10, 10 - SPACING_STEP_MS, 1)).toBe(true);
    expect(keepWaiting(10, 10 - SPACING_STEP_MS + 0.1, 1)).toBe(false);
    expect(keepWaiting(0, 0, 1)).toBe(false);
  });
});

describe("the SQLite store's spacing", () => {
  const commit = { kind: 'commit' } as WriteItem;
  const record = { kind: 'record' } as WriteItem;

  it('spaces batches once four accepted messages are in a batch and arriving during it, at least one of each', () => {
    const commits = (n: number) => Array.from({ length: n }, () => commit);
    expect(COMMIT_SPACING.concurrent([commit], commits(3))).toBe(true);
    expect(COMMIT_SPACING.concurrent([commit, record, commit], [record, ...commits(2)])).toBe(true);
    // Two or three senders: all the batch would gather is theirs, and waiting only slows them.
    expect(COMMIT_SPACING.concurrent([commit], [commit])).toBe(false);
    expect(COMMIT_SPACING.concurrent(commits(2), [commit, record, record])).toBe(false);
    // A lone sender: its delivery's record arrives while its next message is committed, and that next
    // message while the record is.
    expect(COMMIT_SPACING.concurrent(commits(4), [record])).toBe(false);
    expect(COMMIT_SPACING.concurrent([record], commits(4))).toBe(false);
    expect(COMMIT_SPACING.concurrent(commits(4), [])).toBe(false);
  });
});
