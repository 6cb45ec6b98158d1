// chooseMxTargets and relaySelf, without sockets: which addresses an MX delivery tries, and when none is a loop, a
// bounce or a deferral.
import { describe, expect, it } from 'vitest';
import type { AddressLookup } from '../../src/outbound/mx-resolver.ts';
import { orderMx } from '../../src/outbound/mx-resolver.ts';
import { chooseMxTargets, MX_ADDRESS_LIMIT, relaySelf } from '../../src/outbound/mx-targets.ts';

const addresses = (...list: string[]): AddressLookup => ({ kind: 'addresses', addresses: list });
const notUs = relaySelf(['relay.example'], []);

describe('chooseMxTargets', () => {
  it('tries every address of every host in order, each once per host, at most MX_ADDRESS_LIMIT', () => {
    const chosen = chooseMxTargets('example.com', 25, [
      { name: 'mx1.example.com', priority: 10, found: addresses('192.0.2.1', '192.0.2.1') },
      { name: 'mx2.example.com', priority: 20, found: addresses('192.0.2.1', '192.0.2.3', '2001:db8::1') },
      { name: 'mx3.example.com', priority: 30, found: addresses('192.0.2.4', '192.0.2.5') },
    ], notUs, false);
    expect(chosen).toEqual({
      ok: true,
      targets: [
        { host: 'mx1.example.com', ip: '192.0.2.1' },
        // The same address under another name: another certificate name to verify.
        { host: 'mx2.example.com', ip: '192.0.2.1' },
        { host: 'mx2.example.com', ip: '192.0.2.3' },
        { host: 'mx2.example.com', ip: '2001:db8::1' },
        { host: 'mx3.example.com', ip: '192.0.2.4' },
      ],
    });
    expect(MX_ADDRESS_LIMIT).toBe(5);
  });

  it('drops this relay and every host not preferred to it; bounces when it is the best MX', () => {
    const self = relaySelf(['Relay.Example.'], [{ host: '192.0.2.9', port: 25 }]);
    const hosts = [
      { name: 'mx1.example.com', priority: 10, found: addresses('192.0.2.1') },
      { name: 'mx2.example.com', priority: 20, found: addresses('192.0.2.2') },
      { name: 'relay.example', priority: 20, found: addresses('192.0.2.9') },
      { name: 'mx3.example.com', priority: 30, found: addresses('192.0.2.3') },
    ];
    expect(chooseMxTargets('example.com', 25, hosts, self, false)).toEqual({ ok: true, targets: [{ host: 'mx1.example.com', ip: '192.0.2.1' }] });
    expect(chooseMxTargets('example.com', 25, hosts.slice(1), self, false)).toEqual({ ok: false, reply: '5.4.6 mail for example.com loops back to myself (MX relay.example)' });
    // By address and port: another name for one of our listeners; on another port it is another server.
    const byAddress = [{ name: 'alias.example.com', priority: 10, found: addresses('192.0.2.9') }];
    expect(chooseMxTargets('example.com', 25, byAddress, self, false)).toMatchObject({ ok: false, reply: '5.4.6 mail for example.com loops back to myself (MX alias.example.com)' });
    expect(chooseMxTargets('example.com', 2525, byAddress, self, false)).toEqual({ ok: true, targets: [{ host: 'alias.example.com', ip: '192.0.2.9' }] });
  });

  // Postfix: "unable to find primary relay"; their addresses may come back, and a backup must not bounce their mail.
  it('defers when this relay is a backup MX and no primary has an address', () => {
    const self = relaySelf(['relay.example'], []);
    expect(chooseMxTargets('example.com', 25, [
      { name: 'mx1.example.com', priority: 10, found: { kind: 'none' } },
      { name: 'relay.example', priority: 20, found: addresses('192.0.2.9') },
    ], self, false)).toEqual({ ok: false, reply: '4.4.4 unable to find primary relay for example.com (no address for mx1.example.com)' });
  });

  it('bounces when no MX host has an address, defers when a lookup failed for now or every address is private', () => {
    const none: AddressLookup = { kind: 'none' };
    expect(chooseMxTargets('example.com', 25, [{ name: 'gone.example.com', priority: 10, found: none }], notUs, false)).toEqual({
      ok: false,
      reply: '5.4.4 Host or domain name not found: no MX host of example.com has an address (gone.example.com)',
    });
    expect(chooseMxTargets('example.com', 25, [
      { name: 'gone.example.com', priority: 10, found: none },
      { name: 'slow.example.com', priority: 20, found: { kind: 'temporary', reason: 'ETIMEOUT' } },
    ], notUs, false)).toEqual({ ok: false, reply: '4.4.3 DNS lookup for slow.example.com failed: ETIMEOUT' });
    const inside = [{ name: 'mx.example.com', priority: 10, found: addresses('10.0.0.1') }];
    expect(chooseMxTargets('example.com', 25, inside, notUs, false)).toMatchObject({ ok: false, reply: expect.stringMatching(/^4\.4\.4 every MX of example\.com has a loopback or private address/) });
    expect(chooseMxTargets('example.com', 25, inside, notUs, true)).toEqual({ ok: true, targets: [{ host: 'mx.example.com', ip: '10.0.0.1' }] });
  });
});

describe('relaySelf', () => {
  it('matches a listener by address (IPv4-mapped too) and port, and a wildcard listener by this machine\'s addresses', () => {
    const self = relaySelf(['relay.example'], [{ host: '127.0.0.1', port: 2525 }, { host: '::', port: 25 }]);
    expect([self.listensOn('127.0.0.1', 2525), self.listensOn('::ffff:127.0.0.1', 2525), self.listensOn('127.0.0.1', 2526)]).toEqual([true, true, false]);
    expect([self.listensOn('127.0.0.1', 25), self.listensOn('192.0.2.77', 25)]).toEqual([true, false]);
  });

  // Postfix's proxy_interfaces: the public address a NAT or a container's port mapping sends to us, on any port.
  it('takes the addresses that reach it through NAT or a proxy as its own, on any port', () => {
    const self = relaySelf(['relay.example'], [{ host: '0.0.0.0', port: 25 }], ['203.0.113.25', '2001:db8:0:0:0:0:0:25']);
    expect([self.listensOn('203.0.113.25', 25), self.listensOn('::ffff:cb00:7119', 2525), self.listensOn('2001:DB8::25', 25), self.listensOn('203.0.113.26', 25)]).toEqual([true, true, true, false]);
  });
});

describe('orderMx', () => {
  it('keeps a host named twice once, at its best priority', () => {
    expect(orderMx([{ exchange: 'b.example', priority: 20 }, { exchange: 'A.example.', priority: 30 }, { exchange: 'a.example', priority: 10 }], () => 0)).toEqual([
      { name: 'a.example', priority: 10 },
      { name: 'b.example', priority: 20 },
    ]);
  });
});
