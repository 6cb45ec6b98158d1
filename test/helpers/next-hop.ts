// Test next hops: the servers Postern delivers to in the delivery tests,
// one per behaviour the TLS policy table and the retry rules care about.
// Each is an smtp-server on 127.0.0.1 behind a wire tap (a TCP relay that
// keeps every byte Postern sent, plaintext before STARTTLS, ciphertext
// after), so a test can assert that nothing readable crossed the wire, not
// only that the server did not accept it.
//
//   startNextHop   - a next hop of one kind; records sessions, transactions,
//                    messages and the raw bytes, and waits on them;
//   writeTestCa    - a test CA (PEM) on disk, for `outbound.tls.caFile`;
//   submitMessage  - hand a message to Postern over STARTTLS (relay port,
//                    loopback is trusted), resolving with its queue id;
//   queueShow      - what `postern queue show --json` prints, read through a
//                    second store handle as the CLI does;
//   driveByHand    - stop a relay's delivery loop so that only
//                    `scheduler.runDue()` makes attempts (no race with it).
// Everything listens on port 0; nothing here sleeps for correctness: waits
// resolve on events and reject (with what was seen) only after a generous
// timeout, to turn a hang into a readable failure.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nodemailer from 'nodemailer';
import { SMTPServer, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import { openQueueStore } from '../../src/queue/open-store.ts';
import type { MessageDetails } from '../../src/queue/queue-store.ts';
import { generateCertificateAuthority, issueServerCertificate, selfSignedCertificate, type PemCredentials } from '../../src/tls/dev-certs.ts';
import { RawSmtp } from './raw-smtp.ts';
import type { TestRelay } from './test-relay.ts';

export type NextHopKind =
  | 'plain'
  | 'starttls-self-signed'
  | 'starttls-ca-right-name'
  | 'starttls-ca-wrong-name'
  | 'handshake-fails'
  | 'rcpt-4xx-5xx'
  | 'greeting-421'
  | 'slow-greeting'
  | 'down';

/** The name every test next hop answers to: route hosts and MX records point here (DNS: mx.test A 127.0.0.1). */
export const NEXT_HOP_NAME = 'mx.test';

export interface NextHopOptions {
  /** The test CA: required for starttls-ca-* and handshake-fails; the other STARTTLS kinds use it when given, else a self-signed certificate. */
  ca?: PemCredentials;
  /** Listen on this port (one a 'down' next hop handed back) instead of an ephemeral one. */
  port?: number;
  /** Listen on this loopback address (a second MX on the same port); 127.0.0.1 unless given. */
  host?: string;
  /** slow-greeting: how long before the 220 (default 5 s; the relay's connectTimeout must be shorter). */
  greetingDelayMs?: number;
  /** Keep every DATA unanswered until release() (concurrency and graceful-stop tests). */
  holdData?: boolean;
  /** Answer the end of DATA with this error instead of 250. */
  dataReply?: { code: number; text: string };
  /** Answer MAIL FROM with this error instead of 250. */
  mailReply?: { code: number; text: string };
}

/** An SMTP reply a next hop gives to one RCPT; undefined accepts. */
export type RecipientReply = { code: number; text: string } | undefined;

/** One MAIL FROM .. (DATA) as the next hop saw it. */
export interface SeenTransaction {
  session: string;
  /** Whether the session was TLS when MAIL FROM arrived. */
  secure: boolean;
  tls?: { version: string; cipher: string };
  /** SNI the client sent. */
  servername?: string;
  mailFrom: string;
  rcptTo: string[];
  refused: { address: string; code: number }[];
  /** The message bytes, once DATA ended. */
  message?: Buffer;
  /** Whether DATA arrived outside TLS. */
  dataInPlaintext?: boolean;
}

/** One TCP connection through the wire tap. */
export interface SeenConnection {
  /** Every byte the client sent, as it crossed the wire. */
  wire: Buffer;
}

export interface NextHop {
  kind: NextHopKind;
  port: number;
  connections: SeenConnection[];
  transactions: SeenTransaction[];
  /** Transactions whose DATA completed. */
  messages: SeenTransaction[];
  /** TLS errors the server reported (failed handshakes). */
  tlsErrors: string[];
  /** The most transactions (MAIL FROM to the DATA reply) in progress at once. */
  maxConcurrentTransactions: number;
  /** The per-recipient rule; replace it to change the next hop's mind (a mailbox that comes back). */
  recipientReply: (address: string) => RecipientReply;
  /** wire - every client byte of every connection so far, from connection `from` on. */
  wire(from?: number): Buffer;
  waitForMessages(n: number): Promise<SeenTransaction[]>;
  /** waitForHeld - resolves once n DATA are held (holdData). */
  waitForHeld(n: number): Promise<void>;
  /** release - answer every held DATA, and stop holding. */
  release(): void;
  /** drop - cut every open connection, unanswered (a next hop that dies with a DATA held). */
  drop(): void;
  close(): Promise<void>;
}

const WAIT_LIMIT_MS = 15_000;

/** startNextHop - a next hop of `kind` on 127.0.0.1 or options.host (port 0 unless options.port). */
export async function startNextHop(kind: NextHopKind, options: NextHopOptions = {}): Promise<NextHop> {
  const state = new Recorder(kind);
  if (kind === 'down') return closedPort(state, options.port);
  const smtp = new SMTPServer(await serverOptions(kind, options, state));
  smtp.on('error', (err: Error) => state.tlsErrors.push(err.message));
  const inner = await listen(smtp.server, 0);
  const tap = createServer((client) => tapConnection(client, inner, state));
  const port = await listen(tap, options.port ?? 0, options.host);
  return nextHopOf(state, port, async () => {
    state.release();
    state.clearTimers();
    for (const socket of state.sockets) socket.destroy();
    await Promise.all([closeServer(tap), new Promise<void>((resolve) => smtp.close(() => resolve()))]);
  });
}

/** serverOptions - the smtp-server settings that give a kind its behaviour, recording into `state`. */
async function serverOptions(kind: NextHopKind, options: NextHopOptions, state: Recorder): Promise<SMTPServerOptions> {
  return {
    name: NEXT_HOP_NAME,
    logger: false,
    authOptional: true,
    disableReverseLookup: true,
    ...(await tlsSettings(kind, options)),
    onConnect(_session, callback) {
      if (kind === 'greeting-421') return callback(Object.assign(new Error('4.3.2 mx.test is busy, try again later'), { responseCode: 421 }));
      if (kind !== 'slow-greeting') return callback();
      // The greeting comes late; a client with a shorter connect timeout gives up first.
      state.timers.push(setTimeout(() => callback(), options.greetingDelayMs ?? 5_000));
    },
    onMailFrom(address, session, callback) {
      state.startTransaction(session, address.address);
      if (options.mailReply) return callback(Object.assign(new Error(options.mailReply.text), { responseCode: options.mailReply.code }));
      callback();
    },
    onRcptTo(address, session, callback) {
      const reply = state.recipientReply(address.address);
      state.recipient(session, address.address, reply);
      if (!reply) return callback();
      callback(Object.assign(new Error(reply.text), { responseCode: reply.code }));
    },
    onData(stream, session, callback) {
      const parts: Buffer[] = [];
      stream.on('data', (chunk: Buffer) => parts.push(chunk));
      stream.on('end', () => {
        state.message(session, Buffer.concat(parts));
        const answer = () => {
          state.endTransaction(session);
          if (options.dataReply) return callback(Object.assign(new Error(options.dataReply.text), { responseCode: options.dataReply.code }));
          callback(null, `2.0.0 Ok: queued at ${NEXT_HOP_NAME}`);
        };
        if (options.holdData && !state.released) state.hold(answer);
        else answer();
      });
    },
    onClose(session) {
      state.endTransaction(session);
    },
  };
}

/** tlsSettings - certificate and STARTTLS offer per kind; 'plain' refuses STARTTLS outright. */
async function tlsSettings(kind: NextHopKind, options: NextHopOptions): Promise<Partial<SMTPServerOptions>> {
  const needCa = (): PemCredentials => {
    if (!options.ca) throw new Error(`next hop ${kind} needs options.ca (the test CA)`);
    return options.ca;
  };
  const rightName = async () => issueServerCertificate(needCa(), { names: [NEXT_HOP_NAME, 'localhost'] });
  const pair = (c: PemCredentials) => ({ key: c.keyPem, cert: c.certPem, minVersion: 'TLSv1.2' as const });
  switch (kind) {
    case 'plain':
      // hideSTARTTLS alone only hides it from EHLO: smtp-server still upgrades a client that sends
      // STARTTLS anyway. A plaintext-only server must refuse the command as well.
      return { hideSTARTTLS: true, disabledCommands: ['STARTTLS'] };
    case 'starttls-self-signed':
      return pair(await selfSignedCertificate({ names: [NEXT_HOP_NAME, 'localhost'] }));
    case 'starttls-ca-wrong-name':
      return pair(await issueServerCertificate(needCa(), { names: ['wrong-name.test'] }));
    case 'handshake-fails':
      // STARTTLS is offered and answered 220, but the server speaks nothing newer than TLS 1.1,
      // which every client with minVersion TLSv1.2 (Postern) refuses: the handshake fails.
      return { ...pair(await rightName()), minVersion: 'TLSv1', maxVersion: 'TLSv1.1' };
    case 'starttls-ca-right-name':
      return pair(await rightName());
    case 'rcpt-4xx-5xx':
    case 'greeting-421':
    case 'slow-greeting':
      return options.ca ? pair(await rightName()) : pair(await selfSignedCertificate({ names: [NEXT_HOP_NAME, 'localhost'] }));
    case 'down':
      return {};
  }
}

/** defaultRecipientReply - rcpt-4xx-5xx: temp* gets 451 4.2.0, bad* gets 550 5.1.1; every other kind accepts. */
function defaultRecipientReply(kind: NextHopKind): (address: string) => RecipientReply {
  if (kind !== 'rcpt-4xx-5xx') return () => undefined;
  return (address) => {
    if (address.startsWith('temp')) return { code: 451, text: '4.2.0 Mailbox busy, try again later' };
    if (address.startsWith('bad')) return { code: 550, text: '5.1.1 No such user here' };
    return undefined;
  };
}

/** Recorder - what one next hop saw, and the waits on it. */
class Recorder {
  connections: SeenConnection[] = [];
  transactions: SeenTransaction[] = [];
  tlsErrors: string[] = [];
  sockets = new Set<Socket>();
  timers: NodeJS.Timeout[] = [];
  released = false;
  recipientReply: (address: string) => RecipientReply;
  maxConcurrent = 0;
  held: (() => void)[] = [];
  private open = new Map<string, SeenTransaction>();
  private inTransaction = new Set<string>();
  private waiters = new Set<() => void>();

  constructor(readonly kind: NextHopKind) {
    this.recipientReply = defaultRecipientReply(kind);
  }

  startTransaction(session: SMTPServerSession, mailFrom: string): void {
    const tls = session.tlsOptions ? { version: session.tlsOptions.version, cipher: session.tlsOptions.standardName ?? session.tlsOptions.name } : undefined;
    const seen: SeenTransaction = { session: session.id, secure: session.secure, mailFrom, rcptTo: [], refused: [] };
    if (tls) seen.tls = tls;
    if (session.servername) seen.servername = session.servername;
    this.transactions.push(seen);
    this.open.set(session.id, seen);
    this.inTransaction.add(session.id);
    this.maxConcurrent = Math.max(this.maxConcurrent, this.inTransaction.size);
    this.changed();
  }

  recipient(session: SMTPServerSession, address: string, reply: RecipientReply): void {
    const seen = this.open.get(session.id);
    if (!seen) return;
    if (reply) seen.refused.push({ address, code: reply.code });
    else seen.rcptTo.push(address);
  }

  message(session: SMTPServerSession, bytes: Buffer): void {
    const seen = this.open.get(session.id);
    if (!seen) return;
    seen.message = bytes;
    seen.dataInPlaintext = !session.secure;
    this.changed();
  }

  endTransaction(session: SMTPServerSession): void {
    this.inTransaction.delete(session.id);
  }

  hold(answer: () => void): void {
    this.held.push(answer);
    this.changed();
  }

  release(): void {
    this.released = true;
    const held = this.held;
    this.held = [];
    for (const answer of held) answer();
  }

  clearTimers(): void {
    for (const timer of this.timers) clearTimeout(timer);
  }

  changed(): void {
    for (const wake of [...this.waiters]) wake();
  }

  /** until - resolves with `value()` once it is defined; rejects with `describe()` after WAIT_LIMIT_MS. */
  until<T>(value: () => T | undefined, describe: () => string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const check = () => {
        const v = value();
        if (v === undefined) return;
        this.waiters.delete(check);
        clearTimeout(timer);
        resolve(v);
      };
      const timer = setTimeout(() => {
        this.waiters.delete(check);
        reject(new Error(`next hop ${this.kind}: ${describe()}`));
      }, WAIT_LIMIT_MS);
      this.waiters.add(check);
      check();
    });
  }
}

