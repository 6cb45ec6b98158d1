// `postern send` as scripts run it (node bin/postern.js send …, a separate
// process) against a real relay in this process: each TLS mode on the
// listener it fits, the exit codes and hints for a wrong port, a bad
// password, an untrusted certificate and bad arguments, --json, the
// transcript never holding the password, attachments, stdin bodies and
// --file sent as it is.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, realpath, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, it } from 'vitest';
import { generateCertificateAuthority } from '../../src/tls/dev-certs.ts';
import { POSTERN_BIN } from '../helpers/child-relay.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const USER = 'alice';
const PASSWORD = 'correct horse battery staple';
const PLAIN_BLOB = Buffer.from(`\0${USER}\0${PASSWORD}`).toString('base64');

let relay: TestRelay;
let dir: string;
let caFile: string;
let otherCaFile: string;

beforeAll(async () => {
  relay = await startTestRelay();
  await relay.addUser(USER, PASSWORD);
  dir = await realpath(await mkdtemp(join(tmpdir(), 'postern-send-')));
  caFile = join(dir, 'ca.crt');
  await writeFile(caFile, relay.ca.certPem);
  otherCaFile = join(dir, 'other-ca.crt');
  await writeFile(otherCaFile, (await generateCertificateAuthority({ commonName: 'Someone else' })).certPem);
});

afterAll(async () => {
  await relay?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** inheritedEnv - this process's environment without POSTERN_* (a developer's settings must not leak in). */
function inheritedEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('POSTERN_')));
}

/** send - `postern send ARGS` to completion, in `cwd` (default: the temp dir, which has no certs/). */
function send(args: string[], options: { input?: string; cwd?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [POSTERN_BIN, 'send', ...args], { cwd: options.cwd ?? dir, env: inheritedEnv(), timeout: 20_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`postern send ${args.join(' ')}: ${err.message}\n${stderr}`));
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
    child.stdin!.end(options.input ?? '');
  });
}

const server = (name: 'relay' | 'submission' | 'submissions') => ['--server', `127.0.0.1:${relay.ports[name]}`];
const envelope = ['--from', 'alice@example.test', '--to', 'bob@example.org'];
const login = ['--auth', USER, '--password-stdin'];

/** queueIdOf - the id from the summary line. */
function queueIdOf(stdout: string): string {
  const match = /^Accepted: queue id (\S+)$/m.exec(stdout);
  if (!match) throw new Error(`no queue id in:\n${stdout}`);
  return match[1]!;
}

async function queuedIds(): Promise<string[]> {
  return (await relay.queued()).map((m) => m.id);
}

