// The `postern` command as users run it (node bin/postern.js …, a separate
// process): config check and its exit code 78, users add/list/remove and a
// login with the user it made, the first start with no configuration at all
// (dev certificates, queue, the summary on stderr), and queue list.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, realpath, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POSTERN_BIN } from '../helpers/child-relay.ts';
import { openQueueStore } from '../../src/queue/open-store.ts';
import { submitMessage } from '../helpers/next-hop.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay, writeTestConfig, type TestRelay } from '../helpers/test-relay.ts';

interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
});

/** inheritedEnv - this process's environment without POSTERN_* (a developer's settings must not leak in). */
function inheritedEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('POSTERN_')));
}

/** postern - run the CLI to completion; its exit code and output. `input` goes to stdin. */
function postern(args: string[], options: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(process.execPath, [POSTERN_BIN, ...args], { env: { ...inheritedEnv(), ...options.env }, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`postern ${args.join(' ')}: ${err.message}\n${stderr}`));
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
    child.stdin!.end(options.input ?? '');
  });
}

/** useTestRelay - a relay started before the tests of the describe it is called in and stopped after them, with its postern.yaml. */
function useTestRelay(): { relay: TestRelay; configFile: string } {
  const started = {} as { relay: TestRelay; configFile: string };
  beforeAll(async () => {
    started.relay = await startTestRelay();
    started.configFile = join(started.relay.dir, 'postern.yaml');
  });
  afterAll(async () => started.relay?.stop());
  return started;
}

/** Output - a child's stream collected as text, with a wait for a pattern to appear. */
class Output {
  text = '';
  private ended = false;
  private waiters: (() => void)[] = [];

