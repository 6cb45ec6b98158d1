// `postern queue shape`: where the queue's mail is going and how long it has
// waited, as Postfix's qshape prints it: one row per destination domain
// (most messages first, TOTAL above them), one column per age bucket in
// minutes (T is the total; then up to 5, 10, 20 … 1280 minutes, and more).
// A message counts once in each domain it still has recipients to try in.
//
//   recipientDomains - the domains a message counts in (its recipients still to try; all of a done one's).
//   queueShape       - the counts per domain and age bucket.
//   formatShape      - the table.
import type { QueuedMessageSummary } from '../queue/queue-store.ts';

/** The upper bounds of the age buckets, in minutes (qshape's); the last column is older than the last bound. */
export const SHAPE_BUCKETS = [5, 10, 20, 40, 80, 160, 320, 640, 1280] as const;

export interface QueueShape {
  total: number[];
  rows: { domain: string; counts: number[] }[];
}

/** recipientDomains - lower-cased, each once: of the recipients still to be tried, or of every one of a done message. */
export function recipientDomains(m: QueuedMessageSummary): string[] {
  const recipients = m.state === 'done' ? m.recipientStates : m.recipientStates.filter((r) => r.state === 'queued' || r.state === 'deferred');
  return [...new Set(recipients.map((r) => r.address.slice(r.address.lastIndexOf('@') + 1).toLowerCase()))];
}

/** queueShape - per domain (most messages first, then by name) and in total: [all, then one count per age bucket]. */
export function queueShape(messages: readonly QueuedMessageSummary[], now: Date): QueueShape {
  const empty = () => new Array<number>(SHAPE_BUCKETS.length + 2).fill(0);
  const total = empty();
  const byDomain = new Map<string, number[]>();
  for (const m of messages) {
    const minutes = (now.getTime() - m.receivedAt.getTime()) / 60_000;
    const bucket = SHAPE_BUCKETS.findIndex((bound) => minutes <= bound);
    const column = 1 + (bucket < 0 ? SHAPE_BUCKETS.length : bucket);
    total[0]!++;
    total[column]!++;
    for (const domain of recipientDomains(m)) {
      const counts = byDomain.get(domain) ?? byDomain.set(domain, empty()).get(domain)!;
      counts[0]!++;
      counts[column]!++;
    }
  }
  const rows = [...byDomain].map(([domain, counts]) => ({ domain, counts })).sort((a, b) => b.counts[0]! - a.counts[0]! || a.domain.localeCompare(b.domain));
  return { total, rows };
}

/** formatShape - qshape's table: right-aligned counts under T and the bucket bounds. */
export function formatShape(shape: QueueShape): string {
  const header = ['', 'T', ...SHAPE_BUCKETS.map(String), `${SHAPE_BUCKETS.at(-1)!}+`];
  const lines = [header, ['TOTAL', ...shape.total.map(String)], ...shape.rows.map((r) => [r.domain, ...r.counts.map(String)])];
  const widths = header.map((_, i) => Math.max(...lines.map((l) => l[i]!.length)));
  return lines.map((l) => l.map((cell, i) => cell.padStart(widths[i]!)).join(' ')).join('\n') + '\n';
}
