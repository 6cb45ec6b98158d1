// Several Postern processes sharing one PostgreSQL queue, started as users
// start them (`postern serve --config FILE`, one config and directory per
// node, one queue.url), delivering to one test next hop (the sink) that
// records every message it receives and which node (EHLO name) sent it.
//
//   - throughput with 1, 2 and 3 nodes: a load spread over the nodes by
//     several raw SMTP sessions; every message that got a 250 arrives at the
//     sink exactly once (no duplicates in normal operation);
//   - one node SIGKILLed in the middle of the load: every acknowledged
//     message still arrives (the survivors take over its lapsed leases),
//     and a duplicate is only ever a delivery the killed node had in flight
//     (one of its copies came from the killed node);
//   - a message accepted on node A is listed, held and released with
//     `postern queue … --config <node B's config>`.
// The figures are printed (console.log) for the closing note and the README.
// Message counts: POSTERN_CLUSTER_MESSAGES for the kill run (default 2000),
// POSTERN_CLUSTER_THROUGHPUT_MESSAGES for each throughput run (default 500).
//
// Skipped, with a message saying how to run it, when no PostgreSQL answers.
import { execFile } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { once } from 'node:events';
import { SMTPServer } from 'smtp-server';
import { afterEach, describe, expect, it } from 'vitest';
import { POSTERN_BIN, startChildRelay, type ChildRelay } from '../helpers/child-relay.ts';
import { createTestSchema, postgresTestUrl, SKIP_MESSAGE, type TestSchema } from '../helpers/postgres.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { writeTestConfig } from '../helpers/test-relay.ts';

const baseUrl = await postgresTestUrl();
if (!baseUrl) console.warn(SKIP_MESSAGE);

const KILL_RUN_MESSAGES = Number(process.env.POSTERN_CLUSTER_MESSAGES ?? 2000);
const THROUGHPUT_MESSAGES = Number(process.env.POSTERN_CLUSTER_THROUGHPUT_MESSAGES ?? 500);
const SESSIONS = 12;
const CONCURRENCY = 20;

/** What the sink saw of one message. */
interface Arrival {
  marker: string;
  /** The EHLO name of the node that delivered it. */
  node: string;
  at: number;
}

interface Sink {
  port: number;
  arrivals: Arrival[];
  byMarker: Map<string, Arrival[]>;
  /** until - resolves once every marker has arrived at least once; rejects at the deadline with what is missing. */
  until(markers: Set<string>, deadlineMs: number): Promise<number>;
  close(): Promise<void>;
}

/** startSink - a plain SMTP next hop on 127.0.0.1 that records each message's Subject (the marker) and sender node. */
async function startSink(): Promise<Sink> {
  const arrivals: Arrival[] = [];
  const byMarker = new Map<string, Arrival[]>();
  let check = (): void => undefined;
  const server = new SMTPServer({
    disabledCommands: ['AUTH', 'STARTTLS'],
    authOptional: true,
    logger: false,
    maxClients: 1000,
    onData(stream, session, done) {
      let head = '';
      stream.on('data', (chunk: Buffer) => {
        if (head.length < 4096) head += chunk.toString('latin1');
      });
      stream.on('end', () => {
        const marker = /^Subject: (\S+)/m.exec(head)?.[1] ?? '(none)';
        const arrival = { marker, node: session.hostNameAppearsAs, at: Date.now() };
        arrivals.push(arrival);
        const seen = byMarker.get(marker);
        if (seen) seen.push(arrival);
        else byMarker.set(marker, [arrival]);
        done();
        check();
      });
    },
  });
  // A node SIGKILLed mid-session resets its connection: expected here, not an error.
  server.on('error', () => undefined);
  server.listen(0, '127.0.0.1');
  await once(server.server, 'listening');
  const port = (server.server.address() as { port: number }).port;
  return {
    port,
    arrivals,
    byMarker,
    until(markers, deadlineMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          const missing = [...markers].filter((m) => !byMarker.has(m));
          reject(new Error(`${missing.length} acknowledged messages never arrived, e.g. ${missing.slice(0, 10).join(', ')}`));
        }, deadlineMs);
        check = () => {
          if ([...markers].every((m) => byMarker.has(m))) {
            clearTimeout(timer);
            check = () => undefined;
            resolve(Date.now());
          }
        };
        check();
      });
    },
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

interface Node {
  name: string;
  dir: string;
  file: string;
  relay?: ChildRelay;
  killed: boolean;
}

