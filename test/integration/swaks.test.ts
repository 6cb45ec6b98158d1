// swaks, the tool the README tells people to try, against `postern serve`
// as a separate process: the README's commands work as written (certificate
// verified against the CA file), and a client that forgets --tls is refused
// before any password crosses the wire. swaks is required, not optional:
// CI installs it, and a missing swaks fails here with the command to fix it.
import { execFile } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config/load.ts';
import { openQueueStore } from '../../src/queue/open-store.ts';
import { generateCertificateAuthority } from '../../src/tls/dev-certs.ts';
import { POSTERN_BIN, startChildRelay, type ChildRelay } from '../helpers/child-relay.ts';
import { writeTestConfig } from '../helpers/test-relay.ts';

const run = promisify(execFile);
const PASSWORD = 's3cret pass';
const ENVELOPE = ['--helo', 'client.test', '--from', 'a@example.test', '--to', 'b@example.org'];

let dir: string;
let configFile: string;
let caFile: string;
let relay: ChildRelay | undefined;

/** requireSwaks - swaks with the options these tests use, or an error saying how to install it. */
async function requireSwaks(): Promise<void> {
  let help: string;
  try {
    help = (await run('swaks', ['--help'], { maxBuffer: 4 * 1024 * 1024 })).stdout;
  } catch (err) {
    throw new Error(`swaks is needed for these tests and could not be run (${(err as Error).message}): apt-get install swaks`);
  }
  for (const option of ['--tls-on-connect', '--tls-ca-path', '--tls-verify', '--auth-user', '--auth-password']) {
    if (!help.includes(option)) throw new Error(`this swaks has no ${option}; install a current one: apt-get install swaks`);
  }
}

/** addUser - `postern users add NAME --password-stdin`, as an operator would. */
function addUser(name: string, password: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [POSTERN_BIN, 'users', 'add', name, '--password-stdin', '--config', configFile], (err, _stdout, stderr) =>
      err ? reject(new Error(`users add failed: ${stderr}`)) : resolve(),
    );
    child.stdin!.end(`${password}\n`);
  });
}

/** swaks - run swaks; exit code, transcript (stdout) and errors (stderr). */
async function swaks(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run('swaks', args, { timeout: 20_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const failed = err as { code?: unknown; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number') throw err;
    return { code: failed.code, stdout: failed.stdout ?? '', stderr: failed.stderr ?? '' };
  }
}

/** queuedIdFrom - the queue id in swaks's transcript, checked against the queue itself. */
async function queuedIdFrom(transcript: string): Promise<string> {
  const id = /<~ {2}250 2\.0\.0 Ok: queued as (\w{16})$/m.exec(transcript)?.[1];
  expect(id, transcript).toBeDefined();
  const store = await openQueueStore(loadConfig({ file: configFile, env: {} }).config);
  try {
    expect((await store.listMessages()).find((m) => m.id === id)).toMatchObject({ mailFrom: 'a@example.test', recipients: ['b@example.org'], state: 'queued' });
  } finally {
    await store.close();
  }
  return id!;
}

beforeAll(async () => {
  await requireSwaks();
  ({ dir, file: configFile } = await writeTestConfig());
  caFile = join(dir, 'ca.crt');
  relay = await startChildRelay(configFile);
  await addUser('alice', PASSWORD);
});
afterAll(async () => {
  if (relay) {
    relay.process.kill('SIGTERM');
    expect(await relay.exited).toBe(0);
  }
  if (dir) await rm(dir, { recursive: true, force: true });
});

const auth = ['--auth', 'PLAIN', '--auth-user', 'alice', '--auth-password', PASSWORD];
const verified = (ca: string) => ['--tls-ca-path', ca, '--tls-verify'];

describe('swaks against postern serve', () => {
  it('submission: STARTTLS, certificate verified, AUTH PLAIN, queued', async () => {
    const result = await swaks(['--server', `127.0.0.1:${relay!.ports.submission}`, '--tls', ...verified(caFile), ...auth, ...ENVELOPE]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^=== TLS started with cipher TLSv1\.3:/m);
    expect(result.stdout).toMatch(/^<~ {2}235 2\.7\.0 Authentication successful$/m);
    expect(result.stdout).toContain('250 2.0.0 Ok: queued as');
    await queuedIdFrom(result.stdout);
  });

  it('submission without --tls: AUTH is not offered, so the password is never sent', async () => {
    const result = await swaks(['--server', `127.0.0.1:${relay!.ports.submission}`, ...auth, ...ENVELOPE]);
    expect(result.code).toBe(28); // swaks: error in the AUTH transaction
    expect(result.stderr).toContain('*** Host did not advertise authentication');
    expect(result.stdout).not.toMatch(/-> AUTH/);
    expect(result.stdout).not.toContain(Buffer.from(`\0alice\0${PASSWORD}`).toString('base64'));
  });

  it('submission without --tls or AUTH: MAIL gets 530 5.7.0 Must issue a STARTTLS command first', async () => {
    const result = await swaks(['--server', `127.0.0.1:${relay!.ports.submission}`, ...ENVELOPE]);
    expect(result.code).toBe(23); // swaks: error in the MAIL transaction
    expect(result.stdout).toMatch(/^<\*\* 530 5\.7\.0 Must issue a STARTTLS command first$/m);
  });

  it('submissions: implicit TLS (--tlsc), certificate verified, AUTH PLAIN, queued', async () => {
    const result = await swaks(['--server', `127.0.0.1:${relay!.ports.submissions}`, '--tlsc', ...verified(caFile), ...auth, ...ENVELOPE]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^=== TLS started with cipher TLSv1\.3:/m);
    expect(result.stdout).toContain('250 2.0.0 Ok: queued as');
    await queuedIdFrom(result.stdout);
  });

  it('relay: from loopback over STARTTLS, no login needed', async () => {
    const result = await swaks(['--server', `127.0.0.1:${relay!.ports.relay}`, '--tls', ...verified(caFile), ...ENVELOPE]);
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).not.toMatch(/AUTH/);
    expect(result.stdout).toContain('250 2.0.0 Ok: queued as');
    await queuedIdFrom(result.stdout);
  });

  it('--tls-verify is real: a CA that did not sign the certificate makes swaks give up before sending', async () => {
    const stranger = join(dir, 'stranger-ca.crt');
    await writeFile(stranger, (await generateCertificateAuthority({ commonName: 'Unrelated CA' })).certPem);
    expect(await readFile(stranger, 'utf8')).not.toBe(await readFile(caFile, 'utf8'));
    const result = await swaks(['--server', `127.0.0.1:${relay!.ports.relay}`, '--tls', ...verified(stranger), ...ENVELOPE]);
    expect(result.code).toBe(29); // swaks: error in the TLS transaction
    expect(result.stdout).not.toMatch(/MAIL FROM/);
  });
});
