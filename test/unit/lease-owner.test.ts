// Which leases a starting node takes back: only those of processes of its
// own machine that are gone. A live lease given back would mean a message
// delivered twice; a dead one kept means a delivery waits outbound.lease.
import { describe, expect, it } from 'vitest';
import { leaseOwnerName, leaseOwnersGone } from '../../src/queue/lease-owner.ts';

const self = { machine: 'mx1', pid: 1, token: 'new0' };
const running = new Set([1, 40, 41]);
const isRunning = (pid: number): boolean => running.has(pid);

describe('leaseOwnersGone', () => {
  it.each([
    ['our pid with another token: a predecessor in a container (pid 1 again)', 'mx1/1/old0', true],
    ['ourselves', 'mx1/1/new0', false],
    ['a pid of this machine that no process has', 'mx1/39/abcd', true],
    ['a pid of this machine still running: another node here, or the pid reused', 'mx1/40/abcd', false],
    ['another machine, its pid not running here', 'mx2/39/abcd', false],
    ['another machine with our pid', 'mx2/1/old0', false],
    ['a machine whose name has our name as a prefix', 'mx10/39/abcd', false],
    // Earlier versions named their SMTP hostname, which a live node elsewhere may share with this machine's name.
    ['the shape of earlier versions, hostname:pid:token', 'mx1:39:abcd', false],
    ['not in the owner shape', 'worker-a', false],
    ['no token', 'mx1/39/', false],
  ])('%s: %s → %s', (_why, owner, gone) => {
    expect(leaseOwnersGone([owner], self, isRunning)).toEqual(gone ? [owner] : []);
  });

  it('keeps the holders it finds gone in their order, and asks about each pid', () => {
    const asked: number[] = [];
    const holders = ['mx1/39/a', 'mx1/40/b', 'mx2/39/c', 'mx1/1/d', 'mx1/41/e', 'mx1/42/f'];
    expect(leaseOwnersGone(holders, self, (pid) => (asked.push(pid), running.has(pid)))).toEqual(['mx1/39/a', 'mx1/1/d', 'mx1/42/f']);
    expect(asked).toEqual([39, 40, 41, 42]);
  });

  it('matches the name leaseOwnerName gives, a machine name with colons included', () => {
    const ipv6 = { machine: 'fe80::1', pid: 39, token: 'abcd' };
    expect(leaseOwnerName(self)).toBe('mx1/1/new0');
    expect(leaseOwnersGone([leaseOwnerName(ipv6)], { ...ipv6, pid: 1 }, isRunning)).toEqual(['fe80::1/39/abcd']);
  });
});
