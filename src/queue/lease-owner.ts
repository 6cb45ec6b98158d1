// Who holds a delivery's lease, and which leases a starting node may take
// back at once instead of waiting for them to lapse (outbound.lease).
//
// An owner is `machine/pid/token`: the machine's own name (os.hostname(),
// not the SMTP hostname, which every node of a cluster may share), the
// process id, and a token drawn at each start (a pid comes back after a
// restart; in a container it is always 1). A lease whose machine is ours
// and whose process is gone belongs to a process that was killed (kill -9,
// OOM, power loss) with deliveries in flight: they are given back at start,
// as Postfix's queue manager retries its active queue after a restart. A
// lease of another machine, or of a process still running here (a second
// node on this machine, or an unrelated process that reused the pid), is
// left to lapse: giving back a live lease would deliver a message twice.
// So is an owner of another shape, such as the `hostname:pid:token` of
// versions before this one: during a rolling upgrade its process may live
// on a machine whose SMTP hostname is this machine's name.
// Nodes that share a queue must not share both a host name and a pid
// namespace: two containers with the same fixed `hostname:` or on the
// host's network (each with its own pid 1) would take each other's leases.
//
//   leaseOwnerName     - the owner string for this process.
//   leaseOwnersGone    - of the owners holding leases, those whose process is gone.

export interface LeaseOwner {
  machine: string;
  pid: number;
  token: string;
}

/** leaseOwnerName - `machine/pid/token`, as claims record it (a host name has no '/'). */
export function leaseOwnerName(owner: LeaseOwner): string {
  return `${owner.machine}/${owner.pid}/${owner.token}`;
}

/** parseLeaseOwner - the parts of an owner string; undefined for one not in this shape. */
function parseLeaseOwner(name: string): LeaseOwner | undefined {
  const match = /^([^/]+)\/(\d+)\/([^/]+)$/.exec(name);
  if (!match) return undefined;
  return { machine: match[1]!, pid: Number(match[2]), token: match[3]! };
}

/**
 * leaseOwnersGone - the owners, among those holding leases, that were processes on `self`'s machine and are gone:
 * our own pid with another token (a predecessor that had our pid), or a pid `isRunning` says no process has.
 */
export function leaseOwnersGone(holders: readonly string[], self: LeaseOwner, isRunning: (pid: number) => boolean): string[] {
  return holders.filter((name) => {
    const owner = parseLeaseOwner(name);
    if (!owner || owner.machine !== self.machine) return false;
    if (owner.pid === self.pid) return owner.token !== self.token;
    return !isRunning(owner.pid);
  });
}
