// The PROXY protocol's version 2 header (HAProxy's proxy-protocol.txt §2.2):
// binary, sent by AWS's Network Load Balancer (which sends no other kind),
// HAProxy's send-proxy-v2, Envoy and Traefik when asked; smtp/proxy-header.ts
// reads it, or else a version 1 line (proxy-v1.ts).
// Pure: bytes in, what they say out.
//
//   readProxyV2 - whether bytes start a version 2 header, and if complete, its length and the client it names.
import { ipv6Text, type ProxyHeaderRead } from './proxy-v1.ts';

/** The 12 bytes every version 2 header starts with ("\r\n\r\n\0\r\nQUIT\n"). */
const SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
/** The longest header read: addresses and the TLVs balancers add (AWS: a VPC endpoint id) fit well within it. */
export const PROXY_V2_LIMIT = 16 + 2048;

/** `client` absent for LOCAL (the balancer's own check) or an address family we keep the peer's for. */
export type ProxyV2 = ProxyHeaderRead<'not-v2'>;

/** readProxyV2 - what the first bytes of a connection say as a version 2 header. */
export function readProxyV2(bytes: Buffer): ProxyV2 {
  const prefix = Math.min(bytes.length, SIGNATURE.length);
  if (!bytes.subarray(0, prefix).equals(SIGNATURE.subarray(0, prefix))) return { kind: 'not-v2' };
  if (bytes.length < 16) return { kind: 'incomplete' };
  const version = bytes[12]! >> 4;
  const command = bytes[12]! & 0x0f;
  if (version !== 2) return { kind: 'invalid', reason: `PROXY header version ${version}` };
  if (command > 1) return { kind: 'invalid', reason: `PROXY header command ${command}` };
  const length = 16 + bytes.readUInt16BE(14);
  if (length > PROXY_V2_LIMIT) return { kind: 'invalid', reason: `PROXY header of ${length} bytes` };
  if (bytes.length < length) return { kind: 'incomplete' };
  // LOCAL: the balancer speaking for itself (a health check); the connection's own address stands.
  if (command === 0) return { kind: 'header', length };
  const family = bytes[13]! >> 4;
  const transport = bytes[13]! & 0x0f;
  // UNSPEC or a UNIX socket: nothing to take; the peer's address stands, as for v1's "PROXY UNKNOWN".
  if (family === 0 || family === 3) return { kind: 'header', length };
  if (transport !== 1) return { kind: 'invalid', reason: 'PROXY header for a transport other than TCP' };
  if (family === 1) {
    if (length < 16 + 12) return { kind: 'invalid', reason: 'PROXY header too short for IPv4 addresses' };
    return { kind: 'header', length, client: { address: [...bytes.subarray(16, 20)].join('.'), port: bytes.readUInt16BE(24) } };
  }
  if (family === 2) {
    if (length < 16 + 36) return { kind: 'invalid', reason: 'PROXY header too short for IPv6 addresses' };
    return { kind: 'header', length, client: { address: ipv6Text(groups(bytes.subarray(16, 32))), port: bytes.readUInt16BE(48) } };
  }
  return { kind: 'invalid', reason: `PROXY header address family ${family}` };
}

/** groups - 16 bytes as the eight groups of an IPv6 address. */
function groups(bytes: Buffer): string {
  return Array.from({ length: 8 }, (_, i) => bytes.readUInt16BE(i * 2).toString(16)).join(':');
}
