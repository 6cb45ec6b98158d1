// Routing, TLS level choice, SMTPUTF8, reply classification and retry timing: pure decisions, table-driven.
import { describe, expect, it } from 'vitest';
import type { OutboundConfig } from '../../src/config/config.ts';
import { classifyReply } from '../../src/outbound/classify.ts';
import { decideNextHop, decideTlsLevel } from '../../src/outbound/route.ts';
import { decideWithoutSmtpUtf8, smtpUtf8NotOffered } from '../../src/outbound/smtputf8.ts';
import { cleanReply } from '../../src/smtp/replies.ts';
import { nextAttemptAt, retryDelaySeconds } from '../../src/queue/backoff.ts';

const base: Pick<OutboundConfig, 'relayhost' | 'routes' | 'port' | 'tlsPolicies' | 'tls'> = {
  relayhost: { host: '', port: 587, secure: false, tls: 'encrypt', auth: { user: '', pass: '', passFile: '', oauth2: {} } },
  routes: { 'example.test': { host: '127.0.0.1', port: 2600, tls: 'encrypt' }, '*.corp.test': { host: 'gw.corp.test' }, 'plain.test': { host: 'p.test' } },
  port: 25,
  tlsPolicies: { 'bank.example': 'verify', 'example.test': 'verify', 'sts.example': 'mta-sts' },
  tls: { level: 'may', caFile: '' },
};

describe('decideNextHop', () => {
  it.each([
    ['example.test', { kind: 'route', host: '127.0.0.1', port: 2600, secure: false, routeName: 'example.test' }],
    ['a.corp.test', { kind: 'route', host: 'gw.corp.test', port: 25, secure: false, routeName: '*.corp.test' }],
    ['corp.test', { kind: 'mx', domain: 'corp.test', port: 25 }],
    ['other.org', { kind: 'mx', domain: 'other.org', port: 25 }],
    ['[192.0.2.1]', { kind: 'literal', ip: '192.0.2.1', port: 25 }],
    ['[ipv6:2001:db8::1]', { kind: 'literal', ip: '2001:db8::1', port: 25 }],
    ['[192.0.2.300]', { kind: 'mx', domain: '[192.0.2.300]', port: 25 }],
  ])('%s', (domain, expected) => expect(decideNextHop(domain, base)).toEqual(expected));
  it('sends everything to the relayhost when one is set', () => {
    expect(decideNextHop('example.test', { ...base, relayhost: { ...base.relayhost, host: 'smtp.example.net', secure: true, port: 465 } })).toEqual({ kind: 'relayhost', host: 'smtp.example.net', port: 465, secure: true });
  });
  it('uses the "*" route as a catch-all', () => {
    expect(decideNextHop('x.org', { ...base, routes: { '*': { host: 'hub', port: 26 } } })).toMatchObject({ kind: 'route', host: 'hub', port: 26, routeName: '*' });
  });
  it('sends an address literal to the relayhost or a route like any domain', () => {
    expect(decideNextHop('[192.0.2.1]', { ...base, routes: { '*': { host: 'hub', port: 26 } } })).toMatchObject({ kind: 'route', routeName: '*' });
    expect(decideNextHop('[192.0.2.1]', { ...base, relayhost: { ...base.relayhost, host: 'smtp.example.net' } })).toMatchObject({ kind: 'relayhost' });
  });
});

describe('decideTlsLevel', () => {
  const hop = (domain: string) => decideNextHop(domain, base);
  it.each([
    ['REQUIRETLS wins over everything', true, 'plain.test', { level: 'verify', source: 'REQUIRETLS' }],
    ['per-domain policy beats the route', false, 'example.test', { level: 'verify', source: 'outbound.tlsPolicies["example.test"]' }],
    ['per-domain policy for an MX domain', false, 'bank.example', { level: 'verify', source: 'outbound.tlsPolicies["bank.example"]' }],
    ['route level when no policy', false, 'a.corp.test', { level: 'may', source: 'outbound.tls.level' }],
    ['global default', false, 'other.org', { level: 'may', source: 'outbound.tls.level' }],
    ['mta-sts, for the MTA-STS policy to settle', false, 'sts.example', { level: 'mta-sts', source: 'outbound.tlsPolicies["sts.example"]' }],
    ['REQUIRETLS over mta-sts', true, 'sts.example', { level: 'verify', source: 'REQUIRETLS' }],
  ] as const)('%s', (_name, requireTls, domain, expected) => {
    expect(decideTlsLevel({ requireTls, domain, nextHop: hop(domain), outbound: base })).toEqual(expected);
  });
  it('takes the route level, and the relayhost level', () => {
    const outbound = { ...base, tlsPolicies: {} };
    expect(decideTlsLevel({ requireTls: false, domain: 'example.test', nextHop: hop('example.test'), outbound })).toEqual({ level: 'encrypt', source: 'outbound.routes["example.test"].tls' });
    const relay = { ...outbound, relayhost: { ...base.relayhost, host: 'smarthost' } };
    expect(decideTlsLevel({ requireTls: false, domain: 'x.org', nextHop: decideNextHop('x.org', relay), outbound: relay })).toEqual({ level: 'encrypt', source: 'outbound.relayhost.tls' });
  });
});

