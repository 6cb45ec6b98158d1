// What the logs promise (README): every line of an SMTP session carries its
// `session` id; the `queued` line carries the queue id, client IP, TLS
// version and cipher and the AUTH user; a password never reaches a log line,
// in clear or in any of the base64 forms AUTH sends it in. The relay runs
// in-process at level debug, so the protocol traces are checked too.
import { once } from 'node:events';
import { connect } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const PASSWORD = 'Tr0ub4dor&3 horse';
const b64 = (text: string) => Buffer.from(text).toString('base64');
// Every form a password crosses the wire in: clear, AUTH PLAIN (with and without authzid), AUTH LOGIN.
const SECRETS = [PASSWORD, b64(`\0alice\0${PASSWORD}`), b64(`alice\0alice\0${PASSWORD}`), b64(PASSWORD)];

let relay: TestRelay;
beforeAll(async () => {
  relay = await startTestRelay();
  await relay.addUser('alice', PASSWORD);
});
afterAll(async () => relay?.stop());

/** submissionSession - connected to the submission port, TLS up, EHLO answered. */
async function submissionSession(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(relay.ports.submission);
  expect((await c.reply()).code).toBe(220);
  await c.command('EHLO client.test');
  expect((await c.startTls({ ca: relay.ca.certPem })).code).toBe(220);
  await c.command('EHLO client.test');
  return c;
}

/** relaySession - connected to the relay port, EHLO sent. */
async function relaySession(): Promise<RawSmtp> {
  const c = await RawSmtp.connect(relay.ports.relay);
  expect((await c.reply()).code).toBe(220);
  await c.command('EHLO client.test');
  return c;
}

/** quit - QUIT and wait until the server has closed the connection. */
async function quit(c: RawSmtp): Promise<void> {
  expect((await c.command('QUIT')).code).toBe(221);
  await c.closedByServer();
}

function linesContainingSecrets(lines: Record<string, unknown>[]): string[] {
  return lines.map((l) => JSON.stringify(l)).filter((text) => SECRETS.some((secret) => text.includes(secret)));
}

describe('session logging', () => {
  // One message over STARTTLS + AUTH PLAIN on the submission port; the tests below read its log lines.
  let lines: Record<string, unknown>[];
  let queueId: string | undefined;
  let cipher: string;
  beforeAll(async () => {
    const from = relay.logs.length;
    const c = await submissionSession();
    cipher = (c.socket as TLSSocket).getCipher().standardName;
    expect((await c.command(`AUTH PLAIN ${b64(`\0alice\0${PASSWORD}`)}`)).text).toBe('235 2.7.0 Authentication successful');
    expect((await c.command('MAIL FROM:<alice@example.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<bob@example.org>')).code).toBe(250);
    expect((await c.command('DATA')).code).toBe(354);
    const done = await c.command('Subject: logging\r\n\r\nhello\r\n.');
    queueId = /^250 2\.0\.0 Ok: queued as (\w{16})$/.exec(done.text)?.[1];
    expect(queueId, done.text).toBeDefined();
    await quit(c);
    // Only this session ran on the relay since `from`: every line logged since belongs to it.
    lines = relay.logs.slice(from);
  });

  it('the queued line carries the queue id, client IP, TLS version and cipher, the user, and the Message-ID (here the one submission added)', () => {
    const session = lines.find((l) => l.msg === 'connect')?.session;
    expect(session).toEqual(expect.any(String));
    expect(cipher).toMatch(/^TLS_/);
    expect(lines.filter((l) => l.msg === 'queued')).toEqual([
      expect.objectContaining({ session, listener: 'submission', queueId, ip: '127.0.0.1', tlsVersion: 'TLSv1.3', tlsCipher: cipher, user: 'alice', messageId: expect.stringMatching(new RegExp(`^<${queueId!}\\.\\d+@relay\\.test>$`)) }),
    ]);
  });

  it('every line of the session carries the same session id, smtp-server\'s protocol traces included', () => {
    const session = lines.find((l) => l.msg === 'connect')?.session;
    expect(session).toEqual(expect.any(String));
    expect(lines.filter((l) => l.session === session).length).toBeGreaterThan(0);
    const withoutSession = lines.filter((l) => l.session !== session).map((l) => `${typeof l.component === 'string' ? l.component : 'postern'}: ${String(l.msg).split(/\r?\n/)[0]}`);
    expect(withoutSession, 'log lines of the session without its session id').toEqual([]);
  });

  it('no line holds the password, in clear or base64 (AUTH PLAIN)', () => {
    expect(lines.some((l) => l.msg === 'authenticated')).toBe(true);
    expect(linesContainingSecrets(relay.logs)).toEqual([]);
  });

  it('never logs a password: AUTH PLAIN as a continuation, a failed attempt, AUTH LOGIN', async () => {
    const from = relay.logs.length;
    const c = await submissionSession();
    expect((await c.command('AUTH PLAIN')).code).toBe(334);
    expect((await c.command(b64(`alice\0alice\0${PASSWORD}x`))).text).toBe('535 5.7.8 Error: authentication failed');
    expect((await c.command('AUTH PLAIN')).code).toBe(334);
    expect((await c.command(b64(`alice\0alice\0${PASSWORD}`))).code).toBe(235);
    await quit(c);

    const login = await submissionSession();
    expect((await login.command('AUTH LOGIN')).text).toBe('334 VXNlcm5hbWU6');
    expect((await login.command(b64('alice'))).text).toBe('334 UGFzc3dvcmQ6');
    expect((await login.command(b64(PASSWORD))).code).toBe(235);
    await quit(login);

    const recent = relay.logs.slice(from);
    // The failure is logged with the user name (README), and the command traces are there to be checked.
    expect(recent).toContainEqual(expect.objectContaining({ msg: 'authentication failed', user: 'alice', method: 'PLAIN' }));
    expect(recent.filter((l) => l.tnx === 'command').length).toBeGreaterThan(0);
    // The wrong password differs from the right one only at the end; neither may appear.
    const wrong = [`${PASSWORD}x`, b64(`alice\0alice\0${PASSWORD}x`)];
    expect(recent.map((l) => JSON.stringify(l)).filter((text) => wrong.some((w) => text.includes(w)))).toEqual([]);
    expect(linesContainingSecrets(relay.logs)).toEqual([]);
  });
});

