// docs/clients.md's script examples, run as printed against a live Postern.
// Each fenced block tagged `test=NAME` is taken from the document and run
// (sh for swaks and curl, python3, node for nodemailer) in a temp directory
// laid out like the one Postern runs in (certs/ca.crt), with one textual
// change: the default ports 2587 / 2465 / 2525 become the test relay's. The
// relay has the user alice / s3cret the examples log in as. Each example must
// exit 0, print the relay's "queued as" reply where the tool shows it, and
// leave exactly one new message from alice@example.test to bob@example.test
// in the queue, whose id is the one printed; and with a CA that did not sign
// the relay's certificate, every one of them must fail. swaks, curl and python3 are
// required (CI installs them): a missing tool fails with how to install it.
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCertificateAuthority } from '../../src/tls/dev-certs.ts';
import { ROOT } from '../helpers/container-files.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const DOC = join(ROOT, 'docs', 'clients.md');

interface Example {
  name: string;
  language: string;
  code: string;
}

/** examplesIn - the fenced blocks whose info string carries test=NAME. */
function examplesIn(markdown: string): Example[] {
  const out: Example[] = [];
  for (const m of markdown.matchAll(/^```(\w+)[ \t]+([^\n]*)\n([\s\S]*?)^```[ \t]*$/gm)) {
    const name = /(?:^|\s)test=([\w-]+)/.exec(m[2]!)?.[1];
    if (name) out.push({ name, language: m[1]!, code: m[3]! });
  }
  return out;
}

// Every example the document must keep, and whether the tool prints the relay's final reply.
const EXPECTED: Record<string, { language: string; printsReply: boolean }> = {
  'swaks-submission': { language: 'sh', printsReply: true },
  'swaks-submissions': { language: 'sh', printsReply: true },
  'swaks-relay': { language: 'sh', printsReply: true },
  'smtplib-starttls': { language: 'python', printsReply: false },
  'smtplib-tls': { language: 'python', printsReply: false },
  'curl-starttls': { language: 'sh', printsReply: true },
  'curl-tls': { language: 'sh', printsReply: true },
  'nodemailer-starttls': { language: 'js', printsReply: true },
  'nodemailer-tls': { language: 'js', printsReply: true },
};

let relay: TestRelay;
let work: string;
let examples: Example[];

function exec(command: string, args: string[], cwd: string): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    execFile(command, args, { cwd, timeout: 30_000, env: { ...process.env, LC_ALL: 'C' } }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, output: `${stdout}${stderr}` }),
    );
  });
}

/** requireTool - the tool answers, or the test fails saying how to install it. */
async function requireTool(command: string, args: string[], mustContain: RegExp, install: string): Promise<void> {
  const { code, output } = await exec(command, args, tmpdir());
  if (code !== 0 && !mustContain.test(output)) throw new Error(`${command} is needed to run docs/clients.md's examples and could not be run (${output.trim() || code}): ${install}`);
  if (!mustContain.test(output)) throw new Error(`this ${command} lacks what the examples use (${String(mustContain)}): ${install}`);
}

/** localise - the example with the default ports replaced by the test relay's (a whole-number match only). */
function localise(code: string): string {
  const ports: Record<string, number> = { '2587': relay.ports.submission, '2465': relay.ports.submissions, '2525': relay.ports.relay };
  return code.replace(/(?<!\d)(2587|2465|2525)(?!\d)/g, (p) => String(ports[p]));
}

async function runExample(example: Example, caPem = relay.ca.certPem): Promise<{ code: number; output: string }> {
  const dir = await mkdtemp(join(work, `${example.name}-`));
  await mkdir(join(dir, 'certs'));
  await writeFile(join(dir, 'certs', 'ca.crt'), caPem);
  const code = localise(example.code);
  switch (example.language) {
    case 'sh':
      return exec('sh', ['-e', '-c', code], dir);
    case 'python':
      await writeFile(join(dir, 'example.py'), code);
      return exec('python3', ['example.py'], dir);
    case 'js':
      // As in a project that installed nodemailer: node_modules beside the script.
      await symlink(join(ROOT, 'node_modules'), join(dir, 'node_modules'));
      await writeFile(join(dir, 'example.mjs'), code);
      return exec(process.execPath, ['example.mjs'], dir);
    default:
      throw new Error(`no runner for ${example.language}`);
  }
}

beforeAll(async () => {
  examples = examplesIn(await readFile(DOC, 'utf8'));
  await requireTool('swaks', ['--version'], /swaks version/, 'apt-get install swaks');
  await requireTool('curl', ['-V'], /^Protocols:.*\bsmtp\b.*\bsmtps\b/m, 'apt-get install curl');
  await requireTool('python3', ['--version'], /Python 3\./, 'apt-get install python3');
  relay = await startTestRelay();
  await relay.addUser('alice', 's3cret');
  work = await mkdtemp(join(tmpdir(), 'postern-client-examples-'));
});
afterAll(async () => {
  await relay?.stop();
  if (work) await rm(work, { recursive: true, force: true });
});

describe('docs/clients.md', () => {
  it('has every tested example, and nothing tagged that the test does not know how to run', () => {
    expect(Object.fromEntries(examples.map((e) => [e.name, e.language]))).toEqual(Object.fromEntries(Object.entries(EXPECTED).map(([name, e]) => [name, e.language])));
    // The examples are written with the defaults a reader has: the substitution above has something to do.
    for (const e of examples) expect(e.code, e.name).toMatch(/(?<!\d)(2587|2465|2525)(?!\d)/);
    for (const e of examples) expect(e.code, e.name).toContain('certs/ca.crt');
  });

  for (const [name, expected] of Object.entries(EXPECTED)) {
    it(`${name} runs as printed and its message is queued`, async () => {
      const example = examples.find((e) => e.name === name)!;
      expect(example, name).toBeDefined();
      const before = new Set((await relay.queued()).map((m) => m.id));
      const result = await runExample(example);
      expect(result.code, result.output).toBe(0);
      const added = (await relay.queued()).filter((m) => !before.has(m.id));
      expect(added, result.output).toHaveLength(1);
      expect(added[0]).toMatchObject({ mailFrom: 'alice@example.test', recipients: ['bob@example.test'], state: 'queued' });
      if (expected.printsReply) {
        expect(result.output).toMatch(/250 2\.0\.0 Ok: queued as \w+/);
        expect(/queued as (\w+)/.exec(result.output)?.[1]).toBe(added[0]!.id);
      }
      // The message is the example's own (its Subject names the tool).
      const body = (await relay.body(added[0]!.id)).toString();
      expect(body).toMatch(/^Subject: Hello from /m);
    });
  }

  it('every example really verifies the certificate: with a CA that did not sign it, each fails and nothing is queued', async () => {
    const stranger = (await generateCertificateAuthority({ commonName: 'Unrelated CA' })).certPem;
    const before = (await relay.queued()).length;
    for (const example of examples) {
      const result = await runExample(example, stranger);
      expect(result.code, `${example.name} must refuse the certificate:\n${result.output}`).not.toBe(0);
    }
    expect(await relay.queued()).toHaveLength(before);
  });
});
