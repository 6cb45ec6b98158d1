// Which addresses an MX delivery tries, from the MX hosts (priority order) and
// their addresses, as Postfix's smtp chooses them:
//   - a mail loop: an MX that is this relay (its host name, or an address and
//     port one of our listeners takes) and every MX not preferred to it are
//     dropped; none left is a bounce, 5.4.6 "loops back to myself", and
//     primaries without an address a deferral (4.4.4, as Postfix);
//   - at most MX_ADDRESS_LIMIT addresses (smtp_mx_address_limit), each once
//     per host;
//   - addresses in our own networks are not followed (SSRF), unless allowed;
//   - no address for any MX host is a bounce, 5.4.4, as Postfix returns it
//     (smtp_defer_if_no_mx_address_found = no); a lookup that failed for now
//     is a deferral.
// Pure: the lookups are done by the caller (deliver.ts).
import { BlockList, isIP } from 'node:net';
import { networkInterfaces } from 'node:os';
import type { AddressLookup, MxHost } from './mx-resolver.ts';
import { isPublicAddress } from './mx-resolver.ts';

/** Addresses tried per delivery attempt, over all MX hosts (Postfix: smtp_mx_address_limit). */
export const MX_ADDRESS_LIMIT = 5;

/** MX hosts whose addresses are looked up; the address limit is met long before in any real domain. */
export const MX_HOST_LIMIT = 10;

/** This relay, as a next hop would see it: an MX that is this relay loops the mail back to it. */
export interface RelaySelf {
  /** Our host names (hostname), lower case. */
  names: readonly string[];
  /** Whether a connection to ip:port reaches one of our listeners (directly, or through NAT or a proxy). */
  listensOn(ip: string, port: number): boolean;
}

/** dnsLookupFailed - the deferral for a lookup that failed for now (SERVFAIL, timeout): the answer may come. */
export function dnsLookupFailed(name: string, reason: string): string {
  return `4.4.3 DNS lookup for ${name} failed: ${reason}`;
}

export type MxTargets = { ok: true; targets: { host: string; ip: string }[] } | { ok: false; reply: string };

/** chooseMxTargets - the addresses to try for `domain`, in order, or the verdict when there are none. */
export function chooseMxTargets(
  domain: string,
  port: number,
  hosts: readonly (MxHost & { found: AddressLookup })[],
  self: RelaySelf,
  allowPrivateTargets: boolean,
): MxTargets {
  // RFC 5321 §5.1: hosts not preferred to ourselves are dropped; if we are the best, the mail has nowhere to go.
  const own = hosts.find((h) => self.names.includes(h.name) || (h.found.kind === 'addresses' && h.found.addresses.some((ip) => self.listensOn(ip, port))));
  const preferred = own ? hosts.filter((h) => h.priority < own.priority) : hosts;
  if (own && preferred.length === 0) return { ok: false, reply: `5.4.6 mail for ${domain} loops back to myself (MX ${own.name})` };
  const targets: { host: string; ip: string }[] = [];
  const seen = new Set<string>();
  let refused = 0;
  let temporary = '';
  for (const host of preferred) {
    if (host.found.kind === 'temporary') temporary = dnsLookupFailed(host.name, host.found.reason);
    if (host.found.kind !== 'addresses') continue;
    for (const ip of host.found.addresses) {
      // Per host: another name at the same address is another certificate to verify (MTA-STS, verify).
      if (seen.has(`${host.name} ${ip}`) || targets.length >= MX_ADDRESS_LIMIT) continue;
      seen.add(`${host.name} ${ip}`);
      if (!allowPrivateTargets && !isPublicAddress(ip)) refused++;
      else targets.push({ host: host.name, ip });
    }
  }
  if (targets.length > 0) return { ok: true, targets };
  if (refused > 0) return { ok: false, reply: `4.4.4 every MX of ${domain} has a loopback or private address; refused (set a route or outbound.allowPrivateTargets)` };
  if (temporary) return { ok: false, reply: temporary };
  // We are a backup MX and the primaries have no address: theirs may come back, and we must not bounce their mail.
  if (own) return { ok: false, reply: `4.4.4 unable to find primary relay for ${domain} (no address for ${preferred.map((h) => h.name).join(', ')})` };
  return { ok: false, reply: `5.4.4 Host or domain name not found: no MX host of ${domain} has an address (${preferred.map((h) => h.name).join(', ')})` };
}

/**
 * relaySelf - this relay from its names, started listeners and the addresses that reach it through NAT or a proxy
 * (outbound.ownAddresses): a listener on a wildcard address takes connections to every address of this machine's
 * interfaces (read at each check: they change).
 */
export function relaySelf(names: readonly string[], listeners: readonly { host: string; port: number }[], proxied: readonly string[] = []): RelaySelf {
  const proxiedList = new BlockList();
  for (const address of proxied) proxiedList.addAddress(address, familyOf(address));
  return {
    names: [...new Set(names.map((n) => n.toLowerCase().replace(/\.$/, '')))],
    listensOn(ip, port) {
      // Reached through NAT or a proxy: on whatever port it maps to ours.
      if (isIP(ip) !== 0 && proxiedList.check(ip, familyOf(ip))) return true;
      const onPort = listeners.filter((l) => l.port === port);
      if (onPort.some((l) => sameAddress(l.host, ip))) return true;
      if (!onPort.some((l) => l.host === '0.0.0.0' || l.host === '::')) return false;
      return Object.values(networkInterfaces()).some((list) => list?.some((i) => sameAddress(i.address, ip)));
    },
  };
}

/** sameAddress - one address however written: IPv6 with or without its zeros, IPv4 or IPv4-mapped IPv6. */
function sameAddress(a: string, b: string): boolean {
  if (isIP(a) === 0 || isIP(b) === 0) return false;
  const list = new BlockList();
  list.addAddress(a, familyOf(a));
  return list.check(b, familyOf(b));
}

/** familyOf - an IP address's family as BlockList names it. */
function familyOf(ip: string): 'ipv4' | 'ipv6' {
  return isIP(ip) === 4 ? 'ipv4' : 'ipv6';
}
