// The start-up summary: where each listener is, and a swaks command a person can paste as it is.
import { describe, expect, it } from 'vitest';
import { describeRelay } from '../../src/cli/serve.ts';
import { loadConfig } from '../../src/config/load.ts';

const { config } = loadConfig({ env: {} });
const relayOn = (host: string) => ({ listeners: [{ name: 'relay' as const, host, port: 2525 }], fingerprint: 'AB:CD', caFile: 'certs/ca.crt' });

describe('describeRelay', () => {
  it.each([
    ['127.0.0.1', '127.0.0.1:2525', '--server 127.0.0.1:2525 '],
    ['0.0.0.0', '0.0.0.0:2525', '--server 127.0.0.1:2525 '],
    ['::', '[::]:2525', '--server 127.0.0.1:2525 '],
    ['::1', '[::1]:2525', '--server [::1]:2525 '],
  ])('listening on %s: shows %s and tries %s', (host, shown, server) => {
    const summary = describeRelay(config, relayOn(host));
    expect(summary).toMatch(new RegExp(`^ {2}relay +${shown.replace(/[.[\]]/g, '\\$&')} `, 'm'));
    expect(summary).toContain(`  swaks ${server}--tls `);
  });
});
