// Inbound policy as a table: one row per behaviour, the whole decision asserted.
import { describe, expect, it } from 'vitest';
import { addressLiteralIp, asciiDomain, hasSenderRouting, mailboxKey } from '../../src/smtp/address.ts';
import { decideAddressCharset, decideAddressForm, decideParameters, decideAuthAttempt, decideAuthIdentity, decideConnect, decideMailFrom, decideQueueSpace, decideRcpt, decideRecipientLimit, inDomainList, queueSpaceToKeep, type RecipientFacts } from '../../src/inbound/policy.ts';

const relayClient: RecipientFacts = {
  listener: 'relay',
  secure: false,
  authenticated: false,
  clientCertTrusted: false,
  clientTrusted: false,
  recipientDomain: 'example.org',
  recipientRouted: false,
  localDomains: ['example.test', '*.corp.test'],
};

describe('decideRecipientLimit', () => {
  it('refuses a new recipient at the limit with 452 4.5.3, and takes one given again', () => {
    expect(decideRecipientLimit({ accepted: 2, isNew: true, limit: 3 })).toEqual({ accept: true });
    expect(decideRecipientLimit({ accepted: 3, isNew: true, limit: 3 })).toMatchObject({ accept: false, reason: 'recipient-limit', reply: { code: 452, status: '4.5.3' } });
    expect(decideRecipientLimit({ accepted: 3, isNew: false, limit: 3 })).toEqual({ accept: true });
  });
});

describe('decideRcpt', () => {
  const rows: [string, Partial<RecipientFacts>, string][] = [
    ['stranger to a remote domain is refused', {}, '554 5.7.1 Relay access denied'],
    ['trusted network relays anywhere', { clientTrusted: true }, 'accept'],
    ['stranger may send to a local domain', { recipientDomain: 'example.test' }, 'accept'],
    ['local domain match ignores case and a trailing dot', { recipientDomain: 'EXAMPLE.test.' }, 'accept'],
    ['wildcard local domain covers subdomains', { recipientDomain: 'mx.corp.test' }, 'accept'],
    ['wildcard does not cover the parent', { recipientDomain: 'corp.test' }, '554 5.7.1 Relay access denied'],
    ['a look-alike suffix is not local', { recipientDomain: 'evilexample.test' }, '554 5.7.1 Relay access denied'],
    ['domainless recipient is not local', { recipientDomain: '' }, '554 5.7.1 Relay access denied'],
    ['stranger may not route onward through a local domain', { recipientDomain: 'example.test', recipientRouted: true }, '554 5.7.1 Relay access denied'],
    ['trusted network may route onward', { recipientDomain: 'example.test', recipientRouted: true, clientTrusted: true }, 'accept'],
    ['authenticated user relays', { listener: 'submission', secure: true, authenticated: true }, 'accept'],
    ['trusted client certificate relays', { secure: true, clientCertTrusted: true }, 'accept'],
    ['trusted network does not open submission', { listener: 'submission', secure: true, clientTrusted: true }, '554 5.7.1 Relay access denied'],
  ];
  it.each(rows)('%s', (_name, facts, expected) => {
    const d = decideRcpt({ ...relayClient, ...facts });
    expect(d.accept ? 'accept' : `${d.reply.code} ${d.reply.status} ${d.reply.text}`).toBe(expected);
  });
  it('names the reason for logs and metrics', () => {
    const d = decideRcpt(relayClient);
    expect(d).toEqual({ accept: false, reason: 'relay-denied', reply: { code: 554, status: '5.7.1', text: 'Relay access denied' } });
    expect(decideRcpt({ ...relayClient, recipientDomain: 'example.test', recipientRouted: true })).toMatchObject({ reason: 'sender-specified-routing' });
  });
});

