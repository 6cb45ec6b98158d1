// Metrics: what /metrics reports, in Prometheus text format, from a
// registry of our own (prom-client's global one would mix several relays in
// one process, as the tests run them).
//
// Two kinds of numbers. Events are counted where they happen, through the
// RelayMetrics hooks the listener, the scheduler and deliver() receive in
// their deps (optional there: without one, NO_METRICS counts nothing).
// States (queue depth, oldest message, certificate expiry) are read when
// scraped, so they are never stale: render() takes them as a snapshot.
//
// Names follow Prometheus conventions: _total for counters, base units
// (seconds), one label per dimension with a bounded set of values (reasons
// come from the policy code, TLS versions are folded to a short list).
//
// How it fails: the hooks never throw; render() rejects only if prom-client
// does (a bug), and the HTTP server answers 500 then.
//
//   createMetrics - a registry with every Postern metric, and its hooks.
//   NO_METRICS    - hooks that count nothing (deps built without metrics).
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type DeliveryResult = 'delivered' | 'deferred' | 'bounced';
export type SessionDirection = 'inbound' | 'outbound';

/** The events the relay reports; every method is cheap and never throws. */
export interface RelayMetrics {
  /** messageAccepted - a message committed to the queue (the client heard 250). */
  messageAccepted(): void;
  /** messageRejected - a policy decision or intake refused something; reason is the decision's machine-readable reason. */
  messageRejected(reason: string): void;
  /** authFailed - an AUTH attempt refused (wrong credentials, or the client IP locked out). */
  authFailed(): void;
  /** smtpSession - one SMTP session, with the TLS version it ended with (undefined: plaintext). */
  smtpSession(direction: SessionDirection, tlsVersion: string | undefined): void;
  /** deliveryRecorded - one recipient's recorded result; latencySeconds (accept to delivered) only for delivered ones. */
  deliveryRecorded(result: DeliveryResult, latencySeconds?: number): void;
  /** deliveriesSuspended - deliveries deferred at once, with no attempt each, for a destination found dead. */
  deliveriesSuspended(count: number): void;
}

/** What render() reads at scrape time (the queue's stats(), the certificate being served). */
export interface MetricsSnapshot {
  now: Date;
  /** Absent when the queue could not be read: the depth series are then left out and the oldest age is NaN, never a made-up 0. */
  queue?: { byState: Record<string, number>; oldestReceivedAt?: Date };
  certificateNotAfter?: Date;
}

export interface Metrics extends RelayMetrics {
  /** render - the Prometheus text exposition, with the snapshot's states set first. */
  render(snapshot: MetricsSnapshot): Promise<{ contentType: string; body: string }>;
}

/** NO_METRICS - hooks that count nothing (deps built without metrics, as unit tests build them). */
export const NO_METRICS: RelayMetrics = {
  messageAccepted: () => undefined,
  messageRejected: () => undefined,
  authFailed: () => undefined,
  smtpSession: () => undefined,
  deliveryRecorded: () => undefined,
  deliveriesSuspended: () => undefined,
};

// From half a second (a relay next door) to the five-day queue lifetime (outbound.retry.lifetime).
const LATENCY_BUCKETS = [0.5, 1, 2, 5, 10, 30, 60, 300, 900, 1800, 3600, 4 * 3600, 12 * 3600, 86400, 2 * 86400, 5 * 86400];

const KNOWN_TLS = new Set(['TLSv1.2', 'TLSv1.3']);

/** tlsLabel - 'none', 'TLSv1.2', 'TLSv1.3', or 'other' (keeps the label's values few). */
function tlsLabel(version: string | undefined): string {
  if (!version) return 'none';
  return KNOWN_TLS.has(version) ? version : 'other';
}

/** createMetrics - a registry with every Postern metric, and its hooks. */
export function createMetrics(): Metrics {
  const registry = new Registry();
  const registers = [registry];
  const accepted = new Counter({ name: 'postern_messages_accepted_total', help: 'Messages accepted and queued (the client heard 250).', registers });
  const rejected = new Counter({ name: 'postern_messages_rejected_total', help: 'Refusals by policy or at intake, by reason (relay-denied, starttls-required, message-too-big, ...).', labelNames: ['reason'], registers });
  const deliveries = new Counter({ name: 'postern_deliveries_total', help: 'Delivery results per recipient.', labelNames: ['result'], registers });
  const suspended = new Counter({ name: 'postern_deliveries_suspended_total', help: 'Deliveries deferred at once, with no attempt each, because their destination was found dead ("delivery temporarily suspended").', registers });
  const sessions = new Counter({ name: 'postern_smtp_sessions_total', help: 'SMTP sessions by direction and the TLS version they ran under (none: plaintext).', labelNames: ['direction', 'tls'], registers });
  const authFailures = new Counter({ name: 'postern_auth_failures_total', help: 'Failed AUTH attempts (wrong credentials, or the client IP locked out).', registers });
  const latency = new Histogram({ name: 'postern_delivery_latency_seconds', help: 'Time from accepting a message to delivering it, per recipient.', buckets: LATENCY_BUCKETS, registers });
  const queueDepth = new Gauge({ name: 'postern_queue_messages', help: 'Messages in the queue (not done) by state.', labelNames: ['state'], registers });
  const oldest = new Gauge({ name: 'postern_queue_oldest_message_age_seconds', help: 'Age of the oldest message not done (0: the queue is empty; NaN: the queue could not be read).', registers });
  const certificate = new Gauge({ name: 'postern_tls_certificate_expiry_seconds', help: 'Seconds until the served TLS certificate expires (negative: expired).', registers });

  // Series that exist from the start, so a dashboard sees 0 rather than nothing.
  for (const result of ['delivered', 'deferred', 'bounced']) deliveries.inc({ result }, 0);
  for (const direction of ['inbound', 'outbound']) for (const tls of ['none', 'TLSv1.2', 'TLSv1.3']) sessions.inc({ direction, tls }, 0);

  return {
    messageAccepted: () => accepted.inc(),
    messageRejected: (reason) => rejected.inc({ reason }),
    authFailed: () => authFailures.inc(),
    smtpSession: (direction, tlsVersion) => sessions.inc({ direction, tls: tlsLabel(tlsVersion) }),
    deliveryRecorded(result, latencySeconds) {
      deliveries.inc({ result });
      if (latencySeconds !== undefined) latency.observe(Math.max(0, latencySeconds));
    },
    deliveriesSuspended: (count) => suspended.inc(count),
    async render(snapshot) {
      const nowMs = snapshot.now.getTime();
      queueDepth.reset();
      oldest.set(Number.NaN);
      if (snapshot.queue) {
        for (const [state, count] of Object.entries(snapshot.queue.byState)) queueDepth.set({ state }, count);
        const since = snapshot.queue.oldestReceivedAt;
        oldest.set(since ? Math.max(0, (nowMs - since.getTime()) / 1000) : 0);
      }
      certificate.reset();
      if (snapshot.certificateNotAfter) certificate.set((snapshot.certificateNotAfter.getTime() - nowMs) / 1000);
      return { contentType: registry.contentType, body: await registry.metrics() };
    },
  };
}
