// Two checks on every command line before smtp-server runs it, as Postfix's
// smtpd makes them:
//  - a line that is not valid UTF-8 gets "500 5.5.2 Error: bad UTF-8
//    syntax". smtp-server decodes lines as UTF-8 and turns bad bytes into
//    U+FFFD, so an address with a stray Latin-1 byte was accepted as another
//    address than the one sent, and relayed so;
//  - a client that has had HARD_ERROR_LIMIT error replies (4xx, 5xx) since
//    its last accepted message gets "421 4.7.0 Error: too many errors" to
//    its next command, and the connection closes (smtpd_hard_error_limit):
//    otherwise a session could probe recipients or relaying without end.
//    smtp-server's own limit counts unknown commands only.
// Installed on both builds of smtp-server (ESM and CJS), like
// inbound/wire-replies.ts. Throws at start if the library's layout changed.
//
//   installCommandGuard - wrap SMTPConnection#send (to count) and #_onCommand (to check); idempotent.
import { isUtf8 } from 'node:buffer';
import { formatReply, replies } from '../smtp/replies.ts';
import { classPrototypes } from '../smtp/library-builds.ts';

/** Error replies a client may have before its next command is refused (Postfix smtpd_hard_error_limit). */
export const HARD_ERROR_LIMIT = 20;

interface Connection {
  _upgrading: boolean;
  _ready: boolean;
  __posternErrors?: number;
  send(code: number, data?: string | string[], context?: string | false): void;
  _whenWritable(next: () => void): void;
}

interface ConnectionPrototype {
  send: (this: Connection, code: number, data?: string | string[], context?: string | false) => void;
  _onCommand: (this: Connection, command: Buffer, callback?: () => void) => void;
  _whenWritable?: unknown;
  __posternCommandGuard?: true;
}

/** installCommandGuard - see the module header; idempotent. */
export async function installCommandGuard(): Promise<void> {
  for (const proto of await classPrototypes<ConnectionPrototype>('smtp-server', 'smtp-connection.js', 'SMTPConnection')) {
    if (typeof proto.send !== 'function' || typeof proto._onCommand !== 'function' || typeof proto._whenWritable !== 'function') {
      throw new Error('smtp-server changed: SMTPConnection.prototype.send, _onCommand or _whenWritable not found');
    }
    if (proto.__posternCommandGuard) continue;
    const librarySend = proto.send;
    const libraryOnCommand = proto._onCommand;
    proto.send = function send(this: Connection, code, data, context) {
      // An accepted message starts the count again ("errors … without delivering mail").
      if (code === 250 && context === 'DATA_OK') this.__posternErrors = 0;
      else if (code >= 400 && code !== 421) this.__posternErrors = (this.__posternErrors ?? 0) + 1;
      librarySend.call(this, code, data, context);
    };
    proto._onCommand = function _onCommand(this: Connection, command, callback) {
      // Before the greeting and during a TLS handshake the library answers or discards the line itself.
      if (this._upgrading || !this._ready) return libraryOnCommand.call(this, command, callback);
      if ((this.__posternErrors ?? 0) >= HARD_ERROR_LIMIT) return this.send(421, formatReply(replies.tooManyErrors), false);
      if (!isUtf8(command)) {
        this.send(500, formatReply(replies.badUtf8), false);
        const next = callback ?? (() => undefined);
        setImmediate(() => this._whenWritable(next));
        return;
      }
      libraryOnCommand.call(this, command, callback);
    };
    proto.__posternCommandGuard = true;
  }
}
