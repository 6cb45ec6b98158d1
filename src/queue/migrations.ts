// Schema versions, the same rule in both queue backends: a schema is an
// ordered list of migrations, a database records how many it has had, and
// a Postern never opens a database written by a newer one (its tables may
// mean something this code does not know). Where the count lives and how
// the steps run is the backend's (sqlite-schema.ts: user_version;
// pg-schema.ts: a schema_version table under an advisory lock).
//
// How it fails: refuseNewerSchema throws, naming the database, both
// versions and what to do instead, for a version past the end of the list;
// logMigration does not fail.
//
//   Migration         - one step of a backend's schema.
//   refuseNewerSchema - throw for a database written by a newer Postern.
//   logMigration      - say which steps an open ran, if any.
import type { Logger } from '../observability/logger.ts';

export interface Migration {
  /** What the step does, for the log line (and PostgreSQL's schema_version row). */
  name: string;
  sql: string;
}

/** refuseNewerSchema - throw if `version` is past the end of `migrations`; `database` names it, `instead` says what else to point at. */
export function refuseNewerSchema(version: number, migrations: readonly Migration[], database: string, instead: string): void {
  if (version <= migrations.length) return;
  throw new Error(
    `queue database ${database} has schema version ${version}, newer than this Postern knows (${migrations.length}): ` +
      `it was written by a newer Postern; run that version, or ${instead}`,
  );
}

/** logMigration - log the steps taken from version `from` to the newest, with `where` (the database); nothing if none were. */
export function logMigration(logger: Logger, where: Record<string, unknown>, from: number, migrations: readonly Migration[]): void {
  if (from === migrations.length) return;
  logger.info({ ...where, from, to: migrations.length, steps: migrations.slice(from).map((m) => m.name) }, 'queue schema migrated');
}
