// `postern serve`: the composition root of the running relay. Builds the
// real things (store, TLS, users, limiter, listeners, scheduler, metrics,
// the HTTP listener) from the config and wires them; no module below does
// I/O or reads config on import.
// Fails: a bad config exits 78 naming the key; a port in use or an
// unreadable certificate or token file stops the start with the file or
// port named.
import { randomBytes } from 'node:crypto';
import { Resolver } from 'node:dns';
import { existsSync, readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { dirname, resolve } from 'node:path';
import type { Config, ListenerName } from '../config/config.ts';
import { LISTENER_NAMES } from '../config/config.ts';
import { fileProblems, usesDevCertificates } from '../config/files.ts';
import { ConfigError } from '../config/load.ts';
import { durationMs } from '../config/values.ts';
import { createAuthLimiter } from '../inbound/auth-limiter.ts';
import { ConnectionCounts } from '../inbound/connection-counts.ts';
import { HOSTS_FILE, readHostsFile, type NameResolver } from '../inbound/client-name.ts';
import { createListener, type InboundListener } from '../inbound/listener.ts';
import { compileNetworks, type NetworkMatcher } from '../inbound/networks.ts';
import { UserStore } from '../inbound/user-store.ts';
import { decideQueueSpace, queueSpaceToKeep } from '../inbound/policy.ts';
import { installExactReplies } from '../inbound/wire-replies.ts';
import { installCommandGuard } from '../inbound/command-guard.ts';
import { createHealthChecks } from '../observability/health.ts';
import { autoconfigXml, createHttpServer, type HttpListener } from '../observability/http-server.ts';
import { createLogger, type Logger } from '../observability/logger.ts';
import { createMetrics, type Metrics } from '../observability/metrics.ts';
import { deliver } from '../outbound/deliver.ts';
import { createMtaStsPolicies, type MtaStsPolicies } from '../outbound/mta-sts.ts';
import { relaySelf } from '../outbound/mx-targets.ts';
import { SessionPool } from '../outbound/session-pool.ts';
import { createResolver, type DnsResolver } from '../outbound/mx-resolver.ts';
import { probeRelayhost } from '../outbound/relayhost-probe.ts';
import type { SessionSettings } from '../outbound/smtp-session.ts';
import { createDonePurge, RELAY_SWEEP, type DonePurge } from '../queue/done-purge.ts';
import { createInFlowGate, type InFlowGate } from '../queue/in-flow.ts';
import { leaseOwnerName, leaseOwnersGone, type LeaseOwner } from '../queue/lease-owner.ts';
import { openQueueStore } from '../queue/open-store.ts';
import type { QueueStore } from '../queue/queue-store.ts';
import { createScheduler, type Scheduler } from '../queue/scheduler.ts';
import { ensureDevCertificates } from '../tls/dev-certs.ts';
import { installCommandFragments } from '../smtp/command-fragments.ts';
import { installFastDataScan } from '../smtp/fast-data-scan.ts';
import { installGreetingPause } from '../smtp/greeting-pause.ts';
import { installHalfClose } from '../smtp/half-close.ts';
import { installProxyHeader } from '../smtp/proxy-header.ts';
import { createServerTls, type ServerTls } from '../tls/server-tls.ts';
import { createQueueApi } from './queue.ts';

export interface RunningRelay {
  listeners: { name: ListenerName; host: string; port: number }[];
  /** The dev CA clients should trust, when Postern made the certificates. */
  caFile?: string;
  fingerprint: string;
  /** Absent with outbound.enabled false. */
  scheduler?: Scheduler;
  /** The retention sweep of done messages (queue.keepDone). */
  donePurge: DonePurge;
  /** The HTTP listener (admin API, /metrics, health); absent with http.enabled false. */
  http?: { host: string; port: number };
  stop(): Promise<void>;
}


/** startRelay - everything up and listening; stop() closes it in reverse order. */
export interface RelayOptions {
  /** The clock the scheduler uses (tests move it forward instead of waiting). */
  now?: () => Date;
  /** The monotonic clock deliveries' durations are taken on, for in-flow control (tests move it forward). */
  elapsed?: () => number;
}

export async function startRelay(config: Config, logger: Logger, options: RelayOptions = {}): Promise<RunningRelay> {
  await installExactReplies();
  await installCommandGuard();
  await installGreetingPause();
  await installFastDataScan();
  await installCommandFragments();
  await installHalfClose();
  await installProxyHeader();
  const now = options.now ?? (() => new Date());
  const unreadable = fileProblems(config);
  if (unreadable.length > 0) throw new ConfigError(unreadable);
  const caFile = await prepareCertificates(config, logger);
  const httpToken = readHttpToken(config);
  const store = await openQueueStore(config, { logger, removeOrphans: true });
  const leaseOwner: LeaseOwner = { machine: hostname(), pid: process.pid, token: randomBytes(4).toString('hex') };
  await takeBackLeases(store, leaseOwner, now(), logger);
  await warnIfQueueSpaceLow(store, config, logger);
  const tls = await createServerTls(
    { certFile: config.tls.cert, keyFile: config.tls.key, sni: config.tls.sni, clientCaFile: config.tls.clientCa || undefined, minVersion: config.tls.minVersion },
    logger,
  );
  const metrics = createMetrics();
  const outbound = config.outbound.enabled ? outboundParts(config, store, logger, now) : undefined;
  // Arrivals are slowed to the delivery rate only where this process delivers, and not while its
  // deliveries show the next hops as the limit.
  const inFlow = outbound ? createInFlowGate(config.smtp.inFlowDelay * 1000) : undefined;
  // Filled as the listeners start, before the scheduler does: delivery reads it to know an MX that is this relay.
  const listeners: RunningRelay['listeners'] = [];
  const scheduler = outbound ? createDeliveryScheduler({ config, store, outbound, listeners, leaseOwner, inFlow, logger, now, elapsed: options.elapsed, metrics }) : undefined;
  if (inFlow && scheduler) inFlow.paceFrom(() => scheduler.nextHopsSetPace());
  const shared = {
    onQueued: scheduler ? () => scheduler.wake() : undefined,
    inFlow,
    config,
    tls,
    store,
    users: new UserStore(config.relay.users),
    authLimiter: createAuthLimiter({ failuresPerIp: config.limits.authFailuresPerIp, lockoutSeconds: config.limits.authLockout }),
    connections: new ConnectionCounts(),
    trustedNetworks: compileNetworks(config.relay.trustedNetworks),
    proxyNetworks: config.smtp.proxyProtocol.length > 0 ? compileNetworks(config.smtp.proxyProtocol) : undefined,
    logger,
    resolver: reverseResolver(config),
    // Read once for the three listeners; not at all when no client is named.
    hosts: config.smtp.reverseLookup ? readHostsFile(HOSTS_FILE) : new Map<string, readonly string[]>(),
    metrics,
  };
  const started: InboundListener[] = [];
  let http: HttpListener | undefined;
  let httpAddress: RunningRelay['http'];
  try {
    for (const name of LISTENER_NAMES) {
      if (!config.listeners[name].enabled) continue;
      const listener = createListener({ ...shared, name });
      const address = await listener.listen();
      started.push(listener);
      listeners.push({ name, host: address.address, port: address.port });
    }
    if (config.http.enabled) {
      http = buildHttp({ config, token: httpToken, store, tls, metrics, listeners, outbound, leaseOwner, proxyNetworks: shared.proxyNetworks, logger, now });
      const address = await http.listen();
      httpAddress = { host: address.address, port: address.port };
    }
  } catch (err) {
    await Promise.all(started.map((l) => l.close()));
    tls.close();
    await store.close();
    throw err;
  }
  scheduler?.start();
  const donePurge = createDonePurge({
    store,
    keepMs: config.queue.keepDone * 1000,
    ...RELAY_SWEEP,
    now,
    logger: logger.child({ component: 'done-purge' }),
  });
  donePurge.start();
  logger.info({ listeners, http: httpAddress, fingerprint: tls.fingerprint(), delivering: Boolean(scheduler) }, 'postern ready');
  return {
    listeners,
    caFile,
    fingerprint: tls.fingerprint(),
    scheduler,
    donePurge,
    http: httpAddress,
    async stop() {
      // Stop accepting, let deliveries in flight finish (their leases end with them, or are given back after
      // outbound.stopTimeout), then close the queue.
      await Promise.all([http?.close(), ...started.map((l) => l.close()), scheduler?.stop(), donePurge.stop()]);
      outbound?.pool.closeAll();
      tls.close();
      await store.close();
    },
  };
}

/** What delivery and the smarthost probe share: DNS, extra CAs, smarthost credentials. */
interface OutboundParts {
  resolver: DnsResolver;
  extraCa: string[];
  relayhostAuth: SessionSettings['auth'];
  pool: SessionPool;
  /** Name in our EHLO: outbound.heloName, else hostname. */
  heloName: string;
  mtaSts: MtaStsPolicies;
}

function outboundParts(config: Config, store: QueueStore, logger: Logger, now: () => Date): OutboundParts {
  const outbound = config.outbound;
  const resolver = createResolver({ servers: outbound.dns.servers.length ? outbound.dns.servers : config.dns.servers, timeoutMs: 5000, tries: 2 });
  const extraCa = outbound.tls.caFile ? [readConfiguredFile('outbound.tls.caFile', outbound.tls.caFile)] : [];
  return {
    heloName: outbound.heloName || config.hostname,
    pool: new SessionPool({ idleMs: outbound.connectionCacheTime * 1000, maxIdlePerKey: outbound.perDestination }),
    resolver,
    extraCa,
    relayhostAuth: relayhostAuth(config),
    mtaSts: createMtaStsPolicies({
      resolver, extraCa, port: outbound.mtaStsPort, allowPrivateTargets: outbound.allowPrivateTargets,
      timeoutMs: outbound.connectTimeout * 1000, now, logger: logger.child({ component: 'mta-sts' }), keptIn: store,
    }),
  };
}

/**
 * takeBackLeases - give back the leases held by processes of this machine that are gone (killed with deliveries in
 * flight), so those deliveries are tried now rather than when the leases lapse (lease-owner.ts).
 */
async function takeBackLeases(store: QueueStore, self: LeaseOwner, now: Date, logger: Logger): Promise<void> {
  const gone = leaseOwnersGone(await store.leaseHolders(now), self, processRunning);
  if (gone.length === 0) return;
  const deliveries = await store.releaseLeasesOf(gone);
  logger.info({ owners: gone, deliveries }, 'took back deliveries leased by processes that are gone');
}

/**
 * processRunning - whether a process with this pid runs (signal 0 checks without sending; EPERM: it exists, as
 * another user's). A process killed and not yet reaped by its parent (a zombie, for up to a second under some
 * inits) still answers signal 0, but runs no more: on Linux its state in /proc says so.
 */
export function processRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return true; // no /proc (not Linux), or the process just went: signal 0 said it ran
  }
  // "pid (name) S ...": the state follows the last ')', since a name may hold one.
  const state = stat[stat.lastIndexOf(')') + 2];
  return state !== 'Z' && state !== 'X';
}

