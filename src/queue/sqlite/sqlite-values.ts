// How the SQLite store binds backend-neutral column values (stored-columns.ts)
// as named parameters: a time as milliseconds since the epoch (INTEGER), a
// flag as 0 or 1, anything else as it is. better-sqlite3 refuses to bind a
// Date or a boolean, so every neutral row goes through here first.
//
// How it fails: it does not.
//
//   sqliteValues - neutral columns as better-sqlite3 named parameters.

/** What better-sqlite3 binds for a neutral value. */
type SqliteValue<T> = T extends Date ? number : T extends boolean ? number : T;

/** sqliteValues - each column as SQLite stores it: Date → ms, boolean → 0/1, the rest unchanged. */
export function sqliteValues<T extends object>(columns: T): { [K in keyof T]: SqliteValue<T[K]> } {
  return Object.fromEntries(
    Object.entries(columns).map(([name, value]) => [name, value instanceof Date ? value.getTime() : typeof value === 'boolean' ? (value ? 1 : 0) : (value as unknown)]),
  ) as { [K in keyof T]: SqliteValue<T[K]> };
}
