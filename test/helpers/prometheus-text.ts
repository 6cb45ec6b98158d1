// A strict reader of the Prometheus text exposition format (0.0.4), for
// tests of /metrics: every line must be a HELP or TYPE comment or a sample
// `name{label="value",...} value`, and every sample's family must have had
// its HELP and TYPE lines. Fails the running test (expect) on the first line
// that does not fit.
import { expect } from 'vitest';

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*\})? (-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$/;

/** parseMetrics - every line checked (HELP, TYPE, or `name{labels} value`); samples by their series text. */
export function parseMetrics(text: string): Map<string, number> {
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const comment = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.+)$/.exec(line);
    if (comment) {
      if (comment[1] === 'TYPE') {
        expect(comment[3], line).toMatch(/^(counter|gauge|histogram|summary|untyped)$/);
        types.set(comment[2]!, comment[3]!);
      } else helps.add(comment[2]!);
      continue;
    }
    const sample = SAMPLE.exec(line);
    expect(sample, `not a Prometheus sample line: ${line}`).not.toBeNull();
    const name = sample![1]!;
    const family = types.has(name) ? name : name.replace(/_(bucket|sum|count)$/, '');
    expect(types.get(family), `no TYPE line before ${line}`).toBeDefined();
    expect(helps.has(family), `no HELP line for ${family}`).toBe(true);
    samples.set(name + (sample![2] ?? ''), Number(sample![3]));
  }
  return samples;
}
