// A 250 is a promise: the message is on disk. Postern runs as a child
// process, clients send in parallel, and the process is SIGKILLed right
// after an acknowledgement. Every acknowledged message must be queued,
// whole, after the restart; nothing half-written may appear.
// And a delivery in flight when the process was killed is tried again as
// soon as the relay is back (not when its lease lapses, outbound.lease, 10
// minutes), while a delivery leased by a process still running is left to it.
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { processRunning } from '../../src/cli/serve.ts';
import { loadConfig } from '../../src/config/load.ts';
import { openQueueStore } from '../../src/queue/open-store.ts';
import { POSTERN_BIN, startChildRelay, type ChildRelay } from '../helpers/child-relay.ts';
import { startNextHop, testMessage, type NextHop } from '../helpers/next-hop.ts';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { writeTestConfig } from '../helpers/test-relay.ts';

const run = promisify(execFile);
const dirs: string[] = [];
afterAll(async () => Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true }))));

// sendUntilKilled - one session sending numbered messages until the connection dies; returns acknowledged ids with their marker.
async function sendUntilKilled(port: number, session: number, onAck: () => void): Promise<Map<string, string>> {
  const acked = new Map<string, string>();
  const c = await RawSmtp.connect(port);
  try {
    await c.reply();
    await c.command('EHLO durability.test');
    for (let n = 0; ; n++) {
      const marker = `session-${session}-message-${n}`;
      await c.command('MAIL FROM:<sender@example.test>');
      await c.command('RCPT TO:<rcpt@example.org>');
      await c.command('DATA');
      const reply = await c.command(`Subject: ${marker}\r\n\r\n${'x'.repeat(2000)}\r\nend of ${marker}\r\n.`);
      const id = /queued as (\w+)/.exec(reply.text)?.[1];
      if (!id) throw new Error(`unexpected reply ${reply.text}`);
      acked.set(id, marker);
      onAck();
    }
  } catch {
    return acked; // the connection died with the process
  } finally {
    c.close();
  }
}

describe('durability across SIGKILL', () => {
  it('keeps every acknowledged message, whole, and nothing half-written', async () => {
    const { dir, file } = await writeTestConfig();
    dirs.push(dir);
    const relay = await startChildRelay(file);
    let acks = 0;
    const sessions = Array.from({ length: 8 }, (_, i) =>
      sendUntilKilled(relay.ports.relay, i, () => {
        // Kill right after an acknowledgement, while the other sessions are mid-transaction.
        if (++acks === 150) relay.process.kill('SIGKILL');
      }),
    );
    const results = await Promise.all(sessions);
    expect(await relay.exited).toBe('SIGKILL');
    const acknowledged = new Map(results.flatMap((m) => [...m]));
    expect(acknowledged.size).toBeGreaterThanOrEqual(150);

    // Restart: the relay comes up on the same queue (orphans swept), then read it.
    const again = await startChildRelay(file);
    again.process.kill('SIGTERM');
    expect(await again.exited).toBe(0);

    const { config } = loadConfig({ file, env: {} });
    const store = await openQueueStore(config);
    try {
      const queued = new Map((await store.listMessages()).map((m) => [m.id, m]));
      for (const [id, marker] of acknowledged) {
        expect(queued.has(id), `acknowledged ${id} (${marker}) is queued`).toBe(true);
        const parts: Buffer[] = [];
        for await (const chunk of store.readBody(id)) parts.push(chunk as Buffer);
        const body = Buffer.concat(parts).toString();
        expect(body.endsWith(`end of ${marker}\r\n`), `${id} is whole`).toBe(true);
      }
      // Anything queued beyond the acknowledged ones (a commit whose 250 was lost with the process) is whole too.
      for (const id of queued.keys()) {
        const parts: Buffer[] = [];
        for await (const chunk of store.readBody(id)) parts.push(chunk as Buffer);
        expect(Buffer.concat(parts).toString()).toMatch(/end of session-\d+-message-\d+\r\n$/);
      }
      // Every body file on disk belongs to a queued message: no half-written leftovers.
      const files = await readdir(join(dir, 'data', 'messages'));
      expect(files.filter((f) => !queued.has(f))).toEqual([]);
    } finally {
      await store.close();
    }

    // And the CLI reads the same queue.
    const { stdout } = await run(process.execPath, [POSTERN_BIN, 'queue', 'list', '--json', '--config', file]);
    const listed = JSON.parse(stdout) as { id: string }[];
    expect(listed.map((m) => m.id).sort()).toEqual([...(await idsOf(file))].sort());
  });
});

