// The queue backend named by queue.backend, opened.
import type { Config } from '../config/config.ts';
import type { Logger } from '../observability/logger.ts';
import type { QueueStore } from './queue-store.ts';
import { openSqliteStore } from './sqlite/sqlite-store.ts';

/** openQueueStore - open (and migrate) the configured queue. */
export function openQueueStore(config: Config, logger?: Logger): Promise<QueueStore> {
  return openSqliteStore({ path: config.queue.path, logger });
}
