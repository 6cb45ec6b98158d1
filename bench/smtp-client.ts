// A minimal SMTP client for load generation, on raw sockets: EHLO,
// STARTTLS (RFC 3207) with optional TLS session resumption, and the
// envelope sent as one PIPELINING group (RFC 2920: MAIL, RCPT and DATA
// together, then the content after 354). Not a general client: it sends
// only what the bench needs and never dot-stuffs (the bench's messages
// have no line starting with ".").
//
//   openSession - connect, read the greeting, EHLO, STARTTLS if asked, EHLO again.
//   Session.send - one message; resolves with its times and the final reply.
//
// How it fails: openSession rejects on a refused connection, an
// unexpected greeting or EHLO/STARTTLS reply, a failed handshake or the
// timeout; send rejects when the connection breaks or times out (a 4xx/5xx
// reply is a result, not an error: the caller records it).
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { nowMs } from './stats.ts';

export interface Reply {
  code: number;
  text: string;
}

export interface SessionOptions {
  host: string;
  port: number;
  ehloName: string;
  starttls: boolean;
  /** CA to verify the server certificate with (name "localhost"); absent: not verified. */
  ca?: string;
  /** TLS session resumption: offer this session, and receive the newest ticket. */
  tlsSessions?: { get(): Buffer | undefined; set(session: Buffer): void };
  timeoutMs: number;
}

export interface SendTimes {
  /** When MAIL FROM was written. */
  start: number;
  /** When the final "." left (the write completed). */
  dataEnd: number;
  /** When the reply to the final "." arrived. */
  replied: number;
  reply: Reply;
}

export interface Session {
  readonly tlsResumed: boolean;
  send(message: { from: string; to: string; content: readonly Buffer[] }): Promise<SendTimes>;
  quit(): Promise<void>;
  destroy(): void;
}

const END_OF_DATA = Buffer.from('.\r\n');

/** ReplyReader - splits a socket's bytes into SMTP replies (multi-line "250-…" joined) and hands them out in order. */
class ReplyReader {
  #partial = '';
  #text: string[] = [];
  readonly #ready: Reply[] = [];
  readonly #waiting: { resolve(reply: Reply): void; reject(err: Error): void }[] = [];
  #failed: Error | undefined;

  feed = (chunk: Buffer): void => {
    const lines = (this.#partial + chunk.toString('latin1')).split('\r\n');
    this.#partial = lines.pop()!;
    for (const line of lines) {
      this.#text.push(line.slice(4));
      if (line.length > 3 && line[3] === '-') continue;
      const reply = { code: Number(line.slice(0, 3)), text: this.#text.join('\n') };
      this.#text = [];
      const waiter = this.#waiting.shift();
      if (waiter) waiter.resolve(reply);
      else this.#ready.push(reply);
    }
  };

  fail(err: Error): void {
    this.#failed ??= err;
    for (const waiter of this.#waiting.splice(0)) waiter.reject(this.#failed);
  }

  next(): Promise<Reply> {
    const ready = this.#ready.shift();
    if (ready) return Promise.resolve(ready);
    if (this.#failed) return Promise.reject(this.#failed);
    return new Promise((resolve, reject) => this.#waiting.push({ resolve, reject }));
  }
}

/** openSession - a ready session: greeted, EHLO'd, upgraded to TLS when asked. */
export async function openSession(options: SessionOptions): Promise<Session> {
  const reader = new ReplyReader();
  let socket: Socket | TLSSocket = await connectPlain(options);
  const watch = (s: Socket) => {
    s.setTimeout(options.timeoutMs, () => s.destroy(new Error(`timeout after ${options.timeoutMs} ms`)));
    s.on('data', reader.feed);
    s.on('error', (err) => reader.fail(err));
    s.on('close', () => reader.fail(new Error('connection closed')));
  };
  watch(socket);
  try {
    expect(await reader.next(), 220, 'greeting');
    let extensions = await ehlo(socket, reader, options.ehloName);
    let tlsResumed = false;
    if (options.starttls) {
      socket.write('STARTTLS\r\n');
      expect(await reader.next(), 220, 'STARTTLS');
      // The TLS socket takes over the connection: the plain socket's reader and timer must go.
      socket.setTimeout(0);
      socket.removeAllListeners('data').removeAllListeners('close').removeAllListeners('error').removeAllListeners('timeout');
      socket = await upgrade(socket, options);
      tlsResumed = (socket as TLSSocket).isSessionReused();
      watch(socket);
      extensions = await ehlo(socket, reader, options.ehloName);
    }
    return makeSession(socket, reader, extensions.includes('PIPELINING'), tlsResumed);
  } catch (err) {
    socket.destroy();
    throw err;
  }
}

function makeSession(socket: Socket, reader: ReplyReader, pipelining: boolean, tlsResumed: boolean): Session {
  return {
    tlsResumed,
    async send(message) {
      const start = nowMs();
      const envelope = [`MAIL FROM:<${message.from}>\r\n`, `RCPT TO:<${message.to}>\r\n`, 'DATA\r\n'];
      const replies: Reply[] = [];
      if (pipelining) {
        socket.write(envelope.join(''));
        for (let i = 0; i < envelope.length; i++) replies.push(await reader.next());
      } else {
        for (const command of envelope) {
          socket.write(command);
          const reply = await reader.next();
          replies.push(reply);
          if (reply.code >= 400) break;
        }
      }
      const refused = replies.find((r) => r.code >= 400);
      if (refused) {
        // The transaction failed before the content: RSET so the session can carry on.
        socket.write('RSET\r\n');
        await reader.next();
        return { start, dataEnd: nowMs(), replied: nowMs(), reply: refused };
      }
      socket.cork();
      for (const part of message.content) socket.write(part);
      let dataEnd = 0;
      const written = nowMs();
      socket.write(END_OF_DATA, () => {
        dataEnd = nowMs();
      });
      socket.uncork();
      const reply = await reader.next();
      const replied = nowMs();
      // The write callback can run after the reply was read; then the write call's time stands.
      return { start, dataEnd: dataEnd === 0 || dataEnd > replied ? written : dataEnd, replied, reply };
    },
    async quit() {
      socket.write('QUIT\r\n');
      await reader.next().catch(() => undefined);
      socket.end();
    },
    destroy() {
      socket.destroy();
    },
  };
}

function connectPlain(options: SessionOptions): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: options.host, port: options.port });
    socket.setNoDelay(true);
    socket.once('connect', () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

function upgrade(socket: Socket, options: SessionOptions): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const secure = tlsConnect({
      socket,
      servername: 'localhost',
      ca: options.ca,
      rejectUnauthorized: options.ca !== undefined,
      session: options.tlsSessions?.get(),
      minVersion: 'TLSv1.2',
    });
    if (options.tlsSessions) {
      const store = options.tlsSessions;
      secure.on('session', (session: Buffer) => store.set(session));
    }
    secure.once('secureConnect', () => {
      secure.off('error', reject);
      resolve(secure);
    });
    secure.once('error', reject);
  });
}

async function ehlo(socket: Socket, reader: ReplyReader, name: string): Promise<string[]> {
  socket.write(`EHLO ${name}\r\n`);
  const reply = expect(await reader.next(), 250, 'EHLO');
  return reply.text.split('\n').slice(1).map((line) => line.split(' ')[0]!.toUpperCase());
}

function expect(reply: Reply, code: number, what: string): Reply {
  if (reply.code !== code) throw new Error(`${what}: expected ${code}, got ${reply.code} ${reply.text}`);
  return reply;
}
