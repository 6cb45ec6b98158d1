// The smarthost readiness probe (/readyz): can this relay hand mail to
// outbound.relayhost right now, at its TLS level and with its credentials?
// It opens a session exactly as a delivery would (smtp-session.ts: connect,
// EHLO, STARTTLS per outbound.relayhost.tls, AUTH), then QUITs without a
// transaction. Every address of the host is tried in turn, as deliver() does.
//
// How it fails: never throws; a DNS failure, refused connection, TLS below
// the level or rejected login becomes { ok: false, error } with the reply.
//
//   probeRelayhost - one session to the smarthost, closed at once.
import type { OutboundConfig } from '../config/config.ts';
import type { Logger } from '../observability/logger.ts';
import { lookupAddresses, type DnsResolver } from './mx-resolver.ts';
import { sessionTimeouts } from './session-timeouts.ts';
import { openSession, type SessionSettings } from './smtp-session.ts';

export interface RelayhostProbeDeps {
  relayhost: OutboundConfig['relayhost'];
  heloName: string;
  resolver: DnsResolver;
  extraCa: string[];
  auth?: SessionSettings['auth'];
  /** Connect and greeting time allowed (the probe should not outlast a health check). */
  timeoutMs: number;
  logger: Logger;
}

export type RelayhostProbe = { ok: true; address: string; tls?: string } | { ok: false; error: string };

/** probeRelayhost - one session to the smarthost, closed at once. */
export async function probeRelayhost(deps: RelayhostProbeDeps): Promise<RelayhostProbe> {
  const { host, port, secure, tls: level } = deps.relayhost;
  const addresses = await addressesOf(host, deps.resolver);
  if (!addresses.ok) return addresses;
  let error = `no address for ${host}`;
  for (const ip of addresses.list) {
    const opened = await openSession(
      { host, ip, port, secure },
      { level, heloName: deps.heloName, extraCa: deps.extraCa, timeouts: sessionTimeouts(deps.timeoutMs, deps.timeoutMs), auth: deps.auth, logger: deps.logger },
    );
    if (opened.ok) {
      opened.session.close();
      return { ok: true, address: `${ip}:${port}`, ...(opened.session.tls ? { tls: opened.session.tls.version } : {}) };
    }
    error = `${ip}:${port}: ${opened.reply}`;
    deps.logger.warn({ host, ip, port, tlsLevel: level, reply: opened.reply }, 'smarthost probe failed');
  }
  return { ok: false, error };
}

async function addressesOf(host: string, resolver: DnsResolver): Promise<{ ok: true; list: string[] } | { ok: false; error: string }> {
  const found = await lookupAddresses(host, resolver);
  if (found.kind === 'addresses') return { ok: true, list: found.addresses };
  return { ok: false, error: found.kind === 'temporary' ? `DNS lookup for ${host} failed: ${found.reason}` : `no address for ${host}` };
}
