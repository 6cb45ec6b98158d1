// How the PostgreSQL store reaches its database: queue.url taken apart into
// what node-postgres needs, and the session settings every connection gets.
//
// Decides the session: every connection starts with synchronous_commit=on
// (a COMMIT returns only once its WAL is flushed: the 250 depends on it, so
// a role or database default of "off" must not weaken it), with READ
// COMMITTED transactions (the queue's statements count on each seeing what
// committed before it began: under a default of REPEATABLE READ a message
// whose last two deliveries were recorded at once by two nodes was never
// made done, and nodes starting together ran the same migration twice)
// and, when the URL
// names one with ?schema=NAME, search_path=NAME, so a node (or a test) keeps
// its tables in its own PostgreSQL schema. Both go in the startup packet
// (libpq's `options`), after any options the URL gives, so they win.
//
// How it fails: parseQueueUrl throws, naming the rule, on a URL that is not
// postgres:// or postgresql://, or a schema name that is not a plain
// lowercase identifier (it ends up unquoted in search_path). Connection
// errors surface later, from the pool, on first use.
//
//   parseQueueUrl  - queue.url as a pool configuration, its schema and a printable form.
//   createPool     - a pg.Pool with Postern's session settings.
//   inTransaction  - run work in one transaction on one pooled connection.
//   withClient     - lend work one pooled connection, dropping it if it failed.
import pg from 'pg';
import { printableCredentialUrl } from '../../observability/logger.ts';

export interface QueueConnection {
  /** The URL as node-postgres takes it (schema and options taken out). */
  connectionString: string;
  /** The PostgreSQL schema holding the queue tables; undefined: the server's search_path. */
  schema?: string;
  /** libpq startup options: the URL's own, then ours. */
  options: string;
  /** The URL with the password masked. */
  printable: string;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,62}$/;

/** parseQueueUrl - queue.url as a pool configuration, its schema and a printable form. */
export function parseQueueUrl(url: string): QueueConnection {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`queue.url: not a URL (expected postgres://user@host:5432/database): ${printableCredentialUrl(url)}`);
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new Error(`queue.url: must start with postgres:// or postgresql://, not ${parsed.protocol}//`);
  }
  const schema = parsed.searchParams.get('schema') ?? undefined;
  if (schema !== undefined && !SCHEMA_NAME.test(schema)) {
    throw new Error(`queue.url: schema=${JSON.stringify(schema)} must be a lowercase identifier (a-z, 0-9, _; not starting with a digit; at most 63 characters)`);
  }
  const given = parsed.searchParams.get('options') ?? '';
  parsed.searchParams.delete('schema');
  parsed.searchParams.delete('options');
  const ours = ['-c synchronous_commit=on', '-c default_transaction_isolation=read\\ committed', ...(schema === undefined ? [] : [`-c search_path=${schema}`])];
  return {
    connectionString: parsed.toString(),
    schema,
    options: [given, ...ours].filter((o) => o !== '').join(' '),
    printable: printableCredentialUrl(url),
  };
}

/** createPool - a pg.Pool with Postern's session settings; `max` connections at most. */
export function createPool(connection: QueueConnection, max: number): pg.Pool {
  return new pg.Pool({
    connectionString: connection.connectionString,
    options: connection.options,
    application_name: 'postern',
    max,
    // A pool that cannot connect fails the call (the client hears 4xx) instead of hanging it.
    connectionTimeoutMillis: 30_000,
    keepAlive: true,
  });
}

/** inTransaction - run `work` between BEGIN (with `mode`) and COMMIT on one pooled connection; ROLLBACK if it throws. */
export async function inTransaction<T>(pool: pg.Pool, work: (client: pg.PoolClient) => Promise<T>, mode = ''): Promise<T> {
  return withClient(pool, async (client, drop) => {
    await client.query(mode === '' ? 'BEGIN' : `BEGIN ${mode}`);
    try {
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (error) {
      // A connection that cannot even roll back is in an unknown state: never reused.
      await client.query('ROLLBACK').catch(drop);
      throw error;
    }
  });
}

/** withClient - lend `work` one pooled connection; one that failed (or that work drops) is closed, not reused. */
export async function withClient<T>(pool: pg.Pool, work: (client: pg.PoolClient, drop: (error: unknown) => void) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  // A checked-out client that loses its connection emits 'error'; unheard, it
  // would end the process. The query in flight rejects on its own.
  let broken: Error | undefined;
  const drop = (error: unknown): void => {
    broken ??= error instanceof Error ? error : new Error(String(error));
  };
  client.on('error', drop);
  try {
    return await work(client, drop);
  } finally {
    client.off('error', drop);
    client.release(broken);
  }
}
