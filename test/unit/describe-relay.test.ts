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

  it('offers no command that would be refused: loopback left out of relay.trustedNetworks', () => {
    const { config: strict } = loadConfig({ env: { POSTERN_RELAY_TRUSTED_NETWORKS: '10.0.0.0/8' } });
    const summary = describeRelay(strict, relayOn('0.0.0.0'));
    expect(summary).not.toContain('swaks');
    expect(summary).toContain('relays for relay.trustedNetworks (10.0.0.0/8), which leave out 127.0.0.1: send from a host in them.');
  });

  it('listening on every address with only ::1 trusted: tries [::1]', () => {
    const { config: v6 } = loadConfig({ env: { POSTERN_RELAY_TRUSTED_NETWORKS: '::1/128' } });
    expect(describeRelay(v6, relayOn('::'))).toContain('  swaks --server [::1]:2525 --tls ');
  });
});
