// A tiny authoritative DNS server for tests: UDP on 127.0.0.1, port 0,
// answering MX, A, AAAA, TXT and PTR from a zone map (RFC 1035 §4 wire format, no
// compression written). Unknown names get NXDOMAIN, a known name without the
// asked type gets NOERROR with no answers (NODATA). Every query is recorded.
// A query it cannot parse gets FORMERR; a `timeout` name is never answered.
import { createSocket } from 'node:dgram';
import { isIPv4, isIPv6 } from 'node:net';
import { ipv6Groups } from '../../src/inbound/limit-key.ts';

export interface ZoneEntry {
  /** [preference, exchange], exchange written in its own case; `[[0, '.']]` is a null MX (RFC 7505). */
  mx?: [priority: number, exchange: string][];
  a?: string[];
  aaaa?: string[];
  /** TXT records, each one string (up to 255 bytes). */
  txt?: string[];
  /** PTR records (names), for a reverse name such as "1.0.0.127.in-addr.arpa". */
  ptr?: string[];
  servfail?: boolean;
  nxdomain?: boolean;
  /** Never answer: the client times out. */
  timeout?: boolean;
}

export interface DnsQuery {
  name: string;
  type: string;
}

export interface DnsServer {
  /** "127.0.0.1:PORT", the form Resolver.setServers takes. */
  address: string;
  port: number;
  queries: DnsQuery[];
  close(): Promise<void>;
}

const TYPE_A = 1;
const TYPE_PTR = 12;
const TYPE_MX = 15;
const TYPE_TXT = 16;
const TYPE_AAAA = 28;
const TYPE_NAMES: Record<number, string> = { 1: 'A', 2: 'NS', 5: 'CNAME', 6: 'SOA', 12: 'PTR', 15: 'MX', 16: 'TXT', 28: 'AAAA' };
const CLASS_IN = 1;
const TTL = 300;
const RCODE = { noError: 0, formErr: 1, servFail: 2, nxDomain: 3 } as const;

interface Question {
  id: number;
  flags: number;
  name: string;
  type: number;
  /** The question section exactly as received, echoed back. */
  raw: Buffer;
}

/** startDnsServer - listen on 127.0.0.1:0 and answer from `zone`. */
export async function startDnsServer(zone: Record<string, ZoneEntry>): Promise<DnsServer> {
  const entries = new Map(Object.entries(zone).map(([name, entry]) => [normalizeName(name), entry]));
  const queries: DnsQuery[] = [];
  const socket = createSocket('udp4');
  socket.on('message', (message, remote) => {
    const response = answer(message, entries, queries);
    if (response) socket.send(response, remote.port, remote.address);
  });
  await new Promise<void>((resolve, reject) => {
    socket.once('error', reject);
    socket.bind(0, '127.0.0.1', () => {
      socket.off('error', reject);
      resolve();
    });
  });
  const { port } = socket.address();
  return {
    address: `127.0.0.1:${port}`,
    port,
    queries,
    close: () => new Promise<void>((resolve) => socket.close(() => resolve())),
  };
}

/** answer - parse one query, record it, build the reply (none for `timeout`). */
function answer(message: Buffer, entries: Map<string, ZoneEntry>, queries: DnsQuery[]): Buffer | undefined {
  const question = parseQuestion(message);
  if (!question) {
    if (message.length < 4) return undefined;
    return header({ id: message.readUInt16BE(0), flags: message.readUInt16BE(2) }, RCODE.formErr, { qdcount: 0, ancount: 0 });
  }
  queries.push({ name: question.name, type: TYPE_NAMES[question.type] ?? `TYPE${question.type}` });
  const entry = entries.get(question.name);
  if (entry?.timeout) return undefined;
  if (!entry || entry.nxdomain) return reply(question, RCODE.nxDomain, []);
  if (entry.servfail) return reply(question, RCODE.servFail, []);
  return reply(question, RCODE.noError, records(question, entry));
}