describe('mailboxKey', () => {
  it('keeps the local part as sent and lowers the domain', () => {
    expect(mailboxKey('Bob.Smith@Example.TEST')).toBe('Bob.Smith@example.test');
    expect(mailboxKey('"A@B"@Example.test')).toBe('"A@B"@example.test');
    expect(mailboxKey('postmaster')).toBe('postmaster');
  });
});

describe('hasSenderRouting', () => {
  it.each([
    ['user%elsewhere.test@example.test', true],
    ['elsewhere.test!user@example.test', true],
    ['user@elsewhere.test@example.test', true],
    ['first.last+tag@example.test', false],
    ['user@ex%ample.test', false],
    ['postmaster', false],
  ])('%s: %s', (address, routed) => {
    expect(hasSenderRouting(address)).toBe(routed);
  });
});

// RFC 6531: a domain not in ASCII needs SMTPUTF8; a UTF-8 local part is taken without it, as Postfix takes it.
describe('decideAddressCharset', () => {
  it.each([
    ['a@example.org', 'sender', false, 'accept'],
    ['', 'sender', false, 'accept'],
    ['bøb@example.org', 'recipient', false, 'accept'],
    ['ålice@example.org', 'sender', false, 'accept'],
    ['b@xn--exmple-cua.org', 'recipient', false, 'accept'],
    ['b@exämple.org', 'recipient', false, '553 5.6.7 Non-ASCII recipient domain not permitted without SMTPUTF8'],
    ['a@bücher.example', 'sender', false, '550 5.6.7 Non-ASCII sender domain not permitted without SMTPUTF8'],
    ['bøb@exämple.org', 'recipient', true, 'accept'],
    ['a@bücher.example', 'sender', true, 'accept'],
  ] as const)('%s as %s, SMTPUTF8 %s: %s', (address, role, smtpUtf8, expected) => {
    const d = decideAddressCharset({ address, role, smtpUtf8 });
    expect(d.accept ? 'accept' : `${d.reply.code} ${d.reply.status} ${d.reply.text}`).toBe(expected);
  });
  it('names the reason for logs and metrics', () => {
    expect(decideAddressCharset({ address: 'b@exämple.org', role: 'recipient', smtpUtf8: false })).toMatchObject({ reason: 'non-ascii-domain-without-smtputf8' });
  });
});

describe('decideAddressForm', () => {
  it.each([
    ['user@example.org', 'sender', 'accept'],
    ['', 'sender', 'accept'],
    ['postmaster', 'recipient', '504 5.5.2 Recipient address rejected: need fully-qualified address'],
    ['user@localhost', 'recipient', 'accept'],
    ['user@[192.0.2.1]', 'recipient', 'accept'],
    ['user@[IPv6:2001:db8::1]', 'sender', 'accept'],
    ['user@[192.0.2.300]', 'recipient', '501 5.1.3 Bad recipient address syntax'],
    ['user@[mx.example.org]', 'recipient', '501 5.1.3 Bad recipient address syntax'],
    ['user@[2001:db8::1]', 'sender', '501 5.1.7 Bad sender address syntax'],
    ['user@local.test\u3002', 'recipient', '501 5.1.3 Bad recipient address syntax'],
    ['user@local\uFF0Etest', 'sender', '501 5.1.7 Bad sender address syntax'],
    ['user@b\u00FCcher\uFF61example', 'recipient', '501 5.1.3 Bad recipient address syntax'],
  ] as const)('%s as %s: %s', (address, role, expected) => {
    const d = decideAddressForm(address, role);
    expect(d.accept ? 'accept' : `${d.reply.code} ${d.reply.status} ${d.reply.text}`).toBe(expected);
  });
  it('names the reason for logs and metrics', () => {
    expect(decideAddressForm('postmaster', 'recipient')).toMatchObject({ reason: 'non-fqdn-recipient' });
    expect(decideAddressForm('x@[1.2.3]', 'recipient')).toMatchObject({ reason: 'bad-address-literal' });
    expect(decideAddressForm('x@local.test\u3002', 'recipient')).toMatchObject({ reason: 'unicode-full-stop' });
  });
});