describe('deliveries in flight at a SIGKILL, or a stop asked for twice', () => {
  const hops: NextHop[] = [];
  const relays: ChildRelay[] = [];
  afterAll(async () => {
    for (const relay of relays) relay.process.kill('SIGKILL');
    await Promise.all(hops.map((h) => h.close()));
  });

  /** inFlight - a relay delivering to a next hop that holds the DATA unanswered, with one message in that delivery. */
  async function inFlight(): Promise<{ hop: NextHop; file: string; relay: ChildRelay }> {
    const hop = await startNextHop('plain', { holdData: true });
    hops.push(hop);
    // The default outbound.lease (600 s): without the take-back at start the delivery would wait that long.
    const { dir, file } = await writeTestConfig({ outbound: { enabled: true, routes: { 'dest.test': { host: '127.0.0.1', port: hop.port, tls: 'none' } } } });
    dirs.push(dir);
    const relay = await startChildRelay(file);
    relays.push(relay);
    const c = await RawSmtp.connect(relay.ports.relay);
    try {
      await c.reply();
      await c.command('EHLO restart.test');
      await c.command('MAIL FROM:<sender@example.test>');
      await c.command('RCPT TO:<rcpt@dest.test>');
      await c.command('DATA');
      expect((await c.command(`${testMessage('in-flight')}.`)).code).toBe(250);
      await c.command('QUIT');
    } finally {
      c.close();
    }
    await hop.waitForHeld(1);
    return { hop, file, relay };
  }

  // A relay restarted right after kill -9 may find its predecessor not yet reaped: it answers signal 0, but is gone.
  it('counts a killed process its parent has not reaped yet (a zombie) as gone, and a live one as running', async () => {
    const shell = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30']);
    try {
      const child = Number(String((await once(shell.stdout, 'data'))[0]).trim());
      const state = () => readFileSync(`/proc/${child}/stat`, 'latin1').split(') ')[1]![0];
      for (let waited = 0; state() !== 'Z'; waited += 20) {
        if (waited > 5_000) throw new Error('the child never became a zombie');
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      expect(processRunning(child)).toBe(false);
      expect(processRunning(shell.pid!)).toBe(true);
      expect(processRunning(process.pid)).toBe(true);
    } finally {
      shell.kill('SIGKILL');
    }
  });

  // A stop waits for deliveries in flight (outbound.stopTimeout); asked again, it exits at once, as after a second
  // Ctrl-C. Not within a second of the first signal: `npm start` forwards the terminal's Ctrl-C, one press twice.
  it('exits at once when asked to stop again a second after the first time, and the delivery is tried at the next start', async () => {
    const { hop, file, relay } = await inFlight();
    relay.process.kill('SIGINT');
    relay.process.kill('SIGINT');
    await new Promise((resolve) => setTimeout(resolve, 1100));
    expect(relay.process.exitCode).toBeNull(); // still waiting for the delivery in flight
    relay.process.kill('SIGTERM');
    expect(await relay.exited).toBe(1);
    hop.release();

    const again = await startChildRelay(file);
    relays.push(again);
    const [first, second] = await hop.waitForMessages(2);
    expect(second!.message!.toString()).toBe(first!.message!.toString());
    again.process.kill('SIGTERM');
    expect(await again.exited).toBe(0);
    expect(await idsOf(file)).toEqual([]);
  });

  it('tries it again as soon as the relay is back on the same queue', async () => {
    const { hop, file, relay } = await inFlight();
    relay.process.kill('SIGKILL');
    expect(await relay.exited).toBe('SIGKILL');
    hop.release();

    const again = await startChildRelay(file);
    relays.push(again);
    const [first, second] = await hop.waitForMessages(2);
    expect(second!.rcptTo).toEqual(['rcpt@dest.test']);
    expect(second!.message!.toString()).toBe(first!.message!.toString());
    again.process.kill('SIGTERM');
    expect(await again.exited).toBe(0);
    expect(await idsOf(file)).toEqual([]);
  });

  it('leaves a delivery leased by a process still running to it when a second relay starts on the queue', async () => {
    const { hop, file, relay } = await inFlight();
    const store = await openQueueStore(loadConfig({ file, env: {} }).config);
    try {
      const [holder] = await store.leaseHolders(new Date());
      expect(holder).toMatch(new RegExp(`/${relay.process.pid}/[0-9a-f]+$`));

      const second = await startChildRelay(file);
      relays.push(second);
      expect(await store.leaseHolders(new Date())).toEqual([holder]);
      expect(hop.transactions).toHaveLength(1);
      hop.release();
      await hop.waitForMessages(1);
      second.process.kill('SIGTERM');
      relay.process.kill('SIGTERM');
      expect([await second.exited, await relay.exited]).toEqual([0, 0]);
      expect(hop.messages).toHaveLength(1);
    } finally {
      await store.close();
    }
  });
});

describe('npm start', () => {
  // npm passes SIGTERM to its script's shell, and `sh -c "npm run build && bin/postern.js serve"` did not pass it on:
  // the relay ran on alone, holding its ports, when systemd, pm2 or timeout stopped `npm start`.
  it('stops the relay when npm is sent SIGTERM, as a supervisor stops it', async () => {
    const { dir, file } = await writeTestConfig();
    dirs.push(dir);
    const npm = await startChildRelay(file, {}, true);
    try {
      npm.process.kill('SIGTERM');
      await npm.exited;
      expect(await closedWithin(npm.ports.relay, 15_000)).toBe(true);
    } finally {
      killProcessesNaming(file);
    }
  });
});

/** closedWithin - whether connections to a loopback port are refused within `ms`. */
async function closedWithin(port: number, ms: number): Promise<boolean> {
  for (const deadline = Date.now() + ms; Date.now() < deadline; await new Promise((resolve) => setTimeout(resolve, 100))) {
    const socket = connect({ host: '127.0.0.1', port });
    const refused = await new Promise<boolean>((resolve) => {
      socket.once('connect', () => resolve(false));
      socket.once('error', () => resolve(true));
    });
    socket.destroy();
    if (refused) return true;
  }
  return false;
}

/** killProcessesNaming - SIGKILL every process whose command line holds `text` (a relay a failed test left running). */
function killProcessesNaming(text: string): void {
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(text)) process.kill(Number(pid), 'SIGKILL');
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
}

async function idsOf(file: string): Promise<string[]> {
  const store = await openQueueStore(loadConfig({ file, env: {} }).config);
  try {
    return (await store.listMessages()).map((m) => m.id);
  } finally {
    await store.close();
  }
}
