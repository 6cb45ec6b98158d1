// Passwords for the CLI, never from argv (where other users of the machine
// could read them): a prompt on the terminal without echo, or the first line
// of stdin for scripts (--password-stdin).
// Fails: neither rejects. readFirstLine gives '' for an empty stdin;
// promptHidden waits for a line, so callers check stdin is a terminal first.
import { createInterface } from 'node:readline';
import { Writable } from 'node:stream';

/** promptHidden - ask on stderr, read one line from the stdin terminal without echoing it. */
export function promptHidden(question: string): Promise<string> {
  process.stderr.write(question);
  // The typed characters go to a sink: readline would otherwise echo them.
  const muted = new Writable({ write: (_chunk, _enc, done) => done() });
  const rl = createInterface({ input: process.stdin, output: muted, terminal: true });
  return new Promise((resolve) => {
    rl.question('', (answer) => {
      rl.close();
      process.stderr.write('\n');
      resolve(answer);
    });
  });
}

/** readFirstLine - the first line of a stream (CRLF or LF ended); stops reading at the first newline. */
export async function readFirstLine(input: NodeJS.ReadableStream): Promise<string> {
  let text = '';
  for await (const chunk of input) {
    text += String(chunk);
    if (text.includes('\n')) break;
  }
  return text.split(/\r?\n/)[0] ?? '';
}