/** createDeliveryScheduler - the outbound side: courier and scheduler over the queue. */
function createDeliveryScheduler(parts: {
  config: Config;
  store: QueueStore;
  outbound: OutboundParts;
  listeners: RunningRelay['listeners'];
  leaseOwner: LeaseOwner;
  inFlow?: InFlowGate;
  logger: Logger;
  now: () => Date;
  elapsed?: () => number;
  metrics: Metrics;
}): Scheduler {
  const { config, store, inFlow, logger, now, elapsed, metrics } = parts;
  const outbound = config.outbound;
  const { resolver, extraCa, relayhostAuth, pool, heloName, mtaSts } = parts.outbound;
  // Built once: nothing in it changes after start.
  // By hostname, not the EHLO name: that may be a shared NAT address's name, another host's MX too.
  const self = relaySelf([config.hostname], parts.listeners, outbound.ownAddresses);
  const deliverDeps = { outbound, heloName, self, resolver, extraCa, relayhostAuth, readBody: (id: string) => store.readBody(id), logger, now, metrics, pool, mtaSts };
  return createScheduler({
    store,
    courier: (claim) => deliver(claim, deliverDeps),
    owner: leaseOwnerName(parts.leaseOwner),
    hostname: config.hostname,
    concurrency: outbound.concurrency,
    perDestination: outbound.perDestination,
    leaseMs: durationMs(outbound.lease),
    stopTimeoutMs: outbound.stopTimeout * 1000,
    retry: outbound.retry,
    pollMs: 1000,
    inFlow,
    now,
    elapsed,
    logger: logger.child({ component: 'scheduler' }),
    metrics,
  });
}

