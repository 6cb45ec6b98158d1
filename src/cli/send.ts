// `postern send`: test mail from scripts and people. Builds (or reads) one
// message, sends it over one SMTP session in the mode asked for (STARTTLS,
// TLS from the first byte, or plaintext), prints the exchange with AUTH
// hidden, the TLS facts and the queue id, and exits with a code a script
// can test:
//   0 accepted, 1 rejected by the server (4xx/5xx to AUTH, MAIL, RCPT or
//   DATA), 2 could not connect or TLS failed (an untrusted certificate
//   included, unless --insecure), 3 bad arguments (commander's too).
// Defaults fit a local Postern: 127.0.0.1, port 2587 with STARTTLS (2465
// with --tls, 2525 with --plain), trusting the dev CA certs/ca.crt, or the
// ca.crt beside tls.cert when --config is given.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { loadConfigOrExit } from './context.ts';
import { promptHidden } from './prompt.ts';
import type { TlsMode } from './send-hints.ts';
import { composeMessage, readAll, splitPasswordLine } from './send-message.ts';
import { describeTls, sendMessage, type SendOutcome, type SendTarget } from './send-session.ts';

export const EXIT_ACCEPTED = 0;
export const EXIT_REJECTED = 1;
export const EXIT_FAILED = 2;
export const EXIT_USAGE = 3;

// Postern's own listeners (README): what a bare `postern send` talks to in each mode.
const DEFAULT_HOST = '127.0.0.1';
const DEFAULT_PORTS: Record<TlsMode, number> = { starttls: 2587, tls: 2465, plain: 2525 };
const DEFAULT_CA = 'certs/ca.crt';

interface SendOptions {
  server?: { host: string; port?: number };
  starttls?: boolean;
  tls?: boolean;
  plain?: boolean;
  auth?: string;
  passwordStdin?: boolean;
  from: string;
  to: string[];
  subject?: string;
  body?: string;
  file?: string;
  attach?: string[];
  ca?: string;
  insecure?: boolean;
  timeout: number;
  json?: boolean;
}

/** A bad argument found after commander's own checks: exit 3. */
class UsageError extends Error {}

/** registerSendCommand - add `send` to the program. */
export function registerSendCommand(program: Command): void {
  const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];
  program
    .command('send')
    .description('send a test message and show the SMTP exchange (exit 0 accepted, 1 rejected, 2 no connection/TLS, 3 bad arguments)')
    .addOption(new Option('--server <host:port>', `server to send to (default ${DEFAULT_HOST}:${DEFAULT_PORTS.starttls}; port 2465 with --tls, 2525 with --plain)`).argParser(parseServer))
    .addOption(new Option('--starttls', 'plaintext first, then STARTTLS, which must succeed (the default; ports 587/2587)').conflicts(['tls', 'plain']))
    .addOption(new Option('--tls', 'TLS from the first byte (ports 465/2465)').conflicts(['starttls', 'plain']))
    .addOption(new Option('--plain', 'no TLS at all (relay port from a trusted network)').conflicts(['starttls', 'tls']))
    .option('--auth <user>', 'log in as this user (AUTH; the password from --password-stdin or a prompt)')
    .option('--password-stdin', 'read the password from the first line of stdin (the rest, if any, is the body)')
    .requiredOption('--from <address>', 'envelope sender and From:')
    .requiredOption('--to <address>', 'envelope recipient and To: (repeat for more)', collect)
    .option('--subject <text>', 'Subject: (default "Test message from postern send")')
    .addOption(new Option('--body <text>', 'the text body (default: stdin when it is not a terminal)').conflicts('file'))
    .addOption(new Option('--file <file.eml>', 'send this RFC 5322 message as it is ("-" for stdin)').conflicts(['subject', 'attach']))
    .option('--attach <file>', 'attach a file (repeat for more)', collect)
    .addOption(new Option('--ca <file>', `trust this CA (PEM) besides the system's (default ${DEFAULT_CA} when present)`).conflicts('insecure'))
    .option('--insecure', 'send even when the certificate does not verify (the result is still shown)')
    .option('--timeout <seconds>', 'give up connecting or waiting for the greeting after this long, waiting for a reply after twice this', parseSeconds, 30)
    .option('--json', 'one JSON object on stdout: accepted, queueId, server, tls, transcript, error')
    // Usage errors exit 3, not commander's 1 (which means "rejected" here); help still exits 0.
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE))
    .action(async (options: SendOptions, command: Command) => {
      // `postern send … | head`: a reader that goes away must not turn an accepted message into a crash.
      process.stdout.on('error', (err: NodeJS.ErrnoException) => {
        if (err.code !== 'EPIPE') throw err;
      });
      process.exitCode = await runSend(options, command.optsWithGlobals<{ config?: string }>().config).catch((err: unknown) => {
        if (!(err instanceof UsageError)) throw err;
        process.stderr.write(`postern send: ${err.message}\n`);
        return EXIT_USAGE;
      });
    });
}

