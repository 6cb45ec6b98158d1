// patchMethods: one patch per name and prototype, in both builds, and a
// start that fails loudly, naming the method, when the library changed.
import { describe, expect, it } from 'vitest';
import { classPrototypes, patchMethods, SMTP_CONNECTION } from '../../src/smtp/library-builds.ts';

interface Connection {
  send: (...args: unknown[]) => unknown;
  noSuchMethod: () => void;
}

describe('patchMethods', () => {
  it('replaces the method in the ESM and the CJS build, once per name, with the library one at hand', async () => {
    const builds = await classPrototypes<Connection>('smtp-server', 'smtp-connection.js', 'SMTPConnection');
    const originals = builds.map((proto) => proto.send);
    const given: unknown[] = [];
    const install = () =>
      patchMethods<Connection, 'send'>('test patch', SMTP_CONNECTION, ['send'], (library) => {
        given.push(library.send);
        return { send: () => 'patched' };
      });
    await install();
    await install();
    expect(given).toEqual(originals);
    expect(builds.map((proto) => proto.send.call({}))).toEqual(['patched', 'patched']);
  });

  it('throws naming the method when the library no longer has it, and changes nothing', async () => {
    const [proto] = await classPrototypes<Connection>('smtp-server', 'smtp-connection.js', 'SMTPConnection');
    const before = proto!.send;
    await expect(patchMethods<Connection, 'send' | 'noSuchMethod'>('broken', SMTP_CONNECTION, ['send', 'noSuchMethod'], () => ({ send: () => 'x' }))).rejects.toThrow(
      'smtp-server changed: SMTPConnection.prototype.noSuchMethod not found',
    );
    expect(proto!.send).toBe(before);
  });
});