interface HttpParts {
  config: Config;
  token: string;
  store: QueueStore;
  tls: ServerTls;
  metrics: Metrics;
  listeners: RunningRelay['listeners'];
  /** Present when this node delivers: then /readyz asks the smarthost too. */
  outbound?: OutboundParts;
  /** This process's lease owner: a bounce through the API leases as the relay does. */
  leaseOwner: LeaseOwner;
  /** smtp.proxyProtocol's networks: the health probe sends a PROXY line where they cover its own address. */
  proxyNetworks?: NetworkMatcher;
  logger: Logger;
  now: () => Date;
}

/** buildHttp - the HTTP listener: queue API, /metrics read at scrape time, health over the started listeners. */
function buildHttp(parts: HttpParts): HttpListener {
  const { config, store, tls, metrics, listeners, outbound, proxyNetworks, logger, now } = parts;
  const relayhost = config.outbound.relayhost;
  const health = createHealthChecks({
    listeners: listeners.map((l) => ({ ...l, implicitTls: l.name === 'submissions', ...(proxyNetworks && { proxyLineFrom: proxyNetworks }) })),
    // The probe waits out the listeners' greeting pause, then its own 2 s.
    greetingTimeoutMs: config.smtp.greetingPause * 1000 + 2000,
    queue: store,
    // Not ready while every MAIL FROM would get 452 4.3.1: the same rule.
    queueRoom: async () => {
      const short = await queueSpaceShort(store, config);
      return short ? { ok: false, error: `queue file system has ${short.freeBytes} bytes free, less than the ${short.keepFree} it keeps (queue.minFree or 1.5 × limits.messageSize)` } : { ok: true };
    },
    relayhost:
      outbound && relayhost.host
        ? {
            name: `${relayhost.host}:${relayhost.port}`,
            probe: () =>
              probeRelayhost({
                relayhost,
                heloName: outbound.heloName,
                resolver: outbound.resolver,
                extraCa: outbound.extraCa,
                auth: outbound.relayhostAuth,
                // A readiness answer should come back well within an orchestrator's timeout.
                timeoutMs: Math.min(config.outbound.connectTimeout, 10) * 1000,
                logger: logger.child({ component: 'readyz' }),
              }),
          }
        : undefined,
    now,
  });
  const port = (name: ListenerName) => listeners.find((l) => l.name === name)?.port;
  return createHttpServer({
    host: config.http.host,
    port: config.http.port,
    token: parts.token,
    metrics: async () => {
      const queue = await store.stats().catch((err: unknown) => {
        logger.warn({ err }, 'metrics: queue stats unavailable');
        return undefined;
      });
      return metrics.render({ now: now(), queue, certificateNotAfter: tls.notAfter() });
    },
    health,
    queue: createQueueApi(
      store,
      { hostname: config.hostname, owner: leaseOwnerName(parts.leaseOwner), leaseMs: durationMs(config.outbound.lease), log: logger.child({ component: 'queue-api' }) },
      now,
    ),
    autoconfig: config.http.autoconfig
      ? autoconfigXml({
          hostname: config.hostname,
          domains: [config.hostname, ...config.relay.localDomains.filter((d) => !d.startsWith('*.'))],
          submissionPort: port('submission'),
          submissionsPort: port('submissions'),
        })
      : undefined,
    logger,
  });
}