/** nextHopOf - the test's view of a recorder. */
function nextHopOf(recorder: Recorder, port: number, close: () => Promise<void>): NextHop {
  const messages = () => recorder.transactions.filter((t) => t.message !== undefined);
  return {
    kind: recorder.kind,
    port,
    connections: recorder.connections,
    transactions: recorder.transactions,
    tlsErrors: recorder.tlsErrors,
    get messages() {
      return messages();
    },
    get maxConcurrentTransactions() {
      return recorder.maxConcurrent;
    },
    get recipientReply() {
      return recorder.recipientReply;
    },
    set recipientReply(rule) {
      recorder.recipientReply = rule;
    },
    wire: (from = 0) => Buffer.concat(recorder.connections.slice(from).map((c) => c.wire)),
    waitForMessages: (n) => recorder.until(() => (messages().length >= n ? messages() : undefined), () => `saw ${messages().length} of ${n} messages`),
    waitForHeld: (n) => recorder.until(() => (recorder.held.length >= n ? true : undefined), () => `holds ${recorder.held.length} of ${n} DATA`).then(() => undefined),
    release: () => recorder.release(),
    drop: () => {
      for (const socket of recorder.sockets) socket.destroy();
    },
    close,
  };
}

/** tapConnection - relay one client connection to the smtp-server, keeping the client's bytes. */
function tapConnection(client: Socket, innerPort: number, state: Recorder): void {
  const seen: SeenConnection = { wire: Buffer.alloc(0) };
  state.connections.push(seen);
  state.changed();
  const server = connect(innerPort, '127.0.0.1');
  for (const socket of [client, server]) {
    state.sockets.add(socket);
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      state.sockets.delete(socket);
      client.destroy();
      server.destroy();
    });
  }
  client.on('data', (chunk: Buffer) => {
    seen.wire = Buffer.concat([seen.wire, chunk]);
    server.write(chunk);
  });
  server.pipe(client);
}

