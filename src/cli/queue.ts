// `postern queue list`: what is queued, for people (a table) or machines (--json).
import type { Config } from '../config/config.ts';
import type { QueuedMessageSummary } from '../queue/queue-store.ts';
import { openQueueStore } from '../queue/open-store.ts';

/** listQueue - print the queue, oldest first. */
export async function listQueue(config: Config, options: { json?: boolean }): Promise<void> {
  const store = await openQueueStore(config);
  try {
    const messages = await store.listMessages();
    process.stdout.write(options.json ? JSON.stringify(messages.map(toJson), null, 2) + '\n' : formatTable(messages, Date.now()));
  } finally {
    await store.close();
  }
}

function toJson(m: QueuedMessageSummary) {
  return { id: m.id, sender: m.mailFrom, recipients: m.recipients, size: m.size, receivedAt: m.receivedAt.toISOString(), state: m.state };
}

/** formatTable - the human listing, like postqueue -p but one line per message. */
export function formatTable(messages: QueuedMessageSummary[], nowMs: number): string {
  if (messages.length === 0) return 'Mail queue is empty\n';
  const rows = messages.map((m) => [m.id, m.state, String(m.size), formatAge(nowMs - m.receivedAt.getTime()), m.mailFrom || '<>', m.recipients.join(', ')]);
  const header = ['ID', 'STATE', 'SIZE', 'AGE', 'SENDER', 'RECIPIENTS'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!))).join('  ') + '\n';
  return line(header) + rows.map(line).join('') + `-- ${messages.length} message${messages.length === 1 ? '' : 's'}\n`;
}

/** formatAge - "42s", "7m", "3h", "2d". */
export function formatAge(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}
