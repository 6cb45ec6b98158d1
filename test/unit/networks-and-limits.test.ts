import { describe, expect, it } from 'vitest';
import { createAuthLimiter, type AuthLimiter } from '../../src/inbound/auth-limiter.ts';
import { ConnectionCounts } from '../../src/inbound/connection-counts.ts';
import { limitKey } from '../../src/inbound/limit-key.ts';
import { compileNetworks, REMEMBERED_ADDRESSES } from '../../src/inbound/networks.ts';
import { replaceLibraryReply } from '../../src/inbound/wire-replies.ts';

describe('compileNetworks', () => {
  const trusted = compileNetworks(['127.0.0.0/8', '::1/128', '10.1.2.3']);
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['::ffff:127.0.0.1', true],
    ['::1', true],
    ['10.1.2.3', true],
    ['10.1.2.4', false],
    ['128.0.0.1', false],
    ['::2', false],
    ['not-an-ip', false],
  ])('%s -> %s', (ip, expected) => expect(trusted(ip)).toBe(expected));
  it('throws on a bad entry', () => expect(() => compileNetworks(['10.0.0.0/33x'])).toThrow(/10.0.0.0\/33x/));
  it('answers the same when asked again, past REMEMBERED_ADDRESSES addresses', () => {
    const matcher = compileNetworks(['10.0.0.0/16']);
    const addresses = Array.from({ length: REMEMBERED_ADDRESSES * 2 + 7 }, (_, i) => `10.${i % 3}.${(i >> 8) & 255}.${i & 255}`);
    const first = addresses.map((a) => matcher(a));
    expect(first.filter(Boolean)).toHaveLength(addresses.filter((a) => a.startsWith('10.0.')).length);
    expect(addresses.map((a) => matcher(a))).toEqual(first);
    expect(addresses.reverse().map((a) => matcher(a))).toEqual(first.reverse());
  });
});

// Postfix 3.8's anvil: IPv6 clients by their /84 (smtpd_client_ipv6_prefix_length), as one host may hold a /64.
describe('limitKey', () => {
  it.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['::ffff:c000:207', '192.0.2.7'],
    ['2001:db8::1', '2001:db8:0:0:0:0:0:0/84'],
    ['2001:db8:0:0:0:0fff:ffff:ffff', '2001:db8:0:0:0:0:0:0/84'],
    ['2001:db8:0:0:0:1000::', '2001:db8:0:0:0:1000:0:0/84'],
    ['2001:db8:0:0:1000::', '2001:db8:0:0:1000:0:0:0/84'],
    ['2001:DB8:1:2:3456:789a:bcde:f012', '2001:db8:1:2:3456:7000:0:0/84'],
    ['fe80::1%eth0', 'fe80:0:0:0:0:0:0:0/84'],
    ['64:ff9b::192.0.2.7', '64:ff9b:0:0:0:0:0:0/84'],
    ['::', '0:0:0:0:0:0:0:0/84'],
    ['::1', '0:0:0:0:0:0:0:0/84'],
  ])('%s counts as %s', (address, key) => expect(limitKey(address)).toBe(key));

  it('counts the connections of one /84 together, and of another apart', () => {
    const counts = new ConnectionCounts();
    expect(['2001:db8::1', '2001:db8::2:3', '2001:db8::fff:ffff:ffff'].map((a) => counts.open(a))).toEqual([1, 2, 3]);
    expect(counts.open('2001:db8:0:1::1')).toBe(1);
    counts.close('2001:db8::2:3');
    expect(counts.fromIp('2001:db8::9')).toBe(2);
  });

  it('locks out a /84 after failures from different addresses in it', async () => {
    const limiter = createAuthLimiter({ failuresPerIp: 2, lockoutSeconds: 60 });
    for (const address of ['2001:db8::1', '2001:db8::2']) {
      expect(await limiter.admit(address, () => 0)).toBe(true);
      limiter.attemptEnded(address, true, 0);
    }
    expect(limiter.isLockedOut('2001:db8::3', 1)).toBe(true);
    expect(await limiter.admit('2001:db8::4', () => 1)).toBe(false);
    expect(limiter.isLockedOut('2001:db8:0:1::1', 1)).toBe(false);
  });
});

