// The MTA-STS policies kept between restarts (queue-store.ts KeptStsPolicy),
// in the SQLite queue's table mta_sts_policies.
//
//   prepareStsPolicies - the keptStsPolicies / keepStsPolicy functions over one database.
import type Database from 'better-sqlite3';
import type { KeptStsPolicy } from '../queue-store.ts';

export interface StsPolicyFunctions {
  keptStsPolicies(now: Date, limit: number, domain?: string): KeptStsPolicy[];
  keepStsPolicy(domain: string, kept: { policy: string; until: Date } | undefined, options: { now: Date; limit: number }): void;
}

/** prepareStsPolicies - the keptStsPolicies / keepStsPolicy functions over one database. */
export function prepareStsPolicies(db: Database.Database): StsPolicyFunctions {
  const select = db.prepare<{ now: number; limit: number; domain: string | null }, { domain: string; policy: string; until: number }>(
    'SELECT domain, policy, until FROM mta_sts_policies WHERE until > @now AND (@domain IS NULL OR domain = @domain) ORDER BY until DESC LIMIT @limit',
  );
  const upsert = db.prepare<[string, string, number]>(
    'INSERT INTO mta_sts_policies (domain, policy, until) VALUES (?, ?, ?) ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy, until = excluded.until',
  );
  const forget = db.prepare<[string]>('DELETE FROM mta_sts_policies WHERE domain = ?');
  const lapse = db.prepare<[number]>('DELETE FROM mta_sts_policies WHERE until <= ?');
  const trim = db.prepare<[number]>('DELETE FROM mta_sts_policies WHERE domain IN (SELECT domain FROM mta_sts_policies ORDER BY until DESC LIMIT -1 OFFSET ?)');
  const keep = db.transaction((domain: string, kept: { policy: string; until: Date } | undefined, now: Date, limit: number) => {
    if (kept === undefined) forget.run(domain);
    else upsert.run(domain, kept.policy, kept.until.getTime());
    lapse.run(now.getTime());
    trim.run(limit);
  });
  return {
    keptStsPolicies: (now, limit, domain) =>
      select.all({ now: now.getTime(), limit, domain: domain ?? null }).map((row) => ({ domain: row.domain, policy: row.policy, until: new Date(row.until) })),
    keepStsPolicy: (domain, kept, { now, limit }) => keep(domain, kept, now, limit),
  };
}
