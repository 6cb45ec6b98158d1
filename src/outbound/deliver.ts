// One delivery attempt: a claimed delivery (one message, one destination
// domain) to its next hop. Decides the route and TLS level (the level
// mta-sts by the domain's policy, mta-sts.ts, which also narrows the MX
// hosts), finds the hosts (smarthost, route host, or MX in priority order
// with every MX tried before deferring), opens a session under the level,
// and sends the recipients in transactions (those a next hop without
// SMTPUTF8 cannot take returned, smtputf8.ts). Returns an outcome per recipient plus one
// attempt record per host tried, with the TLS facts of each session.
// Fails: never throws for trouble it knows: a body the queue cannot read ends the attempt (4.3.0 for the
// recipients it had not yet sent); DNS and network trouble become deferrals (4.x.x),
// null MX / nonexistent domains / refused recipients become bounces (5.x.x).
// A verdict of our own starts with its enhanced code alone ("5.1.10 …"),
// a next hop's reply with its basic code ("550 5.1.1 …"): reports tell the
// two apart (bounce.ts).
import { isAscii } from 'node:buffer';
import type { Readable } from 'node:stream';
import type { OutboundConfig } from '../config/config.ts';
import { errorMessage, type Logger } from '../observability/logger.ts';
import { NO_METRICS, type RelayMetrics } from '../observability/metrics.ts';
import type { AttemptRecord, ClaimedDelivery, RecipientOutcome } from '../queue/queue-store.ts';
import type { CourierOutcome } from '../queue/scheduler.ts';
import { asciiDomain } from '../smtp/address.ts';
import { isHostReply } from '../smtp/replies.ts';
import { classifyReply } from './classify.ts';
import { isPublicAddress, lookupAddresses, lookupMx, type DnsResolver, type MxHost } from './mx-resolver.ts';
import { chooseMxTargets, dnsLookupFailed, MX_HOST_LIMIT, type RelaySelf } from './mx-targets.ts';
import { decideNextHop, decideTlsLevel, type NextHop, type TlsDecision } from './route.ts';
import { decideStsLevel, mxInPolicy, type MtaStsPolicies, type StsPolicy } from './mta-sts.ts';
import { decideWithoutSmtpUtf8, smtpUtf8NotOffered } from './smtputf8.ts';
import type { SessionPool } from './session-pool.ts';
import { openSession, type OutboundSession, type SessionSettings, type SessionTarget } from './smtp-session.ts';
import { sessionTimeouts } from './session-timeouts.ts';

export interface DeliverDeps {
  outbound: OutboundConfig;
  heloName: string;
  /** This relay: an MX that is this relay is a mail loop. */
  self: RelaySelf;
  resolver: DnsResolver;
  extraCa: string[];
  /** Smarthost credentials, resolved at start (passFile read, OAuth2 assembled). */
  relayhostAuth?: SessionSettings['auth'];
  readBody(messageId: string): Readable;
  logger: Logger;
  now(): Date;
  /** Counts the sessions opened to next hops, by TLS version; nothing is counted when absent. */
  metrics?: RelayMetrics;
  /** Idle sessions to reuse (several messages to one next hop share a connection); none: one session per attempt. */
  pool?: SessionPool;
  /** Domains' MTA-STS policies, for the level mta-sts; absent: no domain has one. */
  mtaSts?: MtaStsPolicies;
}

/** What a host answered for every recipient, and the attempt that recorded it. */
type Answer = { recipients: RecipientOutcome[]; answeredBy: AttemptRecord };

type Targets = { ok: true; targets: SessionTarget[] } | { ok: false; reply: string };

/**
 * requiresTls - whether REQUIRETLS binds this delivery: verified TLS, a next hop that offers REQUIRETLS, or the
 * message returned (RFC 8689 §4.2.1). Those rules are for a message with a return path; a bounce keeps the option
 * where the next hop offers it, and is not lost for want of it (§5).
 */
function requiresTls(claim: ClaimedDelivery): boolean {
  return claim.requireTls && claim.mailFrom !== '';
}

