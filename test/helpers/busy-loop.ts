// An event loop kept busy, for tests of what the group commit does while
// the loop serves other work (src/queue/group-commit.ts spaces batches only
// then).
//
//   keepLoopBusy - spin the loop until the returned function is called.
import { performance } from 'node:perf_hooks';

/** keepLoopBusy - spin the event loop (half a millisecond of work per turn, never waiting for I/O) until stopped. */
export function keepLoopBusy(): () => void {
  let stopped = false;
  const spin = () => {
    const until = performance.now() + 0.5;
    while (performance.now() < until);
    if (!stopped) setImmediate(spin);
  };
  setImmediate(spin);
  return () => (stopped = true);
}
