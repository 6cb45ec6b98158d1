// MAIL and RCPT addresses in the forms Postfix's smtpd accepts by default
// (strict_rfc821_envelopes = no) and smtp-server refuses with 501:
//  - an address without angle brackets, "MAIL FROM: alice@example.org",
//    as old printers, scanners, UPS cards and hand-written scripts send it;
//  - a domain ending in a dot, "<bob@example.org.>" (Postfix's
//    trivial-rewrite strips the dot);
//  - spaces around the colon or between the words, "MAIL FROM : <a@b>".
// The command is rewritten into the form smtp-server parses before it parses
// it: the address in brackets, without the dot. Nothing else changes, and the
// result goes through every check a bracketed address goes through (syntax,
// relaying, parameters). What Postfix also takes and this does not: an RFC 822
// phrase or comment around the address ("Alice <a@b>") and a quoted local
// part with a space ("<"a b"@c>"); smtp-server splits its command at spaces.
// And an xtext parameter (ORCPT, ENVID) that encodes UTF-8, as Postfix sends
// the ORCPT of a UTF-8 address ("rfc822;+C3+9Fob@example.org" for ßob):
// smtp-server decodes each +HH to the character of that code, so "ß" became
// "Ã" and a C1 control character, and the recipient was refused 501 (or,
// for "ä", its ORCPT kept garbled). Such runs reach it decoded as UTF-8;
// what stays +HH is a byte below 128, which it decodes right. A run that is
// not UTF-8 ("+E9", Latin-1) is refused (501 5.5.4, below): smtp-server took
// it for U+00E9, another value than the one sent.
// An ENVID or ORCPT that is not xtext at all is refused, as Postfix refuses
// it: smtp-server decodes only the +HH it can and keeps "x+ZZ", "ab+4" or
// "+c3" as they came, so the value was stored and passed on re-encoded
// ("x+2BZZ"), another value than the one sent.
//
// And the other way: smtp-server decodes an A-label domain to Unicode
// ("a@xn--bcher-kva.example" became "a@bücher.example"), which turned an
// ASCII envelope into a UTF-8 one, passed on as such; the domain is kept as
// the client sent it, as Postfix keeps it.
//
//   canonicalAddressCommand - the command as smtp-server should read it.
//   refuseBadXtext          - Postfix's 501 5.5.4 for an ENVID or ORCPT that is not xtext; undefined for any other line.
//   addressAsSent           - the address smtp-server parsed, with the domain the client sent.
//   addressOnLine           - the address a MAIL or RCPT line gives, as sent.

import { isUtf8 } from 'node:buffer';
import { replies, type Reply } from '../smtp/replies.ts';

// Already in canonical form: checked first, it is what every client but the old ones sends.
const CANONICAL = /^(?:MAIL FROM|RCPT TO):<(?:[^<>]*[^<>.])?>(?: |$)/i;
const COMMAND = /^(MAIL)[ \t]+(FROM)[ \t]*:[ \t]*([^ \t]*)(.*)$|^(RCPT)[ \t]+(TO)[ \t]*:[ \t]*([^ \t]*)(.*)$/is;

/**
 * canonicalAddressCommand - a MAIL FROM or RCPT TO line with its address in angle brackets and without a dot
 * ending its domain; any other line, or one whose address is not a single token, as it came.
 */
export function canonicalAddressCommand(line: string): string {
  const canonical = canonicalAddress(line);
  return canonical.includes('+') ? withUtf8Xtext(canonical) : canonical;
}

function canonicalAddress(line: string): string {
  if (CANONICAL.test(line)) return line;
  const m = COMMAND.exec(line);
  if (!m) return line;
  const [verb, keyword, token, rest] = m[1] ? [m[1], m[2]!, m[3]!, m[4]!] : [m[5]!, m[6]!, m[7]!, m[8]!];
  const bracketed = /^<([^<>]*)>$/.exec(token);
  // Unbracketed, only when nothing after it has a bracket: "Alice <a@b>" is a phrase, not an address and a parameter.
  const address = bracketed ? bracketed[1]! : /^[^<>]+$/.test(token) && !/[<>]/.test(rest) ? token : undefined;
  if (address === undefined) return line;
  return `${verb.toUpperCase()} ${keyword.toUpperCase()}:<${withoutFinalDot(address)}>${rest}`;
}

/** withoutFinalDot - "a@example.org." as "a@example.org"; an address literal, an empty domain or ".." kept. */
function withoutFinalDot(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0 || !address.endsWith('.') || address.endsWith('..') || address.length - at <= 2) return address;
  return address.slice(0, -1);
}

const ADDRESS_START = /^(?:MAIL FROM|RCPT TO):</i;
// The xtext parameters, after the address (whose local part may hold "+C3" as it is).
const XTEXT_PARAMETER = /( (?:ORCPT|ENVID)=)(\S+)/gi;
// A run of +HH bytes of 128 and above: xtext's hex digits are upper case (RFC 3461 §4).
const HIGH_BYTES = /(?:\+[89A-F][0-9A-F])+/g;

/** withUtf8Xtext - in a canonical MAIL or RCPT line, ORCPT and ENVID values with their UTF-8 +HH runs decoded (invalid UTF-8 kept). */
function withUtf8Xtext(line: string): string {
  const addressEnd = line.indexOf('>');
  if (addressEnd < 0 || !ADDRESS_START.test(line)) return line;
  const parameters = line.slice(addressEnd + 1).replace(XTEXT_PARAMETER, (_all, name: string, value: string) =>
    name + value.replace(HIGH_BYTES, (run) => {
      const bytes = Buffer.from(run.replaceAll('+', ''), 'hex');
      return isUtf8(bytes) ? bytes.toString('utf8') : run;
    }),
  );
  return line.slice(0, addressEnd + 1) + parameters;
}

