// The PROXY protocol's version 2 header, byte for byte as a balancer sends it (proxy-protocol.txt §2.2).
import { describe, expect, it } from 'vitest';
import { PROXY_V2_LIMIT, readProxyV2 } from '../../src/smtp/proxy-v2.ts';

const SIGNATURE = '0d0a0d0a000d0a515549540a';

/** header - signature, version/command, family/transport, then the address block (and what follows it). */
function header(verCmd: string, famProto: string, block: string, after = ''): Buffer {
  const length = (block.length / 2).toString(16).padStart(4, '0');
  return Buffer.from(SIGNATURE + verCmd + famProto + length + block + after, 'hex');
}

// 192.0.2.7:40001 → 127.0.0.1:2525
const IPV4 = 'c0000207' + '7f000001' + '9c41' + '09dd';
// 2001:db8::7:40001 → ::1:2525
const IPV6 = '20010db8000000000000000000000007' + '00000000000000000000000000000001' + '9c41' + '09dd';
const MAPPED = '00000000000000000000ffffc0000207' + '00000000000000000000000000000001' + '9c41' + '09dd';

describe('readProxyV2', () => {
  it('reads the client of a PROXY header over TCP/IPv4, and its length (TLVs included)', () => {
    expect(readProxyV2(header('21', '11', IPV4))).toEqual({ kind: 'header', length: 28, client: { address: '192.0.2.7', port: 40001 } });
    // An AWS NLB TLV after the addresses (type 0xEA, 3 bytes): counted in the length, not read.
    expect(readProxyV2(header('21', '11', IPV4 + 'ea0003010203'))).toEqual({ kind: 'header', length: 34, client: { address: '192.0.2.7', port: 40001 } });
  });
  it('reads TCP/IPv6, compressed, and an IPv4-mapped address in its IPv4 form', () => {
    expect(readProxyV2(header('21', '21', IPV6))).toMatchObject({ client: { address: '2001:db8::7', port: 40001 } });
    expect(readProxyV2(header('21', '21', MAPPED))).toMatchObject({ client: { address: '192.0.2.7' } });
  });
  it('names no client for LOCAL (the balancer\'s own check) or an UNSPEC family: the peer stands', () => {
    expect(readProxyV2(header('20', '00', ''))).toEqual({ kind: 'header', length: 16 });
    expect(readProxyV2(header('21', '00', ''))).toEqual({ kind: 'header', length: 16 });
  });
  it('asks for more while the header is not whole, at every byte', () => {
    const whole = header('21', '11', IPV4);
    for (let n = 1; n < whole.length; n++) expect(readProxyV2(whole.subarray(0, n)).kind).toBe('incomplete');
  });
  it('says not-v2 for a version 1 line, SMTP, or a TLS hello', () => {
    for (const text of ['PROXY TCP4 192.0.2.7 127.0.0.1 40001 2525\r\n', 'EHLO x\r\n', '\x16\x03\x01']) expect(readProxyV2(Buffer.from(text, 'latin1'))).toEqual({ kind: 'not-v2' });
    expect(readProxyV2(Buffer.from('\r\n\r\nX', 'latin1'))).toEqual({ kind: 'not-v2' });
  });
  it.each([
    ['version 1 in the binary form', header('11', '11', IPV4), 'PROXY header version 1'],
    ['a command other than LOCAL and PROXY', header('22', '11', IPV4), 'PROXY header command 2'],
    ['UDP', header('21', '12', IPV4), 'PROXY header for a transport other than TCP'],
    ['an IPv4 block too short', header('21', '11', 'c0000207'), 'PROXY header too short for IPv4 addresses'],
    ['an IPv6 block too short', header('21', '21', IPV4), 'PROXY header too short for IPv6 addresses'],
    ['an unknown family', header('21', '41', IPV4), 'PROXY header address family 4'],
    ['a length past the limit', Buffer.from(SIGNATURE + '2111' + (PROXY_V2_LIMIT - 15).toString(16).padStart(4, '0'), 'hex'), `PROXY header of ${PROXY_V2_LIMIT + 1} bytes`],
  ])('refuses %s', (_name, bytes, reason) => {
    expect(readProxyV2(bytes)).toEqual({ kind: 'invalid', reason });
  });
});