describe('decideParameters', () => {
  it.each([
    [[], 'mail', 'accept'],
    [['SIZE', 'BODY', 'SMTPUTF8', 'REQUIRETLS', 'RET', 'ENVID', 'AUTH'], 'mail', 'accept'],
    [['NOTIFY', 'ORCPT'], 'rcpt', 'accept'],
    [['SIZE', 'FOO'], 'mail', '555 5.5.4 Unsupported option: FOO'],
    [['NOTIFY'], 'mail', '555 5.5.4 Unsupported option: NOTIFY'],
    [['SIZE'], 'rcpt', '555 5.5.4 Unsupported option: SIZE'],
    [['X-VENDOR-1'], 'rcpt', '555 5.5.4 Unsupported option: X-VENDOR-1'],
    [['<SCRIPT>'], 'mail', '555 5.5.4 Unsupported option'],
    [['A'.repeat(41)], 'mail', '555 5.5.4 Unsupported option'],
  ] as const)('%j on %s: %s', (names, command, expected) => {
    const d = decideParameters(names, command);
    expect(d.accept ? 'accept' : `${d.reply.code} ${d.reply.status} ${d.reply.text}`).toBe(expected);
  });
  it('names the reason for logs and metrics', () => {
    expect(decideParameters(['FOO'], 'rcpt')).toMatchObject({ reason: 'unsupported-parameter' });
  });
});

describe('addressLiteralIp', () => {
  it.each([
    ['[192.0.2.1]', '192.0.2.1'],
    ['[IPv6:2001:db8::1]', '2001:db8::1'],
    ['[ipv6:::1]', '::1'],
    ['[IPv6:::ffff:192.0.2.1]', '::ffff:192.0.2.1'],
    ['192.0.2.1', undefined],
    ['[2001:db8::1]', undefined],
    ['[IPv4:192.0.2.1]', undefined],
    ['[192.0.2.1', undefined],
    ['[192.0.2.1]x', undefined],
    ['[01.2.3.4]', undefined],
    ['example.org', undefined],
  ])('%s: %s', (domain, ip) => {
    expect(addressLiteralIp(domain)).toBe(ip);
  });
});