// RFC 3461 §4: xtext = 1*xchar, an xchar "+" and two upper-case hex digits or a printable ASCII character other
// than "+" and "=". Postfix also takes lower-case hex (and smtp-server reads it as text: the two disagree, so it
// is refused) and a bare "=". A non-ASCII character is taken: RFC 6531 §3.3 lets an esmtp-value hold UTF-8, as
// the utf-8-addr-unitext of an ORCPT of type utf-8 does (RFC 6533 §3); the line is valid UTF-8 by now.
const XTEXT = '(?:\\+[0-9A-F]{2}|[!-*,-<>-~]|[^\\x00-\\x7F])+';
// RFC 3461 §4.2: addr-type ";" xtext, addr-type an atom: "rfc822;a@b", "utf-8;…". Without the ";" Postfix refuses it.
const ADDR_TYPE = "[A-Za-z0-9!#$%&'*/?^_`{|}~-]+";

// The xtext parameter of each command, and the reply to a bad one (Postfix's words).
const XTEXT_PARAMETERS = {
  'MAIL FROM': { name: 'ENVID', value: new RegExp(`^${XTEXT}$`), refusal: replies.badEnvid },
  'RCPT TO': { name: 'ORCPT', value: new RegExp(`^${ADDR_TYPE};${XTEXT}$`), refusal: replies.badOrcpt },
} as const;

const ADDRESS_AND_PARAMETERS = /^(MAIL FROM|RCPT TO):<[^<>]*>( .*)?$/i;

/**
 * refuseBadXtext - the refusal of a MAIL FROM line whose ENVID, or RCPT TO line whose ORCPT, is not xtext; undefined
 * for any other line. Read before smtp-server decodes it; an empty value is left to smtp-server ("requires a value").
 */
export function refuseBadXtext(line: string): Reply | undefined {
  const m = ADDRESS_AND_PARAMETERS.exec(canonicalAddress(line));
  if (!m?.[2]) return undefined;
  const parameter = XTEXT_PARAMETERS[m[1]!.toUpperCase() as keyof typeof XTEXT_PARAMETERS];
  // Split as smtp-server splits them: at white space, the name before the first "=".
  for (const argument of m[2].trim().split(/\s+/)) {
    const eq = argument.indexOf('=');
    if (eq <= 0 || argument.slice(0, eq).toUpperCase() !== parameter.name) continue;
    const value = argument.slice(eq + 1);
    if (value !== '' && (!parameter.value.test(value) || !isPrintableUtf8(xtextBytes(value)))) return parameter.refusal;
  }
  return undefined;
}

const ADDRESS_ON_LINE = /^(?:MAIL FROM|RCPT TO) *: *<?([^<> ]*)/i;

/** addressOnLine - the address a MAIL FROM or RCPT TO line gives, without its brackets, as sent; undefined for another line. */
export function addressOnLine(line: string): string | undefined {
  return ADDRESS_ON_LINE.exec(line)?.[1];
}

/**
 * isPrintableUtf8 - UTF-8 without control characters (C0, DEL, C1) or line separators. RFC 3461 §4.2 and §4.4: what an ORCPT or ENVID stands for is
 * printable ("+0D+0A" is valid xtext, and would put a line end into a report); Postfix refuses it with the same 501
 * 5.5.4, where smtp-server answered "501 5.1.7 Bad sender address syntax".
 */
function isPrintableUtf8(bytes: Buffer): boolean {
  return isUtf8(bytes) && !/[\p{Cc}\u2028\u2029]/u.test(bytes.toString('utf8'));
}

/**
 * xtextBytes - the bytes an xtext value stands for: each +HH its byte, anything else its UTF-8. A value whose bytes
 * are not UTF-8 (a Latin-1 "+E9", a lead byte without its follow-on) is refused: smtp-server would take "+E9" for
 * U+00E9, and the value stored and passed on would be another than the one sent.
 */
function xtextBytes(value: string): Buffer {
  const parts = value.split(/(\+[0-9A-F]{2})/);
  return Buffer.concat(parts.map((part) => (/^\+[0-9A-F]{2}$/.test(part) ? Buffer.from([parseInt(part.slice(1), 16)]) : Buffer.from(part, 'utf8'))));
}

/**
 * addressAsSent - the address smtp-server parsed from a canonical MAIL or RCPT line, with the domain the line gives:
 * smtp-server passes a domain through punycode, which made an A-label Unicode ("xn--bcher-kva.example"), an
 * invalid one empty ("a@xn--" became "a@"), and a Unicode full stop (U+3002, U+FF0E, U+FF61) an ASCII one, after
 * the checks of the form and the charset had read it. An address literal stays as parsed (an IPv6 one normalised),
 * and so does the address of a source route, which is dropped.
 */
export function addressAsSent(parsed: string, line: string): string {
  const at = parsed.lastIndexOf('@');
  const sent = addressOnLine(line);
  if (at < 0 || sent === undefined || !sent.includes('@')) return parsed;
  const sentDomain = sent.slice(sent.lastIndexOf('@') + 1);
  return sentDomain.startsWith('[') ? parsed : parsed.slice(0, at + 1) + sentDomain;
}
