// Seven checks on the commands of a session, as Postfix's smtpd makes them:
//  - a line that is not valid UTF-8 gets "500 5.5.2 Error: bad UTF-8
//    syntax". smtp-server decodes lines as UTF-8 and turns bad bytes into
//    U+FFFD, so an address with a stray Latin-1 byte was accepted as another
//    address than the one sent, and relayed so. (Not an AUTH exchange's
//    answer: its handler decodes it and refuses it itself.)
//  - the HARD_ERROR_LIMIT-th error reply (4xx, 5xx) since the session's last
//    accepted message is followed at once by "421 4.7.0 Error: too many
//    errors", and the connection closes (smtpd_hard_error_limit): otherwise
//    a session could probe recipients or relaying without end. smtp-server's
//    own limit counts unknown commands only. "452 4.5.3 too many recipients"
//    is not an error: the client sends those recipients again in its next
//    transaction (RFC 5321 §4.5.3.1.10); past RECIPIENT_OVERSHOOT_LIMIT of
//    them in one transaction each is (Postfix's smtpd_recipient_overshoot_limit),
//    or a session could send RCPT for ever.
//  - AUTH where it is not offered gets what Postfix says, not smtp-server's
//    "command not recognized": "530 5.7.0 Must issue a STARTTLS command
//    first" before TLS on a listener that offers AUTH after it (the
//    server's `authAfterTls` option), else "503 5.5.1 Error: authentication
//    not enabled".
//  - AUTH inside a mail transaction gets "503 5.5.1 Error: MAIL
//    transaction in progress" (RFC 4954 §4), before "already
//    authenticated", as Postfix orders them; smtp-server took it.
//  - DATA in a transaction whose every recipient was refused gets "554
//    5.5.1 Error: no valid recipients", not smtp-server's "503 need RCPT
//    command", which tells a pipelining client it forgot a command.
//  - RSET or DATA with an argument gets "501 5.5.4 Syntax: RSET" (or DATA):
//    smtp-server ignored it, so "DATA x" opened a message and "RSET x"
//    answered 250 (RFC 5321 §4.1.1.4, §4.1.1.5: they take none).
//  - an ENVID on MAIL or ORCPT on RCPT that is not xtext (RFC 3461 §4) gets
//    "501 5.5.4 Bad ENVID parameter syntax" or "501 5.5.4 Error: Bad ORCPT
//    parameter syntax" (inbound/envelope-form.ts), read before smtp-server
//    decodes it; a MAIL in a transaction or an RCPT outside one is left to
//    the library's 503, as Postfix checks the order first.
// Every error reply smtp-server makes itself (a bad address's syntax, a
// command out of order, an unknown command, a timeout) and the refusals
// above are handed to the server's `onProtocolRefusal` option, with the
// command they answer, so that they are logged as Postern's own refusals
// are: a printer refused for its address syntax left no trace.
// And what Postfix accepts and smtp-server does not is handed to smtp-server
// rewritten: a MAIL or RCPT line with an address without angle brackets or a
// domain ending in a dot (inbound/envelope-form.ts), a tab between a
// command's words ("HELO<TAB>x" was an unknown command), a HELO or EHLO name
// with spaces (an old printer's "HELO My Printer": the library sees the first
// word, the session records the whole name, as Postfix's does), and a MAIL with no
// HELO or EHLO before it (a script, or a client that does not repeat EHLO
// after STARTTLS: Postfix's smtpd_helo_required = no) is taken as coming
// after "HELO [client address]".
// And smtp-server's address keeps the domain the client sent: the library
// decodes an A-label to Unicode (inbound/envelope-form.ts addressAsSent).
// Installed on both builds of smtp-server (ESM and CJS), like
// inbound/wire-replies.ts. Throws at start if the library's layout changed.
//
//   installCommandGuard - wrap SMTPConnection#send (to count, to report), #_onCommand (to check, to rewrite) and
//                         #_parseAddressCommand (the domain as sent); idempotent.
import { isUtf8 } from 'node:buffer';
import { isIPv6 } from 'node:net';
import { formatReply, replies, type Reply } from '../smtp/replies.ts';
import { patchMethods, SMTP_CONNECTION } from '../smtp/library-builds.ts';
import { addressAsSent, addressOnLine, canonicalAddressCommand, refuseBadXtext } from './envelope-form.ts';
import { hasEnhancedCode, replaceLibraryReply } from './wire-replies.ts';