/** records - the answer records for the asked type; empty is NODATA. */
function records(question: Question, entry: ZoneEntry): Buffer[] {
  const owner = encodeName(question.name);
  switch (question.type) {
    case TYPE_MX:
      return (entry.mx ?? []).map(([priority, exchange]) => {
        const preference = Buffer.alloc(2);
        preference.writeUInt16BE(priority);
        return record(owner, TYPE_MX, Buffer.concat([preference, encodeName(exchange.replace(/\.$/, ''))]));
      });
    case TYPE_A:
      return (entry.a ?? []).map((ip) => record(owner, TYPE_A, encodeIpv4(ip)));
    case TYPE_AAAA:
      return (entry.aaaa ?? []).map((ip) => record(owner, TYPE_AAAA, encodeIpv6(ip)));
    case TYPE_PTR:
      return (entry.ptr ?? []).map((name) => record(owner, TYPE_PTR, encodeName(normalizeName(name))));
    case TYPE_TXT:
      // One character-string per record: a length byte, then the text (RFC 1035 §3.3.14).
      return (entry.txt ?? []).map((text) => record(owner, TYPE_TXT, Buffer.concat([Buffer.from([Buffer.byteLength(text)]), Buffer.from(text)])));
    default:
      return [];
  }
}

/** reply - header, the question echoed byte for byte (c-ares compares it), the answers. */
function reply(question: Question, rcode: number, answers: Buffer[]): Buffer {
  const head = header(question, rcode, { qdcount: 1, ancount: answers.length });
  return Buffer.concat([head, question.raw, ...answers]);
}

/** header - QR and AA set, opcode and RD copied from the query, RA set. */
function header(query: { id: number; flags: number }, rcode: number, counts: { qdcount: number; ancount: number }): Buffer {
  const buffer = Buffer.alloc(12);
  const flags = 0x8000 | (query.flags & 0x7800) | 0x0400 | (query.flags & 0x0100) | 0x0080 | rcode;
  buffer.writeUInt16BE(query.id, 0);
  buffer.writeUInt16BE(flags, 2);
  buffer.writeUInt16BE(counts.qdcount, 4);
  buffer.writeUInt16BE(counts.ancount, 6);
  return buffer; // NSCOUNT and ARCOUNT stay 0: no authority section, no OPT echoed.
}

function record(owner: Buffer, type: number, rdata: Buffer): Buffer {
  const fixed = Buffer.alloc(10);
  fixed.writeUInt16BE(type, 0);
  fixed.writeUInt16BE(CLASS_IN, 2);
  fixed.writeUInt32BE(TTL, 4);
  fixed.writeUInt16BE(rdata.length, 8);
  return Buffer.concat([owner, fixed, rdata]);
}

/** parseQuestion - the first question of a query; undefined when malformed or compressed. */
function parseQuestion(message: Buffer): Question | undefined {
  if (message.length < 12 || message.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let offset = 12;
  for (;;) {
    const length = message[offset];
    if (length === undefined || length > 63) return undefined; // 0xC0 = a pointer: not expected in a query
    offset += 1;
    if (length === 0) break;
    if (offset + length > message.length) return undefined;
    labels.push(message.toString('latin1', offset, offset + length));
    offset += length;
  }
  if (offset + 4 > message.length) return undefined;
  return {
    id: message.readUInt16BE(0),
    flags: message.readUInt16BE(2),
    name: normalizeName(labels.join('.')),
    type: message.readUInt16BE(offset),
    raw: message.subarray(12, offset + 4),
  };
}

/** normalizeName - lower case, no trailing dot; the root is ''. */
function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, '');
}

function encodeName(name: string): Buffer {
  const parts = name === '' ? [] : name.split('.');
  const bytes: number[] = [];
  for (const label of parts) {
    const encoded = Buffer.from(label, 'latin1');
    if (encoded.length === 0 || encoded.length > 63) throw new Error(`bad label in ${name}`);
    bytes.push(encoded.length, ...encoded);
  }
  bytes.push(0);
  return Buffer.from(bytes);
}

function encodeIpv4(ip: string): Buffer {
  if (!isIPv4(ip)) throw new Error(`not an IPv4 address: ${ip}`);
  return Buffer.from(ip.split('.').map(Number));
}

/** encodeIpv6 - 16 bytes from the text form, "::" and a dotted-quad tail included. */
function encodeIpv6(ip: string): Buffer {
  if (!isIPv6(ip)) throw new Error(`not an IPv6 address: ${ip}`);
  const buffer = Buffer.alloc(16);
  ipv6Groups(ip).forEach((group, index) => buffer.writeUInt16BE(group, index * 2));
  return buffer;
}
