// The log's backstop for secrets: a config object or credentials passed to a
// logger by mistake as a line's fields show '[redacted]' where the secret
// was, and nothing else changes.
import { describe, expect, it } from 'vitest';
import { withoutSecrets } from '../../src/observability/logger.ts';
import { captureWarnings } from '../helpers/captured-log.ts';

describe('withoutSecrets', () => {
  it('censors password, pass, token and secret among the fields and one object down', () => {
    const fields = { password: 'p1', token: 't1', store: { url: 'postgres://db', password: 'p2', pass: 'p3' }, auth: { user: 'alice', secret: 's1' } };
    expect(withoutSecrets(fields)).toEqual({
      password: '[redacted]',
      token: '[redacted]',
      store: { url: 'postgres://db', password: '[redacted]', pass: '[redacted]' },
      auth: { user: 'alice', secret: '[redacted]' },
    });
    // The caller's objects are left as they were.
    expect(fields.store.password).toBe('p2');
    expect(fields.password).toBe('p1');
  });

  it('shows an Error that carries a secret as pino would, its type, message and stack kept, the secret censored', () => {
    const err = Object.assign(new Error('login refused'), { password: 'p4' });
    const shown = withoutSecrets({ err }).err as Record<string, unknown>;
    expect(shown).toMatchObject({ type: 'Error', message: 'login refused', password: '[redacted]' });
    expect(shown.stack).toEqual(expect.stringContaining('login refused'));
  });

  it('returns the fields themselves when there is nothing to censor', () => {
    const fields = { queueId: '01M8TYNR7ZB6MJ07', tls: { version: 'TLSv1.3' }, results: [{ rcpt: 'a@b.test', reply: '250 ok' }], size: 10 };
    expect(withoutSecrets(fields)).toBe(fields);
  });
});

describe('the process logger', () => {
  it('writes no secret of a line\'s fields', () => {
    const { logger, lines } = captureWarnings();
    logger.child({ component: 'test' }).warn({ relayhost: { host: 'smtp.example.test', password: 'hunter2' }, config: { token: 'abc123' }, password: 'hunter3' }, 'relayhost refused');
    expect(lines).toEqual([expect.objectContaining({ msg: 'relayhost refused', component: 'test', relayhost: { host: 'smtp.example.test', password: '[redacted]' }, config: { token: '[redacted]' }, password: '[redacted]' })]);
    const written = JSON.stringify(lines);
    for (const secret of ['hunter2', 'hunter3', 'abc123']) expect(written).not.toContain(secret);
  });
});