describe('createAuthLimiter', () => {
  const fail = async (limiter: AuthLimiter, ip: string, at: number) => {
    expect(await limiter.admit(ip, () => at)).toBe(true);
    limiter.attemptEnded(ip, true, at);
  };

  it('locks an IP out after N failures within the window, and forgives after it', async () => {
    const limiter = createAuthLimiter({ failuresPerIp: 3, lockoutSeconds: 60 });
    await fail(limiter, '192.0.2.1', 0);
    await fail(limiter, '192.0.2.1', 1000);
    expect(limiter.isLockedOut('192.0.2.1', 2000)).toBe(false);
    await fail(limiter, '192.0.2.1', 2000);
    expect(limiter.isLockedOut('192.0.2.1', 2000)).toBe(true);
    expect(await limiter.admit('192.0.2.1', () => 2000)).toBe(false);
    expect(limiter.isLockedOut('192.0.2.2', 2000)).toBe(false);
    expect(limiter.isLockedOut('192.0.2.1', 60_500)).toBe(true);
    expect(limiter.isLockedOut('192.0.2.1', 62_001)).toBe(false);
  });

  // A password check takes a while: attempts started together were each checked before the first failure counted.
  it('keeps an attempt past the limit waiting while others are under way, then admits or refuses it by how they ended', async () => {
    const limiter = createAuthLimiter({ failuresPerIp: 3, lockoutSeconds: 60 });
    const at = () => 0;
    await fail(limiter, '192.0.2.1', 0);
    expect(await limiter.admit('192.0.2.1', at)).toBe(true);
    expect(await limiter.admit('192.0.2.1', at)).toBe(true);
    const settled: boolean[] = [];
    const third = limiter.admit('192.0.2.1', at).then((admitted) => settled.push(admitted));
    const fourth = limiter.admit('192.0.2.1', at).then((admitted) => settled.push(admitted));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toEqual([]);
    // One succeeds: the next waiting is admitted. One fails: the failures reach the limit, and the last is refused.
    limiter.attemptEnded('192.0.2.1', false, 10);
    await third;
    limiter.attemptEnded('192.0.2.1', true, 20);
    limiter.attemptEnded('192.0.2.1', true, 20);
    await fourth;
    expect(settled).toEqual([true, false]);
    expect(limiter.isLockedOut('192.0.2.1', 20)).toBe(true);
  });

  it('lets an attempt whose client left stop waiting: it is never admitted, and the next one takes its turn', async () => {
    const limiter = createAuthLimiter({ failuresPerIp: 2, lockoutSeconds: 60 });
    const at = () => 0;
    expect(await limiter.admit('192.0.2.1', at)).toBe(true);
    expect(await limiter.admit('192.0.2.1', at)).toBe(true);
    const gone = new AbortController();
    const settled: string[] = [];
    const left = limiter.admit('192.0.2.1', at, gone.signal).then((admitted) => settled.push(`left ${admitted}`));
    const stayed = limiter.admit('192.0.2.1', at).then((admitted) => settled.push(`stayed ${admitted}`));
    gone.abort();
    await left;
    expect(settled).toEqual(['left false']);
    // One under way succeeds: the one that stayed is admitted, not the one that left.
    limiter.attemptEnded('192.0.2.1', false, 10);
    await stayed;
    expect(settled).toEqual(['left false', 'stayed true']);
    // Two under way now: a third waits, so the one that left took no place.
    const third = limiter.admit('192.0.2.1', at).then((admitted) => settled.push(`third ${admitted}`));
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toHaveLength(2);
    limiter.attemptEnded('192.0.2.1', false, 20);
    await third;
    expect(settled.at(-1)).toBe('third true');
  });

  // The table full: a new IP takes the place of the one whose last failure is oldest, found without a walk of the table.
  it('forgets the IP whose last failure is oldest, not one that failed since', async () => {
    const limiter = createAuthLimiter({ failuresPerIp: 2, lockoutSeconds: 60, trackedIps: 3 });
    await fail(limiter, '192.0.2.1', 0);
    await fail(limiter, '192.0.2.2', 1);
    await fail(limiter, '192.0.2.3', 2);
    await fail(limiter, '192.0.2.1', 3); // locked out, and its failures the newest
    await fail(limiter, '192.0.2.4', 4); // takes the place of .2
    await fail(limiter, '192.0.2.2', 5); // a first failure again (takes the place of .3)
    expect(['192.0.2.1', '192.0.2.2', '192.0.2.4'].map((ip) => limiter.isLockedOut(ip, 5))).toEqual([true, false, false]);
    await fail(limiter, '192.0.2.4', 6);
    expect(limiter.isLockedOut('192.0.2.4', 6)).toBe(true);
  });

  it('forgets an IP that logged in, not one locked out before it', async () => {
    const limiter = createAuthLimiter({ failuresPerIp: 1, lockoutSeconds: 60, trackedIps: 2 });
    await fail(limiter, '192.0.2.1', 0);
    expect(await limiter.admit('192.0.2.2', () => 1)).toBe(true);
    limiter.attemptEnded('192.0.2.2', false, 1);
    // .2 holds nothing now: .3 takes no one's place, or it would have been .1's, the oldest.
    await fail(limiter, '192.0.2.3', 2);
    expect(['192.0.2.1', '192.0.2.3'].map((ip) => limiter.isLockedOut(ip, 2))).toEqual([true, true]);
  });

  it('keeps an IP with an attempt under way and one waiting, however old', async () => {
    const limiter = createAuthLimiter({ failuresPerIp: 1, lockoutSeconds: 60, trackedIps: 2 });
    expect(await limiter.admit('192.0.2.1', () => 0)).toBe(true);
    const settled: boolean[] = [];
    void limiter.admit('192.0.2.1', () => 0).then((admitted) => settled.push(admitted));
    for (let i = 2; i < 6; i++) await fail(limiter, `192.0.2.${i}`, i);
    // Its attempt under way succeeds: the one waiting is admitted, so its record was kept.
    limiter.attemptEnded('192.0.2.1', false, 10);
    await new Promise((resolve) => setImmediate(resolve));
    expect(settled).toEqual([true]);
  });
});

describe('replaceLibraryReply', () => {
  it('maps smtp-server texts to catalogue replies', () => {
    expect(replaceLibraryReply('Error: command not recognized')).toEqual({ code: 502, status: '5.5.2', text: 'Error: command not recognized' });
    expect(replaceLibraryReply('relay.test Too many connected clients, try again in a moment')?.status).toBe('4.7.0');
    expect(replaceLibraryReply('Timeout - closing connection')?.status).toBe('4.4.2');
    expect(replaceLibraryReply('Error: message exceeds fixed maximum message size 10000')).toEqual({ code: 552, status: '5.3.4', text: 'Message size exceeds fixed limit' });
    expect(replaceLibraryReply('Error: Bad sender address syntax')?.status).toBe('5.1.7');
    expect(replaceLibraryReply('something else')).toBeUndefined();
  });
});
