// MTA-STS's pure parts (RFC 8461): the TXT record, the policy file, MX name
// matching, and what the level mta-sts settles to.
import { describe, expect, it } from 'vitest';
import { decideStsLevel, mxInPolicy, parseStsPolicy, parseStsRecord, remember } from '../../src/outbound/mta-sts.ts';

describe('parseStsRecord (§3.1)', () => {
  it.each([
    [[['v=STSv1; id=20160831085700Z;']], '20160831085700Z'],
    [[['v=STSv1;id=abc']], 'abc'],
    [[['v=STSv1; ', 'id=split;']], 'split'],
    [[['v=spf1 -all'], ['v=STSv1; id=1']], '1'],
    [[['v=STSv1; id=1'], ['v=STSv1; id=2']], undefined],
    [[['v=STSv1;']], undefined],
    [[['v=STSv1; id=no-dashes']], undefined],
    [[['v=STSv10; id=1']], undefined],
    [[], undefined],
  ] as const)('%j: %s', (records, id) => {
    expect(parseStsRecord(records)).toBe(id);
  });
});

describe('parseStsPolicy (§3.2)', () => {
  it('reads version, mode, every mx and max_age, with LF or CRLF, names in lower case and without a final dot', () => {
    expect(parseStsPolicy('version: STSv1\nmode: enforce\nmx: MX1.Example.com.\nmx: *.example.net\nmax_age: 604800\n', 'x')).toEqual({
      ok: true,
      policy: { mode: 'enforce', mx: ['mx1.example.com', '*.example.net'], maxAge: 604800, id: 'x' },
    });
    expect(parseStsPolicy('version: STSv1\r\nmode: none\r\nmax_age: 0\r\n', 'y')).toEqual({ ok: true, policy: { mode: 'none', mx: [], maxAge: 0, id: 'y' } });
  });
  it.each([
    ['version: STSv2\nmode: enforce\nmx: a\nmax_age: 1', /version/],
    ['version: STSv1\nmode: strict\nmx: a\nmax_age: 1', /mode "strict"/],
    ['version: STSv1\nmode: enforce\nmax_age: 1', /no mx line/],
    ['version: STSv1\nmode: enforce\nmx: a\nmax_age: 31557601', /max_age/],
    ['version: STSv1\nmode: enforce\nmx: a\nmax_age: soon', /max_age/],
    ['<html>not a policy</html>', /not a "key: value" line/],
  ])('refuses %j', (text, reason) => {
    const parsed = parseStsPolicy(text, 'x');
    expect(parsed.ok).toBe(false);
    if (!parsed.ok) expect(parsed.reason).toMatch(reason);
  });
});

describe('mxInPolicy (§4.1)', () => {
  it.each([
    ['mx1.example.com', ['mx1.example.com'], true],
    ['MX1.Example.COM.', ['mx1.example.com'], true],
    ['mx2.example.com', ['mx1.example.com'], false],
    ['mx1.example.net', ['*.example.net'], true],
    ['a.b.example.net', ['*.example.net'], false],
    ['example.net', ['*.example.net'], false],
    ['mx1.badexample.net', ['*.example.net'], false],
  ] as const)('%s in %j: %s', (host, patterns, matches) => {
    expect(mxInPolicy(host, patterns)).toBe(matches);
  });
});

describe('decideStsLevel', () => {
  const policy = (mode: 'enforce' | 'testing' | 'none') => ({ mode, mx: ['mx.example.com'], maxAge: 60, id: 'i1' });
  it.each([
    [true, policy('enforce'), { level: 'verify', source: 'src: MTA-STS enforce (id i1)' }],
    [true, policy('testing'), { level: 'may', source: 'src: MTA-STS testing (id i1)' }],
    [true, policy('none'), { level: 'may', source: 'src: MTA-STS none (id i1)' }],
    [true, undefined, { level: 'may', source: 'src: mta-sts, no policy' }],
    [false, policy('enforce'), { level: 'may', source: 'src: mta-sts, not an MX delivery' }],
  ] as const)('via MX %s, policy %j: %j', (viaMx, sts, decision) => {
    expect(decideStsLevel('src', viaMx, sts)).toEqual(decision);
  });
});

// Cases a review of the first version added (it failed the bare record and the empty mx).
const base = 'version: STSv1\r\nmode: enforce\r\nmx: mx.example.com\r\nmax_age: 86400';

describe('parseStsRecord: more of §3.1', () => {
  it.each([
    ['extension field after id', [['v=STSv1; id=abc; ext=val']], 'abc'],
    ['WSP around ;', [['v=STSv1 ;  id=abc ;']], 'abc'],
    // "records that do not begin with "v=STSv1;" are discarded": a bare "v=STSv1" is not the one record.
    ['a bare "v=STSv1" record beside a valid one', [['v=STSv1'], ['v=STSv1; id=abc']], 'abc'],
    ['lower-case version', [['v=stsv1; id=abc']], undefined],
    ['id of 33 characters', [[`v=STSv1; id=${'a'.repeat(33)}`]], undefined],
  ] as const)('%s', (_name, records, id) => {
    expect(parseStsRecord(records)).toBe(id);
  });
});

describe('parseStsPolicy: more of §3.2', () => {
  it.each([
    ['no final line break', base, true],
    ['LF only', base.replaceAll('\r\n', '\n'), true],
    ['an extension key', base + '\r\nfoo_bar.baz: x', true],
    ['trailing WSP after a value', base.replace('enforce', 'enforce \t'), true],
    ['a UTF-8 byte order mark (trim() strips it)', '\uFEFF' + base, true],
    ['an empty mx value in enforce mode', base.replace('mx: mx.example.com', 'mx:'), false],
    ['upper-case key', base.replace('mode', 'Mode'), false],
  ] as const)('%s: ok %s', (_name, text, ok) => {
    expect(parseStsPolicy(text, 'x').ok).toBe(ok);
  });
  it('takes the first of duplicate keys', () => {
    const p = parseStsPolicy(base.replace('mode: enforce', 'mode: testing\r\nmode: enforce'), 'x');
    expect(p.ok && p.policy.mode).toBe('testing');
  });
  it('matches only one label for a wildcard, and not the bare domain', () => {
    expect([mxInPolicy('a.example.com', ['*.example.com']), mxInPolicy('example.com', ['*.example.com']), mxInPolicy('a.b.example.com', ['*.example.com'])]).toEqual([true, false, false]);
  });
});

describe('remember', () => {
  it('keeps a map within its limit: the lapsed go first, then the oldest; a key set again is the newest', () => {
    const map = new Map<string, number>();
    remember(map, 'a', 100, 0, 3);
    remember(map, 'c', 100, 0, 3);
    // b lapses at 5 and is not the oldest: it goes first all the same.
    remember(map, 'b', 5, 0, 3);
    remember(map, 'a', 200, 0, 3);
    remember(map, 'd', 100, 10, 3);
    expect([...map.keys()]).toEqual(['c', 'a', 'd']);
    remember(map, 'e', 100, 10, 3);
    expect([...map.keys()]).toEqual(['a', 'd', 'e']);
  });
});