// readHttpToken - http.tokenFile (Docker secrets) over http.token; read once at start.
function readHttpToken(config: Config): string {
  if (!config.http.enabled || !config.http.tokenFile) return config.http.token;
  // Not empty: config/files.ts refused that at start (it would turn the API off without a word, over http.token too).
  return readConfiguredFile('http.tokenFile', config.http.tokenFile);
}

// readConfiguredFile - a file a key names (a secret kept in a file, Docker secrets; a CA file): its contents
// without the final line break; an unreadable file stops the start naming the key.
function readConfiguredFile(key: string, path: string): string {
  try {
    return readFileSync(path, 'utf8').replace(/\r?\n$/, '');
  } catch (err) {
    throw new Error(`${key} = ${path}: ${(err as Error).message}`);
  }
}

// relayhostAuth - smarthost credentials: XOAUTH2 when configured (nodemailer refreshes the token), else user and password.
function relayhostAuth(config: Config): SessionSettings['auth'] {
  const auth = config.outbound.relayhost.auth;
  if (!auth.user) return undefined;
  if (Object.keys(auth.oauth2).length > 0) return { type: 'OAuth2', user: auth.user, ...auth.oauth2 };
  const pass = auth.passFile ? readConfiguredFile('outbound.relayhost.auth.passFile', auth.passFile) : auth.pass;
  return { user: auth.user, pass };
}

