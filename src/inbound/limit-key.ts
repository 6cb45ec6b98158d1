// What a client address counts as for the per-client limits
// (limits.connectionsPerIp, limits.authFailuresPerIp and its lockout, the
// implicit-TLS handshakes held before onConnect): an IPv4 client its own
// address, an IPv6 client its /84 prefix. An IPv6 host is usually given a
// whole /64 and may connect from any address in it, so counted by its full
// address one host was never limited, and could fill the relay's
// connections or guess passwords without a lockout. Postfix 3.8's anvil
// counts IPv6 clients the same way (smtpd_client_ipv6_prefix_length = 84).
// An IPv4-mapped IPv6 address counts as the IPv4 address it carries.
//
//   limitKey   - the key a client address is counted under: "192.0.2.7", or "2001:db8:0:0:1000:0:0:0/84".
//   ipv4Of     - the IPv4 address an address is or carries (IPv4-mapped).
//   ipv6Groups - an IPv6 address's eight groups, as numbers.
import { isIPv4, isIPv6 } from 'node:net';

/** Leading bits of an IPv6 address that name one client for the limits (Postfix's default). */
export const IPV6_PREFIX_LENGTH = 84;

/** limitKey - the address itself (IPv4, or anything not IPv6), the IPv4 address an IPv4-mapped one carries, or an IPv6 address's prefix. */
export function limitKey(address: string): string {
  if (!isIPv6(address)) return address;
  const groups = ipv6Groups(address);
  const mapped = mappedIpv4(groups);
  if (mapped !== undefined) return mapped;
  const kept = groups.map((g, i) => {
    const bits = Math.min(16, Math.max(0, IPV6_PREFIX_LENGTH - 16 * i));
    return g & ((0xffff << (16 - bits)) & 0xffff);
  });
  return `${kept.map((g) => g.toString(16)).join(':')}/${IPV6_PREFIX_LENGTH}`;
}

/** ipv4Of - an IPv4 address as it is, an IPv4-mapped IPv6 address as the IPv4 address it carries; else undefined. */
export function ipv4Of(address: string): string | undefined {
  if (isIPv4(address)) return address;
  return isIPv6(address) ? mappedIpv4(ipv6Groups(address)) : undefined;
}

/** mappedIpv4 - the IPv4 address in the groups of an IPv4-mapped IPv6 address (::ffff:a.b.c.d). */
function mappedIpv4(groups: readonly number[]): string | undefined {
  if (!groups.slice(0, 5).every((g) => g === 0) || groups[5] !== 0xffff) return undefined;
  return [groups[6]! >> 8, groups[6]! & 0xff, groups[7]! >> 8, groups[7]! & 0xff].join('.');
}

/** ipv6Groups - the eight 16-bit groups of a valid IPv6 address (a zone index is dropped; a trailing IPv4 part is two groups). */
export function ipv6Groups(address: string): number[] {
  let text = address.split('%')[0]!;
  const v4 = /(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(text);
  if (v4) {
    const [a, b, c, d] = v4.slice(1).map(Number) as [number, number, number, number];
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`;
  }
  const [head, tail] = text.split('::') as [string, string | undefined];
  const parse = (part: string | undefined) => (part ? part.split(':').map((h) => parseInt(h, 16)) : []);
  const front = parse(head);
  if (tail === undefined) return front;
  const back = parse(tail);
  return [...front, ...new Array<number>(8 - front.length - back.length).fill(0), ...back];
}
