// A real Postern relay for tests: a temp directory, a test CA and server
// certificate made here, every listener (the HTTP one too) on an ephemeral
// port on 127.0.0.1, reverse lookups off (no DNS leaves the machine), logs
// captured.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { stringify } from 'yaml';
import type { Config, ListenerName } from '../../src/config/config.ts';
import { loadConfig } from '../../src/config/load.ts';
import { UserStore } from '../../src/inbound/user-store.ts';
import { createLogger } from '../../src/observability/logger.ts';
import { startRelay, type RelayOptions } from '../../src/cli/serve.ts';
import type { DonePurge } from '../../src/queue/done-purge.ts';
import type { Scheduler } from '../../src/queue/scheduler.ts';
import { openQueueStore } from '../../src/queue/open-store.ts';
import type { QueuedMessageSummary } from '../../src/queue/queue-store.ts';
import { generateCertificateAuthority, issueServerCertificate, type PemCredentials } from '../../src/tls/dev-certs.ts';

export interface TestRelay {
  /** The relay's scheduler (absent with outbound.enabled false). */
  scheduler?: Scheduler;
  /** The relay's retention sweep of done messages (queue.keepDone). */
  donePurge: DonePurge;
  dir: string;
  config: Config;
  ca: PemCredentials;
  ports: Record<ListenerName, number>;
  /** The HTTP listener's port (absent with http.enabled false). */
  httpPort?: number;
  logs: Record<string, unknown>[];
  addUser(name: string, password: string): Promise<void>;
  /** queued - what a separate reader of the queue sees (a fresh store handle). */
  queued(): Promise<QueuedMessageSummary[]>;
  /** body - the stored bytes of a message. */
  body(id: string): Promise<Buffer>;
  stop(): Promise<void>;
}

/** writeTestConfig - a temp dir with certificates and a postern.yaml; extra settings merged over the test defaults. */
export async function writeTestConfig(extra: Record<string, unknown> = {}): Promise<{ dir: string; file: string; ca: PemCredentials }> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-test-'));
  const ca = await generateCertificateAuthority({ commonName: 'Postern test CA' });
  const server = await issueServerCertificate(ca, { names: ['localhost', '127.0.0.1', 'relay.test'] });
  await writeFile(join(dir, 'ca.crt'), ca.certPem);
  await writeFile(join(dir, 'server.crt'), server.certPem);
  await writeFile(join(dir, 'server.key'), server.keyPem, { mode: 0o600 });
  const settings = deepMerge(
    {
      hostname: 'relay.test',
      listeners: { relay: { port: 0 }, submission: { port: 0 }, submissions: { port: 0 } },
      tls: { cert: join(dir, 'server.crt'), key: join(dir, 'server.key') },
      queue: { path: join(dir, 'data', 'queue.db') },
      relay: { users: join(dir, 'data', 'users.json') },
      smtp: { reverseLookup: false },
      http: { host: '127.0.0.1', port: 0 },
      // No test delivers anywhere unless it configures a route or DNS on loopback; nothing leaves 127.0.0.1:
      // a lookup a test did not point at its own DNS server goes to a closed loopback port and fails.
      outbound: { enabled: false },
      dns: { servers: ['127.0.0.1:1'] },
    },
    extra,
  );
  const file = join(dir, 'postern.yaml');
  await writeFile(file, stringify(settings));
  return { dir, file, ca };
}

/** startTestRelay - a running relay in this process. */
export async function startTestRelay(extra: Record<string, unknown> = {}, options: RelayOptions = {}): Promise<TestRelay> {
  const { dir, file, ca } = await writeTestConfig(extra);
  const { config } = loadConfig({ file, env: {} });
  const logs: Record<string, unknown>[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  const relay = await startRelay(config, createLogger({ level: 'debug', destination }), options);
  const ports = Object.fromEntries(relay.listeners.map((l) => [l.name, l.port])) as Record<ListenerName, number>;
  return {
    scheduler: relay.scheduler,
    donePurge: relay.donePurge,
    dir,
    config,
    ca,
    ports,
    httpPort: relay.http?.port,
    logs,
    addUser: (name, password) => new UserStore(config.relay.users).add(name, password),
    async queued() {
      const store = await openQueueStore(config);
      try {
        return await store.listMessages();
      } finally {
        await store.close();
      }
    },
    async body(id) {
      const store = await openQueueStore(config);
      try {
        const parts: Buffer[] = [];
        for await (const chunk of store.readBody(id)) parts.push(chunk as Buffer);
        return Buffer.concat(parts);
      } finally {
        await store.close();
      }
    },
    async stop() {
      await relay.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function deepMerge(base: Record<string, unknown>, extra: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(extra)) {
    const b = out[k];
    out[k] = v && typeof v === 'object' && !Array.isArray(v) && b && typeof b === 'object' && !Array.isArray(b) ? deepMerge(b as Record<string, unknown>, v as Record<string, unknown>) : v;
  }
  return out;
}
