// The three listeners against a real client (nodemailer) over real TLS:
// what each role offers, who may relay, and what lands in the queue.
import nodemailer from 'nodemailer';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

let relay: TestRelay;

beforeAll(async () => {
  relay = await startTestRelay({ relay: { localDomains: ['local.test'], trustedNetworks: ['192.0.2.0/24'] } });
  await relay.addUser('alice', 'correct horse');
});
afterAll(async () => relay?.stop());

function transport(port: number, options: { secure?: boolean; starttls?: boolean; auth?: { user: string; pass: string } } = {}) {
  return nodemailer.createTransport({
    host: '127.0.0.1',
    port,
    secure: options.secure ?? false,
    ignoreTLS: options.starttls === false,
    requireTLS: options.starttls === true,
    tls: { ca: relay.ca.certPem, servername: 'localhost' },
    auth: options.auth,
  });
}

const message = (to: string) => ({ from: 'sender@example.test', to, subject: 'hello', text: 'body line\n' });

describe('relay listener (STARTTLS offered, no AUTH)', () => {
  it('offers STARTTLS and no AUTH, before and after TLS', async () => {
    const c = await RawSmtp.connect(relay.ports.relay);
    expect((await c.reply()).text).toMatch(/^220 relay.test ESMTP Postern/);
    const before = await c.command('EHLO client.test');
    expect(before.lines).toContain('250-STARTTLS');
    expect(before.lines).toContain('250-ENHANCEDSTATUSCODES');
    expect(before.text).not.toMatch(/AUTH/);
    await c.startTls({ ca: relay.ca.certPem });
    const after = await c.command('EHLO client.test');
    expect(after.text).not.toMatch(/AUTH|STARTTLS/);
    c.close();
  });

  it('refuses to relay for a client outside the trusted networks, with 554 5.7.1', async () => {
    // 127.0.0.1 is not in 192.0.2.0/24 here.
    const c = await RawSmtp.connect(relay.ports.relay);
    await c.reply();
    await c.command('EHLO client.test');
    expect((await c.command('MAIL FROM:<a@example.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<b@example.org>')).text).toBe('554 5.7.1 Relay access denied');
    expect((await c.command('RCPT TO:<b@local.test>')).text).toMatch(/^250 /);
    c.close();
    expect(relay.logs).toContainEqual(expect.objectContaining({ msg: 'refused', stage: 'rcpt', reason: 'relay-denied', from: 'a@example.test', to: 'b@example.org' }));
  });

  it('logs a refusal smtp-server or the command guard makes at MAIL and RCPT with its from and to too', async () => {
    const c = await RawSmtp.connect(relay.ports.relay);
    await c.reply();
    await c.command('EHLO client.test');
    expect((await c.command('MAIL FROM:<scanner@example.test> ENVID=x+ZZ')).code).toBe(501);
    expect((await c.command('MAIL FROM:<scanner@example.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<a..b@local.test>')).code).toBe(501);
    c.close();
    await expect.poll(() => relay.logs.filter((l) => l.msg === 'refused' && l.reason === 'protocol' && l.from === 'scanner@example.test').map((l) => [l.stage, l.to])).toEqual([
      ['mail', undefined],
      ['rcpt', 'a..b@local.test'],
    ]);
  });

  it('accepts mail for a local domain over STARTTLS and queues it with a Received header', async () => {
    const info = await transport(relay.ports.relay, { starttls: true }).sendMail(message('someone@local.test'));
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as [0-9A-Za-z]{16}$/);
    const id = /queued as (\w+)/.exec(info.response)![1]!;
    const queued = (await relay.queued()).find((m) => m.id === id);
    expect(queued).toMatchObject({ mailFrom: 'sender@example.test', recipients: ['someone@local.test'], state: 'queued' });
    const body = (await relay.body(id)).toString();
    expect(body).toMatch(/^Received: from \[?[\w.]+\]? \(unknown \[127\.0\.0\.1\]\)\r\n\t\(using TLSv1\.3 with cipher TLS_\w+\)\r\n\tby relay\.test \(Postern\) with ESMTPS id /);
    expect(body).toContain(`id ${id}\r\n\tfor <someone@local.test>;`);
    expect(body).toContain('Subject: hello');
    // Relay port: mail in transit is not given headers it lacks; nodemailer wrote its own Message-ID and Date anyway.
    expect(body.match(/^Message-ID:/gim)).toHaveLength(1);
  });
});

