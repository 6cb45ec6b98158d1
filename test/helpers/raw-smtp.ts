// A raw SMTP client for tests: bytes exactly as written, replies exactly as
// received. Used for hostile input, where a real client library would
// refuse or repair what an attacker sends.
import { connect as netConnect, type Socket } from 'node:net';
import { connect as tlsConnect, type ConnectionOptions, type TLSSocket } from 'node:tls';

export interface SmtpReply {
  code: number;
  lines: string[];
  /** The reply as sent, lines joined by \n, without the final CRLF. */
  text: string;
}

/** What a test may choose of a TLS client: trust, identity, and (to play an old client) versions and suites. */
export type TlsClientOptions = Pick<ConnectionOptions, 'ca' | 'servername' | 'cert' | 'key' | 'rejectUnauthorized' | 'minVersion' | 'maxVersion' | 'ciphers'>;

export class RawSmtp {
  private buffer = '';
  private waiters: (() => void)[] = [];
  closed = false;

  private constructor(public socket: Socket | TLSSocket) {
    this.attach(socket);
  }

  /** connect - plain TCP, or TLS from the first byte with `tls`; from `localAddress` (another loopback address) if given. */
  static async connect(port: number, options: { tls?: TlsClientOptions; localAddress?: string } = {}): Promise<RawSmtp> {
    const from = options.localAddress ? { localAddress: options.localAddress } : {};
    const socket = options.tls
      ? tlsConnect({ ...options.tls, ...from, host: '127.0.0.1', port, servername: options.tls.servername ?? 'localhost' })
      : netConnect({ ...from, host: '127.0.0.1', port });
    await new Promise<void>((resolve, reject) => {
      socket.once(options.tls ? 'secureConnect' : 'connect', () => resolve());
      socket.once('error', reject);
    });
    return new RawSmtp(socket);
  }

  private attach(socket: Socket | TLSSocket): void {
    socket.on('data', (chunk: Buffer) => {
      this.buffer += chunk.toString('latin1');
      this.wake();
    });
    socket.on('close', () => {
      this.closed = true;
      this.wake();
    });
    socket.on('error', () => undefined);
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** write - bytes as given. */
  write(data: string | Buffer): void {
    this.socket.write(typeof data === 'string' ? Buffer.from(data, 'latin1') : data);
  }

  /** reply - the next complete (possibly multi-line) reply; rejects if the connection closes first. */
  async reply(): Promise<SmtpReply> {
    for (;;) {
      const parsed = this.takeReply();
      if (parsed) return parsed;
      if (this.closed) throw new Error(`connection closed; unread: ${JSON.stringify(this.buffer)}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  private takeReply(): SmtpReply | undefined {
    const lines: string[] = [];
    let offset = 0;
    for (;;) {
      const end = this.buffer.indexOf('\r\n', offset);
      if (end === -1) return undefined;
      const line = this.buffer.slice(offset, end);
      lines.push(line);
      offset = end + 2;
      if (line[3] !== '-') break;
    }
    this.buffer = this.buffer.slice(offset);
    return { code: Number(lines[0]!.slice(0, 3)), lines, text: lines.join('\n') };
  }

  /** command - write one line (CRLF added) and read the reply. */
  async command(line: string): Promise<SmtpReply> {
    this.write(line + '\r\n');
    return this.reply();
  }

  /** startTls - STARTTLS, then the handshake on the same socket. */
  async startTls(options: TlsClientOptions = {}): Promise<SmtpReply> {
    const ready = await this.command('STARTTLS');
    if (ready.code !== 220) return ready;
    await this.upgrade(options);
    return ready;
  }

  /** upgrade - TLS handshake on the current socket (after a 220 to STARTTLS). */
  async upgrade(options: TlsClientOptions = {}): Promise<TLSSocket> {
    this.socket.removeAllListeners('data');
    this.socket.removeAllListeners('close');
    const secure = tlsConnect({ ...options, socket: this.socket, servername: options.servername ?? 'localhost' });
    await new Promise<void>((resolve, reject) => {
      secure.once('secureConnect', () => resolve());
      secure.once('error', reject);
    });
    this.socket = secure;
    this.attach(secure);
    return secure;
  }

  /** closedByServer - resolves once the server has closed the connection. */
  async closedByServer(): Promise<void> {
    while (!this.closed) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** unread - bytes received but not yet taken as a reply. */
  unread(): string {
    return this.buffer;
  }

  /** shutdown - end our side (FIN) and keep reading, as `nc -N` does after its input. */
  shutdown(): void {
    this.socket.end();
  }

  close(): void {
    this.socket.destroy();
  }
}
