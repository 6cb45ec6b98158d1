// Network allow-lists (relay.trustedNetworks), compiled once at start.
// Throws on a bad entry, so a typo stops the start instead of opening or
// closing the relay by accident.
import { BlockList, isIP } from 'node:net';
import { isNetwork } from '../config/values.ts';

export type NetworkMatcher = (address: string) => boolean;

/**
 * Answers a matcher keeps, by address; all are dropped when it is full. BlockList.check builds a
 * SocketAddress on every call: 89 ms of a 13 s profile with a connection per message (30 µs a
 * connection), and a relay sees the same clients again and again.
 */
export const REMEMBERED_ADDRESSES = 4096;

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
  const check = (address: string): boolean => {
    const plain = unmapIpv4(address);
    const family = isIP(plain);
    if (family === 0) return false;
    return list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
  };
  const answers = new Map<string, boolean>();
  return (address) => {
    let answer = answers.get(address);
    if (answer === undefined) {
      if (answers.size >= REMEMBERED_ADDRESSES) answers.clear();
      answer = check(address);
      answers.set(address, answer);
    }
    return answer;
  };
}

/** unmapIpv4 - "::ffff:127.0.0.1" (a v4 client on a dual-stack socket) -> "127.0.0.1". */
function unmapIpv4(address: string): string {
  const match = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return match ? match[1]! : address;
}