describe('submission listener (STARTTLS + AUTH required)', () => {
  it('does not offer AUTH before TLS, and offers PLAIN and LOGIN after', async () => {
    const c = await RawSmtp.connect(relay.ports.submission);
    await c.reply();
    expect((await c.command('EHLO client.test')).text).not.toMatch(/AUTH/);
    // AUTH does not exist before TLS (Postfix smtpd_tls_auth_only): the password never crosses in plaintext.
    expect((await c.command('AUTH PLAIN AGFsaWNlAGNvcnJlY3QgaG9yc2U=')).text).toBe('530 5.7.0 Must issue a STARTTLS command first');
    expect((await c.command('MAIL FROM:<a@example.test>')).text).toBe('530 5.7.0 Must issue a STARTTLS command first');
    await c.startTls({ ca: relay.ca.certPem });
    expect((await c.command('EHLO client.test')).lines).toContain('250-AUTH PLAIN LOGIN');
    expect((await c.command('MAIL FROM:<a@example.test>')).text).toBe('530 5.7.0 Authentication required');
    c.close();
  });

  /** submitted - one message sent over submission after STARTTLS and AUTH; what the queue holds. */
  async function submitted(message: string): Promise<{ id: string; body: string }> {
    const c = await RawSmtp.connect(relay.ports.submission);
    await c.reply();
    await c.command('EHLO client.test');
    await c.startTls({ ca: relay.ca.certPem });
    await c.command('EHLO client.test');
    expect((await c.command(`AUTH PLAIN ${Buffer.from('\0alice\0correct horse').toString('base64')}`)).text).toMatch(/^235 2\.7\.0/);
    await c.command('MAIL FROM:<alice@example.test>');
    await c.command('RCPT TO:<bob@example.org>');
    expect((await c.command('DATA')).code).toBe(354);
    const done = await c.command(`${message}.`);
    c.close();
    const id = /queued as (\w+)/.exec(done.text)![1]!;
    return { id, body: (await relay.body(id)).toString() };
  }

  it('sends with a good login and adds From, Message-ID and Date when missing', async () => {
    const { id, body } = await submitted('Subject: bare\r\n\r\nno id, no date\r\n');
    expect(body).toMatch(/with ESMTPSA id \w+\r\n\tfor <bob@example.org>;/);
    expect(body).toMatch(new RegExp(`\r\nFrom: alice@example\\.test\r\nMessage-ID: <${id}\\.\\d+@relay\\.test>\r\nDate: \\w{3}, \\d\\d \\w{3} \\d{4} [\\d:]{8} \\+0000\r\nSubject: bare\r\n\r\nno id, no date\r\n$`));
  });

  // curl --upload-file with a text file, or a script that forgot the empty line: Postfix's cleanup ends the headers there.
  it('ends the headers with an empty line where a line that is no header comes first', async () => {
    const alone = await submitted('hello world\r\nsecond line\r\n');
    expect(alone.body).toMatch(/\r\nDate: [^\r]+\r\n\r\nhello world\r\nsecond line\r\n$/);
    const late = await submitted('Subject: x\r\nFrom: Al <alice@example.test>\r\nthis is body text\r\n');
    expect(late.body).toMatch(/\r\nDate: [^\r]+\r\nSubject: x\r\nFrom: Al <alice@example\.test>\r\n\r\nthis is body text\r\n$/);
  });

  it('rejects a bad password with 535 5.7.8', async () => {
    await expect(transport(relay.ports.submission, { starttls: true, auth: { user: 'alice', pass: 'wrong' } }).sendMail(message('b@example.org'))).rejects.toMatchObject({
      responseCode: 535,
      response: '535 5.7.8 Error: authentication failed',
    });
  });

  it('relays anywhere for an authenticated user (nodemailer, STARTTLS, AUTH LOGIN)', async () => {
    const t = nodemailer.createTransport({ host: '127.0.0.1', port: relay.ports.submission, requireTLS: true, tls: { ca: relay.ca.certPem, servername: 'localhost' }, auth: { user: 'alice', pass: 'correct horse' }, authMethod: 'LOGIN' });
    const info = await t.sendMail(message('far@example.org'));
    expect(info.accepted).toEqual(['far@example.org']);
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
  });
});