// Dev certificates are made only where the defaults point and nothing is
// there yet: a missing certificate the operator named is an error.
// (config/files.ts has checked that the files named elsewhere are there.)
async function prepareCertificates(config: Config, logger: Logger): Promise<string | undefined> {
  if (!usesDevCertificates(config)) return undefined;
  const dev = await ensureDevCertificates({ dir: dirname(config.tls.cert), hostname: config.hostname });
  if (dev.created) logger.info({ certFile: dev.certFile, caFile: dev.caFile }, 'generated development certificates');
  return existsSync(dev.caFile) ? resolve(dev.caFile) : undefined;
}

function reverseResolver(config: Config): NameResolver | undefined {
  if (!config.smtp.reverseLookup || config.dns.servers.length === 0) return undefined;
  const resolver = new Resolver({ timeout: 2000, tries: 1 });
  resolver.setServers(config.dns.servers);
  return resolver;
}

/** How long after the first stop signal a second one means "exit now" (one Ctrl-C under `npm start` arrives twice). */
const SECOND_SIGNAL_AFTER_MS = 1000;

/** serve - `postern serve`: start, print how to use it, stop cleanly on SIGTERM/SIGINT/SIGHUP, at once on a second one. */
export async function serve(config: Config): Promise<void> {
  const logger = createLogger({ level: config.log.level });
  // Handlers first: a signal during start-up stops the relay as soon as it is up.
  const state: { relay?: RunningRelay; signal?: string; stopping: boolean } = { stopping: false };
  const stop = () => {
    if (!state.relay || !state.signal || state.stopping) return;
    state.stopping = true;
    logger.info({ signal: state.signal }, 'stopping');
    state.relay.stop().then(
      () => {
        logger.info('stopped');
        logger.flush(() => process.exit(0));
      },
      (err: unknown) => {
        logger.error({ err }, 'stop failed');
        process.exit(1);
      },
    );
  };
  let firstSignalAt: number | undefined;
  // SIGHUP too: its terminal closed, or someone expects a reload as Postfix's master does one. Postern has none
  // (certificates are re-read by themselves): it stops as cleanly as on SIGTERM, where Node's default killed it.
  for (const signal of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) {
    process.on(signal, () => {
      if (signal === 'SIGHUP' && !state.stopping) logger.warn('SIGHUP: Postern does not reload its configuration; it stops, to be started again');
      // Asked again while stopping: now, as a second Ctrl-C means. Not within a second of the first: `npm start`
      // forwards the terminal's Ctrl-C, so one press arrives twice. What was accepted is on disk; a delivery in
      // flight keeps its lease, taken back at the next start (takeBackLeases).
      if (state.stopping && firstSignalAt !== undefined && performance.now() - firstSignalAt >= SECOND_SIGNAL_AFTER_MS) {
        logger.warn({ signal }, 'asked again to stop: exiting now; deliveries still in flight are tried again at the next start');
        logger.flush(() => process.exit(1));
        return;
      }
      firstSignalAt ??= performance.now();
      state.signal ??= signal;
      stop();
    });
  }
  state.relay = await startRelay(config, logger);
  process.stderr.write(describeRelay(config, state.relay));
  stop();
}

