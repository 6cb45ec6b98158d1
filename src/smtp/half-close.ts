// A client that half-closes: it writes its commands, then shuts down its
// side (`printf … | nc -N`, scripts that call shutdown(SHUT_WR) after QUIT).
// Postfix's smtpd reads to the end, answers every command it read (the 250
// of a message included) and then closes. Node ends our side as soon as the
// client's FIN arrives, unless the socket allows half-open, and smtp-server
// writes a reply only while the socket is readable too: the message was
// queued and its 250 never sent, so the client would send it again. With
// this installed:
//  - a session's socket stays writable after the client's FIN (allowHalfOpen,
//    set on the socket: Node reads it when the FIN arrives), and a reply may
//    be written while it is (the socket's readyState, which smtp-server
//    checks, says 'open' then);
//  - once the parser has handled all the client sent (its 'finish' comes
//    after the last command's handler called back, the 250 after DATA
//    included), the connection is closed as QUIT would close it;
//  - a client whose input ends inside DATA is a lost connection, as before:
//    the socket is destroyed and the message's stream with it (nothing is
//    queued).
// A TLS socket is made half-open only once its handshake is done (the
// listener's onSecure calls allowHalfClose): a TLSSocket takes allowHalfOpen
// from the socket it wraps, and one half-open during its handshake would
// wait out the handshake timeout for a client that left before it. So
// STARTTLS turns it off on the plaintext socket before smtp-server wraps it.
// Installed on both builds of smtp-server (ESM and CJS), like
// smtp/greeting-pause.ts. Throws at start if the library's layout changed.
//
//   installHalfClose - wrap SMTPConnection#_createParser in both builds; idempotent.
//   allowHalfClose   - make one socket half-open, replies still written (TLS sockets, once secure).
import { Socket } from 'node:net';
import { TLSSocket } from 'node:tls';
import type { Writable } from 'node:stream';
import { patchMethods, SMTP_CONNECTION } from './library-builds.ts';

interface ConnectionInternals {
  _socket: Socket;
  _parser: (Writable & { _dataMode: boolean }) | false | undefined;
  _closing: boolean;
  _closed: boolean;
  close(): void;
}

interface ConnectionPrototype {
  _createParser: (this: ConnectionInternals) => Writable & { _dataMode: boolean };
}

/** installHalfClose - answer a half-closed client to the end, then close; idempotent. */
export function installHalfClose(): Promise<void> {
  return patchMethods<ConnectionPrototype, '_createParser'>('half close', SMTP_CONNECTION, ['_createParser'], (library) => ({
    _createParser(this: ConnectionInternals) {
      const parser = library._createParser.call(this);
      const socket = this._socket;
      // Called again by STARTTLS, with a parser in place, just before the socket is wrapped.
      if (this._parser) socket.allowHalfOpen = false;
      else if (!(socket instanceof TLSSocket)) allowHalfClose(socket);
      parser.once('finish', () => {
        // A parser retired by STARTTLS, or a connection already closing (QUIT, 421): nothing to do.
        if (this._parser !== parser || this._closing || this._closed) return;
        if (parser._dataMode) return this._socket.destroy();
        this.close();
      });
      return parser;
    },
  }));
}

/**
 * The readyState a half-open socket shows smtp-server: net.Socket's own, but 'open' while only writable. One
 * descriptor for every socket: V8 then gives the sockets it is set on one shape, where a getter made for each
 * socket gave each its own (cost of a connection, bench/ROUNDS.md, "Twenty-seventh round").
 */
const HALF_OPEN_READY_STATE: PropertyDescriptor = {
  configurable: true,
  get(this: Socket) {
    const state = Reflect.get(Socket.prototype, 'readyState', this) as string;
    return state === 'writeOnly' ? 'open' : state;
  },
};

/** allowHalfClose - keep our side of `socket` open after the client's FIN, with replies still written. */
export function allowHalfClose(socket: Socket): void {
  socket.allowHalfOpen = true;
  Object.defineProperty(socket, 'readyState', HALF_OPEN_READY_STATE);
}