describe('credentials sent to a port that refuses AUTH', () => {
  // A script that writes AUTH LOGIN's lines without reading the replies, to a port that refuses AUTH: each base64
  // line is an unknown command, and was logged as one, its text the refused line's stage and in the debug trace.
  it('never logs a password sent as AUTH LOGIN lines to a port that does not offer AUTH', async () => {
    const from = relay.logs.length;
    const c = await relaySession();
    c.write(`AUTH LOGIN\r\n${b64('alice')}\r\n${b64(PASSWORD)}\r\n`);
    expect((await c.reply()).text).toBe('503 5.5.1 Error: authentication not enabled');
    for (let i = 0; i < 2; i++) expect((await c.reply()).text).toBe('502 5.5.2 Error: command not recognized');
    await quit(c);
    const recent = relay.logs.slice(from);
    expect(recent.filter((l) => l.msg === 'refused').map((l) => l.stage)).toEqual(['auth', 'unknown', 'unknown']);
    expect(recent.filter((l) => l.tnx === 'command').length).toBeGreaterThan(0);
    expect(linesContainingSecrets(recent)).toEqual([]);
    expect(recent.map((l) => JSON.stringify(l)).filter((text) => text.toLowerCase().includes(b64(PASSWORD).toLowerCase()))).toEqual([]);
  });
});

