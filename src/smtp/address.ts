// Addresses as SMTP carries them: the parts Postern decides on.
import { isIPv4, isIPv6 } from 'node:net';
import { domainToASCII } from 'node:url';

const ASCII = /^[\x00-\x7F]*$/;

/** isAsciiText - whether a string has no character above U+007F: an address that needs no SMTPUTF8 (RFC 6531). */
export function isAsciiText(text: string): boolean {
  return ASCII.test(text);
}

/**
 * asciiDomain - an internationalised domain in its A-label form (RFC 5890: "bücher.example" as
 * "xn--bcher-kva.example"), as DNS and the routes know it; an ASCII domain, or one that is not a valid IDN, as it is.
 */
export function asciiDomain(domain: string): string {
  if (isAsciiText(domain)) return domain;
  const ascii = domainToASCII(domain);
  // IDNA maps the ideographic and full-width full stops to "."; one ending the domain is a final dot, dropped as
  // the envelope's own final dot is (envelope-form.ts), or the routes and the TLS policies would not match it.
  return ascii === '' ? domain : ascii.replace(/\.$/, '');
}

/** domainOf - the lowercased domain of an address; '' for a domainless one such as <postmaster>. */
export function domainOf(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? '' : address.slice(at + 1).toLowerCase();
}

/**
 * mailboxKey - an address as one mailbox: its local part as sent (its case is the destination's to read, RFC 5321
 * §2.4), its domain in lower case (domains are not case-sensitive).
 */
export function mailboxKey(address: string): string {
  const at = address.lastIndexOf('@');
  return at < 0 ? address : `${address.slice(0, at)}@${address.slice(at + 1).toLowerCase()}`;
}

/**
 * hasSenderRouting - whether the local part routes onward: user%elsewhere@domain, elsewhere!user@domain,
 * user@elsewhere@domain. A next hop that honours such forms relays to "elsewhere" on our word.
 */
export function hasSenderRouting(address: string): boolean {
  const at = address.lastIndexOf('@');
  return /[@%!]/.test(at < 0 ? address : address.slice(0, at));
}

/**
 * addressLiteralIp - the IP address of a domain that is an address literal (RFC 5321 §4.1.3): "[192.0.2.1]" or
 * "[IPv6:2001:db8::1]"; undefined for a domain name, and for a literal that is not a valid IPv4 or IPv6 one.
 */
export function addressLiteralIp(domain: string): string | undefined {
  const inner = /^\[(.*)\]$/s.exec(domain)?.[1];
  if (inner === undefined) return undefined;
  if (isIPv4(inner)) return inner;
  const v6 = /^ipv6:(.*)$/is.exec(inner)?.[1];
  return v6 !== undefined && isIPv6(v6) ? v6 : undefined;
}