/** closedPort - 'down': a port that was bound, then closed, so connecting is refused. */
async function closedPort(state: Recorder, port?: number): Promise<NextHop> {
  const server = createServer();
  const bound = await listen(server, port ?? 0);
  await closeServer(server);
  return nextHopOf(state, bound, () => Promise.resolve());
}

function listen(server: Server, port: number, host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      const address = server.address();
      resolve(typeof address === 'object' && address ? address.port : port);
    });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** writeTestCa - a fresh test CA, its certificate written to a temp file for outbound.tls.caFile. */
export async function writeTestCa(): Promise<{ ca: PemCredentials; caFile: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-next-hop-ca-'));
  const ca = await generateCertificateAuthority({ commonName: 'Postern next-hop test CA' });
  const caFile = join(dir, 'next-hop-ca.crt');
  await writeFile(caFile, ca.certPem);
  return { ca, caFile, remove: () => rm(dir, { recursive: true, force: true }) };
}

export interface Submission {
  from: string;
  to: string[];
  /** The whole message, CRLF line ends; by default a small one naming `marker`. */
  raw?: string;
  /** A word that appears in the default message's header and body (and nowhere else). */
  marker?: string;
  /** Submit on the submission port as this user (STARTTLS + AUTH) instead of the relay port. */
  auth?: { user: string; pass: string };
}