/** runSend - check the arguments, build the message, send it, print; the exit code. */
async function runSend(options: SendOptions, configFile: string | undefined): Promise<number> {
  const mode: TlsMode = options.tls ? 'tls' : options.plain ? 'plain' : 'starttls';
  checkAddresses([options.from, ...options.to]);
  if (options.auth && mode === 'plain') throw new UsageError('--auth over --plain would send the password in clear: use --starttls or --tls');
  if (options.passwordStdin && !options.auth) throw new UsageError('--password-stdin needs --auth USER');
  const target: SendTarget = {
    host: options.server?.host ?? DEFAULT_HOST,
    port: options.server?.port ?? DEFAULT_PORTS[mode],
    mode,
    ...(await trustedCa(options, configFile)),
    insecure: options.insecure ?? false,
    timeoutMs: Math.round(options.timeout * 1000),
  };
  const { password, stdinBody } = await readInputs(options);
  const message = await messageBytes(options, stdinBody);

  const echo = options.json ? undefined : (line: string) => process.stdout.write(`${line}\n`);
  echo?.(`-- postern send to ${target.host}:${target.port} (${mode === 'tls' ? 'TLS' : mode === 'starttls' ? 'STARTTLS' : 'plaintext'})`);
  const outcome = await sendMessage({
    target,
    from: options.from,
    to: options.to,
    message,
    echo,
    ...(options.auth ? { auth: { user: options.auth, pass: password ?? '' } } : {}),
  });
  if (options.json) process.stdout.write(JSON.stringify(jsonReport(outcome, target)) + '\n');
  else printSummary(outcome, mode);
  return outcome.status === 'accepted' ? EXIT_ACCEPTED : outcome.status === 'rejected' ? EXIT_REJECTED : EXIT_FAILED;
}

/** parseServer - "host:port", "[v6]:port", or a host alone (the port then follows the mode). */
export function parseServer(value: string): { host: string; port?: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+))(?::(\d+))?$/.exec(value.trim());
  if (!match) throw new InvalidArgumentError('expected HOST:PORT, HOST, or [IPv6]:PORT');
  const host = (match[1] ?? match[2])!;
  if (match[3] === undefined) return { host };
  const port = Number(match[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InvalidArgumentError('the port must be from 1 to 65535');
  return { host, port };
}

function parseSeconds(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0) throw new InvalidArgumentError('expected a number of seconds above 0');
  return seconds;
}

function checkAddresses(addresses: string[]): void {
  // What would break the command line on the wire (RFC 5321 4.1.2 has no spaces, brackets or controls in a path).
  for (const address of addresses) if (!address || /[\s<>\x00-\x1f\x7f]/.test(address)) throw new UsageError(`not a mail address: ${JSON.stringify(address)}`);
}

