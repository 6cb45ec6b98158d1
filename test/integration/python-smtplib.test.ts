// Python's smtplib as an independent, strict client on the submission port:
// STARTTLS with certificate and host name verification on (the test CA,
// server_hostname 'localhost'), AUTH PLAIN and LOGIN, sendmail. The queue id
// in the final reply must be in the queue, over TLS 1.3; a wrong password
// must surface as smtplib's SMTPAuthenticationError with 535.
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const run = promisify(execFile);

// argv: port cafile mechanism user password. Prints one JSON line; exits 2 on an authentication failure.
const SCRIPT = `
import json, smtplib, ssl, sys
from email.message import EmailMessage

port, cafile, mechanism, user, password = sys.argv[1:6]
context = ssl.create_default_context(cafile=cafile)
assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname

message = EmailMessage()
message['From'] = user + '@example.test'
message['To'] = 'bob@example.org'
message['Subject'] = 'from smtplib'
message.set_content('sent by python smtplib\\n')

with smtplib.SMTP('localhost', int(port), timeout=20) as smtp:
    smtp.ehlo('python.test')
    smtp.starttls(context=context)  # verifies the certificate for 'localhost'
    smtp.ehlo('python.test')
    smtp.user, smtp.password = user, password
    try:
        smtp.auth(mechanism, getattr(smtp, 'auth_' + mechanism.lower()))
    except smtplib.SMTPAuthenticationError as e:
        print(json.dumps({'error': type(e).__name__, 'code': e.smtp_code, 'message': e.smtp_error.decode()}))
        sys.exit(2)
    # sendmail keeps the DATA reply to itself: record it on the way through.
    data_replies = []
    data = smtp.data
    smtp.data = lambda msg: data_replies.append(data(msg)) or data_replies[-1]
    refused = smtp.sendmail(message['From'], [message['To']], message.as_bytes())
    code, text = data_replies[-1]
    print(json.dumps({'tls': smtp.sock.version(), 'refused': refused, 'code': code, 'reply': text.decode()}))
`;

interface ScriptResult {
  tls?: string;
  refused?: Record<string, unknown>;
  code: number;
  reply?: string;
  error?: string;
  message?: string;
}

let relay: TestRelay;
let script: string;

beforeAll(async () => {
  relay = await startTestRelay();
  await relay.addUser('alice', 'correct horse');
  script = join(relay.dir, 'send.py');
  await writeFile(script, SCRIPT);
});
afterAll(async () => relay?.stop());

/** sendWithPython - run the script; its exit code and the JSON line it printed. */
async function sendWithPython(mechanism: 'PLAIN' | 'LOGIN', password: string): Promise<{ exitCode: number; result: ScriptResult }> {
  const args = [script, String(relay.ports.submission), join(relay.dir, 'ca.crt'), mechanism, 'alice', password];
  try {
    const { stdout } = await run('python3', args, { timeout: 30_000 });
    return { exitCode: 0, result: JSON.parse(stdout) as ScriptResult };
  } catch (err) {
    const failed = err as { code?: number; stdout?: string; stderr?: string };
    if (typeof failed.code !== 'number' || !failed.stdout) throw new Error(`python3 failed: ${failed.stderr ?? String(err)}`);
    return { exitCode: failed.code, result: JSON.parse(failed.stdout) as ScriptResult };
  }
}

describe('python smtplib on the submission port', () => {
  it.each(['PLAIN', 'LOGIN'] as const)('sends over STARTTLS with AUTH %s, and the queue id it gets is queued', async (mechanism) => {
    const { exitCode, result } = await sendWithPython(mechanism, 'correct horse');
    expect(exitCode).toBe(0);
    expect(result).toMatchObject({ tls: 'TLSv1.3', refused: {}, code: 250 });
    expect(result.reply).toMatch(/^2\.0\.0 Ok: queued as [0-9A-Za-z]{16}$/);
    const id = result.reply!.split(' ').at(-1)!;
    expect((await relay.queued()).find((m) => m.id === id)).toMatchObject({ mailFrom: 'alice@example.test', recipients: ['bob@example.org'] });
    expect((await relay.body(id)).toString()).toMatch(/with ESMTPSA id \w+\r\n\tfor <bob@example\.org>;/);
  });

  it('reports a wrong password as SMTPAuthenticationError 535', async () => {
    const { exitCode, result } = await sendWithPython('PLAIN', 'wrong password');
    expect(exitCode).toBe(2);
    expect(result).toEqual({ error: 'SMTPAuthenticationError', code: 535, message: '5.7.8 Error: authentication failed' });
  });
});
