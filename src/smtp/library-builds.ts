// smtp-server and nodemailer each ship two builds (ESM and CJS) with a class
// each; code that must change a class's behaviour (inbound/wire-replies.ts,
// inbound/command-guard.ts, smtp/greeting-pause.ts, smtp/fast-data-scan.ts,
// smtp/half-close.ts)
// reaches both prototypes through this one function, so whichever build a
// caller loads sees the change. Throws when a library's layout changed.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { pathToFileURL } from 'node:url';

/**
 * classPrototypes - the prototype of one class in the CJS and in the ESM build of a library (both under its
 * dist/, `file` relative to each build); `exportName` 'default' for a class that is the module itself.
 */
export async function classPrototypes<P extends object>(library: 'smtp-server' | 'nodemailer', file: string, exportName: string): Promise<P[]> {
  const require = createRequire(import.meta.url);
  const cjsDir = dirname(require.resolve(library));
  type Build = Record<string, { prototype?: P } | undefined> & { prototype?: P };
  const builds = [require(join(cjsDir, file)) as Build, (await import(pathToFileURL(join(cjsDir, '..', 'esm', file)).href)) as Build];
  return builds.map((build) => {
    const found = exportName === 'default' ? (build.default ?? build) : build[exportName];
    const proto = found?.prototype;
    if (!proto) throw new Error(`${library} changed: ${exportName === 'default' ? file : exportName} not found in its build`);
    return proto;
  });
}