/** Error replies a client may have before its next command is refused (Postfix smtpd_hard_error_limit). */
export const HARD_ERROR_LIMIT = 20;

/** Recipients past limits.recipients in one transaction that are no error; each one after them is (Postfix smtpd_recipient_overshoot_limit). */
export const RECIPIENT_OVERSHOOT_LIMIT = 1000;

/**
 * NOOP, RSET, VRFY and ETRN a client may send before each one more counts as an error (Postfix
 * smtpd_junk_command_limit): they are never refused, and without this a client held its connection slot for ever.
 */
export const JUNK_COMMAND_LIMIT = 100;

/** The options this adds to SMTPServerOptions. */
export interface CommandGuardOptions {
  /** AUTH is offered once the session is in TLS (submission); false or absent: never (relay). */
  authAfterTls?: boolean;
  /**
   * Told of each error reply not made by Postern's policy: the session, the command's name ('' before any), the
   * reply as sent, and for MAIL and RCPT the address as the line gave it (for the log's from= and to=).
   */
  onProtocolRefusal?: (session: object, command: string, reply: string, address?: string) => void;
}

interface Connection {
  _upgrading: boolean;
  _ready: boolean;
  _nextHandler: unknown;
  secure: boolean;
  session: { disabledCommands?: string[]; envelope: { mailFrom: unknown; rcptTo: unknown[] }; hostNameAppearsAs?: string | false };
  _server: { options: CommandGuardOptions };
  __posternErrors?: number;
  /** NOOP, RSET, VRFY and ETRN since the session began or last had a message accepted. */
  __posternJunk?: number;
  /** Recipients refused past limits.recipients since the transaction began. */
  __posternOvershoot?: number;
  /** The command line being answered (for the name of a refused one). */
  __posternLine?: Buffer;
  send(code: number, data?: string | string[], context?: string | false): void;
  _whenWritable(next: () => void): void;
  hostNameAppearsAs: string | false;
  remoteAddress: string;
  _resetSession(): void;
}

interface ConnectionPrototype {
  send: (this: Connection, code: number, data?: string | string[], context?: string | false) => void;
  _onCommand: (this: Connection, command: Buffer, callback?: () => void) => void;
  _parseAddressCommand: (this: Connection, name: string, command: Buffer | string) => ParsedAddress | false;
  _whenWritable: unknown;
  _resetSession: unknown;
}

/** What smtp-server's _parseAddressCommand returns for a MAIL or RCPT it can read. */
interface ParsedAddress {
  address: string;
}

