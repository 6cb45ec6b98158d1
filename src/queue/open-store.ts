// The queue backend named by queue.backend, opened: sqlite (embedded, one
// node) or postgres (several nodes share queue.url). Only the configured
// backend's module is loaded: pg alone is about 5 MB of a relay's RSS.
import type { Config } from '../config/config.ts';
import type { Logger } from '../observability/logger.ts';
import type { QueueStore } from './queue-store.ts';

export interface OpenStoreOptions {
  logger?: Logger;
  /**
   * Remove body files no committed message names (left by a crash). Only the
   * relay itself does this, at start: a CLI reading the queue beside a
   * running relay would otherwise delete its drafts in progress. (PostgreSQL
   * has nothing to sweep: a draft is a transaction.)
   */
  removeOrphans?: boolean;
  /**
   * The queue must exist already: an operator's command pointed at a path or schema no relay ever used fails,
   * naming it, instead of creating an empty queue there and reporting it empty.
   */
  existing?: boolean;
}

/** openQueueStore - open (and migrate) the configured queue. */
export async function openQueueStore(config: Config, options: OpenStoreOptions = {}): Promise<QueueStore> {
  const removeOrphans = options.removeOrphans ?? false;
  const existing = options.existing ?? false;
  if (config.queue.backend === 'postgres') {
    const { openPostgresStore } = await import('./postgres/pg-store.ts');
    return openPostgresStore({ url: config.queue.url, logger: options.logger, removeOrphans, existing });
  }
  const { openSqliteStore } = await import('./sqlite/sqlite-store.ts');
  return openSqliteStore({ path: config.queue.path, logger: options.logger, removeOrphans, existing });
}
