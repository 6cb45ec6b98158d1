// A private Postfix instance for the bench (Debian's postfix package): its
// own config_directory, queue and data directories under the bench's temp
// directory (same disk as Postern's queue), smtpd on 127.0.0.1:PORT only,
// every message relayed to [127.0.0.1]:SINK. The system instance is never
// touched. Durability: cleanup(8) fsyncs every queue file before smtpd
// answers 250 (mail_stream.c, compiled in with HAS_FSYNC; there is no
// parameter to turn it off), so both relays answer only after fsync.
//
// Settings are Debian's defaults except what the bench needs: loopback,
// relayhost, no local delivery, a 50 MB size limit (10 MB scenario), the
// bench certificate (ECDSA P-256, like Postern's), chroot off (no files to
// copy into a jail), smtpd maxproc 1100 (the 1,000 idle connections), and
// the smtp client's TLS session cache as Debian's main.cf has it.
//
//   startPostfix - write the config, check it, start the master, wait for the 220.
//   PostfixInstance.stop - postfix stop, wait for the master to go (kill -9 after 20 s).
//   stopPostfixNow - the synchronous stop for process 'exit' handlers.
//
// How it fails: startPostfix rejects with postfix's own output when check
// or start fails, or when no 220 comes within 15 s (the maillog is quoted).
import { execFile, execFileSync } from 'node:child_process';
import { chown, copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BenchCertificates } from './certs.ts';
import { isRunning, killSnapshot, snapshotTree } from './proc-tree.ts';
import { waitForGreeting } from './probe.ts';

const run = promisify(execFile);

export interface PostfixOptions {
  /** An empty directory for this instance (etc/, queue/, data/, maillog). */
  dir: string;
  port: number;
  sinkPort: number;
  certs: BenchCertificates;
}

export interface PostfixInstance {
  port: number;
  /** The master's pid: every Postfix process of the instance is its descendant. */
  rootPid: number;
  configDir: string;
  stop(): Promise<void>;
}

/** mainCf - the instance's main.cf. */
function mainCf(options: PostfixOptions): string {
  const { dir, sinkPort, certs } = options;
  return `# Written by bench/postfix-instance.ts for one bench run.
compatibility_level = 3.6
queue_directory = ${dir}/queue
data_directory = ${dir}/data
mail_owner = postfix
setgid_group = postdrop
myhostname = postfix.bench.test
mydomain = bench.test
myorigin = $myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mydestination =
local_recipient_maps =
local_transport = error:local delivery is disabled
alias_maps =
alias_database =
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks defer_unauth_destination
relayhost = [127.0.0.1]:${sinkPort}
message_size_limit = 52428800
biff = no
append_dot_mydomain = no
maillog_file = ${dir}/maillog
maillog_file_prefixes = ${dir}
smtpd_tls_security_level = may
smtpd_tls_chain_files = ${certs.keyFile}, ${certs.certFile}
smtp_tls_security_level = may
smtp_tls_session_cache_database = btree:\${data_directory}/smtp_scache
`;
}

/** startPostfix - a running private instance answering 220 on 127.0.0.1:port. */
export async function startPostfix(options: PostfixOptions): Promise<PostfixInstance> {
  const configDir = join(options.dir, 'etc');
  const dataDir = join(options.dir, 'data');
  await mkdir(configDir, { recursive: true });
  await mkdir(join(options.dir, 'queue'), { recursive: true, mode: 0o755 });
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const postfixUser = execFileSync('id', ['-u', 'postfix'], { encoding: 'utf8' }).trim();
  await chown(dataDir, Number(postfixUser), 0);
  await copyFile('/etc/postfix/master.cf', join(configDir, 'master.cf'));
  await writeFile(join(configDir, 'main.cf'), mainCf(options));
  const postconf = (...args: string[]) => run('postconf', ['-c', configDir, ...args]);
  // The system's "smtp inet" service goes; ours listens on loopback only, up to 1,100 sessions.
  await postconf('-M#', 'smtp/inet');
  await postconf('-M', `127.0.0.1:${options.port}/inet=127.0.0.1:${options.port} inet n - n - 1100 smtpd`);
  await postconf('-F', '*/*/chroot = n');
  await postfixCommand(configDir, 'check');
  await postfixCommand(configDir, 'start');
  const rootPid = Number((await readFile(join(options.dir, 'queue', 'pid', 'master.pid'), 'utf8')).trim());
  const instance: PostfixInstance = { port: options.port, rootPid, configDir, stop: () => stopPostfix(configDir, rootPid) };
  try {
    await waitForGreeting(options.port, 15_000);
  } catch (err) {
    const log = await readFile(join(options.dir, 'maillog'), 'utf8').catch(() => '');
    await instance.stop();
    throw new Error(`Postfix did not answer on 127.0.0.1:${options.port}: ${(err as Error).message}\n${log.slice(-2000)}`);
  }
  return instance;
}

async function postfixCommand(configDir: string, command: string): Promise<void> {
  try {
    await run('postfix', ['-c', configDir, command]);
  } catch (err) {
    const e = err as Error & { stderr?: string; stdout?: string };
    throw new Error(`postfix -c ${configDir} ${command} failed: ${e.stderr ?? ''}${e.stdout ?? ''}${e.message}`);
  }
}

async function stopPostfix(configDir: string, rootPid: number): Promise<void> {
  const tree = snapshotTree(rootPid);
  await run('postfix', ['-c', configDir, 'stop']).catch(() => undefined);
  const deadline = Date.now() + 20_000;
  while (isRunning(rootPid) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
  killSnapshot(tree);
}

/** stopPostfixNow - synchronous stop (process 'exit' handlers): postfix stop, then kill -9 what is left. */
export function stopPostfixNow(instance: Pick<PostfixInstance, 'configDir' | 'rootPid'>): void {
  const tree = snapshotTree(instance.rootPid);
  try {
    execFileSync('postfix', ['-c', instance.configDir, 'stop'], { stdio: 'ignore', timeout: 10_000 });
  } catch {
    // fall through to kill -9
  }
  killSnapshot(tree);
}
