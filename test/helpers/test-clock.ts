// A clock for a relay under test (RelayOptions.now): real time plus an
// offset the test moves, so backoff, expiry and retention are waited out by
// moving the clock, not by sleeping. The store stamps arrivals with real
// time, so the clock never runs behind it.

export interface TestClock {
  now: () => Date;
  advance: (ms: number) => void;
  /** setTo - now() reads `at` (and moves on with real time from there). */
  setTo: (at: Date) => void;
}

/** testClock - a clock at real time until the test moves it. */
export function testClock(): TestClock {
  let offsetMs = 0;
  return {
    now: () => new Date(Date.now() + offsetMs),
    advance: (ms) => (offsetMs += ms),
    setTo: (at) => (offsetMs = at.getTime() - Date.now()),
  };
}
