// The MTA-STS policies kept between restarts (queue-store.ts KeptStsPolicy),
// in the PostgreSQL queue's table mta_sts_policies, shared by the nodes.
//
//   keptStsPolicies - those not lapsed, the latest to lapse first.
//   keepStsPolicy   - keep or forget one, and drop the lapsed and those past the limit.
import type pg from 'pg';
import type { KeptStsPolicy } from '../queue-store.ts';
import { inTransaction } from './pg-connection.ts';

/** keptStsPolicies - the policies not lapsed at `now` (of one domain, if named), at most `limit`, the latest to lapse first. */
export async function keptStsPolicies(pool: pg.Pool, now: Date, limit: number, domain?: string): Promise<KeptStsPolicy[]> {
  const result = await pool.query<KeptStsPolicy>(
    'SELECT domain, policy, until FROM mta_sts_policies WHERE until > $1 AND ($3::text IS NULL OR domain = $3) ORDER BY until DESC LIMIT $2',
    [now, limit, domain ?? null],
  );
  return result.rows;
}

/** keepStsPolicy - keep a domain's policy in place of the one kept, or forget it; then drop the lapsed and those past `limit`. */
export function keepStsPolicy(pool: pg.Pool, domain: string, kept: { policy: string; until: Date } | undefined, options: { now: Date; limit: number }): Promise<void> {
  return inTransaction(pool, async (client) => {
    if (kept === undefined) await client.query('DELETE FROM mta_sts_policies WHERE domain = $1', [domain]);
    else {
      await client.query(
        'INSERT INTO mta_sts_policies (domain, policy, until) VALUES ($1, $2, $3) ON CONFLICT (domain) DO UPDATE SET policy = excluded.policy, until = excluded.until',
        [domain, kept.policy, kept.until],
      );
    }
    // The clean-up passes over rows another node's keep holds: waiting for them while holding our own row deadlocked
    // two nodes keeping two lapsed domains at once. What is passed over goes at a later keep.
    await client.query('DELETE FROM mta_sts_policies WHERE domain IN (SELECT domain FROM mta_sts_policies WHERE until <= $1 FOR UPDATE SKIP LOCKED)', [options.now]);
    await client.query(
      'DELETE FROM mta_sts_policies WHERE domain IN (SELECT domain FROM mta_sts_policies ORDER BY until DESC OFFSET $1 FOR UPDATE SKIP LOCKED)',
      [options.limit],
    );
  });
}
