// The PROXY protocol (HAProxy's: a v1 text line or a v2 binary header) from networks rather than
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
// check) is only a debug line. And the header is read here, a version 2
// header (binary: AWS's NLB sends no other; smtp/proxy-v2.ts) or a version 1
// line (smtp/proxy-v1.ts, which keeps the connection's own address for
// "PROXY UNKNOWN", where the library would take the addresses after it).
// Fails: throws at start if the library no longer has the methods we wrap.
import { randomBytes } from 'node:crypto';
import type { Socket } from 'node:net';
import { patchMethods, type LibraryClass } from './library-builds.ts';
import { errorMessage } from '../observability/logger.ts';
import { readProxyV1, type ProxyV1 } from './proxy-v1.ts';
import { readProxyV2, type ProxyV2 } from './proxy-v2.ts';

/** The options this adds to SMTPServerOptions. */
export interface ProxyHeaderOption {
  /** Whether a peer at this address must open with a PROXY header, v1 or v2 (smtp.proxyProtocol's networks). */
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
      // The library closes a connection that has not reached its session within limits.idleTimeout, silently:
      // not before this wait's reply.
      if (socket.timeout !== undefined && socket.timeout > 0 && socket.timeout <= waitMs) socket.setTimeout(waitMs + 1000);
      const settle: ProxyCallback = (err, socketOptions) => {
        clearTimeout(timer);
        // A header that came after the 421 starts no session on the closing socket.
        if (timedOut) {
          socket.destroy();
          return callback(err ?? new Error('PROXY header after the wait'));
        }
        if (err) {
          if (socket.bytesRead === 0) log.debug(peer, 'closed before its PROXY line (a TCP health check?)');
          else log.warn({ ...peer, error: err.message }, `connection did not start with a PROXY line; ${hint}`);
        }
        callback(err, socketOptions);
      };
      readHeader(socket, settle);
    },
  }));
}

/**
 * readHeader - read a PROXY header, version 2 or 1, from the start of the connection: the session's options (the
 * client it names, or none for the balancer's own connection); an error (the socket destroyed) for a bad header,
 * anything else, or a connection gone first.
 */
function readHeader(socket: Socket, done: ProxyCallback): void {
  const chunks: Buffer[] = [];
  const finish = (err: Error | null, socketOptions?: object) => {
    socket.off('readable', onReadable);
    socket.off('close', onGone);
    socket.off('end', onGone);
    socket.off('error', onError);
    if (err) {
      socket.on('error', () => undefined);
      socket.destroy();
    }
    done(err, socketOptions);
  };
  const onGone = () => finish(new Error('Socket closed before PROXY header was received'));
  const onError = (err: Error) => finish(err);
  const onReadable = () => {
    let chunk: Buffer | null;
    while ((chunk = socket.read() as Buffer | null) !== null) chunks.push(chunk);
    const bytes = Buffer.concat(chunks);
    let header: ReturnType<typeof readEitherVersion>;
    try {
      header = readEitherVersion(bytes);
    } catch (err) {
      // A parser's mistake ends this connection, never the process (this runs in a socket's event).
      return finish(new Error(`PROXY header not read: ${errorMessage(err)}`));
    }
    if (header.kind === 'incomplete') return;
    if (header.kind === 'not-v1') return finish(new Error('Invalid PROXY header'));
    if (header.kind === 'invalid') return finish(new Error(header.reason));
    // What came after the header (a TLS hello on the implicit-TLS port) is the session's, as the library does.
    const rest = bytes.subarray(header.length);
    if (rest.length > 0) socket.unshift(rest);
    // The session's options as the library makes them: its id, the client's address.
    const id = BigInt(`0x${randomBytes(10).toString('hex')}`).toString(32).padStart(16, '0');
    finish(null, { id, ...(header.client && { remoteAddress: header.client.address, remotePort: header.client.port }) });
  };
  socket.on('readable', onReadable);
  socket.on('close', onGone);
  socket.on('end', onGone);
  socket.on('error', onError);
}

/** readEitherVersion - what bytes say as a version 2 header, or else as a version 1 line. */
function readEitherVersion(bytes: Buffer): ProxyV1 | Exclude<ProxyV2, { kind: 'not-v2' }> {
  const version2 = readProxyV2(bytes);
  return version2.kind === 'not-v2' ? readProxyV1(bytes) : version2;
}
