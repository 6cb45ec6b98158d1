// SMTPUTF8 toward a next hop (RFC 6531 §3.2): an address that is not ASCII
// (a UTF-8 local part, a domain in UTF-8) goes only to a next hop that offers
// SMTPUTF8, and nodemailer declares SMTPUTF8 on the MAIL FROM of such an
// envelope by itself. To a next hop that offers none it sent the address as
// it is, without SMTPUTF8. Those recipients are returned instead, in
// Postfix's words ("5.6.7 SMTPUTF8 is required, but was not offered by host
// …"), and the others go: every recipient, when the sender is not ASCII.
// Not decided here: a message declared SMTPUTF8 whose envelope is ASCII goes
// without the keyword (nodemailer decides by the addresses alone), its header
// unread.
//
//   decideWithoutSmtpUtf8 - which recipients may go to a next hop that offers no SMTPUTF8.
//   smtpUtf8NotOffered    - the verdict for the others.

import { isAsciiText } from '../smtp/address.ts';

/**
 * decideWithoutSmtpUtf8 - the recipients that may go to a next hop without SMTPUTF8 (`send`) and those bounced
 * (`bounce`), in their order: an address that is not ASCII needs SMTPUTF8, the sender's for every recipient.
 */
export function decideWithoutSmtpUtf8<R extends { address: string }>(mailFrom: string, recipients: readonly R[]): { send: R[]; bounce: R[] } {
  if (!isAsciiText(mailFrom)) return { send: [], bounce: [...recipients] };
  return { send: recipients.filter((r) => isAsciiText(r.address)), bounce: recipients.filter((r) => !isAsciiText(r.address)) };
}

/** smtpUtf8NotOffered - the verdict on a recipient that needs SMTPUTF8 at a next hop without it (Postfix's words). */
export function smtpUtf8NotOffered(host: string): string {
  return `5.6.7 SMTPUTF8 is required, but was not offered by host ${host}`;
}