// RFC 6531 §3.2: no address that is not ASCII to a next hop without SMTPUTF8.
describe('decideWithoutSmtpUtf8', () => {
  const to = (...addresses: string[]) => addresses.map((address) => ({ address }));
  it.each([
    ['an ASCII envelope goes', 'a@example.org', to('b@example.org', 'c@example.org'), { send: to('b@example.org', 'c@example.org'), bounce: [] }],
    ['the null sender is ASCII', '', to('b@example.org'), { send: to('b@example.org'), bounce: [] }],
    ['an A-label is ASCII', 'a@xn--bcher-kva.example', to('b@xn--exmple-cua.test'), { send: to('b@xn--exmple-cua.test'), bounce: [] }],
    ['a UTF-8 local part is bounced, the others go, in their order', 'a@example.org', to('b@example.org', 'bøb@example.org', 'c@example.org'), { send: to('b@example.org', 'c@example.org'), bounce: to('bøb@example.org') }],
    ['a UTF-8 domain is bounced', 'a@example.org', to('b@exämple.org'), { send: [], bounce: to('b@exämple.org') }],
    ['a UTF-8 sender bounces every recipient', 'ålice@example.org', to('b@example.org', 'c@example.org'), { send: [], bounce: to('b@example.org', 'c@example.org') }],
  ])('%s', (_name, mailFrom, recipients, expected) => {
    expect(decideWithoutSmtpUtf8(mailFrom, recipients)).toEqual(expected);
  });
  it('keeps what it is given with each recipient (its DSN parameters)', () => {
    const r = { address: 'bøb@example.org', dsn: { orcpt: 'rfc822;bøb@example.org' } };
    expect(decideWithoutSmtpUtf8('a@example.org', [r]).bounce[0]).toBe(r);
  });
  it('says why in Postfix\'s words, a bounce', () => {
    expect(smtpUtf8NotOffered('mx.example.org')).toBe('5.6.7 SMTPUTF8 is required, but was not offered by host mx.example.org');
    expect(classifyReply(smtpUtf8NotOffered('mx.example.org'))).toBe('bounced');
  });
});

describe('classifyReply', () => {
  it.each([
    ['250 2.0.0 Ok', 'delivered'],
    ['550 5.1.1 No such user', 'bounced'],
    ['451 4.3.0 try later', 'deferred'],
    ['4.4.1 ECONNECTION: connect refused', 'deferred'],
    ['', 'deferred'],
  ])('%s -> %s', (reply, expected) => expect(classifyReply(reply)).toBe(expected));
});

describe('backoff (Postfix defaults: 300s, doubling, max 4000s, lifetime 5d)', () => {
  const retry = { initial: 300, max: 4000, lifetime: 5 * 86400 };
  it('doubles from the initial delay up to the cap', () => {
    expect([1, 2, 3, 4, 5, 6, 50].map((n) => retryDelaySeconds(n, retry))).toEqual([300, 600, 1200, 2400, 4000, 4000, 4000]);
  });
  it('adds at most 10% jitter', () => {
    const receivedAt = new Date(0);
    const now = new Date(1000);
    expect(nextAttemptAt({ attempts: 1, receivedAt, now, retry, random: () => 0 })!.getTime()).toBe(1000 + 300_000);
    expect(nextAttemptAt({ attempts: 1, receivedAt, now, retry, random: () => 0.5 })!.getTime()).toBe(1000 + 315_000);
  });
  it('stops at the lifetime: the last try at its end, then none', () => {
    const receivedAt = new Date(0);
    const nearEnd = new Date(5 * 86400_000 - 1000);
    expect(nextAttemptAt({ attempts: 40, receivedAt, now: nearEnd, retry, random: () => 0 })!.getTime()).toBe(5 * 86400_000);
    expect(nextAttemptAt({ attempts: 41, receivedAt, now: new Date(5 * 86400_000), retry, random: () => 0 })).toBeUndefined();
  });
});

// What a next hop says is stored, logged and printed by `queue show`: it must not reach a terminal as escape codes.
describe('cleanReply', () => {
  it.each([
    ['550 5.1.1 No such user', '550 5.1.1 No such user'],
    ['550-5.7.1 first line\r\n550 5.7.1 second line', '550-5.7.1 first line 550 5.7.1 second line'],
    ['550 5.7.1 \x1b[31mred\x1b[0m', '550 5.7.1 ?[31mred?[0m'],
    ['550 5.1.1 café inconnu', '550 5.1.1 café inconnu'],
    ['451\t4.3.0\x00busy\x85', '451 4.3.0?busy?'],
  ])('%j -> %j', (reply, clean) => {
    expect(cleanReply(reply)).toBe(clean);
  });
  it('keeps at most 2,000 characters', () => {
    expect(cleanReply(`550 ${'x'.repeat(5000)}`)).toHaveLength(2003);
  });
});
