// MX ordering (RFC 5321 §5.1) and the public-address guard, pure: no DNS.
import { describe, expect, it } from 'vitest';
import { isPublicAddress, orderMx } from '../../src/outbound/mx-resolver.ts';

/** sequence - a `random` that returns these values in turn and fails if asked for more. */
function sequence(...values: number[]): () => number {
  let next = 0;
  return () => {
    if (next >= values.length) throw new Error(`random called more than ${values.length} times`);
    return values[next++]!;
  };
}

const records = [
  { exchange: 'Backup.Example.NET.', priority: 20 },
  { exchange: 'a1.example.net', priority: 10 },
  { exchange: 'a2.example.net.', priority: 10 },
  { exchange: 'last.example.net', priority: 30 },
  { exchange: 'A3.example.net', priority: 10 },
];

describe('orderMx', () => {
  it('sorts by priority ascending and normalises names', () => {
    expect(orderMx([{ exchange: 'Z.example.', priority: 50 }, { exchange: 'y.example', priority: 5 }], sequence())).toEqual([
      { name: 'y.example', priority: 5 },
      { name: 'z.example', priority: 50 },
    ]);
  });

  // Fisher-Yates over [a1, a2, a3]: i=2 swaps with floor(r*3), then i=1 with floor(r*2).
  it.each([
    { random: [0, 0], group: ['a2', 'a3', 'a1'] }, // swap(2,0) -> a3 a2 a1; swap(1,0) -> a2 a3 a1
    { random: [0.5, 0.9], group: ['a1', 'a3', 'a2'] }, // swap(2,1) -> a1 a3 a2; swap(1,1)
    { random: [0.99, 0.99], group: ['a1', 'a2', 'a3'] }, // no swaps
  ])('shuffles equal priorities with random $random -> $group', ({ random, group }) => {
    expect(orderMx(records, sequence(...random))).toEqual([
      ...group.map((name) => ({ name: `${name}.example.net`, priority: 10 })),
      { name: 'backup.example.net', priority: 20 },
      { name: 'last.example.net', priority: 30 },
    ]);
  });

  it('shuffles each priority group on its own, in priority order', () => {
    const twoGroups = [
      { exchange: 'y1.example', priority: 20 },
      { exchange: 'x1.example', priority: 10 },
      { exchange: 'y2.example', priority: 20 },
      { exchange: 'x2.example', priority: 10 },
    ];
    // First value shuffles the priority-10 group (swap), second the priority-20 group (no swap).
    expect(orderMx(twoGroups, sequence(0, 0.6)).map((host) => host.name)).toEqual(['x2.example', 'x1.example', 'y1.example', 'y2.example']);
    expect(orderMx(twoGroups, sequence(0.6, 0)).map((host) => host.name)).toEqual(['x1.example', 'x2.example', 'y2.example', 'y1.example']);
  });

  it('stays in range when random returns 1', () => {
    expect(orderMx([{ exchange: 'a', priority: 1 }, { exchange: 'b', priority: 1 }], sequence(1)).map((host) => host.name)).toEqual(['a', 'b']);
  });

  it('does not call random for single hosts, and returns [] for no records', () => {
    expect(orderMx([{ exchange: 'b', priority: 2 }, { exchange: 'a', priority: 1 }], sequence())).toEqual([
      { name: 'a', priority: 1 },
      { name: 'b', priority: 2 },
    ]);
    expect(orderMx([], sequence())).toEqual([]);
  });
});

describe('isPublicAddress', () => {
  it.each([
    // 0.0.0.0/8 "this network"
    ['0.0.0.0', false],
    ['0.255.255.255', false],
    ['1.0.0.0', true],
    // 10/8
    ['9.255.255.255', true],
    ['10.0.0.0', false],
    ['10.255.255.255', false],
    ['11.0.0.0', true],
    // CGNAT 100.64/10
    ['100.63.255.255', true],
    ['100.64.0.0', false],
    ['100.127.255.255', false],
    ['100.128.0.0', true],
    // loopback 127/8
    ['126.255.255.255', true],
    ['127.0.0.1', false],
    ['127.255.255.255', false],
    ['128.0.0.0', true],
    // link-local 169.254/16
    ['169.253.255.255', true],
    ['169.254.0.0', false],
    ['169.254.255.255', false],
    ['169.255.0.0', true],
    // 172.16/12
    ['172.15.255.255', true],
    ['172.16.0.0', false],
    ['172.31.255.255', false],
    ['172.32.0.0', true],
    // 192.168/16
    ['192.167.255.255', true],
    ['192.168.0.0', false],
    ['192.168.255.255', false],
    ['192.169.0.0', true],
    // multicast 224/4, reserved 240/4 (broadcast included)
    ['223.255.255.255', true],
    ['224.0.0.0', false],
    ['239.255.255.255', false],
    ['240.0.0.0', false],
    ['255.255.255.255', false],
    // ordinary and documentation addresses stay public
    ['8.8.8.8', true],
    ['192.0.2.1', true],
    ['198.51.100.7', true],
    // IPv6 unspecified and loopback
    ['::', false],
    ['::1', false],
    ['2001:4860:4860::8888', true],
    ['2001:db8::1', true],
    // unique local fc00::/7
    ['fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['fc00::', false],
    ['fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false],
    ['fe00::', true],
    // link-local fe80::/10
    ['fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff', true],
    ['fe80::', false],
    ['febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false],
    // site-local fec0::/10 (deprecated, still routed inside sites)
    ['fec0::', false],
    ['feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', false],
    // multicast ff00::/8
    ['ff00::', false],
    ['ff02::1', false],
    // IPv4-mapped, dotted and hex forms
    ['::ffff:127.0.0.1', false],
    ['::ffff:7f00:1', false],
    ['::ffff:10.1.2.3', false],
    ['::ffff:192.168.0.1', false],
    ['::ffff:100.64.0.1', false],
    ['::ffff:169.254.1.1', false],
    ['::ffff:8.8.8.8', true],
    ['::ffff:808:808', true],
    // IPv4-compatible, NAT64 (well-known prefix and local use) and 6to4 forms carry the IPv4 address too
    ['::127.0.0.1', false],
    ['::10.0.0.1', false],
    ['::8.8.8.8', true],
    ['64:ff9b::127.0.0.1', false],
    ['64:ff9b::c0a8:1', false],
    ['64:ff9b::8.8.8.8', true],
    ['64:ff9b:1::8.8.8.8', false],
    ['2002:7f00:1::', false],
    ['2002:c0a8:101::1', false],
    ['2002:a9fe:0101::', false],
    ['2002:808:808::1', true],
    // IETF protocol assignments 192.0.0/24, benchmarking 198.18/15
    ['192.0.0.8', false],
    ['192.0.1.0', true],
    ['198.17.255.255', true],
    ['198.18.0.1', false],
    ['198.19.255.255', false],
    ['198.20.0.0', true],
    // not an address at all
    ['mx.example.com', false],
    ['', false],
  ])('%s -> %s', (ip, expected) => {
    expect(isPublicAddress(ip)).toBe(expected);
  });
});