/** testMessage - a small, complete CRLF message (Date and Message-ID included) carrying `marker` in a header and the body. */
export function testMessage(marker: string, from = 'sender@sender.test'): string {
  return [
    `From: <${from}>`,
    'To: <rcpt@example.test>',
    `Subject: delivery test ${marker}`,
    'Date: Mon, 02 Mar 2026 10:00:00 +0000',
    `Message-ID: <${marker}@sender.test>`,
    `X-Test-Case: ${marker}`,
    '',
    `Body of ${marker}.`,
    '',
  ].join('\r\n');
}

/** submitMessage - send to Postern over STARTTLS (trusting the relay's test CA); resolves with the queue id. */
export async function submitMessage(relay: TestRelay, submission: Submission): Promise<string> {
  const transport = nodemailer.createTransport({
    host: '127.0.0.1',
    port: submission.auth ? relay.ports.submission : relay.ports.relay,
    requireTLS: true,
    tls: { ca: relay.ca.certPem, servername: 'localhost' },
    ...(submission.auth ? { auth: submission.auth } : {}),
  });
  try {
    const info = await transport.sendMail({ envelope: { from: submission.from, to: submission.to }, raw: submission.raw ?? testMessage(submission.marker ?? 'message', submission.from) });
    const response = String(info.response);
    const id = /queued as (\w+)/.exec(response)?.[1];
    if (!id) throw new Error(`no queue id in ${response}`);
    return id;
  } finally {
    transport.close();
  }
}