/** deliver - one attempt for a claimed delivery. */
export async function deliver(claim: ClaimedDelivery, deps: DeliverDeps): Promise<CourierOutcome> {
  // A UTF-8 domain (SMTPUTF8 mail) is looked up, routed and given its TLS policy by its A-label.
  const domain = asciiDomain(claim.domain);
  const nextHop = decideNextHop(domain, deps.outbound);
  const decided = decideTlsLevel({ requireTls: requiresTls(claim), domain, nextHop, outbound: deps.outbound });
  const log = deps.logger.child({ queueId: claim.messageId, domain: claim.domain, delivery: claim.deliveryId });
  const attempts: AttemptRecord[] = [];
  const startedAt = deps.now();
  // The level mta-sts is settled by the domain's policy (RFC 8461), which is looked up only for an MX delivery; a
  // REQUIRETLS message, verify anyway, still goes only to the MX hosts the policy names (RFC 8689 §4.2.1).
  const configured = requiresTls(claim) ? decideTlsLevel({ requireTls: false, domain, nextHop, outbound: deps.outbound }) : decided;
  const sts = configured.level === 'mta-sts' && nextHop.kind === 'mx' ? await deps.mtaSts?.policyFor(domain) : undefined;
  const policy: TlsDecision =
    decided.level === 'mta-sts'
      ? decideStsLevel(decided.source, nextHop.kind === 'mx', sts)
      : { level: decided.level, source: sts?.mode === 'enforce' ? `${decided.source}; MX hosts by MTA-STS enforce (id ${sts.id})` : decided.source };
  const found = await findTargets(nextHop, deps, sts, log);
  if (!found.ok) {
    attempts.push({ startedAt, endedAt: deps.now(), policy: policyRecord(policy), reply: found.reply, outcome: classifyReply(found.reply) });
    log.info({ reply: found.reply }, 'no next hop');
    const down = classifyReply(found.reply) === 'deferred' ? { destinationDown: found.reply } : {};
    return { attempts, recipients: everyone(claim, found.reply), nextHopOffersDsn: false, ...down };
  }
  let lastReply = '4.4.1 no host tried';
  /** The attempt that gave lastReply, when its host answered at all (a greeting refused, no STARTTLS, a failed verification). */
  let lastAnswered: AttemptRecord | undefined;
  /** The replies of the last host that answered every recipient "later": what the attempt ends with if no other host takes the message. */
  let putOff: Answer | undefined;
  /** Our own verdict on the last host that could not take it (no REQUIRETLS, too small a SIZE, connection lost before the end of data). */
  let cannot: Answer | undefined;
  for (const target of found.targets) {
    const attemptStart = deps.now();
    const auth = nextHop.kind === 'relayhost' ? deps.relayhostAuth : undefined;
    const poolKey = JSON.stringify([target.host, target.ip, target.port, target.secure, policy.level, auth?.user ?? '']);
    const reused = await deps.pool?.take(poolKey);
    const opened = reused
      ? ({ ok: true, session: reused } as const)
      : await openSession(target, {
          level: policy.level,
          heloName: deps.heloName,
          extraCa: deps.extraCa,
          timeouts: sessionTimeouts(deps.outbound.connectTimeout * 1000, deps.outbound.socketTimeout * 1000),
          auth,
          logger: log,
        });
    const where = { host: target.host, ip: target.ip, port: target.port };
    if (!opened.ok) {
      lastReply = opened.reply;
      const attempt: AttemptRecord = { startedAt: attemptStart, endedAt: deps.now(), ...where, ...(opened.tls ? { tls: opened.tls } : {}), policy: policyRecord(policy), reply: opened.reply, outcome: 'deferred' };
      attempts.push(attempt);
      lastAnswered = opened.reached ? attempt : undefined;
      log.info({ ...where, reply: opened.reply, tlsLevel: policy.level }, 'next hop not usable, trying the next one');
      continue;
    }
    if (!reused) (deps.metrics ?? NO_METRICS).smtpSession('outbound', opened.session.tls?.version);
    const { recipients, lostAfterData, bodyError } = await sendAll(opened.session, claim, target.host, deps);
    if (deps.pool && bodyError === undefined) deps.pool.give(poolKey, opened.session);
    else opened.session.close();
    const results = new Set(recipients.map((r) => r.result));
    const attempt: AttemptRecord = {
      startedAt: attemptStart,
      endedAt: deps.now(),
      ...where,
      ...(opened.session.tls ? { tls: opened.session.tls } : {}),
      policy: policyRecord(policy),
      reply: recipients.map((r) => r.reply).find((r) => r) ?? '',
      outcome: results.size === 1 ? [...results][0]! : 'partial',
    };
    attempts.push(attempt);
    // The scheduler's 'delivery recorded' line names this next hop and the results; this one adds the session's
    // details. Checked first: on the delivery path, building the fields for a line not written cost 4 µs.
    if (log.isLevelEnabled('debug')) log.debug({ ...where, reused: Boolean(reused), tls: opened.session.tls, tlsLevel: policy.level, tlsSource: policy.source, results: recipients.map((r) => `${r.address}: ${r.result}`) }, 'attempt finished');
    // The next MX or address may take what this host did not, as Postfix's smtp tries it: when the host said
    // "later" to every recipient (451 to MAIL FROM, 421 to RCPT, 4xx after DATA), or could not take the message
    // by our own verdict (no REQUIRETLS, too small a SIZE, the connection lost before the end of data). Not once
    // the whole message went out: this host may have it already. Nor when the queue could not give the body: our
    // failure, not this host's, and another host would fare no better.
    if (bodyError !== undefined) {
      log.error({ ...where, err: bodyError }, 'the queue could not give the message body; the attempt ends here');
    } else if (!lostAfterData && recipients.every((r) => r.result === 'deferred' && isHostReply(r.reply))) {
      putOff = { recipients, answeredBy: attempt };
      log.info({ ...where, reply: recipients[0]!.reply }, 'next hop deferred every recipient');
      continue;
    } else if (!lostAfterData && recipients.every((r) => !isHostReply(r.reply))) {
      cannot = { recipients, answeredBy: attempt };
      log.info({ ...where, reply: recipients[0]!.reply }, 'next hop cannot take the message');
      continue;
    }
    return { attempts, recipients, nextHopOffersDsn: opened.session.extensions.includes('DSN'), answeredBy: attempt };
  }
  // A host that took the transaction and put it off says more than the hosts after it: it met the TLS level and
  // REQUIRETLS, so such a message is not returned for want of them elsewhere. Then our verdict on the last host
  // that could not take it.
  const standing = putOff ?? cannot;
  if (standing) return { attempts, ...standing, nextHopOffersDsn: false };
  // No host took a transaction. The last one tried answered us, or its connection failed (Postfix: relay=none).
  const answeredBy = lastAnswered;
  // RFC 8689 §4.2.1: a REQUIRETLS message that cannot get verified TLS is returned, not kept waiting.
  if (requiresTls(claim) && /4\.7\.[45] /.test(lastReply)) {
    return { attempts, recipients: everyone(claim, `5.7.30 REQUIRETLS: no next hop offered verified TLS (${lastReply})`), nextHopOffersDsn: false, answeredBy };
  }
  // Every host tried and none took the message: try again later (Postfix defers, it does not bounce, here).
  const deferral = lastReply.startsWith('5') ? `4.4.0 no next hop took the message; last reply: ${lastReply}` : lastReply;
  return { attempts, recipients: everyone(claim, deferral), nextHopOffersDsn: false, answeredBy, destinationDown: deferral };
}

