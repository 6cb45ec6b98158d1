// Waiting for a server to be ready: connect to 127.0.0.1:PORT until a 220
// greeting comes, then QUIT. Used after starting Postfix (whose master
// opens the port a moment after `postfix start` returns).
//
//   waitForGreeting - resolves at the first 220; rejects after timeoutMs with the last error.
//   freePort        - a port on 127.0.0.1 nobody listens on now (for Postfix, which needs a fixed port).
import { connect, createServer, type AddressInfo } from 'node:net';

/** freePort - ask the system for a free loopback port, then release it. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** waitForGreeting - retry every 100 ms until 127.0.0.1:port greets with 220. */
export async function waitForGreeting(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last = 'no attempt';
  while (Date.now() < deadline) {
    try {
      await greetOnce(port);
      return;
    } catch (err) {
      last = (err as Error).message;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
  }
  throw new Error(`no 220 greeting within ${timeoutMs} ms (${last})`);
}

function greetOnce(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let seen = '';
    socket.setTimeout(5000, () => socket.destroy(new Error('timeout waiting for the greeting')));
    socket.on('data', (chunk: Buffer) => {
      seen += chunk.toString('latin1');
      if (!seen.includes('\r\n')) return;
      if (!seen.startsWith('220')) return socket.destroy(new Error(`greeting: ${seen.trim()}`));
      socket.end('QUIT\r\n');
      resolve();
    });
    socket.on('error', reject);
    socket.on('close', () => reject(new Error('closed before the greeting')));
  });
}
