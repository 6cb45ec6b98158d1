// Routing: where mail for a recipient domain goes next, and at what TLS
// level. Pure: config in, decision out. Order as Postfix: a relayhost
// (smarthost) takes everything; otherwise a per-domain route (transport
// map, "*" as catch-all); otherwise an address literal's own IP address
// (user@[192.0.2.1]); otherwise the domain's MX records.
// TLS level, in order (DESIGN.md): the message (REQUIRETLS forces verify),
// the per-domain policy map, the route's (or smarthost's) setting, the
// global default. A level `mta-sts` is settled by the domain's policy
// (mta-sts.ts decideStsLevel), once it is known.
import type { DomainTlsLevel, OutboundConfig, TlsLevel } from '../config/config.ts';
import { addressLiteralIp } from '../smtp/address.ts';

export type NextHop =
  | { kind: 'relayhost'; host: string; port: number; secure: boolean }
  | { kind: 'route'; host: string; port: number; secure: boolean; routeName: string }
  | { kind: 'literal'; ip: string; port: number }
  | { kind: 'mx'; domain: string; port: number };

/** A TLS level and where it came from (shown by `queue show`); `mta-sts` until the domain's policy settles it. */
export interface TlsDecision<Level extends DomainTlsLevel = TlsLevel> {
  level: Level;
  source: string;
}

/** decideNextHop - smarthost, route, address literal, or MX for a recipient domain. */
export function decideNextHop(domain: string, outbound: Pick<OutboundConfig, 'relayhost' | 'routes' | 'port'>): NextHop {
  if (outbound.relayhost.host) return { kind: 'relayhost', host: outbound.relayhost.host, port: outbound.relayhost.port, secure: outbound.relayhost.secure };
  const routeName = findRoute(domain, outbound.routes);
  if (routeName !== undefined) {
    const route = outbound.routes[routeName]!;
    return { kind: 'route', host: route.host, port: route.port ?? 25, secure: route.secure ?? false, routeName };
  }
  const literal = addressLiteralIp(domain);
  if (literal !== undefined) return { kind: 'literal', ip: literal, port: outbound.port };
  return { kind: 'mx', domain, port: outbound.port };
}

/** findRoute - the routes key for a domain: exact, then parent domains as ".example.com"-style suffixes, then "*". */
function findRoute(domain: string, routes: OutboundConfig['routes']): string | undefined {
  const d = domain.toLowerCase();
  if (d in routes) return d;
  const labels = d.split('.');
  for (let i = 1; i < labels.length; i++) {
    const parent = '*.' + labels.slice(i).join('.');
    if (parent in routes) return parent;
  }
  return '*' in routes ? '*' : undefined;
}

/** decideTlsLevel - the level for one delivery and where it came from. */
export function decideTlsLevel(facts: { requireTls: boolean; domain: string; nextHop: NextHop; outbound: Pick<OutboundConfig, 'tlsPolicies' | 'routes' | 'relayhost' | 'tls'> }): TlsDecision<DomainTlsLevel> {
  const { outbound, nextHop } = facts;
  // RFC 8689 §4.2: a REQUIRETLS message goes only over verified TLS.
  if (facts.requireTls) return { level: 'verify', source: 'REQUIRETLS' };
  const policy = outbound.tlsPolicies[facts.domain.toLowerCase()];
  // A domain's MTA-STS policy names its MX hosts: for a route or the smarthost, their own level holds.
  if (policy && !(policy === 'mta-sts' && nextHop.kind !== 'mx')) return { level: policy, source: `outbound.tlsPolicies["${facts.domain.toLowerCase()}"]` };
  if (nextHop.kind === 'relayhost') return { level: outbound.relayhost.tls, source: 'outbound.relayhost.tls' };
  if (nextHop.kind === 'route') {
    const level = outbound.routes[nextHop.routeName]?.tls;
    if (level) return { level, source: `outbound.routes["${nextHop.routeName}"].tls` };
  }
  return { level: outbound.tls.level, source: 'outbound.tls.level' };
}