describe('decideMailFrom', () => {
  type Facts = Parameters<typeof decideMailFrom>[0];
  const anyone: Facts = { listener: 'relay', secure: false, authenticated: false, clientCertTrusted: false, clientTrusted: false, sender: 'a@example.org', senderDomains: [] };
  const restricted = (changes: Partial<Facts>): Facts => ({ ...anyone, senderDomains: ['example.org', '*.corp.test'], ...changes });
  const NOT_OURS = '553 5.7.1 Sender address rejected: this relay does not send for that domain';
  const rows: [string, Facts, string][] = [
    ['relay port needs nothing', anyone, 'accept'],
    ['submission in plaintext: STARTTLS first', { ...anyone, listener: 'submission' }, '530 5.7.0 Must issue a STARTTLS command first'],
    ['submission in TLS without login', { ...anyone, listener: 'submission', secure: true }, '530 5.7.0 Authentication required'],
    ['submission in TLS with login', { ...anyone, listener: 'submission', secure: true, authenticated: true }, 'accept'],
    ['submissions with a trusted client certificate', { ...anyone, listener: 'submissions', secure: true, clientCertTrusted: true }, 'accept'],
    ['submissions without login', { ...anyone, listener: 'submissions', secure: true }, '530 5.7.0 Authentication required'],
    // relay.senderDomains: for the clients that may relay.
    ['a trusted network, a sender domain listed', restricted({ clientTrusted: true }), 'accept'],
    ['a trusted network, a sender domain listed, in capitals and with a final dot', restricted({ clientTrusted: true, sender: 'a@Example.ORG.' }), 'accept'],
    ['a trusted network, a subdomain of a wildcard entry', restricted({ clientTrusted: true, sender: 'a@b.corp.test' }), 'accept'],
    ['a trusted network, the wildcard\'s own domain', restricted({ clientTrusted: true, sender: 'a@corp.test' }), NOT_OURS],
    ['a trusted network, a subdomain of an exact entry', restricted({ clientTrusted: true, sender: 'a@mail.example.org' }), NOT_OURS],
    ['a trusted network, another domain', restricted({ clientTrusted: true, sender: 'a@example.net' }), NOT_OURS],
    ['a trusted network, the null sender', restricted({ clientTrusted: true, sender: '' }), 'accept'],
    ['a logged-in user, another domain', restricted({ listener: 'submission', secure: true, authenticated: true, sender: 'a@example.net' }), NOT_OURS],
    ['a trusted client certificate, another domain', restricted({ listener: 'submissions', secure: true, clientCertTrusted: true, sender: 'a@example.net' }), NOT_OURS],
    ['a client that may not relay (mail for a local domain), another domain', restricted({ sender: 'a@example.net' }), 'accept'],
    ['a trusted network on submission without login: the login comes first', restricted({ listener: 'submission', secure: true, clientTrusted: true, sender: 'a@example.net' }), '530 5.7.0 Authentication required'],
  ];
  it.each(rows)('%s', (_name, facts, expected) => {
    const d = decideMailFrom(facts);
    expect(d.accept ? 'accept' : `${d.reply.code} ${d.reply.status} ${d.reply.text}`).toBe(expected);
    if (expected === NOT_OURS) expect(d.accept ? undefined : d.reason).toBe('sender-domain-not-allowed');
  });
});

describe('decideQueueSpace', () => {
  const MB = 1024 * 1024;
  const INSUFFICIENT = '452 4.3.1 Insufficient system storage';
  // The limit is 10 MB, so 15 MB must stay free unless minFree asks for more.
  const facts = (freeBytes: number | undefined, declaredSize: number | undefined, minFree = 0) => ({ freeBytes, declaredSize, keepFree: queueSpaceToKeep({ minFree, messageSizeLimit: 10 * MB }) });
  const rows: [string, Parameters<typeof decideQueueSpace>[0], string][] = [
    ['free space not known (PostgreSQL, a failed reading)', facts(undefined, 10 * MB, 2 ** 50), 'accept'],
    ['exactly 1.5 × the size limit free', facts(15 * MB, undefined), 'accept'],
    ['one byte under 1.5 × the size limit', facts(15 * MB - 1, undefined), INSUFFICIENT],
    ['a declared SIZE that still leaves 1.5 × the limit', facts(25 * MB, 10 * MB), 'accept'],
    ['a declared SIZE that would eat into 1.5 × the limit', facts(25 * MB - 1, 10 * MB), INSUFFICIENT],
    ['queue.minFree above 1.5 × the limit is what counts', facts(100 * MB, undefined, 100 * MB + 1), INSUFFICIENT],
    ['queue.minFree below 1.5 × the limit changes nothing', facts(15 * MB, undefined, 1 * MB), 'accept'],
    ['nothing free at all', facts(0, undefined), INSUFFICIENT],
  ];
  it.each(rows)('%s', (_name, input, expected) => {
    const d = decideQueueSpace(input);
    expect(d.accept ? 'accept' : `${d.reply.code} ${d.reply.status} ${d.reply.text}`).toBe(expected);
    if (!d.accept) expect(d.reason).toBe('insufficient-storage');
  });
});

