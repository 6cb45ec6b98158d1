// Memory per session must not grow with message size: 20 sessions each
// streaming a 10 MB body at once must not need 200 MB of heap. The relay
// runs in this process, so process.memoryUsage() sees its buffers; the
// clients write one shared 64 KB chunk and honour backpressure, so they add
// almost nothing themselves. Buffering every body would show 200 MB and more.
import type { Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RawSmtp } from '../helpers/raw-smtp.ts';
import { startTestRelay, type TestRelay } from '../helpers/test-relay.ts';

const MB = 1024 * 1024;
const SESSIONS = 20;
const BODY_SIZE = 10 * MB;
// 1024 lines of 62 'x' + CRLF: exactly 64 KB, no line starts with a dot.
const CHUNK = Buffer.from(`${'x'.repeat(62)}\r\n`.repeat(1024));
const LIMIT = 100 * MB;

let relay: TestRelay;
beforeAll(async () => {
  relay = await startTestRelay({ limits: { messageSize: 20 * MB } });
});
afterAll(async () => relay?.stop());

/** writeWithBackpressure - write, and when the socket says its buffer is full, wait for 'drain'. */
function writeWithBackpressure(socket: Socket, data: Buffer): Promise<void> {
  if (socket.write(data)) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onClose = () => reject(new Error('connection closed while waiting for drain'));
    socket.once('close', onClose);
    socket.once('drain', () => {
      socket.off('close', onClose);
      resolve();
    });
  });
}

/** sendLargeMessage - one session streaming a BODY_SIZE body; the reply to the final dot. */
async function sendLargeMessage(n: number): Promise<string> {
  const c = await RawSmtp.connect(relay.ports.relay);
  try {
    expect((await c.reply()).code).toBe(220);
    await c.command('EHLO memory.test');
    expect((await c.command(`MAIL FROM:<sender${n}@example.test> SIZE=${BODY_SIZE + 100}`)).code).toBe(250);
    expect((await c.command(`RCPT TO:<rcpt${n}@example.org>`)).code).toBe(250);
    expect((await c.command('DATA')).code).toBe(354);
    await writeWithBackpressure(c.socket, Buffer.from(`Subject: large ${n}\r\n\r\n`));
    for (let sent = 0; sent < BODY_SIZE; sent += CHUNK.length) await writeWithBackpressure(c.socket, CHUNK);
    c.write('.\r\n');
    return (await c.reply()).text;
  } finally {
    c.close();
  }
}

function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

describe('memory under large concurrent messages', () => {
  it(`${SESSIONS} sessions × ${BODY_SIZE / MB} MB: peak growth stays under ${LIMIT / MB} MB, and all are queued`, async () => {
    const baseline = memoryInUse();
    let peak = baseline;
    // Measurement, not a wait: sample while the transfers run.
    const sampler = setInterval(() => (peak = Math.max(peak, memoryInUse())), 20);
    let replies: string[];
    try {
      replies = await Promise.all(Array.from({ length: SESSIONS }, (_, n) => sendLargeMessage(n)));
    } finally {
      clearInterval(sampler);
    }
    peak = Math.max(peak, memoryInUse());
    const growth = peak - baseline;
    console.log(`memory: baseline ${(baseline / MB).toFixed(1)} MB, peak ${(peak / MB).toFixed(1)} MB, growth ${(growth / MB).toFixed(1)} MB for ${SESSIONS} × ${BODY_SIZE / MB} MB`);

    const ids = replies.map((text) => /^250 2\.0\.0 Ok: queued as (\w{16})$/.exec(text)?.[1] ?? text);
    expect(replies.filter((text) => !/^250 2\.0\.0 Ok: queued as \w{16}$/.test(text))).toEqual([]);
    const queued = await relay.queued();
    expect(queued.map((m) => m.id).sort()).toEqual([...ids].sort());
    expect(queued.filter((m) => m.size <= BODY_SIZE)).toEqual([]);
    expect(growth).toBeLessThan(LIMIT);
  });
});