/** installCommandGuard - see the module header; idempotent. */
export function installCommandGuard(): Promise<void> {
  // _whenWritable and _resetSession are not replaced, only required: the refusal of a line waits on the first,
  // a HELO assumed for a MAIL calls the second.
  type Methods = 'send' | '_onCommand' | '_parseAddressCommand' | '_whenWritable' | '_resetSession';
  const methods: Methods[] = ['send', '_onCommand', '_parseAddressCommand', '_whenWritable', '_resetSession'];
  return patchMethods<ConnectionPrototype, Methods>('command guard', SMTP_CONNECTION, methods, (library) => ({
    send(this: Connection, code: number, data?: string | string[], context?: string | false) {
      library.send.call(this, code, data, context);
      // An accepted message starts the count again ("errors … without delivering mail").
      if (code === 250 && context === 'DATA_OK') this.__posternErrors = this.__posternJunk = 0;
      // Recipients past limits.recipients are no error and no refusal to log, up to RECIPIENT_OVERSHOOT_LIMIT: the
      // client sends them again, and a line each would flood the log.
      if (code < 400) return;
      if (isRecipientOvershoot(code, data) && (this.__posternOvershoot = (this.__posternOvershoot ?? 0) + 1) <= RECIPIENT_OVERSHOOT_LIMIT) return;
      if (typeof data === 'string' && !hasEnhancedCode(data)) {
        const replacement = replaceLibraryReply(data);
        const reply = replacement ? `${replacement.code} ${formatReply(replacement)}` : `${code} ${data}`;
        reportRefusal(this, reply, replacement !== undefined && ANSWERS_NO_COMMAND.has(replacement));
      }
      if (code !== 421) {
        this.__posternErrors = (this.__posternErrors ?? 0) + 1;
        if (this.__posternErrors === HARD_ERROR_LIMIT) library.send.call(this, 421, formatReply(replies.tooManyErrors), false);
      }
    },
    _parseAddressCommand(this: Connection, name: string, command: Buffer | string) {
      const parsed = library._parseAddressCommand.call(this, name, command);
      if (parsed && parsed.address) parsed.address = addressAsSent(parsed.address, command.toString());
      return parsed;
    },
    _onCommand(this: Connection, command: Buffer, callback?: () => void) {
      // Before the greeting and during a TLS handshake the library answers or discards the line itself.
      if (this._upgrading || !this._ready || this._nextHandler) return library._onCommand.call(this, command, callback);
      // Every check reads the line as smtp-server will: "AUTH<TAB>PLAIN" is AUTH.
      const line = withSpaces(command);
      this.__posternLine = line;
      if (isJunkCommand(line) && (this.__posternJunk = (this.__posternJunk ?? 0) + 1) > JUNK_COMMAND_LIMIT) {
        this.__posternErrors = (this.__posternErrors ?? 0) + 1;
        // The library's send closes the connection after a 421.
        if (this.__posternErrors >= HARD_ERROR_LIMIT) return library.send.call(this, 421, formatReply(replies.tooManyErrors), false);
      }
      const refusal = !isUtf8(line)
        ? replies.badUtf8
        : isAuthNotOffered(this, line)
          ? authNotOfferedReply(this)
          : isAuthInTransaction(this, line)
            ? replies.authInTransaction
            : isDataWithoutRecipients(this, line)
              ? replies.noValidRecipients
              : (argumentNotTakenReply(this, line) ?? badXtextReply(this, line));
      if (!refusal) {
        // "HELO My Printer Model 5": smtp-server takes one word; Postfix joins them (collapse_args), and so do we.
        const spaced = heloWithSpaces(line);
        if (spaced) {
          return library._onCommand.call(this, spaced.command, () => {
            // The connection's copy, and the session's, which the library took from it (and the Received header reads).
            if (this.hostNameAppearsAs === spaced.first) this.hostNameAppearsAs = this.session.hostNameAppearsAs = spaced.name;
            callback?.();
          });
        }
        const canonical = canonicalCommand(line);
        // A new transaction; not a nested MAIL, which the library refuses inside this one.
        if (isMailCommand(canonical) && !this.session.envelope.mailFrom) this.__posternOvershoot = 0;
        if (!this.hostNameAppearsAs && isMailCommand(canonical)) {
          // What the library's own HELO handler records, for HELO [address]; the session's copy is taken anew.
          this.hostNameAppearsAs = isIPv6(this.remoteAddress) ? `[IPv6:${this.remoteAddress}]` : `[${this.remoteAddress}]`;
          this._resetSession();
        }
        return library._onCommand.call(this, canonical, callback);
      }
      this.send(refusal.code, formatReply(refusal), false);
      reportRefusal(this, `${refusal.code} ${formatReply(refusal)}`);
      const next = callback ?? (() => undefined);
      setImmediate(() => this._whenWritable(next));
    },
  }));
}