/** trustedCa - --ca, else the dev CA (beside tls.cert with --config, else certs/ca.crt) when it exists; none with --insecure. */
async function trustedCa(options: SendOptions, configFile: string | undefined): Promise<Pick<SendTarget, 'ca' | 'caSource'>> {
  if (options.insecure) return { ca: [] };
  if (options.ca) {
    const pem = await readFile(options.ca, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read --ca ${options.ca}: ${err.code ?? err.message}`);
    });
    return { ca: [pem], caSource: options.ca };
  }
  const file = configFile ? join(dirname(loadConfigOrExit(configFile).config.tls.cert), 'ca.crt') : DEFAULT_CA;
  return existsSync(file) ? { ca: [await readFile(file, 'utf8')], caSource: file } : { ca: [] };
}

/** readInputs - the password and the body from stdin, as the options say; a prompt for the password on a terminal. */
async function readInputs(options: SendOptions): Promise<{ password?: string; stdinBody?: Buffer }> {
  const bodyFromStdin = options.file === '-' || (options.body === undefined && options.file === undefined && !process.stdin.isTTY);
  if (options.auth && !options.passwordStdin && !process.stdin.isTTY) throw new UsageError('--auth needs --password-stdin when stdin is not a terminal');
  if (options.passwordStdin) {
    const { password, rest } = splitPasswordLine(await readAll(process.stdin));
    return { password, stdinBody: bodyFromStdin ? rest : undefined };
  }
  const stdinBody = bodyFromStdin ? await readAll(process.stdin) : undefined;
  if (!options.auth) return { stdinBody };
  return { password: await promptHidden(`Password for ${options.auth}: `), stdinBody };
}

/** messageBytes - --file as it is, else a message composed from --body / stdin and --attach. */
async function messageBytes(options: SendOptions, stdinBody: Buffer | undefined): Promise<Buffer> {
  if (options.file === '-') return stdinBody ?? Buffer.alloc(0);
  if (options.file) {
    return readFile(options.file).catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`cannot read --file ${options.file}: ${err.code ?? err.message}`);
    });
  }
  const body = options.body ?? stdinBody?.toString('utf8');
  return composeMessage({ from: options.from, to: options.to, subject: options.subject, body, attach: options.attach ?? [] }).catch((err: NodeJS.ErrnoException) => {
    throw new UsageError(`cannot read --attach: ${err.path ?? ''} ${err.code ?? err.message}`.trim());
  });
}

function printSummary(outcome: SendOutcome, mode: TlsMode): void {
  process.stdout.write(`TLS: ${outcome.tls ? describeTls(outcome.tls) : mode === 'plain' ? 'none (plaintext)' : 'not established'}\n`);
  if (outcome.status === 'accepted') {
    process.stdout.write(`Accepted: queue id ${outcome.queueId ?? '(the server did not say)'}\n`);
    return;
  }
  for (const r of outcome.rejectedRecipients) process.stderr.write(`postern send: recipient ${r.address} refused: ${r.reply}\n`);
  if (outcome.rejectedRecipients.length && outcome.queueId) process.stdout.write(`Accepted for the other recipients: queue id ${outcome.queueId}\n`);
  if (outcome.error) process.stderr.write(`postern send: ${outcome.status}: ${outcome.error.reply ?? outcome.error.message}\n`);
  if (outcome.hint) process.stderr.write(`hint: ${outcome.hint}\n`);
}

function jsonReport(outcome: SendOutcome, target: SendTarget) {
  return {
    accepted: outcome.status === 'accepted',
    status: outcome.status,
    queueId: outcome.queueId ?? null,
    server: `${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`,
    mode: target.mode,
    tls: outcome.tls ? { version: outcome.tls.version, cipher: outcome.tls.cipher, verified: outcome.tls.verified, verifyError: outcome.tls.verifyError ?? null } : null,
    reply: outcome.reply ?? null,
    rejectedRecipients: outcome.rejectedRecipients,
    transcript: outcome.transcript,
    ...(outcome.error ? { error: outcome.error } : {}),
    ...(outcome.hint ? { hint: outcome.hint } : {}),
  };
}
