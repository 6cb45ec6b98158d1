// The PROXY protocol's version 1 line (HAProxy's proxy-protocol.txt §2.1):
// "PROXY TCP4|TCP6 client listener client-port listener-port\r\n", at most
// 107 bytes, sent by HAProxy's send-proxy, nginx's proxy_protocol and
// Traefik. Read here rather than by smtp-server, which takes the addresses
// after "PROXY UNKNOWN" (the spec says to ignore them and keep the
// connection's own), takes an IPv6 address after TCP4, and ends the line at
// a bare LF. Pure: bytes in, what they say out.
//
//   readProxyV1 - whether bytes start a version 1 line, and if complete, its length and the client it names.
//   ipv6Text    - the form of an IPv6 address a header names that the session gets (both versions).
//   ProxyHeaderRead - what bytes say as a header of one version (both versions).
import { isIPv4, isIPv6 } from 'node:net';

/** The longest line, CRLF included (§2.1: "107 characters"). */
export const PROXY_V1_LIMIT = 107;

const PREFIX = Buffer.from('PROXY ', 'latin1');

/** What the first bytes of a connection say as a PROXY header of one version (`notIt`: they are not one). */
export type ProxyHeaderRead<NotIt extends string> =
  /** The bytes so far could start one: read more. */
  | { kind: 'incomplete' }
  | { kind: NotIt }
  | { kind: 'invalid'; reason: string }
  /** A whole header of `length` bytes, and the client it names, if it names one. */
  | { kind: 'header'; length: number; client?: { address: string; port: number } };

/** `client` absent for UNKNOWN, whose connection's own address stands. */
export type ProxyV1 = ProxyHeaderRead<'not-v1'>;

/** readProxyV1 - what the first bytes of a connection say as a version 1 line. */
export function readProxyV1(bytes: Buffer): ProxyV1 {
  const prefix = Math.min(bytes.length, PREFIX.length);
  if (!bytes.subarray(0, prefix).equals(PREFIX.subarray(0, prefix))) return { kind: 'not-v1' };
  const lf = bytes.subarray(0, PROXY_V1_LIMIT).indexOf(0x0a);
  if (lf === -1) return bytes.length < PROXY_V1_LIMIT ? { kind: 'incomplete' } : { kind: 'invalid', reason: `PROXY line longer than ${PROXY_V1_LIMIT} bytes` };
  if (bytes[lf - 1] !== 0x0d) return { kind: 'invalid', reason: 'PROXY line not ended by CRLF' };
  const length = lf + 1;
  const fields = bytes.subarray(PREFIX.length, lf - 1).toString('latin1').split(' ');
  // UNKNOWN: "the receiver must ignore anything presented before the CRLF".
  if (fields[0] === 'UNKNOWN') return { kind: 'header', length };
  if (fields[0] !== 'TCP4' && fields[0] !== 'TCP6') return { kind: 'invalid', reason: `PROXY line for ${JSON.stringify(fields[0])}, not TCP4, TCP6 or UNKNOWN` };
  if (fields.length !== 5) return { kind: 'invalid', reason: 'PROXY line without exactly two addresses and two ports' };
  const [family, client, listener, clientPort, listenerPort] = fields as [string, string, string, string, string];
  // Not a zone id ("fe80::1%eth0"): node's isIPv6 takes one, the URL parser that writes the address does not.
  const isV6 = (text: string) => isIPv6(text) && !text.includes('%');
  if (!(family === 'TCP4' ? isIPv4 : isV6)(client)) return { kind: 'invalid', reason: `PROXY line with a client address that is not ${family === 'TCP4' ? 'IPv4' : 'IPv6'}` };
  // The listener's address is not used; nginx behind another balancer may write its own of the other family.
  if (!isIPv4(listener) && !isV6(listener)) return { kind: 'invalid', reason: 'PROXY line with a listener address that is not an IP address' };
  if (!isPort(clientPort) || !isPort(listenerPort)) return { kind: 'invalid', reason: 'PROXY line with a port that is not 0 to 65535' };
  return { kind: 'header', length, client: { address: family === 'TCP4' ? client : ipv6Text(client), port: Number(clientPort) } };
}

/** isPort - a decimal port, 0 to 65535, without leading zeros. */
function isPort(text: string): boolean {
  return /^(0|[1-9]\d{0,4})$/.test(text) && Number(text) <= 65535;
}

/** ipv6Text - an IPv4-mapped address in its IPv4 form, any other as the URL parser writes it (lower case, compressed). */
export function ipv6Text(address: string): string {
  const text = new URL(`http://[${address}]`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(text);
  if (!mapped) return text;
  const [high, low] = [parseInt(mapped[1]!, 16), parseInt(mapped[2]!, 16)];
  return [high >> 8, high & 0xff, low >> 8, low & 0xff].join('.');
}