  constructor(stream: Readable) {
    stream.setEncoding('utf8');
    stream.on('data', (chunk: string) => {
      this.text += chunk;
      this.wake();
    });
    stream.on('end', () => {
      this.ended = true;
      this.wake();
    });
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** waitFor - the first match of pattern; rejects if the stream ends without one. */
  async waitFor(pattern: RegExp): Promise<RegExpExecArray> {
    for (;;) {
      const match = pattern.exec(this.text);
      if (match) return match;
      if (this.ended) throw new Error(`stream ended without ${String(pattern)}:\n${this.text}`);
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }
}

async function tempDir(): Promise<string> {
  // realpath: the relay prints paths resolved from its cwd, which has no symlinks.
  const dir = await realpath(await mkdtemp(join(tmpdir(), 'postern-cli-')));
  dirs.push(dir);
  return dir;
}

async function modeOf(path: string): Promise<number> {
  return (await stat(path)).mode & 0o777;
}

interface Serving {
  child: ChildProcess;
  stdout: Output;
  stderr: Output;
  exited: Promise<number | NodeJS.Signals | null>;
  ready: { listeners: { name: string; host: string; port: number }[]; fingerprint: string };
}

/** serveIn - `postern serve` in dir with no config file; resolves on its "postern ready" line. */
async function serveIn(dir: string): Promise<Serving> {
  const env = {
    ...inheritedEnv(),
    POSTERN_LISTENERS_RELAY_PORT: '0',
    POSTERN_LISTENERS_SUBMISSION_PORT: '0',
    POSTERN_LISTENERS_SUBMISSIONS_PORT: '0',
    POSTERN_SMTP_REVERSE_LOOKUP: 'false',
    // No DNS or delivery leaves the machine, and no fixed HTTP port.
    POSTERN_OUTBOUND_ENABLED: 'false',
    POSTERN_HTTP_PORT: '0',
  };
  const child = spawn(process.execPath, [POSTERN_BIN, 'serve'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  const exited = new Promise<number | NodeJS.Signals | null>((resolve) => child.once('exit', (code, signal) => resolve(signal ?? code)));
  const stdout = new Output(child.stdout);
  const stderr = new Output(child.stderr);
  const line = await stdout.waitFor(/^.*"msg":"postern ready".*$/m).catch((err: Error) => {
    throw new Error(`${err.message}\nstderr:\n${stderr.text}`);
  });
  return { child, stdout, stderr, exited, ready: JSON.parse(line[0]) as Serving['ready'] };
}

// The groups are independent (own temp dirs, own relays, port 0): run them side by side.
describe.concurrent('postern CLI', () => {
  describe('postern config check', () => {
    it('accepts a good file and says which file it checked', async () => {
      const { dir, file } = await writeTestConfig();
      dirs.push(dir);
      expect(await postern(['config', 'check', '--config', file])).toEqual({ code: 0, stdout: `configuration ok (${file})\n`, stderr: '' });
    });

    it('exits 78 on a port out of range, naming the key, the value, the file and what is allowed', async () => {
      const { dir, file } = await writeTestConfig({ listeners: { relay: { port: 70000 } } });
      dirs.push(dir);
      const result = await postern(['config', 'check', '--config', file]);
      expect(result.code).toBe(78);
      expect(result.stdout).toBe('');
      expect(result.stderr).toContain(`listeners.relay.port = 70000 (${file}): must be an integer from 0 to 65535`);
    });

    it('exits 78 on a bad environment value, naming the variable', async () => {
      const { dir, file } = await writeTestConfig();
      dirs.push(dir);
      const result = await postern(['config', 'check', '--config', file], { env: { POSTERN_SMTP_BARE_LINE_FEED: 'allow' } });
      expect(result.code).toBe(78);
      expect(result.stderr).toContain('smtp.bareLineFeed = "allow" (environment POSTERN_SMTP_BARE_LINE_FEED): must be one of normalize, reject');
    });

    // A check that passes is a start that does not stop on a file; a start that would stops as for any bad value.
    it('refuses a tls.cert the operator named that is not there, in config check and at start (78), saying where dev certificates are made', async () => {
      const missing = join(tmpdir(), `postern-no-such-dir-${process.pid}`, 'server.crt');
      const { dir, file } = await writeTestConfig({ tls: { cert: missing } });
      dirs.push(dir);
      for (const command of [['config', 'check'], ['serve']]) {
        const result = await postern([...command, '--config', file]);
        expect(result.code, command.join(' ')).toBe(78);
        expect(result.stderr).toContain(`tls.cert = ${JSON.stringify(missing)}: cannot be read (ENOENT); development certificates are made only at the defaults, certs/server.crt and certs/server.key`);
      }
    });

    it('refuses an outbound.tls.caFile or http.tokenFile that is not there, and an empty http.tokenFile, naming each key (78)', async () => {
      const missing = join(tmpdir(), `postern-no-such-dir-${process.pid}`, 'ca.pem');
      const { dir, file } = await writeTestConfig({ outbound: { enabled: true, tls: { caFile: missing } }, http: { tokenFile: missing } });
      dirs.push(dir);
      const empty = join(dir, 'empty-token');
      await writeFile(empty, '\n');
      for (const command of [['config', 'check'], ['serve']]) {
        const result = await postern([...command, '--config', file]);
        expect(result.code, command.join(' ')).toBe(78);
        expect(result.stderr).toContain(`outbound.tls.caFile = ${JSON.stringify(missing)}: cannot be read (ENOENT)`);
        expect(result.stderr).toContain(`http.tokenFile = ${JSON.stringify(missing)}: cannot be read (ENOENT)`);
        const emptyToken = await postern([...command, '--config', file], { env: { POSTERN_HTTP_TOKEN_FILE: empty, POSTERN_OUTBOUND_TLS_CA_FILE: '' } });
        expect(emptyToken.code, command.join(' ')).toBe(78);
        expect(emptyToken.stderr).toContain(`http.tokenFile = ${JSON.stringify(empty)}: the file is empty; write the secret into it, or leave http.tokenFile unset`);
      }
    });

    it('treats an unknown key as an error, not a silent default', async () => {
      const { dir, file } = await writeTestConfig({ listeners: { relay: { prot: 2525 } } });
      dirs.push(dir);
      const result = await postern(['config', 'check', '--config', file]);
      expect(result.code).toBe(78);
      expect(result.stderr).toContain(`listeners.relay.prot (${file}): unknown key`);
    });
  });

  describe.sequential('postern users', () => {
    const started = useTestRelay();

    const password = 'correct horse battery staple';

    it('adds, lists and removes a user; the file holds a hash, mode 0600', async () => {
      const { relay, configFile } = started;
      const usersFile = relay.config.relay.users;
      const added = await postern(['users', 'add', 'bob', '--password-stdin', '--config', configFile], { input: `${password}\n` });
      expect(added).toMatchObject({ code: 0, stdout: `user bob saved in ${usersFile}\n` });
      expect(await postern(['users', 'list', '--config', configFile])).toEqual({ code: 0, stdout: 'bob\n', stderr: '' });

      const stored = await readFile(usersFile, 'utf8');
      expect(stored).not.toContain(password);
      expect(stored).not.toContain(Buffer.from(password).toString('base64'));
      expect((JSON.parse(stored) as { users: Record<string, { hash: string }> }).users.bob!.hash).toMatch(/^scrypt\$/);
      expect(await modeOf(usersFile)).toBe(0o600);

      expect(await postern(['users', 'remove', 'bob', '--config', configFile])).toMatchObject({ code: 0, stdout: 'user bob removed\n' });
      expect(await postern(['users', 'list', '--config', configFile])).toEqual({ code: 0, stdout: '', stderr: '' });
      const again = await postern(['users', 'remove', 'bob', '--config', configFile]);
      expect(again.code).toBe(1);
      expect(again.stderr).toBe(`postern: no user bob in ${usersFile}\n`);
    });

    it('a user added while the relay runs can log in (AUTH PLAIN over STARTTLS), no restart', async () => {
      const { relay, configFile } = started;
      expect((await postern(['users', 'add', 'alice', '--password-stdin', '--config', configFile], { input: `${password}\n` })).code).toBe(0);
      const c = await RawSmtp.connect(relay.ports.submission);
      try {
        await c.reply();
        await c.command('EHLO client.test');
        expect((await c.startTls({ ca: relay.ca.certPem })).code).toBe(220);
        await c.command('EHLO client.test');
        const auth = await c.command(`AUTH PLAIN ${Buffer.from(`\0alice\0${password}`).toString('base64')}`);
        expect(auth.text).toBe('235 2.7.0 Authentication successful');
      } finally {
        c.close();
      }
    });
  });

  describe('first start with no configuration', () => {
    it('creates dev certificates and the queue, prints how to use it, and stops cleanly on SIGTERM and on SIGHUP', async () => {
      const dir = await tempDir();
      const first = await serveIn(dir);
      // The summary is written right after the ready line; its last line is the command to try.
      const swaks = (await first.stderr.waitFor(/^ {2}swaks .*\n/m))[0];
      expect(first.stdout.text).toContain('"msg":"generated development certificates"');

      const certs = join(dir, 'certs');
      const caPem = await readFile(join(certs, 'ca.crt'), 'utf8');
      const serverPem = await readFile(join(certs, 'server.crt'), 'utf8');
      expect(await modeOf(join(certs, 'server.key'))).toBe(0o600);
      expect(await modeOf(join(certs, 'ca.key'))).toBe(0o600);
      expect((await stat(join(dir, 'data', 'queue.db'))).isFile()).toBe(true);

      const ca = new X509Certificate(caPem);
      const server = new X509Certificate(serverPem);
      expect(server.subjectAltName?.split(', ')).toEqual(expect.arrayContaining(['DNS:localhost', 'IP Address:127.0.0.1', 'IP Address:0:0:0:0:0:0:0:1']));
      expect(server.publicKey.asymmetricKeyType).toBe('ec');
      expect(server.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
      expect(server.checkIssued(ca)).toBe(true);
      expect(server.verify(ca.publicKey)).toBe(true);

      const summary = first.stderr.text;
      const relayPort = first.ready.listeners.find((l) => l.name === 'relay')!.port;
      for (const { name, port } of first.ready.listeners) expect(summary).toMatch(new RegExp(`^ {2}${name} +127\\.0\\.0\\.1:${port} `, 'm'));
      expect(first.ready.listeners.map((l) => l.name)).toEqual(['relay', 'submission', 'submissions']);
      expect(first.ready.fingerprint).toBe(server.fingerprint256);
      expect(summary).toContain(`SHA-256 ${server.fingerprint256}\n`);
      expect(summary).toContain(`trust this CA in clients: ${join(certs, 'ca.crt')}\n`);
      expect(swaks).toMatch(new RegExp(`^ {2}swaks --server 127\\.0\\.0\\.1:${relayPort} --tls .*--tls-ca-path ${join(certs, 'ca.crt')}\\n$`));

      first.child.kill('SIGTERM');
      expect(await first.exited).toBe(0);

      // A second start keeps the certificate clients already trust.
      const second = await serveIn(dir);
      await second.stderr.waitFor(/^ {2}swaks .*\n/m);
      expect(second.ready.fingerprint).toBe(server.fingerprint256);
      expect(second.stderr.text).toContain(`SHA-256 ${server.fingerprint256}\n`);
      expect(await readFile(join(certs, 'server.crt'), 'utf8')).toBe(serverPem);
      expect(second.stdout.text).not.toContain('"msg":"generated development certificates"');
      // SIGHUP (a closed terminal, a reload asked for) stops it as cleanly; Node's default killed it at once.
      second.child.kill('SIGHUP');
      expect(await second.exited).toBe(0);
      expect(second.stdout.text).toMatch(/"signal":"SIGHUP".*"msg":"stopping"/);
    });
  });

  describe('postern queue list', () => {
    const started = useTestRelay();

    it('says the queue is empty, then lists a message as JSON and as a table', async () => {
      const { relay, configFile } = started;
      expect(await postern(['queue', 'list', '--config', configFile])).toEqual({ code: 0, stdout: 'Mail queue is empty\n', stderr: '' });

      const c = await RawSmtp.connect(relay.ports.relay);
      let id: string;
      try {
        await c.reply();
        await c.command('EHLO client.test');
        await c.command('MAIL FROM:<sender@example.test>');
        await c.command('RCPT TO:<one@example.org>');
        await c.command('RCPT TO:<two@example.net>');
        await c.command('DATA');
        const done = await c.command('Subject: queue list\r\n\r\nhello\r\n.');
        id = /^250 2\.0\.0 Ok: queued as (\w+)$/.exec(done.text)![1]!;
      } finally {
        c.close();
      }
      const size = (await relay.body(id)).length;

      const json = await postern(['queue', 'list', '--json', '--config', configFile]);
      expect(json.code).toBe(0);
      const listed = JSON.parse(json.stdout) as { receivedAt: string }[];
      expect(listed).toEqual([
        {
          id, sender: 'sender@example.test', recipients: ['one@example.org', 'two@example.net'], size, receivedAt: expect.any(String), state: 'queued',
          recipientStates: [{ address: 'one@example.org', state: 'queued' }, { address: 'two@example.net', state: 'queued' }], nextAttemptAt: expect.any(String),
        },
      ]);
      expect(new Date(listed[0]!.receivedAt).toISOString()).toBe(listed[0]!.receivedAt);

      const table = await postern(['queue', 'list', '--config', configFile]);
      expect(table.code).toBe(0);
      const lines = table.stdout.split('\n');
      expect(lines[0]).toMatch(/^ID +STATE +SIZE +AGE +SENDER +RECIPIENTS$/);
      expect(lines[1]).toMatch(new RegExp(`^${id} +queued +${size} +\\d+[smhd] +sender@example\\.test +one@example\\.org, two@example\\.net$`));
      expect(lines.slice(2)).toEqual(['-- 1 message', '']);

      // postcat -q: the stored bytes, our Received header first.
      const cat = await postern(['queue', 'cat', id, '--config', configFile]);
      expect(cat).toEqual({ code: 0, stdout: (await relay.body(id)).toString('utf8'), stderr: '' });
      expect(cat.stdout).toMatch(/^Received: from client\.test /);
      expect(await postern(['queue', 'cat', '01M8QBAF58C2BR1N', '--config', configFile])).toEqual({ code: 1, stdout: '', stderr: 'postern: no message 01M8QBAF58C2BR1N in the queue\n' });

      // Selecting by domain or sender, then acting on the ids read from stdin (Postfix: postqueue -p | … | postsuper -h -).
      const list = (...args: string[]) => postern(['queue', 'list', ...args, '--config', configFile]);
      expect(await list('--domain', 'EXAMPLE.net.', '--ids')).toEqual({ code: 0, stdout: `${id}\n`, stderr: '' });
      expect(await list('--sender', 'Sender@example.test', '--ids')).toEqual({ code: 0, stdout: `${id}\n`, stderr: '' });
      expect(await list('--sender', '<>', '--ids')).toEqual({ code: 0, stdout: '', stderr: '' });
      expect(await list('--domain', 'example.com')).toEqual({ code: 0, stdout: 'No message matches\n', stderr: '' });
      expect(await postern(['queue', 'hold', '-', '--config', configFile], { input: `${id}\n` })).toEqual({ code: 0, stdout: `hold: 1 message (${id})\n`, stderr: '' });
      expect(JSON.parse((await list('--json')).stdout)).toEqual([expect.objectContaining({ id, state: 'held' })]);
      // Already as asked is no failure (postsuper); an unknown id, or retry of a held message, is.
      expect(await postern(['queue', 'hold', id, '--config', configFile])).toEqual({ code: 0, stdout: 'hold: 0 messages\n', stderr: `postern: ${id} not changed: already held\n` });
      expect(await postern(['queue', 'retry', id, '01M8QBAF58C2BR1N', '--config', configFile])).toEqual({
        code: 1,
        stdout: 'retry: 0 messages\n',
        stderr: `postern: ${id} not changed: held: release it first\npostern: 01M8QBAF58C2BR1N not changed: no such message in the queue\n`,
      });
      // qshape: by destination domain and age in minutes.
      const shape = (await postern(['queue', 'shape', '--config', configFile])).stdout.split('\n');
      expect(shape[0]).toMatch(/^ +T +5 +10 +20 .* 1280 1280\+$/);
      expect(shape.slice(1).map((l) => l.trim().split(/ +/).slice(0, 3))).toEqual([['TOTAL', '1', '1'], ['example.net', '1', '1'], ['example.org', '1', '1'], ['']]);
      const shown = (await postern(['queue', 'show', id, '--config', configFile])).stdout;
      expect(shown).toContain('Held: no attempt for example.org until released (after 0 attempts)');
      expect(shown).not.toContain('Next attempt');
    });

    // Postfix's postqueue stops on a config directory that is not there; an empty listing would hide the mistake.
    it('names a queue.path no relay created, exits 1, and creates nothing there', async () => {
      const { dir, file } = await writeTestConfig();
      dirs.push(dir);
      const result = await postern(['queue', 'list', '--config', file]);
      expect(result).toEqual({ code: 1, stdout: '', stderr: `postern: no queue at ${join(dir, 'data', 'queue.db')} (queue.path): no relay has run with this configuration; is it the relay's (--config FILE)?\n` });
      expect(existsSync(join(dir, 'data'))).toBe(false);
    });

    it.each(['hold', 'delete'])('refuses %s with both ids and --all (exit 3), as the HTTP API does', async (verb) => {
      const result = await postern(['queue', verb, '--all', '01M8QBAF58C2BR1N', '--config', started.configFile]);
      expect(result).toEqual({ code: 3, stdout: '', stderr: `postern: queue ${verb} needs message ids or --all, not both\n` });
    });

    it.each(['hold', 'delete', 'bounce'])('refuses %s with neither ids nor --all (exit 3); `-` with nothing on stdin changes nothing (exit 0)', async (verb) => {
      expect(await postern(['queue', verb, '--config', started.configFile])).toEqual({ code: 3, stdout: '', stderr: `postern: queue ${verb} needs message ids or --all\n` });
      expect(await postern(['queue', verb, '-', '--config', started.configFile], { input: '' })).toEqual({ code: 0, stdout: `${verb}: 0 messages\n`, stderr: '' });
    });
  });

  describe('postern queue retry of a message in flight', () => {
    const started = useTestRelay();

    // A lease another process holds (it may have died on its machine): retry leaves that delivery, and says so.
    it('says an attempt is under way, by whom and until when, and that it sets its own next attempt', async () => {
      const { relay, configFile } = started;
      const id = await submitMessage(relay, { from: 'a@example.test', to: ['r@example.org'], marker: 'in-flight' });
      const store = await openQueueStore(relay.config);
      try {
        expect(await store.claimDue({ now: new Date(Date.now() + 1000), limit: 10, leaseMs: 600_000, owner: 'other-machine/4242/abc' })).toHaveLength(1);
      } finally {
        await store.close();
      }
      const retried = await postern(['queue', 'retry', id, '--config', configFile]);
      expect(retried.code).toBe(0);
      expect(retried.stdout).toBe(`retry: 1 message (${id})\n`);
      // queue list marks it, as postqueue -p marks an active message.
      const listed = (await postern(['queue', 'list', '--config', configFile])).stdout.split('\n');
      expect(listed[listed.findIndex((l) => l.startsWith(id)) + 1]).toMatch(/^ {4}being delivered now \(lease until \d{4}-/);
      expect(retried.stderr).toMatch(new RegExp(`^postern: ${id}: an attempt is under way \\(other-machine/4242/abc, lease until \\d{4}-[^)]+\\); it sets its own next attempt: retry again once it ends\\n$`));
    });
  });

  describe('postern queue bounce of a message in flight', () => {
    const started = useTestRelay();

    // The attempt under way keeps its recipients; the other delivery of the message is returned.
    it('returns what no attempt holds, names the attempt under way, and leaves a message wholly in flight unchanged (exit 1)', async () => {
      const { relay, configFile } = started;
      const partly = await submitMessage(relay, { from: 'a@example.test', to: ['r@example.org', 's@example.net'], marker: 'bounce-partly' });
      const store = await openQueueStore(relay.config);
      try {
        const claims = await store.claimDue({ now: new Date(Date.now() + 1000), limit: 10, leaseMs: 600_000, owner: 'other-machine/4242/abc' });
        expect(claims.map((c) => c.domain).sort()).toEqual(['example.net', 'example.org']);
        for (const c of claims.filter((c) => c.domain !== 'example.org')) await store.releaseLease({ deliveryId: c.deliveryId, owner: 'other-machine/4242/abc' });
      } finally {
        await store.close();
      }
      const bounced = await postern(['queue', 'bounce', partly, '--config', configFile]);
      expect(bounced.stdout).toBe(`bounce: 1 message (${partly})\n`);
      expect(bounced.stderr).toMatch(new RegExp(`^postern: ${partly}: an attempt is under way \\(other-machine/4242/abc, lease until \\d{4}-[^)]+\\); its recipients were left to it: bounce again once it ends\\n$`));
      expect(bounced.code).toBe(0);
      const shown = JSON.parse((await postern(['queue', 'show', partly, '--json', '--config', configFile])).stdout) as { state: string; recipientStates: { address: string; state: string }[] };
      expect(shown.recipientStates.map((r) => [r.address, r.state])).toEqual([['r@example.org', 'queued'], ['s@example.net', 'bounced']]);

      // Now only the attempt's delivery is left: nothing to bounce.
      const again = await postern(['queue', 'bounce', partly, '--config', configFile]);
      expect(again).toEqual({ code: 1, stdout: 'bounce: 0 messages\n', stderr: `postern: ${partly} not changed: an attempt is under way: bounce it again once it ends\n` });
    });
  });

  describe('postern queue cat', () => {
    const started = useTestRelay();

    // As postcat: a reader that stops early (| head) is no error.
    it('stops quietly, exit 0, when the reader closes the pipe early', async () => {
      const { relay, configFile } = started;
      const id = await submitMessage(relay, { from: 'a@example.test', to: ['r@example.org'], raw: `Subject: big\r\n\r\n${'y'.repeat(990)}\r\n`.repeat(300) });
      const piped = await new Promise<{ code: number; stderr: string }>((resolve) => {
        execFile('/bin/bash', ['-o', 'pipefail', '-c', `"${process.execPath}" "${POSTERN_BIN}" queue cat ${id} --config "${configFile}" | head -c 10 >/dev/null`], { env: inheritedEnv() }, (err, _stdout, stderr) =>
          resolve({ code: err ? Number(err.code) : 0, stderr }),
        );
      });
      expect(piped).toEqual({ code: 0, stderr: '' });
    });
  });
});
