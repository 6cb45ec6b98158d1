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
// Fails: throws at start if the library no longer has the method we wrap.
import type { Socket } from 'node:net';
import { patchMethods, type LibraryClass } from './library-builds.ts';

/** The option this adds to SMTPServerOptions. */
export interface ProxyHeaderOption {
  /** Whether a peer at this address must open with a PROXY v1 line (smtp.proxyProtocol's networks). */
  proxyHeaderFrom?: (address: string) => boolean;
}

const SMTP_SERVER: LibraryClass = { library: 'smtp-server', file: 'smtp-server.js', exportName: 'SMTPServer' };

interface ServerInternals {
  options: ProxyHeaderOption;
}

interface ServerPrototype {
  _expectsProxyHeader(this: ServerInternals, socket: Socket): boolean;
}

/** installProxyHeader - make every SMTPServer's `proxyHeaderFrom` option decide who must send a PROXY line; idempotent. */
export function installProxyHeader(): Promise<void> {
  return patchMethods<ServerPrototype, '_expectsProxyHeader'>('proxy header from networks', SMTP_SERVER, ['_expectsProxyHeader'], (library) => ({
    _expectsProxyHeader(this: ServerInternals, socket: Socket): boolean {
      const from = this.options.proxyHeaderFrom;
      if (from === undefined) return library._expectsProxyHeader.call(this, socket);
      return socket.remoteAddress !== undefined && from(socket.remoteAddress);
    },
  }));
}