describe('submissions listener (implicit TLS, RFC 8314)', () => {
  it('speaks TLS from the first byte and sends with a login', async () => {
    const info = await transport(relay.ports.submissions, { secure: true, auth: { user: 'alice', pass: 'correct horse' } }).sendMail(message('x@example.org'));
    expect(info.response).toMatch(/^250 2\.0\.0 Ok: queued as /);
  });
  it('refuses MAIL without a login', async () => {
    const c = await RawSmtp.connect(relay.ports.submissions, { tls: { ca: relay.ca.certPem } });
    expect((await c.reply()).code).toBe(220);
    expect((await c.command('EHLO client.test')).lines).toContain('250-AUTH PLAIN LOGIN');
    expect((await c.command('MAIL FROM:<a@example.test>')).text).toBe('530 5.7.0 Authentication required');
    c.close();
  });
  it('a plaintext client gets nothing it can use, and the server stays up', async () => {
    const c = await RawSmtp.connect(relay.ports.submissions);
    c.write('EHLO plain.test\r\n');
    await c.closedByServer();
    expect(c.unread()).not.toMatch(/^220/);
    const again = await RawSmtp.connect(relay.ports.submissions, { tls: { ca: relay.ca.certPem } });
    expect((await again.reply()).code).toBe(220);
    again.close();
  });
});

// relay.senderDomains (Postfix check_sender_access; ALLOWED_SENDER_DOMAINS in Postfix's docker images).
describe('relay.senderDomains', () => {
  let restricted: TestRelay;
  beforeAll(async () => {
    restricted = await startTestRelay({ relay: { senderDomains: ['example.test'] } });
    await restricted.addUser('alice', 'correct horse');
  });
  afterAll(async () => restricted?.stop());

  it('refuses a trusted client a sender of another domain with 553 5.7.1, logged, and the session goes on', async () => {
    const c = await RawSmtp.connect(restricted.ports.relay);
    await c.reply();
    await c.command('EHLO client.test');
    expect((await c.command('MAIL FROM:<app@elsewhere.test>')).text).toBe('553 5.7.1 Sender address rejected: this relay does not send for that domain');
    expect((await c.command('MAIL FROM:<app@example.test>')).code).toBe(250);
    expect((await c.command('RCPT TO:<someone@example.org>')).code).toBe(250);
    await c.command('RSET');
    expect((await c.command('MAIL FROM:<>')).code).toBe(250);
    c.close();
    expect(restricted.logs).toContainEqual(expect.objectContaining({ msg: 'refused', stage: 'mail', reason: 'sender-domain-not-allowed', from: 'app@elsewhere.test' }));
  });

  it('refuses a logged-in user on the submission port a sender of another domain', async () => {
    const alice = { user: 'alice', pass: 'correct horse' };
    const send = (from: string) => {
      const t = nodemailer.createTransport({ host: '127.0.0.1', port: restricted.ports.submission, requireTLS: true, tls: { ca: restricted.ca.certPem, servername: 'localhost' }, auth: alice });
      return t.sendMail({ from, to: 'someone@example.org', subject: 'hello', text: 'body line\n' });
    };
    await expect(send('alice@elsewhere.test')).rejects.toMatchObject({ responseCode: 553, response: '553 5.7.1 Sender address rejected: this relay does not send for that domain' });
    // Logged as Postfix logs a reject: who sent, as whom.
    expect(restricted.logs).toContainEqual(expect.objectContaining({ msg: 'refused', reason: 'sender-domain-not-allowed', from: 'alice@elsewhere.test', user: 'alice' }));
    expect((await send('alice@example.test')).response).toMatch(/^250 2\.0\.0 Ok: queued as /);
  });
});
