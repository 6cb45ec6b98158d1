// A next hop that writes exactly the bytes a test gives it, for replies
// that break the rules (lines that disagree on their code, a reply cut
// short, a close right after a reply, a greeting late or never): test
// next hops built on smtp-server (next-hop.ts) cannot send those.
//
//   rawNextHop - a plaintext next hop on 127.0.0.1 answering each command by its verb, as scripted.
import { createServer, type AddressInfo, type Socket } from 'node:net';

export interface RawNextHop {
  port: number;
  /** Connections it took, and messages (a DATA ended by its dot). */
  connections: number;
  messages: number;
  close: () => Promise<void>;
}

/**
 * rawNextHop - a plaintext next hop on 127.0.0.1 that writes `greeting`, then answers each command line by its verb
 * in `replies`: the bytes given, or for a list the next of them in turn; null: no answer. DATA's lines are read to
 * the dot, which "." answers. Any other command gets 250 (DATA 354, QUIT 221).
 */
export async function rawNextHop(
  greeting: string | Delayed,
  replies: Record<string, string | (string | null)[] | Delayed | null>,
  takeOver?: (socket: Socket, line: string) => boolean,
): Promise<RawNextHop> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    hop.connections++;
    sockets.add(socket);
    socket.on('error', () => undefined);
    write(socket, greeting);
    let pending = '';
    let inData = false;
    socket.on('data', (data) => {
      pending += data.toString('latin1');
      for (let end = pending.indexOf('\r\n'); end >= 0; end = pending.indexOf('\r\n')) {
        const line = pending.slice(0, end);
        pending = pending.slice(end + 2);
        if (inData && line !== '.') continue;
        // The rest of the connection is takeOver's (a TLS upgrade).
        if (takeOver?.(socket, line)) return socket.removeAllListeners('data');
        const verb = inData ? '.' : line.slice(0, 4).toUpperCase();
        inData = verb === 'DATA';
        if (verb === '.') hop.messages++;
        const given = replies[verb];
        const reply = Array.isArray(given) ? given.shift() : given === undefined ? DEFAULT_REPLIES[verb] ?? '250 2.0.0 Ok\r\n' : given;
        if (reply) write(socket, reply);
      }
    });
  });
  const hop: RawNextHop = {
    port: 0,
    connections: 0,
    messages: 0,
    close: () => new Promise<void>((resolve) => (sockets.forEach((s) => s.destroy()), server.close(() => resolve()))),
  };
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  hop.port = (server.address() as AddressInfo).port;
  return hop;
}

const DEFAULT_REPLIES: Record<string, string> = { DATA: '354 End data with <CR><LF>.<CR><LF>\r\n', QUIT: '221 2.0.0 Bye\r\n' };

/** A reply written `afterMs` after its command; with `close`, the connection is ended right after it. */
export interface Delayed {
  text: string;
  afterMs?: number;
  close?: boolean;
}

function write(socket: Socket, reply: string | Delayed): void {
  if (typeof reply === 'string') return void socket.write(reply);
  setTimeout(() => socket.writable && (reply.close ? socket.end(reply.text) : socket.write(reply.text)), reply.afterMs ?? 0);
}
