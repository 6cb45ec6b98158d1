// Inbound policy: pure decisions, one per SMTP stage. Inputs are plain
// facts about the session; the output is accept, or a Reply from the
// catalogue plus a machine-readable reason (logged and counted).
// Postfix equivalents: smtpd_client_connection_count_limit ($mynetworks exempt),
// smtpd_tls_auth_only + smtpd_tls_security_level=encrypt on submission,
// smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
// reject_unauth_destination (with allow_untrusted_routing = no); and with
// relay.senderDomains, check_sender_access for the clients that may relay
// (docker images of Postfix call it ALLOWED_SENDER_DOMAINS).
import type { ListenerName } from '../config/config.ts';
import { addressLiteralIp, asciiDomain, domainOf, isAsciiText } from '../smtp/address.ts';
import { replies, unsupportedOption, type Reply } from '../smtp/replies.ts';

export type Decision = { accept: true } | { accept: false; reply: Reply; reason: string };

const ACCEPT: Decision = { accept: true };

function refuse(reply: Reply, reason: string): Decision {
  return { accept: false, reply, reason };
}

/** decideConnect - refuse a client outside the trusted networks that already holds its share of connections. */
export function decideConnect(facts: { connectionsFromIp: number; perIpLimit: number; clientTrusted: boolean }): Decision {
  // Postfix exempts $mynetworks (smtpd_client_event_limit_exceptions): a
  // trusted app or load test opens a new connection per message, often
  // before the server has counted the previous one out.
  if (facts.clientTrusted) return ACCEPT;
  if (facts.connectionsFromIp > facts.perIpLimit) return refuse(replies.tooManyConnections, 'connection-limit-per-ip');
  return ACCEPT;
}

/**
 * decideAuthAttempt - whether AUTH may be tried at all now: not from a locked-out IP (one in relay.trustedNetworks
 * never is, as Postfix exempts $mynetworks from its rate limits: behind a gateway every client shares one address),
 * and not after the session's limit of failures (421, close). Each failure itself is answered 535, as Postfix
 * does, so a client can say why.
 */
export function decideAuthAttempt(facts: { ipLockedOut: boolean; clientTrusted: boolean; failuresThisSession: number; perSessionLimit: number }): Decision {
  if (facts.ipLockedOut && !facts.clientTrusted) return refuse(replies.authLockedOut, 'auth-ip-locked-out');
  if (facts.failuresThisSession >= facts.perSessionLimit) return refuse(replies.authTooManyFailures, 'auth-too-many-failures');
  return ACCEPT;
}

/**
 * decideAuthIdentity - AUTH PLAIN may name an identity to act as (authzid, RFC 4616 §2): Postern has no one
 * who may act as another, so any authzid other than the login's own is refused (535), as Cyrus SASL does.
 */
export function decideAuthIdentity(facts: { authcid: string; authzid: string }): Decision {
  if (facts.authzid !== '' && facts.authcid !== '' && facts.authzid !== facts.authcid) return refuse(replies.authFailed, 'auth-authzid-not-allowed');
  return ACCEPT;
}

/** AUTH_FAILED - a wrong user name or password. */
export const AUTH_FAILED: Decision = refuse(replies.authFailed, 'auth-failed');

/** queueSpaceToKeep - the free bytes the queue's file system keeps (Postfix: at least 1.5 × message_size_limit, or queue_minfree if more). */
export function queueSpaceToKeep(limits: { minFree: number; messageSizeLimit: number }): number {
  return Math.max(limits.minFree, 1.5 * limits.messageSizeLimit);
}

/**
 * decideQueueSpace - refuse a MAIL FROM that the queue's disk may not hold: less than `keepFree` (queueSpaceToKeep)
 * free, once the SIZE the client declared is counted. Free space that is not known (PostgreSQL, a failed reading)
 * refuses nothing.
 */
export function decideQueueSpace(facts: { freeBytes: number | undefined; declaredSize: number | undefined; keepFree: number }): Decision {
  if (facts.freeBytes === undefined) return ACCEPT;
  if (facts.freeBytes - (facts.declaredSize ?? 0) < facts.keepFree) return refuse(replies.insufficientStorage, 'insufficient-storage');
  return ACCEPT;
}

export interface SenderFacts {
  listener: ListenerName;
  secure: boolean;
  authenticated: boolean;
  clientCertTrusted: boolean;
  /** The client's address is in relay.trustedNetworks. */
  clientTrusted: boolean;
}

export interface MailFromFacts extends SenderFacts {
  /** The MAIL FROM address; '' for the null sender. */
  sender: string;
  /** relay.senderDomains: empty for any. */
  senderDomains: readonly string[];
}

/**
 * decideMailFrom - submission needs TLS, then a login (RFC 6409, RFC 8314); a client that may relay sends only
 * from relay.senderDomains when there are any. The null sender (a report) is always let through, and a client
 * that may not relay is not asked: it can only send to relay.localDomains, whose mail comes from anywhere.
 */
export function decideMailFrom(facts: MailFromFacts): Decision {
  if (facts.listener !== 'relay') {
    if (!facts.secure) return refuse(replies.starttlsRequired, 'starttls-required');
    if (!facts.authenticated && !facts.clientCertTrusted) return refuse(replies.authRequired, 'auth-required');
  }
  if (facts.senderDomains.length === 0 || facts.sender === '' || !mayRelay(facts)) return ACCEPT;
  return inDomainList(domainOf(facts.sender), facts.senderDomains) ? ACCEPT : refuse(replies.senderDomainNotAllowed, 'sender-domain-not-allowed');
}

