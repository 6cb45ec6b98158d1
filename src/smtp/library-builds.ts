// smtp-server and nodemailer each ship two builds (ESM and CJS) with a class
// each; code that must change a class's behaviour (inbound/wire-replies.ts,
// inbound/command-guard.ts, smtp/greeting-pause.ts, smtp/fast-data-scan.ts,
// smtp/command-fragments.ts, smtp/half-close.ts) does it through
// patchMethods, on both prototypes, so whichever build a caller loads sees
// the change. Throws when a library's layout changed.
//   patchMethods    - replace some methods of one class, once per patch name.
//   classPrototypes - the class's prototype in each build.
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

/** Where a class lives: the library, its file under each build's dist/, and its export ('default': the module). */
export interface LibraryClass {
  library: 'smtp-server' | 'nodemailer';
  file: string;
  exportName: string;
}

export const SMTP_CONNECTION: LibraryClass = { library: 'smtp-server', file: 'smtp-connection.js', exportName: 'SMTPConnection' };
export const SMTP_STREAM: LibraryClass = { library: 'smtp-server', file: 'smtp-stream.js', exportName: 'SMTPStream' };

// The patches applied to a prototype, by name, kept on the prototype under a symbol of the global registry:
// a second install is a no-op, even from a second copy of this module.
const APPLIED = Symbol.for('postern.patches');

/**
 * patchMethods - in both builds of a class, replace the methods `patch` returns; it is given the library's own
 * ones (the prototype's current `methods`) to call. Once per `name` and prototype; throws naming each of `methods`
 * the library no longer has.
 */
export async function patchMethods<P extends object, K extends keyof P & string>(
  name: string,
  target: LibraryClass,
  methods: readonly K[],
  patch: (library: Pick<P, K>) => Partial<Pick<P, K>>,
): Promise<void> {
  for (const proto of await classPrototypes<P>(target.library, target.file, target.exportName)) {
    const missing = methods.filter((m) => typeof proto[m] !== 'function');
    if (missing.length > 0) throw new Error(`${target.library} changed: ${missing.map((m) => `${target.exportName}.prototype.${m}`).join(', ')} not found`);
    const marked = proto as P & { [APPLIED]?: Set<string> };
    // Own, not inherited: a subclass's prototype keeps a list of its own.
    const done = Object.hasOwn(marked, APPLIED) ? marked[APPLIED]! : (marked[APPLIED] = new Set<string>());
    if (done.has(name)) continue;
    const library = Object.fromEntries(methods.map((m) => [m, proto[m]])) as Pick<P, K>;
    Object.assign(proto, patch(library));
    done.add(name);
  }
}
