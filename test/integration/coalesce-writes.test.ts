// coalesceWrites (inbound/wire-replies.ts): the replies written in one turn
// of the event loop leave in one write; a 220, 221 or 421 flushes at once.
// On a real loopback socket pair; what is observed is the socket's cork
// count and the bytes the peer reads.
import { once } from 'node:events';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { coalesceWrites } from '../../src/inbound/wire-replies.ts';

let server: Server;
let serverSide: Socket;
let client: Socket;
let received: string[];

beforeEach(async () => {
  server = createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as { port: number }).port;
  const accepted = once(server, 'connection');
  client = connect(port, '127.0.0.1');
  [serverSide] = (await accepted) as [Socket];
  received = [];
  client.on('data', (chunk: Buffer) => received.push(chunk.toString()));
});

afterEach(async () => {
  client.destroy();
  serverSide.destroy();
  server.close();
  await once(server, 'close');
});

/** reply - what the send() wrapper does for one reply: coalesce, then write. */
function reply(code: number, text: string): void {
  coalesceWrites(serverSide, code);
  serverSide.write(`${code} ${text}\r\n`);
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

async function receivedText(length: number): Promise<string> {
  while (received.join('').length < length) await once(client, 'data');
  return received.join('');
}

describe('coalesceWrites', () => {
  it('holds the replies of one turn and writes them together at the end of it', async () => {
    reply(250, 'a');
    reply(250, 'b');
    reply(354, 'c');
    expect(serverSide.writableCorked).toBe(1);
    expect(serverSide.writableLength).toBe(21);
    await turn();
    expect(serverSide.writableCorked).toBe(0);
    expect(await receivedText(21)).toBe('250 a\r\n250 b\r\n354 c\r\n');
  });

  it.each([220, 221, 421])('flushes what it holds before a %i, which is not held either', async (code) => {
    reply(250, 'held');
    reply(code, 'now');
    expect(serverSide.writableCorked).toBe(0);
    expect(await receivedText(19)).toBe(`250 held\r\n${code} now\r\n`);
  });

  it('leaves a destroyed socket alone', () => {
    serverSide.destroy();
    coalesceWrites(serverSide, 250);
    expect(serverSide.writableCorked).toBe(0);
  });
});
