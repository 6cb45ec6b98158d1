// The PROXY protocol's version 1 line, byte for byte as a balancer (or an attacker behind one) sends it
// (proxy-protocol.txt §2.1).
import { describe, expect, it } from 'vitest';
import { PROXY_V1_LIMIT, ipv6Text, readProxyV1 } from '../../src/smtp/proxy-v1.ts';

const read = (text: string) => readProxyV1(Buffer.from(text, 'latin1'));
const TCP4 = 'PROXY TCP4 192.0.2.7 127.0.0.1 40001 2525\r\n';

describe('readProxyV1', () => {
  it('reads the client of a TCP4 line and its length, leaving what follows it to the session', () => {
    expect(read(TCP4)).toEqual({ kind: 'header', length: TCP4.length, client: { address: '192.0.2.7', port: 40001 } });
    expect(read(`${TCP4}EHLO x\r\n`)).toEqual({ kind: 'header', length: TCP4.length, client: { address: '192.0.2.7', port: 40001 } });
    expect(read('PROXY TCP4 192.0.2.7 127.0.0.1 0 65535\r\n')).toMatchObject({ client: { port: 0 } });
    // Only the client's address is used: a listener of the other family (nginx behind another balancer) is taken.
    expect(read('PROXY TCP6 2001:db8::7 10.0.0.1 40001 2525\r\n')).toMatchObject({ client: { address: '2001:db8::7' } });
  });

  it('reads TCP6, compressed and in lower case, and an IPv4-mapped address in its IPv4 form', () => {
    expect(read('PROXY TCP6 2001:DB8:0:0:0:0:0:7 ::1 40001 2525\r\n')).toMatchObject({ client: { address: '2001:db8::7', port: 40001 } });
    expect(read('PROXY TCP6 ::ffff:192.0.2.7 ::1 40001 2525\r\n')).toMatchObject({ client: { address: '192.0.2.7' } });
  });

  it('names no client for UNKNOWN, and ignores whatever follows it: the connection\'s own address stands', () => {
    for (const line of ['PROXY UNKNOWN\r\n', 'PROXY UNKNOWN 192.0.2.99 127.0.0.1 40001 2525\r\n', 'PROXY UNKNOWN anything at all, even <>\r\n']) {
      expect(read(`${line}EHLO x\r\n`)).toEqual({ kind: 'header', length: line.length });
    }
    const longest = `PROXY UNKNOWN ${'x'.repeat(PROXY_V1_LIMIT - 16)}\r\n`;
    expect(read(longest)).toEqual({ kind: 'header', length: PROXY_V1_LIMIT });
  });

  it('asks for more while the line is not whole, at every byte', () => {
    for (let n = 1; n < TCP4.length; n++) expect(read(TCP4.slice(0, n)).kind).toBe('incomplete');
  });

  it('says not-v1 for SMTP, a TLS hello, or a line in lower case', () => {
    for (const text of ['EHLO x\r\n', '\x16\x03\x01', 'proxy TCP4 192.0.2.7 127.0.0.1 40001 2525\r\n', 'PROXY\r\n', 'PROXYTCP4']) {
      expect(read(text)).toEqual({ kind: 'not-v1' });
    }
  });

  it.each([
    ['a bare LF', 'PROXY TCP4 192.0.2.7 127.0.0.1 40001 2525\n', 'PROXY line not ended by CRLF'],
    ['no CRLF within 107 bytes', `PROXY UNKNOWN ${'x'.repeat(PROXY_V1_LIMIT)}`, 'PROXY line longer than 107 bytes'],
    ['a CRLF just past 107 bytes', `PROXY UNKNOWN ${'x'.repeat(PROXY_V1_LIMIT - 15)}\r\n`, 'PROXY line longer than 107 bytes'],
    ['another protocol', 'PROXY UDP4 192.0.2.7 127.0.0.1 40001 2525\r\n', 'PROXY line for "UDP4", not TCP4, TCP6 or UNKNOWN'],
    ['nothing after PROXY', 'PROXY \r\n', 'PROXY line for "", not TCP4, TCP6 or UNKNOWN'],
    ['a port missing', 'PROXY TCP4 192.0.2.7 127.0.0.1 40001\r\n', 'PROXY line without exactly two addresses and two ports'],
    ['a field too many', 'PROXY TCP4 192.0.2.7 127.0.0.1 40001 2525 x\r\n', 'PROXY line without exactly two addresses and two ports'],
    ['two spaces', 'PROXY TCP4  192.0.2.7 127.0.0.1 40001 2525\r\n', 'PROXY line without exactly two addresses and two ports'],
    ['an IPv6 client after TCP4', 'PROXY TCP4 2001:db8::7 127.0.0.1 40001 2525\r\n', 'PROXY line with a client address that is not IPv4'],
    ['an IPv4 client after TCP6', 'PROXY TCP6 192.0.2.7 ::1 40001 2525\r\n', 'PROXY line with a client address that is not IPv6'],
    ['a host name', 'PROXY TCP4 evil.example 127.0.0.1 40001 2525\r\n', 'PROXY line with a client address that is not IPv4'],
    ['text injected into the address', 'PROXY TCP4 192.0.2.7]\x00(x 127.0.0.1 40001 2525\r\n', 'PROXY line with a client address that is not IPv4'],
    ['an IPv6 client with a zone id (a review found it ended the process)', 'PROXY TCP6 fe80::1%eth0 ::1 40001 2525\r\n', 'PROXY line with a client address that is not IPv6'],
    ['a listener that is no address', 'PROXY TCP4 192.0.2.7 localhost 40001 2525\r\n', 'PROXY line with a listener address that is not an IP address'],
    ['a listener with a zone id', 'PROXY TCP6 2001:db8::7 fe80::1%eth0 40001 2525\r\n', 'PROXY line with a listener address that is not an IP address'],
    ['a port past 65535', 'PROXY TCP4 192.0.2.7 127.0.0.1 65536 2525\r\n', 'PROXY line with a port that is not 0 to 65535'],
    ['a port with a leading zero', 'PROXY TCP4 192.0.2.7 127.0.0.1 040001 2525\r\n', 'PROXY line with a port that is not 0 to 65535'],
    ['a negative port', 'PROXY TCP4 192.0.2.7 127.0.0.1 -1 2525\r\n', 'PROXY line with a port that is not 0 to 65535'],
  ])('refuses %s', (_name, text, reason) => {
    expect(read(text)).toEqual({ kind: 'invalid', reason });
  });
});

describe('ipv6Text', () => {
  it('writes an address compressed, in lower case, and an IPv4-mapped one as IPv4', () => {
    expect(ipv6Text('2001:0DB8:0000:0000:0000:0000:0000:0007')).toBe('2001:db8::7');
    expect(ipv6Text('0:0:0:0:0:ffff:c000:207')).toBe('192.0.2.7');
    expect(ipv6Text('::1')).toBe('::1');
  });
});