// A printer refused for its address syntax must leave a trace, as a relay denial does.
describe('refusals made by the SMTP library, not by policy', () => {
  it('are refused lines at info, with the command, reason protocol and the reply sent; a policy refusal is logged once', async () => {
    const from = relay.logs.length;
    const c = await relaySession();
    expect((await c.command('FOO bar')).code).toBe(502);
    expect((await c.command('RCPT TO:<b@example.org>')).code).toBe(503);
    expect((await c.command('MAIL FROM:<a@b@c>')).code).toBe(501);
    expect((await c.command('MAIL FROM:<a@example.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<postmaster>')).code).toBe(504);
    expect((await c.command('DATA')).code).toBe(554);
    await quit(c);
    const refused = relay.logs.slice(from).filter((l) => l.msg === 'refused');
    expect(refused.map((l) => [l.level, l.stage, l.reason, l.reply])).toEqual([
      [30, 'unknown', 'protocol', '502 5.5.2 Error: command not recognized'],
      [30, 'rcpt', 'protocol', '503 5.5.1 Error: need MAIL command'],
      [30, 'mail', 'protocol', '501 5.1.7 Bad sender address syntax'],
      [30, 'rcpt', 'non-fqdn-recipient', '504 5.5.2 Recipient address rejected: need fully-qualified address'],
      [30, 'data', 'protocol', '554 5.5.1 Error: no valid recipients'],
    ]);
    expect(new Set(refused.map((l) => l.session)).size).toBe(1);
  });

  it('names a command sent with a tab after its name, as it names one with a space', async () => {
    const from = relay.logs.length;
    const c = await relaySession();
    expect((await c.command('MAIL\tFROM:<a@b@c>')).code).toBe(501);
    expect((await c.command('AUTH\tPLAIN AGFsaWNlAHg=')).text).toBe('503 5.5.1 Error: authentication not enabled');
    await quit(c);
    const refused = relay.logs.slice(from).filter((l) => l.msg === 'refused');
    expect(refused.map((l) => [l.stage, l.reply])).toEqual([
      ['mail', '501 5.1.7 Bad sender address syntax'],
      ['auth', '503 5.5.1 Error: authentication not enabled'],
    ]);
  });

  it('logs an idle timeout as the session\'s, not as a refusal of the last command', async () => {
    const idle = await startTestRelay({ limits: { idleTimeout: '1s' } });
    try {
      const c = await RawSmtp.connect(idle.ports.relay);
      expect((await c.reply()).code).toBe(220);
      await c.command('EHLO client.test');
      expect((await c.command('MAIL FROM:<a@example.test>')).code).toBe(250);
      expect((await c.reply()).text).toBe('421 4.4.2 Error: timeout exceeded');
      c.close();
      expect(idle.logs.filter((l) => l.msg === 'refused').map((l) => [l.stage, l.reason, l.reply])).toEqual([['session', 'protocol', '421 4.4.2 Error: timeout exceeded']]);
    } finally {
      await idle.stop();
    }
  });
});

describe('a client that resets its connection', () => {
  it('mid-session is logged at info, not as an error', async () => {
    const from = relay.logs.length;
    const c = await relaySession();
    expect((await c.command('MAIL FROM:<a@example.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<b@example.org>')).code).toBe(250);
    expect((await c.command('DATA')).code).toBe(354);
    expect((await c.command('Subject: reset\r\n\r\nhello\r\n.')).code).toBe(250);
    // An RST instead of QUIT and FIN: the server's next read fails with ECONNRESET.
    const { recent, session } = await resetAndWait(c, from, (l) => l.tnx === 'error');
    expect(recent.filter((l) => l.tnx === 'error')).toEqual([expect.objectContaining({ level: 30, session, msg: expect.stringMatching(/ECONNRESET$/) })]);
    expect(recent.filter((l) => Number(l.level) >= 50)).toEqual([]);
  });

  it('after QUIT is logged at debug only: a normal end for such clients, as Postfix has it', async () => {
    const from = relay.logs.length;
    const c = await relaySession();
    expect((await c.command('QUIT')).code).toBe(221);
    const { recent, session } = await resetAndWait(c, from, (l) => l.tnx === 'close');
    expect(recent.filter((l) => l.tnx === 'error')).toEqual([expect.objectContaining({ level: 20, session, msg: expect.stringMatching(/ECONNRESET$/) })]);
  });
});

describe('a client whose address has no name', () => {
  it('is logged at debug, not as an error: the reverse lookup failing is normal', async () => {
    const named = await startTestRelay({ smtp: { reverseLookup: true } });
    try {
      // 127.0.0.2 has no name in /etc/hosts, and the lookup finds none.
      const socket = connect({ host: '127.0.0.1', port: named.ports.relay, localAddress: '127.0.0.2' });
      await once(socket, 'data');
      socket.end('QUIT\r\n');
      await once(socket, 'close');
      await waitFor(() => named.logs.some((l) => l.msg === 'disconnect'));
      const lookup = named.logs.filter((l) => String(l.msg).startsWith('Reverse resolve for 127.0.0.2'));
      expect(lookup).toEqual([expect.objectContaining({ level: 20 })]);
    } finally {
      await named.stop();
    }
  });
});

/** resetAndWait - reset the connection, wait for the line `until`; the lines logged since `from` and the session's id. */
async function resetAndWait(c: RawSmtp, from: number, until: (line: Record<string, unknown>) => boolean): Promise<{ recent: Record<string, unknown>[]; session: unknown }> {
  c.socket.resetAndDestroy();
  await waitFor(() => relay.logs.slice(from).some(until));
  const recent = relay.logs.slice(from);
  const session = recent.find((l) => l.msg === 'connect')?.session;
  expect(session).toEqual(expect.any(String));
  return { recent, session };
}

async function waitFor(condition: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