/** mayRelay - a logged-in client, one with a trusted certificate, or one of relay.trustedNetworks on the relay port. */
function mayRelay(facts: SenderFacts): boolean {
  return facts.authenticated || facts.clientCertTrusted || (facts.listener === 'relay' && facts.clientTrusted);
}

const UNICODE_FULL_STOP = /[\u3002\uFF0E\uFF61]/;

/**
 * decideAddressForm - an address Postern can pass on. smtp-server lets one address without a domain through,
 * RCPT TO:<postmaster> (RFC 5321 §4.1.1.3 asks a server to accept it): Postern delivers nowhere itself, so it has
 * no next hop and is refused as Postfix's reject_non_fqdn_recipient does, rather than accepted and bounced.
 * An address literal must be one Postern can reach: [IPv4] or [IPv6:...].
 */
export function decideAddressForm(address: string, role: 'sender' | 'recipient'): Decision {
  const domain = domainOf(address);
  if (role === 'recipient' && domain === '') return refuse(replies.recipientNotFqdn, 'non-fqdn-recipient');
  // IDNA2008 disallows these in a U-label; read as dots (as IDNA 2003 and URLs do), "local.test。" is one name to
  // the domain lists and another to the routes and TLS policies.
  if (UNICODE_FULL_STOP.test(domain)) return refuse(role === 'sender' ? replies.senderSyntax : replies.recipientSyntax, 'unicode-full-stop');
  if (domain.startsWith('[') && addressLiteralIp(domain) === undefined) {
    return refuse(role === 'sender' ? replies.senderSyntax : replies.recipientSyntax, 'bad-address-literal');
  }
  return ACCEPT;
}

/**
 * decideAddressCharset - an address whose domain is not ASCII needs SMTPUTF8 on its MAIL (RFC 6531 §3.4): without
 * it the domain of an IDN is sent as an A-label, so one in UTF-8 is refused with RFC 6531 §3.5's X.6.7 (Postfix
 * refuses it as bad syntax, 501). A UTF-8 local part is taken without SMTPUTF8, as Postfix takes it (smtputf8_enable
 * = yes, strict_smtputf8 = no: mail flows older than SMTPUTF8 carry them); delivery declares SMTPUTF8 for it, or
 * returns it where the next hop offers none (outbound/smtputf8.ts).
 */
export function decideAddressCharset(facts: { address: string; role: 'sender' | 'recipient'; smtpUtf8: boolean }): Decision {
  if (facts.smtpUtf8 || isAsciiText(domainOf(facts.address))) return ACCEPT;
  return refuse(facts.role === 'sender' ? replies.senderDomainNeedsSmtpUtf8 : replies.recipientDomainNeedsSmtpUtf8, 'non-ascii-domain-without-smtputf8');
}

// The parameters of the extensions Postern advertises: SIZE, 8BITMIME, SMTPUTF8, REQUIRETLS, DSN, and AUTH=
// on MAIL (RFC 4954 §5, accepted and not used, as Postfix does for a client it does not trust).
const KNOWN_PARAMETERS = {
  mail: new Set(['SIZE', 'BODY', 'SMTPUTF8', 'REQUIRETLS', 'RET', 'ENVID', 'AUTH']),
  rcpt: new Set(['NOTIFY', 'ORCPT']),
};

/**
 * decideParameters - refuse a MAIL or RCPT parameter of no extension Postern advertised, with 555 5.5.4
 * (RFC 5321 §4.1.1.11), rather than drop it and let the client believe it was honoured. The name is echoed only
 * when it has an esmtp-keyword's shape.
 */
export function decideParameters(names: readonly string[], command: 'mail' | 'rcpt'): Decision {
  const unknown = names.find((name) => !KNOWN_PARAMETERS[command].has(name));
  if (unknown === undefined) return ACCEPT;
  return refuse(unsupportedOption(/^[A-Z0-9][A-Z0-9-]{0,39}$/.test(unknown) ? unknown : undefined), 'unsupported-parameter');
}

export interface RecipientFacts extends SenderFacts {
  recipientDomain: string;
  /** The local part routes onward (hasSenderRouting): user%elsewhere@local.test. */
  recipientRouted: boolean;
  localDomains: readonly string[];
}

/**
 * decideRecipientLimit - limits.recipients per transaction, counted by mailbox as Postern keeps them (x@ and X@ two,
 * x@a.test and x@A.TEST one); one already accepted may be given again. smtp-server counts its own list first, case
 * folded, which is never more.
 */
export function decideRecipientLimit(facts: { accepted: number; isNew: boolean; limit: number }): Decision {
  return facts.isNew && facts.accepted >= facts.limit ? refuse(replies.tooManyRecipients, 'recipient-limit') : ACCEPT;
}

/**
 * decideRcpt - relay for trusted or authenticated clients; mail for local domains from anyone, unless its
 * local part routes it elsewhere (the next hop for a local domain may trust us); nothing else.
 */
export function decideRcpt(facts: RecipientFacts): Decision {
  if (mayRelay(facts)) return ACCEPT;
  if (facts.listener === 'relay' && inDomainList(facts.recipientDomain, facts.localDomains)) {
    return facts.recipientRouted ? refuse(replies.relayDenied, 'sender-specified-routing') : ACCEPT;
  }
  return refuse(replies.relayDenied, 'relay-denied');
}

/**
 * inDomainList - exact match, or "*.example.com" matching any subdomain (relay.localDomains, relay.senderDomains);
 * a UTF-8 domain by its A-label, the only form the lists hold.
 */
export function inDomainList(domain: string, list: readonly string[]): boolean {
  const d = asciiDomain(domain.toLowerCase().replace(/\.$/, ''));
  if (d === '') return false;
  return list.some((entry) => (entry.startsWith('*.') ? d.endsWith(entry.slice(1)) : d === entry));
}
