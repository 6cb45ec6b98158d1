// One SMTP listener (a port with a role: relay, submission, submissions)
// built on smtp-server. Every hook asks policy.ts for a decision and turns
// it into smtp-server's callback with smtpError(); onData hands the stream
// to intake.ts. Nothing here decides policy by itself. Every refusal,
// acceptance, failed AUTH and finished session is counted (deps.metrics).
// Fails: listen() rejects when the port cannot be bound; a TLS handshake
// failure or socket error is logged and the server stays up.
import { Resolver } from 'node:dns';
import type { AddressInfo, Server, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { format } from 'node:util';
import { SMTPServer, type SMTPServerAddress, type SMTPServerAuthentication, type SMTPServerOptions, type SMTPServerSession } from 'smtp-server';
import type { Config, ListenerName } from '../config/config.ts';
import type { Logger } from '../observability/logger.ts';
import { NO_METRICS, type RelayMetrics } from '../observability/metrics.ts';
import type { InFlowGate } from '../queue/in-flow.ts';
import type { QueueStore, RecipientDsn, StoredEnvelope } from '../queue/queue-store.ts';
import type { GreetingPauseOption } from '../smtp/greeting-pause.ts';
import type { ProxyHeaderOption } from '../smtp/proxy-header.ts';
import { SMTP_COMMANDS, type CommandGuardOptions } from './command-guard.ts';
import { allowHalfClose } from '../smtp/half-close.ts';
import { formatReply, queuedReply, replies, type Reply } from '../smtp/replies.ts';
import type { ServerTls } from '../tls/server-tls.ts';
import type { AuthLimiter } from './auth-limiter.ts';
import { ConnectionCounts } from './connection-counts.ts';
import { forwardConfirmed, HOSTS_FILE, readHostsFile, type HostsFile, type NameResolver } from './client-name.ts';
import { receiveMessage } from './intake.ts';
import type { NetworkMatcher } from './networks.ts';
import { AUTH_FAILED, decideAddressCharset, decideAddressForm, decideParameters, decideAuthAttempt, decideAuthIdentity, decideConnect, decideMailFrom, decideQueueSpace, decideRcpt, decideRecipientLimit, queueSpaceToKeep, type Decision } from './policy.ts';
import { domainOf, hasSenderRouting, mailboxKey } from '../smtp/address.ts';
import type { UserStore } from './user-store.ts';

export interface ListenerDeps {
  name: ListenerName;
  config: Config;
  tls: ServerTls;
  store: QueueStore;
  users: UserStore;
  authLimiter: AuthLimiter;
  connections: ConnectionCounts;
  trustedNetworks: NetworkMatcher;
  /** smtp.proxyProtocol: peers that open with a PROXY line (load balancers); absent: none. */
  proxyNetworks?: NetworkMatcher;
  logger: Logger;
  /** Called after a message is committed (the scheduler wakes up). */
  onQueued?: (queueId: string) => void;
  /** In-flow control: an accepted MAIL FROM waits here while delivery is behind (absent: never). */
  inFlow?: Pick<InFlowGate, 'enter'>;
  /** Used for the client's name when smtp.reverseLookup is on (client-name.ts); the system resolver when absent. */
  resolver?: NameResolver;
  /** The hosts file's names, which confirm a client's name before DNS does (client-name.ts); /etc/hosts read when absent. */
  hosts?: HostsFile;
  /** Counts accepted and refused messages, failed AUTH and sessions; nothing is counted when absent. */
  metrics?: RelayMetrics;
  now?: () => number;
}

export interface InboundListener {
  readonly name: ListenerName;
  listen(): Promise<AddressInfo>;
  close(): Promise<void>;
}

interface SessionState {
  log: Logger;
  ip: string;
  authFailures: number;
  /** The client's address is in relay.trustedNetworks (decided once, at connect). */
  clientTrusted: boolean;
  clientCertTrusted: boolean;
  /** The negotiated protocol (TLSv1.3, ...) once TLS is up: the one place it is kept (session.tlsOptions.version is the cipher's, not the session's). */
  tlsVersion?: string;
  /**
   * The recipients of this transaction that got their 250, by mailbox (mailboxKey), each as its latest RCPT gave it:
   * what is queued. smtp-server's own list keeps one per address compared case-insensitively, the last, so x@ and X@
   * were one; a local part's case is the destination's to read, and Postfix keeps both. Emptied at each MAIL FROM.
   */
  recipients: Map<string, SMTPServerAddress>;
  /**
   * Aborted when the connection closes (reset or lost, or after a half-close once the replies are sent): what waits
   * on the client's behalf stops. Made by the first AUTH that may wait its turn, not with every connection: making
   * one and aborting it (a DOMException with its stack) cost about 45 µs of a connection's 370 (bench/ROUNDS.md,
   * "Twenty-seventh round").
   */
  gone?: AbortController;
}

type SmtpError = Error & { responseCode: number };

/** smtpError - the error smtp-server turns into our exact reply. */
function smtpError(reply: Reply): SmtpError {
  return Object.assign(new Error(formatReply(reply)), { responseCode: reply.code });
}

/** createListener - an SMTP server for one role, not yet listening. */
export function createListener(deps: ListenerDeps): InboundListener {
  const { name, config } = deps;
  const now = deps.now ?? Date.now;
  const metrics = deps.metrics ?? NO_METRICS;
  const listenerConfig = config.listeners[name];
  const sessions = new WeakMap<SMTPServerSession, SessionState>();
  const baseLog = deps.logger.child({ listener: name });

  function state(session: SMTPServerSession): SessionState {
    const s = sessions.get(session);
    if (!s) throw new Error(`no state for session ${session.id}`);
    return s;
  }

  /** refuseIf - a refusal's SMTP error, logged with its stage and, at MAIL and RCPT, the envelope and login (Postfix's from=, to=); null to accept. */
  function refuseIf(decision: Decision, s: SessionState, stage: string, envelope?: RefusedEnvelope): SmtpError | null {
    if (decision.accept) return null;
    // A refused AUTH is a failed login, not a refused message.
    if (stage === 'auth') metrics.authFailed();
    else metrics.messageRejected(decision.reason);
    s.log.info({ stage, reason: decision.reason, reply: `${decision.reply.code} ${formatReply(decision.reply)}`, ...envelope }, 'refused');
    return smtpError(decision.reply);
  }

  const keepFree = queueSpaceToKeep({ minFree: config.queue.minFree, messageSizeLimit: config.limits.messageSize });

  /** mailFromAdmitted - room in the queue for the message (refused if not), then in-flow control's wait; resolves with the refusal, if any. */
  async function mailFromAdmitted(s: SessionState, declaredSize: number | undefined, envelope: RefusedEnvelope): Promise<SmtpError | null> {
    const freeBytes = await deps.store.freeSpace();
    const space = refuseIf(decideQueueSpace({ freeBytes, declaredSize, keepFree }), s, 'mail', envelope);
    if (space) return space;
    if (deps.inFlow && (await deps.inFlow.enter())) s.log.debug('in-flow delay: delivery is behind arrivals');
    return null;
  }

  function senderFacts(session: SMTPServerSession, s: SessionState) {
    return { listener: name, secure: session.secure, authenticated: Boolean(session.user), clientCertTrusted: s.clientCertTrusted, clientTrusted: s.clientTrusted };
  }

  const options: SMTPServerOptions & GreetingPauseOption & CommandGuardOptions & ProxyHeaderOption = {
    ...deps.tls.options(),
    secure: name === 'submissions',
    name: config.hostname,
    banner: 'Postern',
    heloResponse: '%s',
    size: config.limits.messageSize,
    rejectOversized: true,
    maxRecipients: config.limits.recipients,
    maxClients: config.limits.connections,
    socketTimeout: config.limits.idleTimeout * 1000,
    authMethods: ['PLAIN', 'LOGIN'],
    // Policy decides who must log in (decideMailFrom); smtp-server's own check would answer with its own words.
    authOptional: true,
    allowInsecureAuth: false,
    disabledCommands: name === 'relay' ? ['AUTH'] : [],
    hideENHANCEDSTATUSCODES: false,
    // Delivery honours both: DSN reports and parameters passed on (RFC 3461), verified TLS on every hop (RFC 8689).
    hideDSN: false,
    hideREQUIRETLS: false,
    disableReverseLookup: !config.smtp.reverseLookup,
    greetingPauseMs: config.smtp.greetingPause * 1000,
    // Behind a load balancer, the client's address is the one its PROXY line gives (smtp/proxy-header.ts).
    ...(deps.proxyNetworks ? { proxyHeaderFrom: deps.proxyNetworks, proxyHeaderLog: baseLog, proxyHeaderWaitMs: config.smtp.proxyProtocolTimeout * 1000 } : {}),
    authAfterTls: name !== 'relay',
    // smtp-server's own refusals (syntax, order, unknown commands, timeouts), logged as policy's are.
    onProtocolRefusal: (session, command, reply, address) => {
      const smtpSession = session as SMTPServerSession;
      // Only MAIL and RCPT have an envelope to name (a refusal before the greeting has no envelope at all).
      const mailFrom = smtpSession.envelope?.mailFrom;
      const envelope = command === 'MAIL' ? refusedEnvelope(smtpSession, address ?? '') : command === 'RCPT' ? { ...refusedEnvelope(smtpSession, mailFrom ? mailFrom.address : ''), to: address ?? '' } : {};
      sessions.get(smtpSession)?.log.info({ stage: command.toLowerCase() || 'session', reason: 'protocol', reply, ...envelope }, 'refused');
    },
    // On stop, sessions get this long to finish before a 421 (a DATA in progress is never acknowledged half-stored).
    closeTimeout: 10_000,
    resolver: forwardConfirmed(deps.resolver ?? new Resolver(), deps.hosts ?? readHostsFile(HOSTS_FILE), (ip, hostname, reason) => baseLog.info({ ip, hostname, reason }, 'client name does not resolve to its address; named unknown')),

    onConnect(session, callback) {
      const ip = session.remoteAddress;
      const s: SessionState = { log: baseLog.child({ session: session.id, ip }), ip, authFailures: 0, clientTrusted: deps.trustedNetworks(ip), clientCertTrusted: false, recipients: new Map() };
      sessions.set(session, s);
      // AUTH is never offered before TLS (RFC 4954 §4, Postfix smtpd_tls_auth_only); onSecure lifts this.
      if (!session.secure) setDisabledCommands(session, ['AUTH']);
      // A trusted client is not counted: exempt from the limit, it must not use up its /84 neighbours' (limit-key.ts).
      const fromIp = s.clientTrusted ? 0 : deps.connections.open(ip);
      s.log.debug({ connectionsFromIp: fromIp }, 'connect');
      callback(refuseIf(decideConnect({ connectionsFromIp: fromIp, perIpLimit: config.limits.connectionsPerIp, clientTrusted: s.clientTrusted }), s, 'connect'));
    },

    onSecure(socket, session, callback) {
      const s = state(session);
      s.clientCertTrusted = deps.tls.isClientCertificateTrusted(socket as TLSSocket);
      s.tlsVersion = (socket as TLSSocket).getProtocol?.() ?? undefined;
      allowHalfClose(socket);
      setDisabledCommands(session, name === 'relay' ? ['AUTH'] : []);
      s.log.debug({ tls: session.tlsOptions, clientCertTrusted: s.clientCertTrusted }, 'tls established');
      callback();
    },

    onAuth(auth: SMTPServerAuthentication, session, callback) {
      const s = state(session);
      const perSessionLimit = config.limits.authFailuresPerConnection;
      // Counted against limits.authFailuresPerIp while it is checked (auth-limiter.ts), and maybe kept waiting for
      // that: not a trusted client's (never locked out), nor one its session's limit refuses anyway.
      const counted = !s.clientTrusted && s.authFailures < perSessionLimit;
      const admitted = counted ? deps.authLimiter.admit(s.ip, now, (s.gone ??= new AbortController()).signal) : Promise.resolve(!deps.authLimiter.isLockedOut(s.ip, now()));
      void admitted.then((admit) => {
        const ended = (failed: boolean) => counted && admit && deps.authLimiter.attemptEnded(s.ip, failed, now());
        // The connection closed while the attempt waited: no check, no reply, nothing to log.
        if (s.gone?.signal.aborted) return ended(false);
        const attempt = decideAuthAttempt({ ipLockedOut: !admit, clientTrusted: s.clientTrusted, failuresThisSession: s.authFailures, perSessionLimit });
        const refused = refuseIf(attempt, s, 'auth');
        if (refused) return (ended(false), callback(refused));
        const username = auth.username ?? '';
        const failed = (decision: Decision) => {
          s.authFailures++;
          ended(true);
          s.log.warn({ user: username, method: auth.method, failures: s.authFailures, reason: decision.accept ? undefined : decision.reason }, 'authentication failed');
          callback(refuseIf(decision, s, 'auth'));
        };
        const identity = decideAuthIdentity({ authcid: auth.authcid ?? '', authzid: auth.authzid ?? '' });
        if (!identity.accept) return failed(identity);
        deps.users.verify(username, auth.password ?? '').then(
          (ok) => {
            if (!ok) return failed(AUTH_FAILED);
            ended(false);
            s.log.info({ user: username, method: auth.method }, 'authenticated');
            callback(null, { user: username });
          },
          (err: unknown) => {
            ended(false);
            s.log.error({ err }, 'user store failed');
            callback(smtpError(replies.authTemporaryFailure));
          },
        );
      });
    },

    onMailFrom(address, session, callback) {
      const s = state(session);
      s.recipients.clear();
      const envelope = refusedEnvelope(session, address.address);
      const refusal =
        refuseIf(decideMailFrom({ ...senderFacts(session, s), sender: address.address, senderDomains: config.relay.senderDomains }), s, 'mail', envelope) ??
        refuseIf(decideAddressForm(address.address, 'sender'), s, 'mail', envelope) ??
        refuseIf(decideParameters(Object.keys(address.args || {}), 'mail'), s, 'mail', envelope) ??
        refuseIf(decideAddressCharset({ address: address.address, role: 'sender', smtpUtf8: mailParameters(address).smtpUtf8 }), s, 'mail', envelope);
      if (refusal) return callback(refusal);
      // smtp-server has checked SIZE's syntax (digits) and that it is within limits.messageSize.
      const declaredSize = address.args && address.args.SIZE ? Number(address.args.SIZE) : undefined;
      void mailFromAdmitted(s, declaredSize, envelope).then(
        (spaceRefusal) => callback(spaceRefusal ?? undefined),
        (err: unknown) => {
          s.log.error({ err }, 'MAIL FROM check failed; answered 451');
          callback(smtpError(replies.queueWriteFailed));
        },
      );
    },

    onRcptTo(address, session, callback) {
      const s = state(session);
      const mailFrom = session.envelope.mailFrom;
      const envelope = { ...refusedEnvelope(session, mailFrom ? mailFrom.address : ''), to: address.address };
      const form =
        refuseIf(decideAddressForm(address.address, 'recipient'), s, 'rcpt', envelope) ??
        refuseIf(decideParameters(Object.keys(address.args || {}), 'rcpt'), s, 'rcpt', envelope) ??
        refuseIf(decideAddressCharset({ address: address.address, role: 'recipient', smtpUtf8: mailParameters(mailFrom).smtpUtf8 }), s, 'rcpt', envelope);
      if (form) return callback(form);
      const decision = decideRcpt({
        ...senderFacts(session, s),
        recipientDomain: domainOf(address.address),
        recipientRouted: hasSenderRouting(address.address),
        localDomains: config.relay.localDomains,
      });
      const refused = refuseIf(decision, s, 'rcpt', envelope);
      if (refused) return callback(refused);
      const mailbox = mailboxKey(address.address);
      const limit = decideRecipientLimit({ accepted: s.recipients.size, isNew: !s.recipients.has(mailbox), limit: config.limits.recipients });
      // Not logged, as smtp-server's own 452 is not (command-guard.ts): a client sends those recipients again later.
      if (!limit.accept) return callback(smtpError(limit.reply));
      s.recipients.set(mailbox, address);
      callback();
    },

    onData(stream, session, callback) {
      const s = state(session);
      const mailFrom = session.envelope.mailFrom;
      const tls = (session.secure && session.tlsOptions) || undefined;
      const user = typeof session.user === 'string' ? session.user : undefined;
      const recipients = [...s.recipients.values()];
      void receiveMessage({
        store: deps.store,
        data: stream,
        listener: name,
        config,
        now: new Date(now()),
        envelope: {
          mailFrom: mailFrom ? mailFrom.address : '',
          recipients: recipients.map((r) => r.address),
          ...mailParameters(session.envelope.mailFrom),
          dsn: envelopeDsn(session, recipients),
          client: { address: s.ip, helo: session.hostNameAppearsAs, listener: name, authUser: user, tlsVersion: s.tlsVersion, tlsCipher: tls ? tls.name : undefined },
        },
        received: {
          helo: session.hostNameAppearsAs,
          // smtp-server puts "[ip]" here when there is no PTR name; Postfix writes "unknown".
          clientHostname: session.clientHostname && !session.clientHostname.startsWith('[') ? session.clientHostname : 'unknown',
          clientAddress: s.ip,
          protocol: session.transmissionType,
          tlsVersion: s.tlsVersion,
          tlsCipher: tls ? tls.name : undefined,
        },
      }).then((result) => {
        if (result.outcome === 'queued') {
          s.log.info(
            { queueId: result.queueId, from: mailFrom ? mailFrom.address : '', recipients: recipients.length, size: result.size, messageId: result.messageId, tlsVersion: s.tlsVersion, tlsCipher: tls?.name, user },
            'queued',
          );
          metrics.messageAccepted();
          deps.onQueued?.(result.queueId);
          return callback(null, formatReply(queuedReply(result.queueId)));
        }
        if (result.outcome === 'lost') {
          // Not a refusal, and nothing for the operator to mend. The callback still ends smtp-server's
          // transaction; its reply goes nowhere (the socket is closed), and would say "try again": nothing was kept.
          // A client that ends its lines with a bare LF waits for a reply to its "<LF>.<LF>" that never comes
          // (only <CR><LF>.<CR><LF> ends a message: SMTP smuggling), then times out or gives up: say so.
          const hint = result.bareLineEndings ? { bareLineEndings: true, hint: 'the client ended lines with a bare LF or CR; only <CR><LF>.<CR><LF> ends a message' } : {};
          s.log.info({ receivedBytes: result.receivedBytes, ...hint }, 'lost connection after DATA');
          return callback(smtpError(replies.queueWriteFailed));
        }
        metrics.messageRejected(result.reason);
        s.log.warn({ reason: result.reason, err: result.error }, 'message refused');
        callback(smtpError(result.reply));
      });
    },

    onClose(session) {
      const s = sessions.get(session);
      if (!s) return;
      s.gone?.abort();
      if (!s.clientTrusted) deps.connections.close(s.ip);
      metrics.smtpSession('inbound', s.tlsVersion);
      s.log.debug('disconnect');
    },
  };

  const server = new SMTPServer(options);
  // Ours in place of the logger smtp-server makes (a no-op, as no `logger` option is given): its wrapper around a
  // given one copied each call's fields into a new object and deleted a key from it, for every command and reply
  // it traces, debug or not (about 1% of the loop; bench/ROUNDS.md, "Twenty-seventh round").
  server.logger = libraryLogger(baseLog);
  // Not counted: a PROXY peer (its connections count by the address its header gives, in onConnect), a trusted client.
  const uncounted = (ip: string) => deps.proxyNetworks?.(ip) === true || deps.trustedNetworks(ip);
  if (options.secure) dropHandshakesPastPerIpLimit(server.server, uncounted, (ip, connectionsFromIp) => {
    const decision = decideConnect({ connectionsFromIp, perIpLimit: config.limits.connectionsPerIp, clientTrusted: false });
    if (decision.accept) return false;
    metrics.messageRejected(decision.reason);
    baseLog.info({ ip, stage: 'connect', reason: decision.reason, connectionsFromIp, reply: 'none: dropped before the TLS handshake' }, 'refused');
    return true;
  });
  // Without an 'error' listener a failed TLS handshake would end the process (LIBRARIES.md). An error of a
  // session smtp-server made (it sets remoteAddress) is in the log already, with the session (libraryLogger).
  server.on('error', (err: Error & { remoteAddress?: string; report?: boolean; code?: string }) => {
    if (err.remoteAddress !== undefined) return;
    const failure = tlsHandshakeFailure(err);
    if (failure) return baseLog.info(failure, 'TLS handshake failed');
    baseLog[err.report === false ? 'debug' : 'info']({ err: err.message, code: err.code }, 'connection error');
  });
  deps.tls.onReload((material) => server.updateSecureContext(material));

  return {
    name,
    listen() {
      return new Promise((resolve, reject) => {
        const onError = (err: Error) => reject(new Error(`listeners.${name}: cannot listen on ${listenerConfig.host}:${listenerConfig.port}: ${err.message}`));
        server.server.once('error', onError);
        server.listen(listenerConfig.port, listenerConfig.host, () => {
          server.server.off('error', onError);
          resolve(server.server.address() as AddressInfo);
        });
      });
    },
    close() {
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

// envelopeDsn - RET/ENVID of the accepted MAIL (as mailParameters, and for its reason) and each recipient's
// NOTIFY/ORCPT as smtp-server parsed them (RFC 3461).
function envelopeDsn(session: SMTPServerSession, accepted: readonly SMTPServerAddress[]): StoredEnvelope['dsn'] {
  const recipients: Record<string, RecipientDsn> = {};
  for (const r of accepted) {
    const dsn = (r as { dsn?: { notify?: string[]; orcpt?: string } }).dsn;
    if (!dsn || (!dsn.notify?.length && !dsn.orcpt)) continue;
    recipients[r.address] = {
      ...(dsn.notify?.length ? { notify: dsn.notify.map((n) => n.toUpperCase()) as RecipientDsn['notify'] } : {}),
      ...(dsn.orcpt ? { orcpt: dsn.orcpt } : {}),
    };
  }
  const mail = session.envelope.mailFrom;
  const args: Record<string, unknown> = (mail && mail.args) || {};
  const ret = typeof args.RET === 'string' ? args.RET.toUpperCase() : undefined;
  return {
    ...(ret === 'FULL' || ret === 'HDRS' ? { ret } : {}),
    ...(typeof args.ENVID === 'string' && args.ENVID ? { envid: args.ENVID } : {}),
    ...(Object.keys(recipients).length ? { recipients } : {}),
  };
}

/** What a refusal at MAIL or RCPT logs of the transaction: the sender, the recipient, the login. */
interface RefusedEnvelope {
  from: string;
  to?: string;
  user?: string;
}

/** refusedEnvelope - the sender and the session's login, for a refused MAIL or RCPT's log line. */
function refusedEnvelope(session: SMTPServerSession, from: string): RefusedEnvelope {
  return { from, ...(typeof session.user === 'string' && { user: session.user }) };
}

/**
 * mailParameters - what the accepted MAIL FROM itself asked: BODY, SMTPUTF8, REQUIRETLS. Read from the command, not
 * from smtp-server's envelope, which keeps those of a MAIL refused after it was read (by policy) until RSET: a
 * REQUIRETLS of a refused MAIL would otherwise hold the next one to verified TLS.
 */
function mailParameters(mailFrom: SMTPServerAddress | false | undefined): Pick<StoredEnvelope, 'bodyType' | 'smtpUtf8' | 'requireTls'> {
  const args = (mailFrom && mailFrom.args) || {};
  return { bodyType: String(args.BODY ?? '').toUpperCase() === '8BITMIME' ? '8BITMIME' : '7BIT', smtpUtf8: args.SMTPUTF8 === true, requireTls: args.REQUIRETLS === true };
}

// smtp-server reads a per-session list of disabled commands on top of the server's (its documented hook).
function setDisabledCommands(session: SMTPServerSession, commands: string[]): void {
  (session as SMTPServerSession & { disabledCommands?: string[] }).disabledCommands = commands;
}

/**
 * A client's own connection failing: it reset or dropped the connection. Logged at info, like Postfix's
 * "lost connection": smtp-server logs every socket error at error level, and an error line per normal
 * session would bury the real ones. After QUIT it is at debug: many clients send QUIT and then reset
 * without waiting for the close (Postfix's smtp-source among them), a normal end that Postfix does not log.
 */
const CLIENT_CONNECTION_ERRORS = new Set(['ECONNRESET', 'EPIPE', 'ETIMEDOUT']);

type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/**
 * dropHandshakesPastPerIpLimit - on an implicit-TLS listener, drop a connection as it arrives when `drop` says so,
 * given its address and how many of this listener's connections that address holds, it included (those `uncounted`
 * names pass, and are not counted). smtp-server runs the handshake before onConnect, where limits.connectionsPerIp
 * is checked, and waits limits.idleTimeout for it: without this, one address could fill the port with connections
 * that never start a handshake. Nothing can be said before TLS, so the connection is closed; the library never sees
 * it.
 */
function dropHandshakesPastPerIpLimit(server: Server, uncounted: (ip: string) => boolean, drop: (ip: string, connectionsFromIp: number) => boolean): void {
  const [library, ...others] = server.listeners('connection') as ((socket: Socket) => void)[];
  if (!library || others.length > 0) throw new Error('smtp-server changed: its server has not one connection listener');
  const open = new ConnectionCounts();
  server.removeAllListeners('connection');
  server.on('connection', (socket: Socket) => {
    const ip = socket.remoteAddress;
    if (ip === undefined || uncounted(ip)) return library.call(server, socket);
    const connectionsFromIp = open.open(ip);
    socket.once('close', () => open.close(ip));
    if (!drop(ip, connectionsFromIp)) return library.call(server, socket);
    socket.on('error', () => undefined);
    socket.destroy();
  });
}

/**
 * tlsHandshakeFailure - the client's address and OpenSSL's reason, if `err` is a failed TLS handshake as
 * smtp-server reports one (its normalizeTLSError marks the stage 'connect'). Logged once, at info, like
 * Postfix's "SSL_accept error from host[ip]": clients with only old ciphers, and scanners, cause them all
 * day; smtp-server logs each at error level, twice after STARTTLS.
 */
function tlsHandshakeFailure(err: unknown): { ip?: string; reason: string } | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as { message?: unknown; reason?: unknown; remoteAddress?: unknown; report?: unknown; meta?: { stage?: unknown; remoteAddress?: unknown } };
  // report false: the connection closed before a handshake began (a port check), not a failed one.
  if (e.meta?.stage !== 'connect' || e.report === false) return undefined;
  // Node's OpenSSL errors carry the reason alone ("no shared cipher"); others (a handshake timeout) the message.
  const reason = firstString(e.reason, e.message);
  const ip = firstString(e.remoteAddress, e.meta.remoteAddress);
  return { ...(ip ? { ip } : {}), reason: reason?.trim() || 'unknown' };
}

function firstString(...values: unknown[]): string | undefined {
  return values.find((value): value is string => typeof value === 'string');
}

// The level a line of smtp-server's gets here: protocol traces and its own info lines (per-command noise
// at info) go to debug, a client's connection failure to info (to debug once the client sent QUIT), a
// failed TLS handshake to debug (libraryLogger writes its own line for it, once).
function libraryLineLevel(level: LogLevel, fields: Record<string, unknown>, afterQuit: boolean, handshakeFailure: boolean): LogLevel {
  // A client without a PTR record is common and needs no action: Postfix logs "connect from unknown[ip]".
  const reverseLookupFailed = fields.tnx === 'connection' && fields.err !== undefined;
  if (fields.tnx === 'send' || fields.tnx === 'command' || level === 'info' || handshakeFailure || reverseLookupFailed) return 'debug';
  const code = (fields.err as { code?: unknown } | undefined)?.code;
  if (fields.tnx === 'error' && typeof code === 'string' && CLIENT_CONNECTION_ERRORS.has(code)) return afterQuit ? 'debug' : 'info';
  return level;
}

// smtp-server logs with printf-style arguments; pino would drop them (LIBRARIES.md).
function libraryLogger(log: Logger): SMTPServer['logger'] {
  const child = log.child({ component: 'smtp-server' });
  // Sessions whose client sent QUIT, until smtp-server logs their close (its command trace is the one place
  // the logger learns of a QUIT).
  const quitSent = new Set<unknown>();
  // Failed handshakes already logged: smtp-server reports one STARTTLS failure twice, with the same error.
  const handshakesLogged = new WeakSet<object>();
  // Sessions whose STARTTLS handshake is done, until their close: smtp-server leaves its handshake error
  // handler on the socket, so a later error (a reset, a renegotiation refused) looks like a failed handshake.
  const tlsUp = new Set<unknown>();
  const at = (level: LogLevel) => (entry: unknown, ...args: unknown[]) => {
    const fields = entry && typeof entry === 'object' ? (entry as Record<string, unknown>) : {};
    // cid is smtp-server's connection id, the same value as session.id: our lines and its lines share one key.
    // Its socket-error line has no cid; the id is the first value of its format ('%s %s %s': id, address, error).
    const session = fields.cid ?? (fields.tnx === 'error' && typeof args[1] === 'string' ? args[1] : undefined);
    if (fields.tnx === 'command' && fields.command === 'QUIT') quitSent.add(session);
    else if (fields.tnx === 'starttls') tlsUp.add(session);
    else if (fields.tnx === 'close') {
      quitSent.delete(session);
      tlsUp.delete(session);
    }
    const failure = fields.tnx === 'error' && !tlsUp.has(session) ? tlsHandshakeFailure(fields.err) : undefined;
    if (failure && !handshakesLogged.has(fields.err as object)) {
      handshakesLogged.add(fields.err as object);
      return child.info({ tnx: fields.tnx, session, ...failure }, 'TLS handshake failed');
    }
    const lineLevel = libraryLineLevel(level, fields, quitSent.has(session), failure !== undefined);
    if (!child.isLevelEnabled(lineLevel)) return;
    // A line that is no command may be a credential (SMTP_COMMANDS): its trace says only how long it was.
    const unknownCommand = fields.tnx === 'command' && typeof fields.command === 'string' && !SMTP_COMMANDS.has(fields.command);
    const message = unknownCommand ? `C: (no SMTP command, ${typeof args[1] === 'string' ? args[1].length : 0} characters, not logged)` : typeof entry === 'string' ? format(entry, ...args) : format(...args);
    child[lineLevel]({ tnx: fields.tnx, ...(session ? { session } : {}) }, message);
  };
  return { trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error'), fatal: at('fatal') };
}
