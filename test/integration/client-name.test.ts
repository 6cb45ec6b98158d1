// A client's name as the Received header gets it (inbound/client-name.ts): the PTR name only when it resolves back to
// the client's address, by the hosts file when that lists the name (the reverse lookup reads it first too: 127.0.0.1
// is "localhost" there), else by DNS. A real resolver asks a DNS server on 127.0.0.1; the hosts file is the test's.
import { Resolver } from 'node:dns';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { forwardConfirmed, readHostsFile } from '../../src/inbound/client-name.ts';
import { startDnsServer, type DnsServer } from '../helpers/dns-server.ts';

let dns: DnsServer;
let dir: string;
let hostsFile: string;
beforeAll(async () => {
  dns = await startDnsServer({
    '5.0.0.127.in-addr.arpa': { ptr: ['printer.lan'] },
    '6.0.0.127.in-addr.arpa': { ptr: ['mail.bank.test'] },
    'mail.bank.test': { a: ['192.0.2.1'] },
  });
  dir = await mkdtemp(join(tmpdir(), 'postern-hosts-'));
  hostsFile = join(dir, 'hosts');
  await writeFile(hostsFile, '# the test hosts file\n127.0.0.5\tprinter.lan printer # the office printer\n::1 ip6-localhost\nnot-an-address ghost\n127.0.0.9 Printer.LAN\n');
});
afterAll(async () => {
  await dns.close();
  await rm(dir, { recursive: true, force: true });
});

/** nameOf - what forwardConfirmed answers for `ip`, and the names it dropped. */
async function nameOf(ip: string): Promise<{ names: string[]; dropped: string[] }> {
  const resolver = new Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers([dns.address]);
  const dropped: string[] = [];
  const confirmed = forwardConfirmed(resolver, readHostsFile(hostsFile), (_ip, name, reason) => dropped.push(`${name}: ${reason}`));
  const names = await new Promise<string[]>((resolve, reject) => confirmed.reverse(ip, (err, found) => (err ? reject(err) : resolve(found ?? []))));
  return { names, dropped };
}

describe('a client name confirmed by the hosts file or DNS', () => {
  it('reads a hosts file: addresses by name in lower case, aliases, comments; lines without an address are skipped', () => {
    expect(Object.fromEntries(readHostsFile(hostsFile))).toEqual({ 'printer.lan': ['127.0.0.5', '127.0.0.9'], printer: ['127.0.0.5'], 'ip6-localhost': ['::1'] });
    expect(readHostsFile(join(dir, 'none')).size).toBe(0);
  });

  it('keeps a PTR name that the hosts file gives the address, though DNS has none', async () => {
    expect(await nameOf('127.0.0.5')).toEqual({ names: ['printer.lan'], dropped: [] });
  });

  it('drops a PTR name whose DNS addresses are others, and says why', async () => {
    expect(await nameOf('127.0.0.6')).toEqual({ names: [], dropped: ["mail.bank.test: none of its addresses is the client's"] });
  });
});
