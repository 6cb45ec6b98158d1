// A smarthost for tests, on 127.0.0.1: smtp-server with STARTTLS under a
// certificate from its own test CA (caFile, for outbound.tls.caFile), AUTH
// PLAIN/LOGIN with one user, counting sessions, logins and messages. Also
// closedPort, a port nobody listens on (a smarthost that is down).
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SMTPServer } from 'smtp-server';
import { generateCertificateAuthority, issueServerCertificate } from '../../src/tls/dev-certs.ts';

export interface Sink {
  port: number;
  caFile: string;
  sessions: number;
  logins: number;
  messages: number;
  close(): Promise<void>;
}

/** startSink - the smarthost, listening on 127.0.0.1:port; it trusts nothing but user relay-user, password relay-pass. */
export async function startSink(): Promise<Sink> {
  const dir = await mkdtemp(join(tmpdir(), 'postern-sink-'));
  const ca = await generateCertificateAuthority({ commonName: 'Postern sink CA' });
  const cert = await issueServerCertificate(ca, { names: ['127.0.0.1', 'localhost'] });
  const caFile = join(dir, 'ca.crt');
  await writeFile(caFile, ca.certPem);
  const sink: Sink = { port: 0, caFile, sessions: 0, logins: 0, messages: 0, close: () => Promise.resolve() };
  const server = new SMTPServer({
    key: cert.keyPem,
    cert: cert.certPem,
    logger: false,
    authMethods: ['PLAIN', 'LOGIN'],
    onConnect(_session, callback) {
      sink.sessions++;
      callback();
    },
    onAuth(auth, _session, callback) {
      if (auth.username !== 'relay-user' || auth.password !== 'relay-pass') return callback(new Error('535 5.7.8 Authentication credentials invalid'));
      sink.logins++;
      callback(null, { user: auth.username });
    },
    onData(stream, _session, callback) {
      stream.resume();
      stream.on('end', () => {
        sink.messages++;
        callback();
      });
    },
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  sink.port = (server.server.address() as { port: number }).port;
  sink.close = async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  };
  return sink;
}

/** closedPort - a port on 127.0.0.1 nobody listens on (bound, then let go). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