describe.concurrent('postern send', () => {
  it('--starttls with AUTH on submission: exit 0, TLSv1.3 verified, the queue id is in the queue, AUTH hidden', async ({ expect }) => {
    const result = await send([...server('submission'), '--starttls', ...login, ...envelope, '--ca', caFile, '--body', 'hello'], { input: `${PASSWORD}\n` });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    expect(result.stdout).toMatch(/^C: STARTTLS$/m);
    expect(result.stdout).toMatch(/^S: 220 2\.0\.0 Ready to start TLS$/m);
    expect(result.stdout).toMatch(/^C: AUTH PLAIN <hidden>$/m);
    expect(result.stdout).toMatch(/^S: 235 2\.7\.0 /m);
    expect(result.stdout).toMatch(/^TLS: TLSv1\.3, TLS_\w+, certificate verified$/m);
    expect(await queuedIds()).toContain(queueIdOf(result.stdout));
    expect(result.stdout).not.toContain(PASSWORD);
    expect(result.stdout).not.toContain(PLAIN_BLOB);
  });

  it('--tls with AUTH on submissions: exit 0', async ({ expect }) => {
    const result = await send([...server('submissions'), '--tls', ...login, ...envelope, '--ca', caFile, '--body', 'hello'], { input: `${PASSWORD}\n` });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).not.toMatch(/^C: STARTTLS$/m);
    expect(result.stdout).toMatch(/^TLS: TLSv1\.3, TLS_\w+, certificate verified$/m);
    expect(await queuedIds()).toContain(queueIdOf(result.stdout));
  });

  it('--plain on the relay port from loopback: exit 0, no TLS', async ({ expect }) => {
    const result = await send([...server('relay'), '--plain', ...envelope, '--body', 'hello']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^TLS: none \(plaintext\)$/m);
    expect(await queuedIds()).toContain(queueIdOf(result.stdout));
  });

  it('--tls to the STARTTLS port: exit 2, use --starttls', async ({ expect }) => {
    const result = await send([...server('submission'), '--tls', ...envelope, '--ca', caFile, '--body', 'hello']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/wrong version number|packet length too long/);
    expect(result.stderr).toContain('hint: this port speaks plaintext first: use --starttls\n');
  });

  it('--starttls to the implicit-TLS port: exit 2 after --timeout, use --tls', async ({ expect }) => {
    const result = await send([...server('submissions'), '--starttls', '--timeout', '1', ...envelope, '--ca', caFile, '--body', 'hello']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('Greeting never received');
    expect(result.stderr).toContain('hint: this port expects TLS from the first byte: use --tls\n');
  });

  it('--plain to submission: exit 1 on 530, use --starttls', async ({ expect }) => {
    const result = await send([...server('submission'), '--plain', ...envelope, '--body', 'hello']);
    expect(result.code).toBe(1);
    expect(result.stderr).toContain('postern send: rejected: 530 5.7.0 Must issue a STARTTLS command first\n');
    expect(result.stderr).toContain('hint: use --starttls\n');
  });

  it('a bad password: exit 1 with the 535, the password never shown', async ({ expect }) => {
    const wrong = 'not the password';
    const result = await send([...server('submission'), ...login, ...envelope, '--ca', caFile, '--body', 'hello'], { input: `${wrong}\n` });
    expect(result.code).toBe(1);
    expect(result.stdout).toMatch(/^S: 535 5\.7\.8 /m);
    expect(result.stderr).toMatch(/^postern send: rejected: 535 5\.7\.8 /m);
    expect(result.stdout + result.stderr).not.toContain(wrong);
    expect(result.stdout + result.stderr).not.toContain(Buffer.from(`\0${USER}\0${wrong}`).toString('base64'));
  });

  it('a certificate from a CA we do not trust: exit 2 before AUTH, pass --ca or --insecure', async ({ expect }) => {
    const result = await send([...server('submission'), ...login, ...envelope, '--ca', otherCaFile, '--body', 'hello'], { input: `${PASSWORD}\n` });
    expect(result.code).toBe(2);
    expect(result.stdout).toMatch(/^TLS: TLSv1\.3, TLS_\w+, certificate NOT verified: UNABLE_TO_VERIFY_LEAF_SIGNATURE/m);
    expect(result.stdout).not.toMatch(/^C: AUTH/m);
    expect(result.stderr).toContain('hint: pass --ca FILE (the dev CA is certs/ca.crt) or --insecure\n');
  });

  it('--insecure sends anyway and says the certificate did not verify', async ({ expect }) => {
    const result = await send([...server('submission'), ...login, ...envelope, '--insecure', '--body', 'hello'], { input: `${PASSWORD}\n` });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^TLS: TLSv1\.3, TLS_\w+, certificate NOT verified: /m);
    expect(await queuedIds()).toContain(queueIdOf(result.stdout));
  });

  it('trusts certs/ca.crt in the working directory by default', async ({ expect }) => {
    const cwd = join(dir, 'default-ca');
    await mkdir(join(cwd, 'certs'), { recursive: true });
    await writeFile(join(cwd, 'certs', 'ca.crt'), relay.ca.certPem);
    const result = await send([...server('submission'), ...login, ...envelope, '--body', 'hello'], { input: `${PASSWORD}\n`, cwd });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^-- TLS: TLSv1\.3, TLS_\w+, certificate verified \(trusting certs\/ca\.crt\)$/m);
  });

  it('with --config, trusts the ca.crt beside tls.cert', async ({ expect }) => {
    const result = await send(['--config', join(relay.dir, 'postern.yaml'), ...server('submission'), ...login, ...envelope, '--body', 'hello'], { input: `${PASSWORD}\n` });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`certificate verified (trusting ${join(relay.dir, 'ca.crt')})`);
  });

  it.for([
    { name: 'no --to', args: ['--from', 'a@example.test'], error: "required option '--to <address>' not specified" },
    { name: 'two modes', args: ['--tls', '--plain', ...envelope], error: "option '--tls' cannot be used with option '--plain'" },
    { name: 'a bad --server', args: ['--server', '127.0.0.1:99999', ...envelope], error: 'the port must be from 1 to 65535' },
    { name: 'a bad --timeout', args: ['--timeout', 'soon', ...envelope], error: 'expected a number of seconds above 0' },
    { name: '--auth in plaintext', args: ['--plain', '--auth', USER, '--password-stdin', ...envelope], error: '--auth over --plain would send the password in clear' },
    { name: 'a missing --ca file', args: ['--ca', join(tmpdir(), 'no-such-ca.crt'), ...envelope], error: 'cannot read --ca' },
    { name: 'a missing attachment', args: ['--attach', join(tmpdir(), 'no-such-file.pdf'), ...envelope, '--body', 'x'], error: 'cannot read --attach' },
  ])('bad arguments ($name): exit 3 before connecting', async ({ args, error }, { expect }) => {
    const result = await send(args);
    expect(result.code).toBe(3);
    expect(result.stderr).toContain(error);
    expect(result.stdout).toBe('');
  });

  it('--json: one object with accepted, queueId, server, tls and the transcript, AUTH hidden', async ({ expect }) => {
    const result = await send([...server('submission'), ...login, ...envelope, '--ca', caFile, '--json', '--body', 'hello'], { input: `${PASSWORD}\n` });
    expect(result.code, result.stderr).toBe(0);
    expect(result.stderr).toBe('');
    const report = JSON.parse(result.stdout) as { queueId: string; transcript: string[] };
    expect(report).toMatchObject({
      accepted: true,
      queueId: expect.stringMatching(/^\w+$/),
      server: `127.0.0.1:${relay.ports.submission}`,
      tls: { version: 'TLSv1.3', cipher: expect.stringMatching(/^TLS_/), verified: true, verifyError: null },
      transcript: expect.arrayContaining(['C: STARTTLS', 'C: AUTH PLAIN <hidden>', `S: 250 2.0.0 Ok: queued as ${report.queueId}`]),
    });
    expect(report).not.toHaveProperty('error');
    expect(await queuedIds()).toContain(report.queueId);
    expect(result.stdout).not.toContain(PASSWORD);
    expect(result.stdout).not.toContain(PLAIN_BLOB);
  });

  it('--json on failure: accepted false, the error and the hint', async ({ expect }) => {
    const result = await send([...server('submission'), ...login, ...envelope, '--ca', otherCaFile, '--json', '--body', 'hello'], { input: `${PASSWORD}\n` });
    expect(result.code).toBe(2);
    expect(JSON.parse(result.stdout)).toMatchObject({
      accepted: false,
      queueId: null,
      tls: { version: 'TLSv1.3', verified: false, verifyError: 'UNABLE_TO_VERIFY_LEAF_SIGNATURE' },
      error: { code: 'ECERT' },
      hint: 'pass --ca FILE (the dev CA is certs/ca.crt) or --insecure',
    });
  });

  it('--attach builds a multipart message with the file', async ({ expect }) => {
    const attachment = join(dir, 'report-2024.txt');
    await writeFile(attachment, 'the attached report\n');
    const result = await send([...server('relay'), '--plain', ...envelope, '--subject', 'With a file', '--body', 'see attached', '--attach', attachment]);
    expect(result.code, result.stderr).toBe(0);
    const stored = (await relay.body(queueIdOf(result.stdout))).toString('utf8');
    expect(stored).toMatch(/^Content-Type: multipart\/mixed; boundary=/m);
    expect(stored).toContain('filename=report-2024.txt');
    expect(stored).toMatch(/^Subject: With a file\r$/m);
    expect(stored).toMatch(/^Message-ID: <[^>]+@example\.test>\r$/m);
    expect(stored).toMatch(/^Date: /m);
    expect(stored).toContain('see attached');
  });

  it('reads the body from stdin; after --password-stdin, from the lines after the password', async ({ expect }) => {
    const plain = await send([...server('relay'), '--plain', ...envelope], { input: 'hello from stdin\n' });
    expect(plain.code, plain.stderr).toBe(0);
    const first = (await relay.body(queueIdOf(plain.stdout))).toString('utf8');
    expect(first).toContain('hello from stdin');
    expect(first).toMatch(/^Subject: Test message from postern send\r$/m);
    expect(first).toMatch(/^To: bob@example\.org\r$/m);

    const authed = await send([...server('submission'), ...login, ...envelope, '--ca', caFile], { input: `${PASSWORD}\nbody after the password\n` });
    expect(authed.code, authed.stderr).toBe(0);
    const second = (await relay.body(queueIdOf(authed.stdout))).toString('utf8');
    expect(second).toContain('body after the password');
    expect(second).not.toContain(PASSWORD);
  });

  it('--file sends the .eml as it is', async ({ expect }) => {
    const eml = join(dir, 'message.eml');
    const raw = 'From: alice@example.test\r\nTo: bob@example.org\r\nSubject: prepared\r\nX-Prepared: yes\r\n\r\nprepared body\r\n';
    await writeFile(eml, raw);
    const result = await send([...server('relay'), '--plain', ...envelope, '--file', eml]);
    expect(result.code, result.stderr).toBe(0);
    const stored = (await relay.body(queueIdOf(result.stdout))).toString('utf8');
    // The relay prepends its Received header; everything after it is ours, byte for byte.
    expect(stored.endsWith(raw)).toBe(true);
    expect(stored).not.toContain('Message-ID');
  });
});