/**
 * stsHosts - under an enforced MTA-STS policy, only the MX hosts it names (§5: none left is a deferral), chosen from
 * before the address limit and loop checks do their part; under a testing one, every host, those it does not name
 * logged (§5.2: deliver, report).
 */
function stsHosts(hosts: MxHost[], sts: StsPolicy | undefined, domain: string, log: Logger): { ok: true; hosts: MxHost[] } | { ok: false; reply: string } {
  if (sts === undefined || sts.mode === 'none') return { ok: true, hosts };
  const named = hosts.filter((h) => mxInPolicy(h.name, sts.mx));
  if (sts.mode === 'testing') {
    const others = hosts.filter((h) => !named.includes(h)).map((h) => h.name);
    if (others.length > 0) log.warn({ hosts: others, policyMx: sts.mx }, 'MTA-STS testing: MX hosts the policy does not name; delivering anyway');
    return { ok: true, hosts };
  }
  if (named.length > 0) return { ok: true, hosts: named };
  return { ok: false, reply: `4.7.5 MTA-STS: no MX host of ${domain} is one its policy names (${sts.mx.join(', ')})` };
}

function policyRecord(policy: TlsDecision): AttemptRecord['policy'] {
  return { level: policy.level, source: policy.source };
}

function everyone(claim: ClaimedDelivery, reply: string): RecipientOutcome[] {
  return claim.recipients.map((r) => ({ address: r.address, result: classifyReply(reply), reply }));
}