describe('connection and AUTH limits', () => {
  it('allows up to the per-IP limit and refuses the next with 421 4.7.0', () => {
    expect(decideConnect({ connectionsFromIp: 20, perIpLimit: 20, clientTrusted: false })).toEqual({ accept: true });
    const d = decideConnect({ connectionsFromIp: 21, perIpLimit: 20, clientTrusted: false });
    expect(d.accept ? null : [d.reply.code, d.reply.status, d.reason]).toEqual([421, '4.7.0', 'connection-limit-per-ip']);
  });
  it('does not count a client in the trusted networks against the per-IP limit (Postfix: $mynetworks exempt)', () => {
    expect(decideConnect({ connectionsFromIp: 21, perIpLimit: 20, clientTrusted: true })).toEqual({ accept: true });
    expect(decideConnect({ connectionsFromIp: 5000, perIpLimit: 1, clientTrusted: true })).toEqual({ accept: true });
  });
  it('lets AUTH be tried until the session has had its limit of failures, then 421 4.7.0', () => {
    const after = (failures: number) => {
      const d = decideAuthAttempt({ failuresThisSession: failures, perSessionLimit: 3, ipLockedOut: false, clientTrusted: false });
      return d.accept ? 'try' : `${d.reply.code} ${d.reply.status} ${d.reason}`;
    };
    expect([after(0), after(2), after(3), after(4)]).toEqual(['try', 'try', '421 4.7.0 auth-too-many-failures', '421 4.7.0 auth-too-many-failures']);
  });
  it('refuses AUTH from a locked-out IP with 421, unless the IP is in relay.trustedNetworks', () => {
    const d = decideAuthAttempt({ ipLockedOut: true, clientTrusted: false, failuresThisSession: 0, perSessionLimit: 3 });
    expect(d.accept ? null : [d.reply.code, d.reason]).toEqual([421, 'auth-ip-locked-out']);
    expect(decideAuthAttempt({ ipLockedOut: true, clientTrusted: true, failuresThisSession: 0, perSessionLimit: 3 })).toEqual({ accept: true });
    expect(decideAuthAttempt({ ipLockedOut: true, clientTrusted: true, failuresThisSession: 3, perSessionLimit: 3 }).accept).toBe(false);
  });
  it.each([
    ['alice', '', 'accept'],
    ['alice', 'alice', 'accept'],
    ['', 'alice', 'accept'],
    ['alice', 'bob', '535 5.7.8 auth-authzid-not-allowed'],
    ['alice', 'Alice', '535 5.7.8 auth-authzid-not-allowed'],
  ])('AUTH PLAIN as %j asking to act as %j: %s', (authcid, authzid, expected) => {
    const d = decideAuthIdentity({ authcid, authzid });
    expect(d.accept ? 'accept' : `${d.reply.code} ${d.reply.status} ${d.reason}`).toBe(expected);
  });
});

describe('inDomainList', () => {
  it('matches exact names and one wildcard level or more below', () => {
    expect(inDomainList('a.b.corp.test', ['*.corp.test'])).toBe(true);
    expect(inDomainList('example.test', [])).toBe(false);
  });
  it('matches a UTF-8 domain by its A-label, the form a list holds', () => {
    expect(inDomainList('Bücher.example', ['xn--bcher-kva.example'])).toBe(true);
    expect(inDomainList('mail.bücher.example.', ['*.xn--bcher-kva.example'])).toBe(true);
    expect(inDomainList('bucher.example', ['xn--bcher-kva.example'])).toBe(false);
    // U+3002, the ideographic full stop, is a dot to IDNA: one at the end is the final dot.
    expect(inDomainList('bücher.example\u3002', ['xn--bcher-kva.example'])).toBe(true);
  });
  it.each([
    ['bücher.example', 'xn--bcher-kva.example'],
    ['bücher.example\u3002', 'xn--bcher-kva.example'],
    ['bücher\uFF0Eexample', 'xn--bcher-kva.example'],
    ['example.org', 'example.org'],
    ['example.org.', 'example.org.'],
    ['[192.0.2.1]', '[192.0.2.1]'],
  ])('asciiDomain(%j) is %j', (domain, ascii) => {
    expect(asciiDomain(domain)).toBe(ascii);
  });
});
