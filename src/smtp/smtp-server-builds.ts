// smtp-server ships two builds (ESM and CJS) with a class each; code that
// must change a class's behaviour (inbound/wire-replies.ts,
// smtp/greeting-pause.ts, smtp/fast-data-scan.ts) reaches both prototypes
// through this one function, so whichever build a caller loads sees the
// change. Throws when the library's layout changed.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The classes we change, by the file of each build that exports them. */
const CLASS_FILES = { SMTPConnection: 'smtp-connection.js', SMTPStream: 'smtp-stream.js' } as const;

/** smtpServerPrototypes - the prototype of one of smtp-server's classes in the CJS and in the ESM build. */
export async function smtpServerPrototypes<P extends object>(className: keyof typeof CLASS_FILES): Promise<P[]> {
  const require = createRequire(import.meta.url);
  const cjsDir = dirname(require.resolve('smtp-server'));
  const file = CLASS_FILES[className];
  type Build = Partial<Record<typeof className, { prototype: P }>>;
  const builds = [require(join(cjsDir, file)) as Build, (await import(pathToFileURL(join(cjsDir, '..', 'esm', file)).href)) as Build];
  return builds.map((build) => {
    const proto = build[className]?.prototype;
    if (!proto) throw new Error(`smtp-server changed: ${className} not found in its build`);
    return proto;
  });
}
