// Network allow-lists (relay.trustedNetworks), compiled once at start.
// Throws on a bad entry, so a typo stops the start instead of opening or
// closing the relay by accident.
import { BlockList, isIP } from 'node:net';
import { isNetwork } from '../config/values.ts';

export type NetworkMatcher = (address: string) => boolean;

/** compileNetworks - a matcher for a list of CIDR networks or single addresses. */
export function compileNetworks(networks: readonly string[]): NetworkMatcher {
  const list = new BlockList();
  for (const network of networks) {
    if (!isNetwork(network)) throw new Error(`not a network: ${network}`);
    const [address, prefix] = network.split('/');
    const family = isIP(address!);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(address!, type);
    else list.addSubnet(address!, Number(prefix), type);
  }
  return (address) => {
    const plain = unmapIpv4(address);
    const family = isIP(plain);
    if (family === 0) return false;
    return list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
  };
}

/** unmapIpv4 - "::ffff:127.0.0.1" (a v4 client on a dual-stack socket) -> "127.0.0.1". */
function unmapIpv4(address: string): string {
  const match = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return match ? match[1]! : address;
}