/** startNodes - `count` Postern processes on one queue.url, delivering @sink.test to the sink. */
async function startNodes(options: { count: number; url: string; sinkPort: number; lease: number; outbound?: boolean }): Promise<Node[]> {
  return Promise.all(
    Array.from({ length: options.count }, async (_, i): Promise<Node> => {
      const name = `node-${String.fromCharCode(97 + i)}.test`;
      const { dir, file } = await writeTestConfig({
        queue: { backend: 'postgres', url: options.url },
        http: { enabled: false },
        outbound: {
          enabled: options.outbound ?? true,
          heloName: name,
          concurrency: CONCURRENCY,
          perDestination: CONCURRENCY,
          lease: options.lease,
          routes: { 'sink.test': { host: '127.0.0.1', port: options.sinkPort, tls: 'none' } },
        },
      });
      const relay = await startChildRelay(file);
      return { name, dir, file, relay, killed: false };
    }),
  );
}

/** stopNodes - SIGTERM every live node, wait for it, remove its directory. */
async function stopNodes(nodes: Node[]): Promise<void> {
  await Promise.all(
    nodes.map(async (node) => {
      const relay = node.relay;
      if (relay && relay.process.exitCode === null && relay.process.signalCode === null) {
        relay.process.kill('SIGTERM');
        await relay.exited;
      }
      await rm(node.dir, { recursive: true, force: true });
    }),
  );
}

interface LoadResult {
  acked: Set<string>;
  /** Sent but not acknowledged (connection lost, or a 4xx). */
  inDoubt: Set<string>;
  startedAt: number;
  lastAckAt: number;
}

/**
 * sendLoad - `total` messages over SESSIONS raw SMTP sessions spread over the nodes; `onAck` after each 250.
 * A session whose node dies moves to a live node; the message it was sending is in doubt, never resent.
 */
async function sendLoad(nodes: Node[], total: number, run: string, onAck: (acked: number) => void = () => undefined): Promise<LoadResult> {
  const acked = new Set<string>();
  const inDoubt = new Set<string>();
  let next = 0;
  const startedAt = Date.now();
  let lastAckAt = startedAt;
  const liveNode = (preferred: number): Node => {
    for (let k = 0; k < nodes.length; k++) {
      const node = nodes[(preferred + k) % nodes.length]!;
      if (!node.killed) return node;
    }
    throw new Error('no node left alive');
  };
  const session = async (index: number): Promise<void> => {
    // The connection and the node it goes to: a node killed meanwhile makes its connection fail.
    let smtp: RawSmtp | undefined;
    let node = liveNode(index);
    while (next < total) {
      if (!smtp) {
        node = liveNode(index);
        try {
          smtp = await RawSmtp.connect(node.relay!.ports.relay);
          expect((await smtp.reply()).code).toBe(220);
          expect((await smtp.command('EHLO load.test')).code).toBe(250);
        } catch (error) {
          smtp = undefined;
          if (!node.killed) throw error;
          continue;
        }
      }
      const marker = `${run}-${next++}`;
      try {
        if ((await smtp.command('MAIL FROM:<load@client.test>')).code !== 250) throw new Error('MAIL refused');
        if ((await smtp.command(`RCPT TO:<${marker}@sink.test>`)).code !== 250) throw new Error('RCPT refused');
        if ((await smtp.command('DATA')).code !== 354) throw new Error('DATA refused');
        smtp.write(`Subject: ${marker}\r\nFrom: load@client.test\r\nTo: ${marker}@sink.test\r\n\r\nmessage ${marker}\r\n.\r\n`);
        const reply = await smtp.reply();
        if (reply.code === 250) {
          acked.add(marker);
          lastAckAt = Date.now();
          onAck(acked.size);
        } else {
          inDoubt.add(marker);
        }
      } catch (error) {
        inDoubt.add(marker);
        smtp.close();
        smtp = undefined;
        if (!node.killed) throw error;
      }
    }
    if (smtp && !smtp.closed) {
      await smtp.command('QUIT').catch(() => undefined);
      smtp.close();
    }
  };
  await Promise.all(Array.from({ length: SESSIONS }, (_, i) => session(i)));
  return { acked, inDoubt, startedAt, lastAckAt };
}

/** duplicatesOf - the markers the sink received more than once, with the nodes that sent each copy. */
function duplicatesOf(sink: Sink, prefix: string): { marker: string; nodes: string[] }[] {
  return [...sink.byMarker]
    .filter(([marker, copies]) => marker.startsWith(prefix) && copies.length > 1)
    .map(([marker, copies]) => ({ marker, nodes: copies.map((c) => c.node) }));
}

