// The PROXY protocol (v1, HAProxy's text line) from networks rather than
// from single addresses, as an option of each SMTPServer. Behind a load
// balancer (HAProxy, Traefik, nginx's stream module) every client arrives
// from the balancer's address, so the trusted networks, the per-IP limits,
// the AUTH lockout, logs and Received headers would all see one client; the
// balancer says who connected in a line before the SMTP session, and
// smtp-server then takes the client's address from it (Postfix:
// smtpd_upstream_proxy_protocol = haproxy). smtp-server's `useProxy` names
// the peers that must send that line as exact addresses; a balancer in a
// cluster moves between the addresses of a network. We wrap
// SMTPServer#_expectsProxyHeader in both builds so that a server's
// `proxyHeaderFrom` matcher decides (the library's own answer when a server
// does not set one). A peer it matches must send the line; one it does not
// match cannot, so a client cannot claim another address.
// And #_handleProxy, so that a balancer that sends no PROXY line is seen:
// the library waits for it as long as for an idle client (limits.idleTimeout)
// and logs nothing, while the client behind it waits for a greeting. As
// Postfix (smtpd_upstream_proxy_timeout, 5 s), the wait is the server's
// `proxyHeaderWaitMs` (smtp.proxyProtocolTimeout), then "421 4.3.0" and a warning; so is a connection that starts with
// anything else. One closed before it sent a byte (a balancer's TCP health
// check) is only a debug line.
// Fails: throws at start if the library no longer has the methods we wrap.
import type { Socket } from 'node:net';
import { patchMethods, type LibraryClass } from './library-builds.ts';

/** The options this adds to SMTPServerOptions. */
export interface ProxyHeaderOption {
  /** Whether a peer at this address must open with a PROXY v1 line (smtp.proxyProtocol's networks). */
  proxyHeaderFrom?: (address: string) => boolean;
  /** Where a peer that did not send its PROXY line is reported. */
  proxyHeaderLog?: { warn(fields: object, message: string): void; debug(fields: object, message: string): void };
  /** How long a peer may take to send its PROXY line (Postfix's smtpd_upstream_proxy_timeout). */
  proxyHeaderWaitMs?: number;
}

type ProxyCallback = (err: Error | null, socketOptions?: object) => void;

const SMTP_SERVER: LibraryClass = { library: 'smtp-server', file: 'smtp-server.js', exportName: 'SMTPServer' };

interface ServerInternals {
  options: ProxyHeaderOption & { name?: string };
  _expectsProxyHeader(socket: Socket): boolean;
}

interface ServerPrototype {
  _expectsProxyHeader(this: ServerInternals, socket: Socket): boolean;
  _handleProxy(this: ServerInternals, socket: Socket, callback: ProxyCallback): void;
}

/** installProxyHeader - make every SMTPServer's `proxyHeaderFrom` option decide who must send a PROXY line, and report one that did not; idempotent. */
export function installProxyHeader(): Promise<void> {
  type Methods = '_expectsProxyHeader' | '_handleProxy';
  return patchMethods<ServerPrototype, Methods>('proxy header from networks', SMTP_SERVER, ['_expectsProxyHeader', '_handleProxy'], (library) => ({
    _expectsProxyHeader(this: ServerInternals, socket: Socket): boolean {
      const from = this.options.proxyHeaderFrom;
      if (from === undefined) return library._expectsProxyHeader.call(this, socket);
      return socket.remoteAddress !== undefined && from(socket.remoteAddress);
    },
    _handleProxy(this: ServerInternals, socket: Socket, callback: ProxyCallback): void {
      const { proxyHeaderLog: log, proxyHeaderWaitMs: waitMs } = this.options;
      if (log === undefined || waitMs === undefined || !this._expectsProxyHeader(socket)) return library._handleProxy.call(this, socket, callback);
      const peer = { ip: socket.remoteAddress };
      const hint = 'is the load balancer sending it (smtp.proxyProtocol; HAProxy send-proxy, nginx proxy_protocol on)?';
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        log.warn(peer, `no PROXY line within ${waitMs / 1000} s; ${hint}`);
        // Closed once the reply is out: a line that came later must not start a session on a half-closed socket.
        socket.end(`421 4.3.0 ${this.options.name ?? ''} Error: no PROXY protocol line from the load balancer\r\n`, () => socket.destroy());
      }, waitMs);
      timer.unref();
      library._handleProxy.call(this, socket, (err, socketOptions) => {
        clearTimeout(timer);
        if (err && !timedOut) {
          if (socket.bytesRead === 0) log.debug(peer, 'closed before its PROXY line (a TCP health check?)');
          else log.warn({ ...peer, error: err.message }, `connection did not start with a PROXY line; ${hint}`);
        }
        callback(err, socketOptions);
      });
    },
  }));
}