/** submitRequireTls - a message sent to the relay port with MAIL FROM … REQUIRETLS over STARTTLS; its queue id. */
export async function submitRequireTls(relay: TestRelay, submission: { from: string; to: string; marker: string; ret?: 'FULL' | 'HDRS' }): Promise<string> {
  const c = await RawSmtp.connect(relay.ports.relay);
  try {
    await c.reply();
    await c.command('EHLO client.test');
    await c.startTls({ ca: relay.ca.certPem });
    if (!(await c.command('EHLO client.test')).lines.includes('250-REQUIRETLS')) throw new Error('the relay did not offer REQUIRETLS');
    for (const command of [`MAIL FROM:<${submission.from}> REQUIRETLS${submission.ret ? ` RET=${submission.ret}` : ''}`, `RCPT TO:<${submission.to}>`, 'DATA']) {
      const reply = await c.command(command);
      if (reply.code >= 400) throw new Error(`${command}: ${reply.text}`);
    }
    const done = await c.command(`${testMessage(submission.marker)}.`);
    const id = /queued as (\w+)/.exec(done.text)?.[1];
    if (!id) throw new Error(`not queued: ${done.text}`);
    return id;
  } finally {
    c.close();
  }
}

/** queueShow - `postern queue show ID` as data, through a second store handle (as the CLI reads it). */
export async function queueShow(relay: TestRelay, id: string): Promise<MessageDetails> {
  const store = await openQueueStore(relay.config);
  try {
    const details = await store.showMessage(id);
    if (!details) throw new Error(`queue show ${id}: no such message`);
    return details;
  } finally {
    await store.close();
  }
}

/** driveByHand - stop the relay's delivery loop (it would race the test for due work); runDue() still delivers. */
export async function driveByHand(relay: TestRelay): Promise<NonNullable<TestRelay['scheduler']>> {
  const scheduler = relay.scheduler;
  if (!scheduler) throw new Error('the relay has no scheduler: start it with outbound.enabled true');
  // stop() ends the timer loop and waits for its current look; runDue() does not depend on the loop.
  await scheduler.stop();
  return scheduler;
}
