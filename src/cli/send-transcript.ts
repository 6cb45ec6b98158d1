// The exchange of `postern send` as a person reads it: "C: " for what we
// sent, "S: " for each reply line, "-- " for what happened on the wire
// (connected, TLS up). Fed by nodemailer's transaction log through a
// bunyan-style logger. Credentials never appear: an AUTH command keeps its
// mechanism only ("C: AUTH PLAIN <hidden>"), every line we send while the
// server answers 334 is "<hidden>", and any line still holding a secret
// (the password, its base64, the base64 of the PLAIN blob) is scrubbed.
// Never fails.
import { format } from 'node:util';
import type { ExternalLogger } from 'nodemailer/lib/shared';

export const HIDDEN = '<hidden>';

type LogEntry = { tnx?: string; err?: unknown };

export class Transcript {
  readonly lines: string[] = [];
  private inAuth = false;

  /**
   * @param secrets strings that must never be shown, whatever line they turn up in
   * @param echo called with each line as it is added (the live view), if given
   */
  constructor(
    private readonly secrets: string[],
    private readonly echo?: (line: string) => void,
  ) {}

  /** heardServer - whether any reply (the greeting at least) has arrived. */
  get heardServer(): boolean {
    return this.lines.some((line) => line.startsWith('S: '));
  }

  /** client - a command we sent, masked while authenticating. */
  client(command: string): void {
    const auth = /^AUTH\s+(\S+)(\s+\S.*)?$/i.exec(command);
    if (auth) {
      this.inAuth = true;
      this.add(`C: AUTH ${auth[1]!.toUpperCase()}${auth[2] ? ` ${HIDDEN}` : ''}`);
    } else {
      // RFC 4954 4: inside an AUTH exchange every client line is a (base64) response to a challenge.
      this.add(`C: ${this.inAuth ? HIDDEN : command}`);
    }
  }

  /** server - a complete reply, one line each. */
  server(reply: string): void {
    const lines = reply.split(/\r?\n/).filter((l) => l !== '');
    for (const line of lines) this.add(`S: ${line}`);
    if (!/^334[ -]/.test(lines.at(-1) ?? '')) this.inAuth = false;
  }

  /** note - something that is not a command or a reply. */
  note(text: string): void {
    this.add(`-- ${text}`);
  }

  /**
   * logger - for SMTPConnection's `logger` with `transactionLog: true`.
   * onInfo sees nodemailer's info messages (connected, upgraded) so the caller can add TLS facts in order.
   */
  logger(onInfo: (message: string) => void): ExternalLogger {
    const text = (args: unknown[]) => format(...(args as [string, ...unknown[]]));
    return {
      debug: (entry: LogEntry, ...args: unknown[]) => {
        if (entry.tnx === 'client') this.client(text(args));
        else if (entry.tnx === 'server') this.server(text(args));
      },
      info: (entry: LogEntry & { outByteCount?: number }, ...args: unknown[]) => {
        // The message itself is not shown; its size and the end-of-data dot are.
        if (entry.tnx === 'message') this.add(`C: <message, ${entry.outByteCount ?? '?'} bytes>`, 'C: .');
        else onInfo(text(args));
      },
      // Errors are reported once, by whoever runs the exchange; warnings that are not errors are worth a line.
      warn: (entry: LogEntry, ...args: unknown[]) => {
        if (!entry.err && entry.tnx === 'smtp') this.note(text(args));
      },
      trace: () => undefined,
      error: () => undefined,
      fatal: () => undefined,
    };
  }

  private add(...lines: string[]): void {
    for (const line of lines) {
      let clean = line;
      for (const secret of this.secrets) clean = clean.split(secret).join(HIDDEN);
      this.lines.push(clean);
      this.echo?.(clean);
    }
  }
}

/** secretsOf - the forms a password can take on the wire (RFC 4616 PLAIN, RFC 4954 LOGIN). */
export function secretsOf(user: string, password: string): string[] {
  const b64 = (s: string) => Buffer.from(s, 'utf8').toString('base64');
  // A very short password is left to the masking above: scrubbing "ab" from every line would garble the transcript.
  return [b64(`\0${user}\0${password}`), b64(`${user}\0${user}\0${password}`), b64(password), password].filter((s) => s.length >= 4);
}
