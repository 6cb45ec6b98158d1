// The pause before the 220 greeting, as an option of each SMTPServer.
// smtp-server waits a fixed 100 ms before greeting, so that a client that
// talks first (a spam bot that does not wait) is caught with "421 You talk
// too soon". Postfix's smtpd greets at once; the pre-greeting test is
// postscreen's (postscreen_greet_wait), which is off unless configured. A
// relay's clients are its own users and scripts, and 100 ms on every
// connection is most of a short session's setup. We wrap
// SMTPConnection#init in both builds (as inbound/wire-replies.ts wraps send)
// so the pause is the server's `greetingPauseMs` option (the library's
// 100 ms when a server does not set it). A command sent before the greeting
// is still refused with 421 whatever the pause: smtp-server accepts input
// only once it has greeted.
// Fails: throws at start if the library no longer has the method we wrap.
import { patchMethods, SMTP_CONNECTION } from './library-builds.ts';

/** The option this adds to SMTPServerOptions. */
export interface GreetingPauseOption {
  /** Milliseconds between accepting a connection and greeting it; 0 greets at once. */
  greetingPauseMs?: number;
}

const LIBRARY_PAUSE_MS = 100;

interface ConnectionInternals {
  _server: { options: GreetingPauseOption & { maxClients?: number }; connections: Set<unknown> };
  name: string;
  _setListeners(callback: () => void): void;
  connectionReady(): void;
  send(code: number, data: string, context: false): void;
}

interface ConnectionPrototype {
  init(this: ConnectionInternals): void;
}

/** installGreetingPause - make every SMTPServer's greeting pause its `greetingPauseMs` option; idempotent. */
export function installGreetingPause(): Promise<void> {
  // The library's init, with its fixed timer replaced by the option.
  return patchMethods<ConnectionPrototype, 'init'>('greeting pause', SMTP_CONNECTION, ['init'], () => ({
    init(this: ConnectionInternals): void {
      this._setListeners(() => {
        const { maxClients, greetingPauseMs = LIBRARY_PAUSE_MS } = this._server.options;
        if (maxClients && this._server.connections.size > maxClients) {
          return this.send(421, `${this.name} Too many connected clients, try again in a moment`, false);
        }
        if (greetingPauseMs <= 0) return this.connectionReady();
        setTimeout(() => this.connectionReady(), greetingPauseMs).unref();
      });
    },
  }));
}
