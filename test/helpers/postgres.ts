// PostgreSQL for tests: find a server, and give each test its own schema.
//
// postgresTestUrl answers once per test file: POSTERN_TEST_PG_URL if set
// (a failure to connect to it is an error, not a skip: someone asked for
// it), else a probe of 127.0.0.1:5432 (database test, user postgres, then
// root) with a short timeout. Without either, the PostgreSQL test files
// skip, saying how to run them (SKIP_MESSAGE). CI sets the variable.
//
// createTestSchema makes a schema with a random name and returns the URL
// (?schema=…) a store or a Postern node uses; drop() removes it and
// everything in it. Every test works in its own schema, so test files run
// in parallel against one database and leave nothing behind.
import { randomBytes } from 'node:crypto';
import pg from 'pg';

export const SKIP_MESSAGE =
  'PostgreSQL tests skipped: nothing answered on 127.0.0.1:5432. Start PostgreSQL (database "test", trust auth) ' +
  'or set POSTERN_TEST_PG_URL=postgres://user:password@host:5432/database to run them.';

const PROBES = ['postgres://postgres@127.0.0.1:5432/test', 'postgres://root@127.0.0.1:5432/test'];

/** postgresTestUrl - the database the tests may use; undefined when there is none (the tests then skip). */
export async function postgresTestUrl(): Promise<string | undefined> {
  const given = process.env.POSTERN_TEST_PG_URL;
  if (given) {
    await probe(given, 10_000);
    return given;
  }
  for (const url of PROBES) {
    try {
      await probe(url, 1500);
      return url;
    } catch {
      // next candidate
    }
  }
  return undefined;
}

/** probe - connect and run SELECT 1, or throw. */
async function probe(url: string, timeoutMs: number): Promise<void> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: timeoutMs });
  try {
    await client.connect();
    await client.query('SELECT 1');
  } finally {
    await client.end().catch(() => undefined);
  }
}

export interface TestSchema {
  /** The base URL with ?schema=NAME&application_name=NAME: what queue.url is set to. */
  url: string;
  schema: string;
  /** query - a statement on the test database, run with search_path = this schema. */
  query<R extends pg.QueryResultRow = pg.QueryResultRow>(text: string, values?: unknown[]): Promise<pg.QueryResult<R>>;
  /** drop - remove the schema and everything in it. */
  drop(): Promise<void>;
}

/** createTestSchema - a fresh, randomly named schema on the test database. */
export async function createTestSchema(baseUrl: string): Promise<TestSchema> {
  const schema = `postern_test_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Pool({ connectionString: baseUrl, max: 2, options: `-c search_path=${schema}` });
  await admin.query(`CREATE SCHEMA ${schema}`);
  const url = new URL(baseUrl);
  url.searchParams.set('schema', schema);
  // Named after the schema in pg_stat_activity, so a test can find (and kill) its own sessions only.
  url.searchParams.set('application_name', schema);
  return {
    url: url.toString(),
    schema,
    query: (text, values) => admin.query(text, values),
    async drop() {
      try {
        await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      } finally {
        await admin.end();
      }
    },
  };
}