// Replies smtp-server sends of itself, not to a command (the last command was answered long before).
const ANSWERS_NO_COMMAND = new Set<Reply>([replies.timeout, replies.shuttingDown, replies.serverBusy, replies.talkedBeforeGreeting]);

/**
 * The SMTP commands a log line may name. Any other first word is whatever the client wrote, which may be a
 * credential: AUTH LOGIN's base64 lines, written without waiting for replies to a server that refused AUTH.
 */
export const SMTP_COMMANDS: ReadonlySet<string> = new Set(['HELO', 'EHLO', 'MAIL', 'RCPT', 'DATA', 'BDAT', 'RSET', 'NOOP', 'QUIT', 'VRFY', 'EXPN', 'HELP', 'STARTTLS', 'AUTH', 'ETRN', 'XCLIENT', 'XFORWARD']);

/**
 * reportRefusal - tell onProtocolRefusal of a reply, naming the command it answers by its first word when that is
 * an SMTP command (UNKNOWN when it is not); '' when it answers none.
 */
function reportRefusal(connection: Connection, reply: string, answersNoCommand = false): void {
  const line = answersNoCommand ? '' : (connection.__posternLine?.toString('latin1', 0, 9) ?? '');
  const word = /^[^ ]*/.exec(line)![0].toUpperCase();
  const name = answersNoCommand ? '' : SMTP_COMMANDS.has(word) ? word : 'UNKNOWN';
  // At most 320 characters of it: it goes into a log line.
  const address = name === 'MAIL' || name === 'RCPT' ? addressOnLine(connection.__posternLine!.toString('utf8', 0, 400))?.slice(0, 320) : undefined;
  connection._server.options.onProtocolRefusal?.(connection.session, name, reply, address);
}


/** withSpaces - a command line with its tabs as spaces (Postfix reads any white space between words); the same buffer when it has none. */
function withSpaces(command: Buffer): Buffer {
  // A native search: this runs for every command line.
  return command.includes(0x09) ? Buffer.from(command.toString('latin1').replaceAll('\t', ' '), 'latin1') : command;
}

/** canonicalCommand - a MAIL or RCPT line as canonicalAddressCommand writes it; any other line, or one unchanged, the same buffer. */
function canonicalCommand(command: Buffer): Buffer {
  // The first byte first: this runs for every command line.
  const first = command[0]! | 0x20;
  if (first !== 0x6d && first !== 0x72) return command;
  const line = command.toString('utf8');
  const canonical = canonicalAddressCommand(line);
  return canonical === line ? command : Buffer.from(canonical, 'utf8');
}

/**
 * heloWithSpaces - a HELO or EHLO whose name has spaces in it, as the one-word command smtp-server accepts and the
 * whole name (lower case, as smtp-server records a name) to record once it has; undefined for any other line, or a
 * name smtp-server would refuse anyway (too long, a control character), which it then refuses.
 */
function heloWithSpaces(command: Buffer): { command: Buffer; first: string; name: string } | undefined {
  // The first byte first: this runs for every command line.
  const first = command[0]! | 0x20;
  if (first !== 0x68 && first !== 0x65) return undefined;
  const m = /^(HELO|EHLO) +(\S+)((?: +\S+)+) *$/i.exec(command.toString('utf8'));
  if (!m) return undefined;
  const name = `${m[2]!}${m[3]!.replace(/ +/g, ' ')}`.toLowerCase();
  // What smtp-server refuses in a name (it goes into Received headers and logs) is refused here too: left to it.
  if (name.length > 255 || /[\x00-\x1f\x7f-\x9f]/.test(name)) return undefined;
  return { command: Buffer.from(`${m[1]!} ${m[2]!}`, 'utf8'), first: m[2]!.toLowerCase(), name };
}