async function findTargets(nextHop: NextHop, deps: DeliverDeps, sts: StsPolicy | undefined, log: Logger): Promise<Targets> {
  if (nextHop.kind === 'literal') {
    // The client named the host itself. One in our own networks is refused as an MX there is (SSRF), and for
    // good: a literal does not change, so waiting would only delay the bounce by outbound.retry.lifetime.
    if (!deps.outbound.allowPrivateTargets && !isPublicAddress(nextHop.ip)) {
      return { ok: false, reply: `5.4.4 address literal [${nextHop.ip}] is a loopback or private address; refused (set outbound.allowPrivateTargets)` };
    }
    return { ok: true, targets: [{ host: nextHop.ip, ip: nextHop.ip, port: nextHop.port, secure: false }] };
  }
  if (nextHop.kind !== 'mx') {
    // A configured host may be private or loopback: the operator named it.
    const addresses = await addressesOf(nextHop.host, deps);
    if (!addresses.ok) return addresses;
    return { ok: true, targets: addresses.addresses.map((ip) => ({ host: nextHop.host, ip, port: nextHop.port, secure: nextHop.secure })) };
  }
  const mx = await lookupMx(nextHop.domain, deps.resolver);
  if (mx.kind === 'null-mx') return { ok: false, reply: '5.1.10 Recipient domain accepts no mail (null MX, RFC 7505)' };
  if (mx.kind === 'no-such-domain') return { ok: false, reply: `5.1.2 Host or domain name not found: ${nextHop.domain}` };
  if (mx.kind === 'invalid') return { ok: false, reply: `5.4.4 MX lookup for ${nextHop.domain}: ${mx.reason}` };
  if (mx.kind === 'temporary') return { ok: false, reply: dnsLookupFailed(nextHop.domain, mx.reason) };
  const allowed = stsHosts(mx.hosts, sts, nextHop.domain, log);
  if (!allowed.ok) return allowed;
  const hosts = allowed.hosts.slice(0, MX_HOST_LIMIT);
  const found = await Promise.all(hosts.map((host) => lookupAddresses(host.name, deps.resolver)));
  const chosen = chooseMxTargets(nextHop.domain, nextHop.port, hosts.map((host, i) => ({ ...host, found: found[i]! })), deps.self, deps.outbound.allowPrivateTargets);
  if (!chosen.ok) return chosen;
  return { ok: true, targets: chosen.targets.map((t) => ({ ...t, port: nextHop.port, secure: false })) };
}

async function addressesOf(host: string, deps: DeliverDeps): Promise<{ ok: true; addresses: string[] } | { ok: false; reply: string }> {
  const found = await lookupAddresses(host, deps.resolver);
  if (found.kind === 'addresses') return { ok: true, addresses: found.addresses };
  if (found.kind === 'temporary') return { ok: false, reply: dnsLookupFailed(host, found.reason) };
  return { ok: false, reply: `4.4.4 no address for ${host}` };
}

/**
 * What sendAll did: an outcome per recipient, whether a connection was lost after a whole message went out, and
 * the error of a body the queue could not read (the recipients not yet sent are deferred with it, those sent before
 * keep their replies: a recipient the next hop took is not sent again).
 */
interface SentAll {
  recipients: RecipientOutcome[];
  lostAfterData: boolean;
  bodyError?: unknown;
}

/** bodyUnreadable - the deferral of recipients whose message the queue could not give. */
function bodyUnreadable(recipients: readonly { address: string }[], err: unknown): RecipientOutcome[] {
  const reply = `4.3.0 queue file read error: ${errorMessage(err)}`;
  return recipients.map((r) => ({ address: r.address, result: 'deferred', reply }));
}

