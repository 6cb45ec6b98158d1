// smtp-server ships two builds (ESM and CJS) with a class each; code that
// must change SMTPConnection's behaviour (inbound/wire-replies.ts, the bench
// sink) reaches both prototypes through this one function, so whichever build
// a caller loads sees the change. Throws when the library's layout changed.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** smtpConnectionPrototypes - SMTPConnection.prototype of the CJS and the ESM build. */
export async function smtpConnectionPrototypes<P extends object>(): Promise<P[]> {
  const require = createRequire(import.meta.url);
  const cjsDir = dirname(require.resolve('smtp-server'));
  const builds = [
    require(join(cjsDir, 'smtp-connection.js')) as { SMTPConnection?: { prototype: P } },
    (await import(pathToFileURL(join(cjsDir, '..', 'esm', 'smtp-connection.js')).href)) as { SMTPConnection?: { prototype: P } },
  ];
  return builds.map((build) => {
    const proto = build.SMTPConnection?.prototype;
    if (!proto) throw new Error('smtp-server changed: SMTPConnection not found in its build');
    return proto;
  });
}
