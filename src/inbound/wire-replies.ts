// The one adapter between Postern's reply catalogue and smtp-server's wire
// format. smtp-server derives the RFC 3463 enhanced code from the basic
// code and the command, and a hook cannot choose it (LIBRARIES.md); a relay
// denial would go out as "554 5.6.0". We wrap SMTPConnection#send once:
//  - a reply whose text already starts with an enhanced code (all of ours,
//    see smtp/replies.ts formatReply) goes out exactly as written;
//  - the library's own replies listed below are swapped for catalogue ones
//    (Postfix wording, exact codes);
//  - anything else keeps the library's derived code.
// The same wrapper coalesces writes: the replies to a pipelined group
// (MAIL, RCPT…, DATA arrive in one packet) leave in one write at the end of
// the event loop's turn instead of one write, and one loopback segment,
// each: the socket is corked at the first reply and uncorked by
// setImmediate. A 220 (greeting, STARTTLS: the TLS handshake takes the socket
// over right after it), 221 and 421 (the connection ends) flush what is held
// and go out at once.
// Fails: throws at start if the library no longer has the method we wrap.
import { formatReply, replies, type Reply } from '../smtp/replies.ts';
import { patchMethods, SMTP_CONNECTION } from '../smtp/library-builds.ts';

type SendContext = string | false | undefined;
interface ConnectionPrototype {
  send: (this: Connection, code: number, data?: string | string[], context?: SendContext) => void;
}
/** The part of smtp-server's SMTPConnection the wrapper touches: the socket send() writes to. */
interface Connection {
  _socket?: { writableCorked: number; destroyed: boolean; cork(): void; uncork(): void };
}

/** Replies after which the socket changes hands (TLS) or closes: never held back. */
const FLUSHING_CODES = new Set([220, 221, 421]);

const ENHANCED_PREFIX = /^[245]\.\d{1,3}\.\d{1,3} /;

// Library text (exact; '* text' matches a suffix, 'text *' a prefix) -> the reply we send instead.
const LIBRARY_REPLIES: ReadonlyArray<[string, Reply]> = [
  ['Error: command not recognized', replies.commandNotRecognized],
  ['Error: too many unrecognized commands', replies.tooManyErrors],
  ['Error: Command line too long', replies.commandTooLong],
  ['HTTP requests not allowed', replies.httpRequest],
  ['Error: Must issue a STARTTLS command first', replies.starttlsRequired],
  ['Timeout - closing connection', replies.timeout],
  ['Server shutting down', replies.shuttingDown],
  ['* Too many connected clients, try again in a moment', replies.serverBusy],
  ['* You talk too soon', replies.talkedBeforeGreeting],
  ['Error: message exceeds fixed maximum message size *', replies.messageTooBig],
  ['Error: Bad sender address syntax', replies.senderSyntax],
  ['Error: Bad recipient address syntax', replies.recipientSyntax],
  ['Error: too many recipients', replies.tooManyRecipients],
  ['Error: No identity changes permitted', replies.alreadyAuthenticated],
  ['Error: syntax: STARTTLS', replies.starttlsSyntax],
  // The same words and codes smtp-server sends; listed so that the log's refused line has the reply as sent.
  ['Error: need MAIL command', replies.needMail],
  ['Error: need RCPT command', replies.needRcpt],
  ['Error: nested MAIL command', replies.nestedMail],
];

/** hasEnhancedCode - a reply text that starts with its enhanced code: one of ours (formatReply), sent as written. */
export function hasEnhancedCode(text: string): boolean {
  return ENHANCED_PREFIX.test(text);
}

/** replaceLibraryReply - the catalogue reply for one of smtp-server's own texts, if we have one. */
export function replaceLibraryReply(text: string): Reply | undefined {
  for (const [pattern, reply] of LIBRARY_REPLIES) {
    const matches = pattern.startsWith('* ') ? text.endsWith(pattern.slice(2)) : pattern.endsWith(' *') ? text.startsWith(pattern.slice(0, -1)) : text === pattern;
    if (matches) return reply;
  }
  return undefined;
}

/** installExactReplies - wrap send() in both builds of smtp-server (ESM and CJS); idempotent. */
export function installExactReplies(): Promise<void> {
  return patchMethods<ConnectionPrototype, 'send'>('exact replies', SMTP_CONNECTION, ['send'], (library) => ({
    send(this: Connection, code: number, data?: string | string[], context?: SendContext): void {
      coalesceWrites(this._socket, code);
      if (typeof data === 'string') {
        if (hasEnhancedCode(data)) return library.send.call(this, code, data, false);
        const replacement = replaceLibraryReply(data);
        if (replacement) return library.send.call(this, replacement.code, formatReply(replacement), false);
      }
      return library.send.call(this, code, data, context);
    },
  }));
}

/** coalesceWrites - before a reply is written: hold it with the others of this turn of the event loop, or flush them all for a FLUSHING_CODES reply. */
export function coalesceWrites(socket: Connection['_socket'], code: number): void {
  if (!socket || socket.destroyed) return;
  if (FLUSHING_CODES.has(code)) {
    if (socket.writableCorked > 0) socket.uncork();
    return;
  }
  if (socket.writableCorked > 0) return;
  // Also when smtp-server then writes nothing (a TLS upgrade under way): the uncork below is harmless.
  socket.cork();
  // A no-op if a flushing reply uncorked it first.
  setImmediate(() => {
    if (socket.writableCorked > 0) socket.uncork();
  });
}