// sendAll - the recipients in transactions of at most recipientsPerTransaction, each with its own DSN parameters (recipient-dsn.ts).
async function sendAll(session: OutboundSession, claim: ClaimedDelivery, host: string, deps: DeliverDeps): Promise<SentAll> {
  const refused = (reply: string) => ({ recipients: everyone(claim, reply), lostAfterData: false });
  let bodyType = claim.bodyType;
  if (bodyType === '8BITMIME' && !session.extensions.includes('8BITMIME')) {
    // RFC 6152 §3: without 8BITMIME at the next hop an 8-bit message would have to be converted; Postern does not
    // (see README). One declared 8BITMIME that holds no 8-bit byte goes as it is, as Postfix sends it.
    let sevenBit: boolean;
    try {
      sevenBit = await isSevenBit(deps.readBody(claim.messageId));
    } catch (err) {
      return { recipients: bodyUnreadable(claim.recipients, err), lostAfterData: false, bodyError: err };
    }
    if (!sevenBit) return refused('5.6.3 Next hop does not offer 8BITMIME; Postern does not convert 8-bit messages');
    bodyType = '7BIT';
  }
  // RFC 1870 §6: a message over the next hop's SIZE is refused for good, without sending it (Postfix's words).
  if (session.maxSize !== undefined && claim.size > session.maxSize) {
    return refused(`5.3.4 message size ${claim.size} exceeds size limit ${session.maxSize} of server ${host}`);
  }
  const offersRequireTls = session.tls !== undefined && session.extensions.includes('REQUIRETLS');
  if (requiresTls(claim) && !offersRequireTls) {
    return refused('5.7.30 REQUIRETLS support required but the next hop does not offer it (RFC 8689)');
  }
  const outcomes: RecipientOutcome[] = [];
  // RFC 6531 §3.2: no address that is not ASCII to a next hop without SMTPUTF8 (smtputf8.ts).
  let recipients = claim.recipients;
  if (!session.extensions.includes('SMTPUTF8')) {
    const decided = decideWithoutSmtpUtf8(claim.mailFrom, claim.recipients);
    const reply = smtpUtf8NotOffered(host);
    for (const r of decided.bounce) outcomes.push({ address: r.address, result: classifyReply(reply), reply });
    recipients = decided.send;
  }
  let lostAfterData = false;
  for (let i = 0; i < recipients.length; i += deps.outbound.recipientsPerTransaction) {
    const batch = recipients.slice(i, i + deps.outbound.recipientsPerTransaction);
    // RSET before each later transaction (RFC 5321 §4.1.1.5): one whose recipients were all refused is still open,
    // and the next MAIL FROM would get "503 nested MAIL command", read as a refusal of every recipient after it.
    if (i > 0 && !(await session.reset())) {
      const reply = `4.4.2 lost connection with ${host} before the next transaction`;
      for (const r of recipients.slice(i)) outcomes.push({ address: r.address, result: classifyReply(reply), reply });
      break;
    }
    const body = deps.readBody(claim.messageId);
    try {
      const result = await session.send({ mailFrom: claim.mailFrom, recipients: batch, body, bodyType, smtpUtf8: claim.smtpUtf8, requireTls: claim.requireTls && offersRequireTls, dsn: claim.dsn, size: claim.size });
      for (const r of result.recipients) outcomes.push({ address: r.address, result: classifyReply(r.reply), reply: r.reply });
      lostAfterData ||= result.lostAfterData;
    } catch (err) {
      outcomes.push(...bodyUnreadable(recipients.slice(i), err));
      return { recipients: outcomes, lostAfterData, bodyError: err };
    } finally {
      body.destroy();
    }
  }
  return { recipients: outcomes, lostAfterData };
}

/** isSevenBit - whether a stored body holds no byte above 127; stops reading at the first. */
async function isSevenBit(body: Readable): Promise<boolean> {
  try {
    for await (const chunk of body) if (!isAscii(chunk as Buffer)) return false;
    return true;
  } finally {
    body.destroy();
  }
}
