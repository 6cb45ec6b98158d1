// Whether a queue store streams bodies rather than holding them: several
// drafts written at once, every body stopping before its last chunk until
// all are there, and the live memory measured at that moment. A store that
// buffered would then hold all the bodies; one that streams holds a few
// chunks per body. Each backend's own test file runs it with its sizes and
// its bound.
import { Readable } from 'node:stream';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import type { MessageDraft, QueueStore } from '../../src/queue/queue-store.ts';

export interface StreamingMeasure {
  /** The drafts written, not yet committed or discarded: the test decides. */
  drafts: MessageDraft[];
  /** What each writeBody resolved with. */
  sizes: number[];
  /** How many bodies reached their last chunk. */
  arrived: number;
  /** Live bytes (JS heap and Buffers) gained between the start and the moment all bodies were in flight. */
  growth: number;
}

/** measureStreamingWrites - write `count` bodies of `size` bytes at once and measure the memory they hold in flight. */
export async function measureStreamingWrites(store: QueueStore, options: { count: number; size: number; chunk: number }): Promise<StreamingMeasure> {
  const gc = exposeGc();
  const baseline = liveBytes(gc);
  let arrived = 0;
  let releaseAll!: () => void;
  const allArrived = new Promise<void>((resolve) => (releaseAll = resolve));
  let growth = Number.NaN;
  const atLastChunk = async (): Promise<void> => {
    if (++arrived === options.count) {
      growth = liveBytes(gc) - baseline;
      releaseAll();
    }
    await allArrived;
  };

  const drafts = Array.from({ length: options.count }, () => store.beginMessage());
  const sizes = await Promise.all(drafts.map((draft, i) => draft.writeBody(patternBody({ size: options.size, chunk: options.chunk, fill: i, atLastChunk }))));
  return { drafts, sizes, arrived, growth };
}

/** patternBody - `size` bytes of `fill` in fresh chunks, awaiting atLastChunk before the last one. */
function patternBody(options: { size: number; chunk: number; fill: number; atLastChunk: () => Promise<void> }): Readable {
  async function* chunks(): AsyncGenerator<Buffer> {
    for (let left = options.size; left > 0; left -= options.chunk) {
      if (left <= options.chunk) await options.atLastChunk();
      yield Buffer.alloc(Math.min(options.chunk, left), options.fill);
    }
  }
  return Readable.from(chunks(), { objectMode: false });
}

/** liveBytes - JS heap plus Buffer memory still reachable, after collecting garbage. */
function liveBytes(gc: () => void): number {
  // Buffers live outside the JS heap, so heapUsed alone would not see a store
  // that buffers: count arrayBuffers too. Two collections, because V8 frees
  // ArrayBuffer memory on a background sweeper that the next GC finishes;
  // after one, up to ~30 MB of garbage was still counted.
  gc();
  gc();
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}

/** exposeGc - the V8 gc() function, without a command-line flag (vitest runs the workers). */
function exposeGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}
