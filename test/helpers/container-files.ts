// The container files as data, for the tests that check them without a
// Docker engine: the Dockerfile instruction by instruction (and what its
// final stage runs), and docker-compose.yml through the `yaml` parser with
// Compose's merge keys and variable interpolation.
// Fails: parseDockerfile throws on a line it cannot read, finalImage when
// the final stage lacks WORKDIR, CMD or HEALTHCHECK, readCompose on a
// ${VAR:?error} whose variable is unset, environmentOf on an environment
// written as a list: each an error in the files, so the test fails.
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

/** The checkout: where the Dockerfile, docker-compose.yml and docs/ are. */
export const ROOT = fileURLToPath(new URL('../..', import.meta.url));

// ---- the Dockerfile ---------------------------------------------------------

export interface Instruction {
  keyword: string;
  args: string;
  stage: number;
}

/** parseDockerfile - instructions with continuation lines joined and comments dropped, numbered by stage. */
export function parseDockerfile(text: string): Instruction[] {
  const out: Instruction[] = [];
  let stage = -1;
  let buffer = '';
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '');
    if (/^\s*#/.test(line) || line.trim() === '') continue;
    if (line.endsWith('\\')) {
      buffer += line.slice(0, -1) + ' ';
      continue;
    }
    const match = /^\s*([A-Za-z]+)\s+([\s\S]*)$/.exec(buffer + line);
    buffer = '';
    if (!match) throw new Error(`Dockerfile: cannot read ${line}`);
    const keyword = match[1]!.toUpperCase();
    if (keyword === 'FROM') stage++;
    out.push({ keyword, args: match[2]!.trim(), stage });
  }
  return out;
}

/** envPairs - `ENV A=1 B="two words"` (or the old `ENV A 1`) as pairs. */
export function envPairs(args: string): [string, string][] {
  if (!/^\S+=/.test(args)) {
    const [name, ...rest] = args.split(/\s+/);
    return [[name!, rest.join(' ')]];
  }
  return [...args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("(?:[^"\\]|\\.)*"|\S*)/g)].map((m) => [m[1]!, m[2]!.startsWith('"') ? (JSON.parse(m[2]!) as string) : m[2]!]);
}

/** finalStage - the instructions of the last stage (the image that runs). */
export function finalStage(instructions: Instruction[]): Instruction[] {
  const last = Math.max(...instructions.map((i) => i.stage));
  return instructions.filter((i) => i.stage === last);
}

export interface Image {
  env: Record<string, string>;
  workdir: string;
  cmd: string[];
  healthcheck: string[];
  volumes: string[];
}

/** finalImage - what the last stage of the Dockerfile runs, and with what; throws when WORKDIR, CMD or HEALTHCHECK is missing. */
export function finalImage(instructions: Instruction[]): Image {
  const stage = finalStage(instructions);
  const last = (keyword: string): string => {
    const found = stage.filter((i) => i.keyword === keyword).at(-1);
    if (!found) throw new Error(`Dockerfile: no ${keyword} in the final stage`);
    return found.args;
  };
  const healthcheck = /\bCMD\s+(\[.*\])\s*$/.exec(last('HEALTHCHECK'));
  if (!healthcheck) throw new Error('Dockerfile: the HEALTHCHECK has no CMD [...]');
  return {
    // Later ENV lines win, as in the image.
    env: Object.fromEntries(stage.filter((i) => i.keyword === 'ENV').flatMap((i) => envPairs(i.args))),
    workdir: last('WORKDIR'),
    cmd: JSON.parse(last('CMD')) as string[],
    healthcheck: JSON.parse(healthcheck[1]!) as string[],
    volumes: stage.filter((i) => i.keyword === 'VOLUME').flatMap((i) => JSON.parse(i.args) as string[]),
  };
}

// ---- docker-compose.yml -------------------------------------------------------

export interface Service {
  image?: string;
  build?: unknown;
  profiles?: string[];
  environment?: Record<string, string | number | boolean | null>;
  ports?: string[];
  volumes?: string[];
  secrets?: string[];
  networks?: string[];
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

export interface Compose {
  services: Record<string, Service>;
  volumes: Record<string, unknown>;
  secrets: Record<string, { file: string }>;
  networks: Record<string, { ipam: { config: { subnet: string; ip_range: string; gateway: string }[] } }>;
}

/** interpolate - Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, $VAR and $$. */
function interpolate(value: string, vars: Record<string, string | undefined>): string {
  return value.replace(/\$(?:(\$)|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_all, dollar?: string, name?: string, op?: string, arg?: string, bare?: string) => {
    if (dollar) return '$';
    const key = (name ?? bare)!;
    const given = vars[key];
    const unset = op?.startsWith(':') ? !given : given === undefined;
    if (op?.endsWith('-') && unset) return arg ?? '';
    if (op?.endsWith('?') && unset) throw new Error(`${key}: ${arg ?? 'required'}`);
    return given ?? '';
  });
}

/** interpolateAll - every string value in a parsed document (keys are left alone, as Compose does). */
function interpolateAll<T>(node: T, vars: Record<string, string | undefined>): T {
  if (typeof node === 'string') return interpolate(node, vars) as T;
  if (Array.isArray(node)) return node.map((n: unknown) => interpolateAll(n, vars)) as T;
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, interpolateAll(v, vars)])) as T;
  return node;
}

/** readCompose - the compose file with merge keys resolved and `vars` interpolated, as `docker compose config` would. */
export function readCompose(text: string, vars: Record<string, string | undefined> = {}): Compose {
  return interpolateAll(parseYaml(text, { merge: true }) as Compose, vars);
}

/** environmentOf - a service's environment as strings; throws when it is written as a list (the checks read a map). */
export function environmentOf(service: Service): Record<string, string> {
  if (Array.isArray(service.environment)) throw new Error('compose: a service environment must be a map, not a list');
  return Object.fromEntries(Object.entries(service.environment ?? {}).map(([k, v]) => [k, String(v)]));
}

/** serviceEnvironment - what a service's container starts with: the image's ENV, the service's environment over it. */
export function serviceEnvironment(image: Image, service: Service): Record<string, string> {
  return { ...image.env, ...environmentOf(service) };
}