/** hostPort - "127.0.0.1:2525", "[::1]:2525" (swaks reads both). */
function hostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** describeRelay - the start-up summary a person reads: ports, certificate, a command to try. */
export function describeRelay(config: Config, relay: Pick<RunningRelay, 'listeners' | 'caFile' | 'fingerprint' | 'http'>): string {
  const roles: Record<ListenerName, string> = {
    relay: 'STARTTLS offered, no AUTH, relays for trusted networks',
    submission: 'STARTTLS + AUTH required',
    submissions: 'implicit TLS + AUTH required',
  };
  const lines = ['', `Postern is running as ${config.hostname}`];
  for (const l of relay.listeners) lines.push(`  ${l.name.padEnd(12)} ${hostPort(l.host, l.port)}  (${roles[l.name]})`);
  if (relay.http) {
    const api = config.http.token || config.http.tokenFile ? ', queue API (bearer token)' : '';
    lines.push(`  ${'http'.padEnd(12)} ${hostPort(relay.http.host, relay.http.port)}  (/metrics, /healthz, /readyz${api}${config.http.autoconfig ? ', autoconfig' : ''})`);
  }
  lines.push(`  certificate  SHA-256 ${relay.fingerprint}`);
  if (relay.caFile) lines.push(`  trust this CA in clients: ${relay.caFile}`);
  const relayPort = relay.listeners.find((l) => l.name === 'relay');
  if (relayPort) {
    // A wildcard address is where we listen, not where a client connects. A command run on this host connects
    // from the address it connects to: it relays only if that address is trusted.
    const candidates = relayPort.host === '0.0.0.0' ? ['127.0.0.1'] : relayPort.host === '::' ? ['127.0.0.1', '::1'] : [relayPort.host];
    const trusted = compileNetworks(config.relay.trustedNetworks);
    const server = candidates.find((address) => trusted(address));
    if (server) {
      lines.push('', 'Try it:', `  swaks --server ${hostPort(server, relayPort.port)} --tls --from you@example.test --to someone@example.test${relay.caFile ? ` --tls-verify --tls-ca-path ${relay.caFile}` : ''}`);
    } else {
      const networks = config.relay.trustedNetworks.join(', ') || 'none';
      const otherWays = [
        ...(relay.listeners.some((l) => l.name === 'submission' || l.name === 'submissions') ? ['as a user on the submission port'] : []),
        ...(config.tls.clientCa ? ['with a client certificate tls.clientCa trusts'] : []),
      ];
      lines.push('', `The relay port relays for relay.trustedNetworks (${networks}), which leave out ${candidates.join(' and ')}: send from a host in them${otherWays.map((way) => `, or ${way}`).join('')}.`);
    }
  }
  lines.push('');
  return lines.join('\n') + '\n';
}

/** warnIfQueueSpaceLow - say at start when the queue's disk already has less free than MAIL FROM needs. */
async function warnIfQueueSpaceLow(store: QueueStore, config: Config, logger: Logger): Promise<void> {
  const short = await queueSpaceShort(store, config);
  if (short) logger.warn({ path: config.queue.path, ...short }, 'queue file system has less free than queue.minFree or 1.5 × limits.messageSize: MAIL FROM gets 452 4.3.1 until there is room');
}

/** queueSpaceShort - the free bytes and the bytes kept free, when the queue's disk has less than MAIL FROM asks for (every MAIL FROM gets 452 4.3.1); undefined when it has room. */
async function queueSpaceShort(store: QueueStore, config: Config): Promise<{ freeBytes: number; keepFree: number } | undefined> {
  const freeBytes = await store.freeSpace();
  const keepFree = queueSpaceToKeep({ minFree: config.queue.minFree, messageSizeLimit: config.limits.messageSize });
  return freeBytes === undefined || decideQueueSpace({ freeBytes, declaredSize: undefined, keepFree }).accept ? undefined : { freeBytes, keepFree };
}
