// The client's name in the Received header, as Postfix's smtpd gives it:
// the name the client's address points to (PTR) only when that name's own
// addresses include the client's ("forward-confirmed"); else "unknown". A
// PTR record is written by whoever holds the address: unconfirmed, any
// client could have "mail.bank.example" put in our Received header, which
// filters downstream trust as a relay's word.
// The name's addresses come from the hosts file when it lists the name,
// else from DNS: the reverse lookup reads the hosts file first too (c-ares,
// as the system's resolver), so a client named there (127.0.0.1 as
// "localhost") keeps its name, as with Postfix's getaddrinfo. The file is
// read once, when the relay starts (cli/serve.ts).
// Fails: a lookup that fails or times out gives no name, as no PTR does
// (smtp-server then has "[ip]", which the listener writes as "unknown").
//
//   forwardConfirmed - a reverse resolver for smtp-server that answers only forward-confirmed names.
//   readHostsFile    - a hosts file's addresses by name; none if it cannot be read.
import { readFileSync } from 'node:fs';
import { isIPv4, isIPv6 } from 'node:net';
import { ipv4Of, ipv6Groups } from './limit-key.ts';

type Answer = (err: Error | null, names?: string[]) => void;

/** The lookups a client name needs (node:dns's Resolver has them). */
export interface NameResolver {
  reverse(ip: string, callback: (err: Error | null, hostnames: string[]) => void): void;
  resolve4(name: string, callback: (err: Error | null, addresses: string[]) => void): void;
  resolve6(name: string, callback: (err: Error | null, addresses: string[]) => void): void;
}

/** What smtp-server's `resolver` option calls. */
export interface ReverseResolver {
  reverse(ip: string, callback: Answer): void;
}

/** The system's hosts file. */
export const HOSTS_FILE = '/etc/hosts';

/** A hosts file's addresses, by name in lower case. */
export type HostsFile = ReadonlyMap<string, readonly string[]>;

/**
 * forwardConfirmed - reverse(ip) answers [name] when the first PTR name resolves back to ip (by `hosts` when it lists
 * the name, else by DNS), else []; `unconfirmed` hears of a name dropped, and why.
 */
export function forwardConfirmed(resolver: NameResolver, hosts: HostsFile, unconfirmed: (ip: string, name: string, reason: string) => void): ReverseResolver {
  return {
    reverse(ip, callback) {
      resolver.reverse(ip, (err, names) => {
        const name = names?.[0];
        if (err || !name) return callback(err, []);
        const v4 = ipv4Of(ip);
        const listed = hosts.get(name.toLowerCase());
        const lookUp: NameResolver['resolve4'] = listed ? (_name, answer) => answer(null, [...listed]) : v4 ? resolver.resolve4.bind(resolver) : resolver.resolve6.bind(resolver);
        lookUp(name, (forwardErr, addresses) => {
          const client = addressKey(v4 ?? ip);
          if (!forwardErr && addresses.some((address) => addressKey(address) === client)) return callback(null, [name]);
          unconfirmed(ip, name, forwardErr ? ((forwardErr as NodeJS.ErrnoException).code ?? forwardErr.message) : 'none of its addresses is the client\'s');
          callback(null, []);
        });
      });
    },
  };
}

/** addressKey - one text per address, whatever its IPv6 spelling. */
function addressKey(address: string): string {
  return isIPv6(address) ? ipv6Groups(address).join(':') : address;
}

/** readHostsFile - the addresses each name has in a hosts file ("address name alias…" lines, # comments). */
export function readHostsFile(path: string): HostsFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch {
    return new Map();
  }
  const hosts = new Map<string, string[]>();
  for (const line of text.split('\n')) {
    const [address, ...names] = line.replace(/#.*/, '').trim().split(/\s+/);
    if (!address || !(isIPv4(address) || isIPv6(address))) continue;
    for (const name of names.map((n) => n.toLowerCase())) hosts.set(name, [...(hosts.get(name) ?? []), address]);
  }
  return hosts;
}
