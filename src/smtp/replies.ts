// Replies as data: every refusal Postern sends is one entry here, with its
// basic code, RFC 3463 enhanced status code and text. Policy returns these;
// one adapter (inbound/wire-replies.ts) puts them on the wire unchanged.
// Texts follow Postfix where Postfix has one, so operators recognise them.
// And the other way: what tells a next hop's reply from Postern's own verdict
// (isHostReply), and how one is made safe to store and print (cleanReply).

export interface Reply {
  code: number;
  status: string;
  text: string;
}

function reply(code: number, status: string, text: string): Reply {
  return { code, status, text };
}

export const replies = {
  relayDenied: reply(554, '5.7.1', 'Relay access denied'),
  starttlsRequired: reply(530, '5.7.0', 'Must issue a STARTTLS command first'),
  authRequired: reply(530, '5.7.0', 'Authentication required'),
  authFailed: reply(535, '5.7.8', 'Error: authentication failed'),
  authTooManyFailures: reply(421, '4.7.0', 'Error: too many failed authentication attempts'),
  authTemporaryFailure: reply(454, '4.7.0', 'Temporary authentication failure'),
  authNotEnabled: reply(503, '5.5.1', 'Error: authentication not enabled'),
  authInTransaction: reply(503, '5.5.1', 'Error: MAIL transaction in progress'),
  authLockedOut: reply(421, '4.7.0', 'Error: too many failed authentication attempts from your address, try again later'),
  tooManyConnections: reply(421, '4.7.0', 'Error: too many connections from your address'),
  tooManyRecipients: reply(452, '4.5.3', 'Error: too many recipients'),
  messageTooBig: reply(552, '5.3.4', 'Message size exceeds fixed limit'),
  bareLineFeed: reply(550, '5.5.2', 'Error: bare <CR> or <LF> received; use CRLF line endings'),
  tooManyHops: reply(554, '5.4.6', 'Error: too many hops'),
  senderSyntax: reply(501, '5.1.7', 'Bad sender address syntax'),
  senderDomainNotAllowed: reply(553, '5.7.1', 'Sender address rejected: this relay does not send for that domain'),
  recipientSyntax: reply(501, '5.1.3', 'Bad recipient address syntax'),
  // RFC 6531 §3.5: X.6.7, with 550 to MAIL and 553 to RCPT.
  senderDomainNeedsSmtpUtf8: reply(550, '5.6.7', 'Non-ASCII sender domain not permitted without SMTPUTF8'),
  recipientDomainNeedsSmtpUtf8: reply(553, '5.6.7', 'Non-ASCII recipient domain not permitted without SMTPUTF8'),
  badEnvid: reply(501, '5.5.4', 'Bad ENVID parameter syntax'),
  badOrcpt: reply(501, '5.5.4', 'Error: Bad ORCPT parameter syntax'),
  noValidRecipients: reply(554, '5.5.1', 'Error: no valid recipients'),
  // RSET, DATA and STARTTLS take no argument (RFC 5321 §4.1.1.4, §4.1.1.5; RFC 3207 §4).
  rsetSyntax: reply(501, '5.5.4', 'Syntax: RSET'),
  dataSyntax: reply(501, '5.5.4', 'Syntax: DATA'),
  starttlsSyntax: reply(501, '5.5.4', 'Syntax: STARTTLS'),
  needMail: reply(503, '5.5.1', 'Error: need MAIL command'),
  alreadyAuthenticated: reply(503, '5.5.1', 'Error: already authenticated'),
  needRcpt: reply(503, '5.5.1', 'Error: need RCPT command'),
  nestedMail: reply(503, '5.5.1', 'Error: nested MAIL command'),
  recipientNotFqdn: reply(504, '5.5.2', 'Recipient address rejected: need fully-qualified address'),
  commandNotRecognized: reply(502, '5.5.2', 'Error: command not recognized'),
  badUtf8: reply(500, '5.5.2', 'Error: bad UTF-8 syntax'),
  tooManyErrors: reply(421, '4.7.0', 'Error: too many errors'),
  // smtp-server's own words, which it sent with 4.4.2 (a bad connection); Postfix's answer is a 2.7.0.
  httpRequest: reply(421, '4.7.0', 'HTTP requests not allowed'),
  commandTooLong: reply(421, '4.7.0', 'Error: command line too long'),
  serverBusy: reply(421, '4.7.0', 'Error: too many connections, try again later'),
  timeout: reply(421, '4.4.2', 'Error: timeout exceeded'),
  talkedBeforeGreeting: reply(421, '4.7.0', 'Error: command sent before the greeting, closing'),
  queueWriteFailed: reply(451, '4.3.0', 'Error: queue file write error'),
  insufficientStorage: reply(452, '4.3.1', 'Insufficient system storage'),
  shuttingDown: reply(421, '4.3.2', 'Service shutting down, closing transmission channel'),
  clientCertNotTrusted: reply(554, '5.7.1', 'Client certificate not trusted'),
} as const satisfies Record<string, Reply>;

/** formatReply - the text smtp-server should send after the code: "5.7.1 Relay access denied". */
export function formatReply(r: Reply): string {
  return `${r.status} ${r.text}`;
}

/** queuedReply - the 250 that promises the message is on disk. */
export function queuedReply(queueId: string): Reply {
  return reply(250, '2.0.0', `Ok: queued as ${queueId}`);
}

/** unsupportedOption - 555 5.5.4 for a MAIL or RCPT parameter Postern does not know (RFC 5321 §4.1.1.11), naming it as Postfix does. */
export function unsupportedOption(name: string | undefined): Reply {
  return reply(555, '5.5.4', name === undefined ? 'Unsupported option' : `Unsupported option: ${name}`);
}

/**
 * isHostReply - whether a reply is one a server sent, its basic code first ("550 5.1.1 …"), not a verdict or an
 * account of Postern's own, which starts with its enhanced code alone ("4.4.1 connection refused").
 */
export function isHostReply(reply: string): boolean {
  return /^\s*[2-5]\d\d(?:[ -]|$)/.test(reply);
}

/** The most characters of a reply kept: enough for any real one, not a flood from a hostile next hop. */
const REPLY_LIMIT = 2000;

/**
 * cleanReply - a next hop's reply made safe to store, log and print in `queue show`: the lines of a multi-line
 * reply joined by a space, control characters (a terminal escape sequence) as '?', and at most REPLY_LIMIT
 * characters. (nodemailer has already decoded it, as UTF-8.) `queue list` and `show` print
 * replies through it too: a row stored before it was applied may hold anything.
 */
export function cleanReply(reply: string): string {
  const clean = reply.replace(/\r?\n|\t/g, ' ').replace(/[\x00-\x1f\x7f-\x9f]/g, '?');
  return clean.length > REPLY_LIMIT ? `${clean.slice(0, REPLY_LIMIT)}...` : clean;
}
