// Numbers for the bench: one clock every bench process shares, percentiles
// and medians. Pure; nothing here fails except on an empty input, which
// gives NaN (printed as "n/a").
//
//   nowMs      - milliseconds on the system's monotonic clock (the same in every process).
//   percentile - nearest-rank percentile of a list of numbers.
//   median     - the 50th percentile.

/** nowMs - CLOCK_MONOTONIC in ms: comparable between the load generator, the sink and the runner. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** percentile - nearest-rank percentile (p in 0..100); NaN for an empty list. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/** median - the middle value (the 50th percentile); NaN for an empty list. */
export function median(values: readonly number[]): number {
  const finite = values.filter((v) => Number.isFinite(v));
  if (finite.length === 0) return NaN;
  const sorted = [...finite].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}