/** isMailCommand - a MAIL FROM line (as canonicalCommand leaves it). */
function isMailCommand(line: Buffer): boolean {
  return (line[0]! | 0x20) === 0x6d && /^mail from:/i.test(line.toString('latin1', 0, 10));
}

/** isRecipientOvershoot - the reply to a recipient past limits.recipients (smtp-server's text or ours). */
function isRecipientOvershoot(code: number, data: string | string[] | undefined): boolean {
  return code === 452 && typeof data === 'string' && (data.startsWith(`${replies.tooManyRecipients.status} `) || replaceLibraryReply(data) === replies.tooManyRecipients);
}

/** isAuthNotOffered - an AUTH command on a session where AUTH is disabled (before TLS, or on the relay listener). */
function isAuthNotOffered(connection: Connection, command: Buffer): boolean {
  return isAuthCommand(command) && (connection.session.disabledCommands ?? []).includes('AUTH');
}

/** isAuthInTransaction - AUTH after MAIL FROM, before the transaction ended (RFC 4954 §4: refused with 503). */
function isAuthInTransaction(connection: Connection, command: Buffer): boolean {
  return isAuthCommand(command) && Boolean(connection.session.envelope.mailFrom);
}

function isAuthCommand(command: Buffer): boolean {
  // The first byte first: this runs for every command line.
  return (command[0]! | 0x20) === 0x61 && /^auth(?: |$)/i.test(command.toString('latin1', 0, 5));
}

/** isJunkCommand - NOOP, RSET, VRFY or ETRN: what Postfix's smtpd_junk_command_limit counts. */
function isJunkCommand(command: Buffer): boolean {
  // The first byte first: this runs for every command line.
  const first = command[0]! | 0x20;
  return (first === 0x6e || first === 0x72 || first === 0x76 || first === 0x65) && /^(?:noop|rset|vrfy|etrn)(?: |$)/i.test(command.toString('latin1', 0, 5));
}

/** isDataWithoutRecipients - DATA after a MAIL FROM whose recipients were all refused (with no MAIL, the library's 503 stands). */
function isDataWithoutRecipients(connection: Connection, command: Buffer): boolean {
  const { envelope } = connection.session;
  return (command[0]! | 0x20) === 0x64 && Boolean(envelope.mailFrom) && envelope.rcptTo.length === 0 && /^data(?: |$)/i.test(command.toString('latin1', 0, 5));
}

/**
 * argumentNotTakenReply - Postfix's 501 for RSET or DATA with an argument, where smtp-server ignored it; DATA only
 * when it comes in its turn (with no recipient, the 503 or 554 above stands, as in Postfix).
 */
function argumentNotTakenReply(connection: Connection, command: Buffer): Reply | undefined {
  // The first byte first: this runs for every command line.
  const first = command[0]! | 0x20;
  if (first !== 0x72 && first !== 0x64) return undefined;
  const m = /^(rset|data) +\S/i.exec(command.toString('latin1'));
  if (!m) return undefined;
  if (m[1]!.toLowerCase() === 'rset') return replies.rsetSyntax;
  return connection.session.envelope.rcptTo.length > 0 ? replies.dataSyntax : undefined;
}

/** badXtextReply - the refusal of a MAIL or RCPT whose ENVID or ORCPT is not xtext, when the command comes in its turn. */
function badXtextReply(connection: Connection, command: Buffer): Reply | undefined {
  // The first byte first: this runs for every command line.
  const first = command[0]! | 0x20;
  // A MAIL in a transaction, or an RCPT outside one, gets the library's 503.
  const inTransaction = Boolean(connection.session.envelope.mailFrom);
  const inTurn = first === 0x6d ? !inTransaction : first === 0x72 && inTransaction;
  return inTurn ? refuseBadXtext(command.toString('utf8')) : undefined;
}

function authNotOfferedReply(connection: Connection): Reply {
  return !connection.secure && connection._server.options.authAfterTls ? replies.starttlsRequired : replies.authNotEnabled;
}