/** postern - run the CLI to completion with a node's config; its exit code and output. */
function postern(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [POSTERN_BIN, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err && typeof err.code !== 'number') return reject(new Error(`postern ${args.join(' ')}: ${err.message}\n${stderr}`));
      resolve({ code: err ? (err.code as number) : 0, stdout, stderr });
    });
  });
}

const rate = (count: number, ms: number): string => (count / (ms / 1000)).toFixed(0);

/** openInData - a raw session to `port` that has had 354 to DATA, for `to` from `from`. */
async function openInData(port: number, from: string, to: string): Promise<RawSmtp> {
  const smtp = await RawSmtp.connect(port);
  expect((await smtp.reply()).code).toBe(220);
  expect((await smtp.command('EHLO client.test')).code).toBe(250);
  expect((await smtp.command(`MAIL FROM:<${from}>`)).code).toBe(250);
  expect((await smtp.command(`RCPT TO:<${to}>`)).code).toBe(250);
  expect((await smtp.command('DATA')).code).toBe(354);
  return smtp;
}

describe.skipIf(!baseUrl)('cluster: several Postern nodes on one PostgreSQL queue', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  });

  /** setUp - a fresh schema, a sink and `count` nodes; torn down after the test. */
  async function setUp(count: number, lease: number, outbound = true): Promise<{ schema: TestSchema; sink: Sink; nodes: Node[] }> {
    const schema = await createTestSchema(baseUrl!);
    cleanups.push(() => schema.drop());
    const sink = await startSink();
    cleanups.push(() => sink.close());
    const nodes = await startNodes({ count, url: schema.url, sinkPort: sink.port, lease, outbound });
    cleanups.push(() => stopNodes(nodes));
    return { schema, sink, nodes };
  }

  it('delivers every acknowledged message exactly once with 1, 2 and 3 nodes (throughput)', async () => {
    const figures: string[] = [];
    for (const count of [1, 2, 3]) {
      const { sink, nodes } = await setUp(count, 600);
      const run = `t${count}`;
      const load = await sendLoad(nodes, THROUGHPUT_MESSAGES, run);
      const allDeliveredAt = await sink.until(load.acked, 120_000);
      const duplicates = duplicatesOf(sink, run);
      const perNode = nodes.map((n) => `${n.name}: ${sink.arrivals.filter((a) => a.node === n.name).length}`).join(', ');
      figures.push(
        `${count} node${count > 1 ? 's' : ' '}: ${load.acked.size} accepted in ${load.lastAckAt - load.startedAt} ms (${rate(load.acked.size, load.lastAckAt - load.startedAt)}/s), ` +
          `all delivered after ${allDeliveredAt - load.startedAt} ms (${rate(load.acked.size, allDeliveredAt - load.startedAt)}/s end to end), ` +
          `duplicates ${duplicates.length}; delivered by ${perNode}`,
      );
      expect(load.acked.size).toBe(THROUGHPUT_MESSAGES);
      expect(duplicates).toEqual([]);
      for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
    }
    console.log(`cluster throughput (${THROUGHPUT_MESSAGES} messages per run, ${SESSIONS} SMTP sessions, outbound.concurrency ${CONCURRENCY} per node):\n  ${figures.join('\n  ')}`);
  }, 600_000);

  it('delivers every acknowledged message when one of three nodes is SIGKILLed mid-load', async () => {
    const total = KILL_RUN_MESSAGES;
    const killAt = Math.floor(total * 0.4);
    const { sink, nodes } = await setUp(3, 5);
    const victim = nodes[2]!;
    let killedAt = 0;
    const load = await sendLoad(nodes, total, 'k', (acked) => {
      if (acked !== killAt) return;
      victim.killed = true;
      victim.relay!.process.kill('SIGKILL');
      killedAt = Date.now();
    });
    expect(await victim.relay!.exited).toBe('SIGKILL');
    const allDeliveredAt = await sink.until(load.acked, 180_000);

    const duplicates = duplicatesOf(sink, 'k-');
    const fromVictim = sink.arrivals.filter((a) => a.node === victim.name).length;
    const unacknowledgedDelivered = [...load.inDoubt].filter((m) => sink.byMarker.has(m)).length;
    console.log(
      `cluster kill run: ${total} messages over ${SESSIONS} sessions to 3 nodes, ${victim.name} SIGKILLed after ${killAt} acknowledgements ` +
        `(${killedAt - load.startedAt} ms in; outbound.lease 5s)\n` +
        `  acknowledged ${load.acked.size}, in doubt (connection lost before the reply) ${load.inDoubt.size}, of which delivered anyway ${unacknowledgedDelivered}\n` +
        `  every acknowledged message delivered after ${allDeliveredAt - load.startedAt} ms (${allDeliveredAt - killedAt} ms after the kill); ` +
        `${fromVictim} delivered by ${victim.name} before it died\n` +
        `  duplicates: ${duplicates.length}${duplicates.length ? ` (${duplicates.map((d) => `${d.marker} via ${d.nodes.join(' + ')}`).join('; ')})` : ''}`,
    );
    expect(load.acked.size + load.inDoubt.size).toBe(total);
    // A duplicate is a delivery the killed node made but could not record: one of its copies is the victim's.
    for (const duplicate of duplicates) expect(duplicate.nodes).toContain(victim.name);
    expect(duplicates.length).toBeLessThanOrEqual(CONCURRENCY);
  }, 600_000);

  it('accepts mail while more clients than its draft connections trickle DATA, small and large', async () => {
    // The draft pool has 20 connections. Before, each client in DATA held one until its end of DATA, so 20
    // clients sending slowly (what one address may open) stopped every other message at its end of DATA.
    const { schema, nodes } = await setUp(1, 600, false);
    const port = nodes[0]!.relay!.ports.relay;
    const trickling: RawSmtp[] = [];
    for (let i = 0; i < 24; i++) {
      const smtp = await openInData(port, 'slow@client.test', `slow${i}@sink.test`);
      trickling.push(smtp);
      // Half of them past a full chunk row (256 KB), whose INSERT is done while the rest trickles.
      smtp.write(i % 2 === 0 ? 'Subject: slow\r\n' : `Subject: slow\r\n\r\n${'x'.repeat(998)}\r\n`.repeat(300));
    }
    const quick = await openInData(port, 'quick@client.test', 'quick@sink.test');
    quick.write('Subject: quick\r\n\r\nnot held up\r\n.\r\n');
    const reply = await quick.reply();
    expect(reply.code).toBe(250);
    quick.close();

    // The slow ones finish too, and every body is whole.
    for (const smtp of trickling) smtp.write('\r\nthe end\r\n.\r\n');
    for (const smtp of trickling) expect((await smtp.reply()).code).toBe(250);
    for (const smtp of trickling) smtp.close();
    const sizes = await schema.query<{ size: string; stored: string }>(
      'SELECT m.size, (SELECT sum(length(c.data)) FROM message_chunks c WHERE c.message_id = m.id) AS stored FROM messages m',
    );
    expect(sizes.rows).toHaveLength(25);
    for (const row of sizes.rows) expect(row.stored).toBe(row.size);
    expect(sizes.rows.filter((r) => Number(r.size) > 256 * 1024)).toHaveLength(12);
  }, 120_000);

  it('lists, holds and releases from node B a message accepted on node A', async () => {
    const { nodes } = await setUp(2, 600, false);
    const [a, b] = nodes;
    const smtp = await openInData(a!.relay!.ports.relay, 'alice@client.test', 'bob@sink.test');
    smtp.write('Subject: across\r\n\r\nfrom node A\r\n.\r\n');
    const accepted = await smtp.reply();
    expect(accepted.code).toBe(250);
    smtp.close();

    const list = await postern(['queue', 'list', '--json', '--config', b!.file]);
    expect(list.code).toBe(0);
    const listed = JSON.parse(list.stdout) as { id: string; state: string; recipients: string[] }[];
    expect(listed).toMatchObject([{ state: 'queued', recipients: ['bob@sink.test'] }]);
    const id = listed[0]!.id;
    expect(accepted.text).toContain(id);

    expect((await postern(['queue', 'hold', id, '--config', b!.file])).code).toBe(0);
    expect(JSON.parse((await postern(['queue', 'list', '--json', '--config', a!.file])).stdout)).toMatchObject([{ id, state: 'held' }]);
    expect((await postern(['queue', 'release', id, '--config', b!.file])).code).toBe(0);
    expect(JSON.parse((await postern(['queue', 'list', '--json', '--config', b!.file])).stdout)).toMatchObject([{ id, state: 'queued' }]);
    const show = await postern(['queue', 'show', id, '--config', b!.file]);
    expect(show.stdout).toContain(`Message ${id} (queued)`);
  }, 120_000);
});
