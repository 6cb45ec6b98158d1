// The container files, checked with real parsers (there is no Docker engine
// here): docker-compose.yml through the `yaml` parser, with Compose's merge
// keys and variable interpolation, and the Dockerfile instruction by
// instruction. Every POSTERN_* variable either file names must be a real
// config key's variable (or one of the few non-key ones), and the
// environment each Postern service ends up with must pass the config
// loader: a typo or a bad value fails here, not at `docker compose up`.
// When a Compose implementation is installed (`docker compose` or
// `docker-compose`), its `config` must accept the file and resolve the
// variables the way this test does.
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, parseDocument } from 'yaml';
import { CONFIG_KEYS, envName } from '../../src/config/keys.ts';
import { loadConfig } from '../../src/config/load.ts';
import { compileNetworks } from '../../src/inbound/networks.ts';
import { environmentOf, finalImage, finalStage, parseDockerfile, readCompose, ROOT, serviceEnvironment, type Compose, type Image, type Instruction, type Service } from '../helpers/container-files.ts';

// ---- reading the parsed files (the parsing is in test/helpers/container-files.ts) ----

/** publishedPorts - "HOST:CONTAINER" or "IP:HOST:CONTAINER" as { ip, host, container }. */
function publishedPorts(service: Service): { ip?: string; host: number; container: number }[] {
  return (service.ports ?? []).map((p) => {
    const parts = String(p).split(':');
    expect(parts.length, `port mapping ${p} names the host port`).toBeGreaterThanOrEqual(2);
    const container = Number(parts.at(-1)!.replace(/\/tcp$/, ''));
    return { ip: parts.length === 3 ? parts[0] : undefined, host: Number(parts.at(-2)), container };
  });
}

// Variables Postern reads that are not config keys (src/config/load.ts OTHER_ENV).
const NON_KEY_VARIABLES = new Set(['POSTERN_CONFIG', 'POSTERN_LOG_PRETTY']);
const KEY_VARIABLES = new Set(CONFIG_KEYS.map((k) => envName(k.path)));

/** unknownPosternVariables - every POSTERN_* word in a text that Postern would not understand. */
function unknownPosternVariables(text: string): string[] {
  const named = new Set([...text.matchAll(/\bPOSTERN_[A-Z0-9_]+\b/g)].map((m) => m[0]));
  return [...named].filter((n) => !KEY_VARIABLES.has(n) && !NON_KEY_VARIABLES.has(n));
}

// ---- the files ---------------------------------------------------------------

let composeText: string;
let compose: Compose;
let dockerfileText: string;
let instructions: Instruction[];
let runStage: Instruction[];
let image: Image;
let emptyDir: string;

const POSTERN_SERVICES = ['postern', 'postern-1', 'postern-2'];
const HEALTHCHECK = ['CMD', '/app/bin/postern.js', 'health'];

beforeAll(async () => {
  composeText = await readFile(join(ROOT, 'docker-compose.yml'), 'utf8');
  compose = readCompose(composeText);
  dockerfileText = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
  instructions = parseDockerfile(dockerfileText);
  runStage = finalStage(instructions);
  image = finalImage(instructions);
  emptyDir = await mkdtemp(join(tmpdir(), 'postern-compose-'));
});
afterAll(async () => {
  if (emptyDir) await rm(emptyDir, { recursive: true, force: true });
});

describe('Dockerfile', () => {
  it('is multi-stage, both stages on one Node.js image (the native module built in one runs in the other)', () => {
    const froms = instructions.filter((i) => i.keyword === 'FROM').map((i) => i.args.split(/\s+/)[0]!);
    expect(froms.length).toBeGreaterThanOrEqual(2);
    expect(new Set(froms).size).toBe(1);
    expect(froms[0]).toMatch(/^node:\d+-[a-z]+-slim$/);
    const build = instructions.filter((i) => i.stage === 0);
    expect(build.some((i) => i.keyword === 'RUN' && /apt-get install .*python3.*make.*g\+\+/.test(i.args))).toBe(true);
    // Reproducible: the lock file is copied and installed exactly (npm ci), runtime dependencies only.
    expect(build.some((i) => i.keyword === 'COPY' && i.args.includes('package-lock.json'))).toBe(true);
    expect(build.some((i) => i.keyword === 'RUN' && /\bnpm ci\b.*--omit=dev/.test(i.args))).toBe(true);
    expect(runStage.some((i) => i.keyword === 'COPY' && /--from=build \/app\/node_modules/.test(i.args))).toBe(true);
  });

  it('runs as a non-root user, with a HEALTHCHECK, the unprivileged ports exposed and CMD bin/postern.js serve', () => {
    const users = runStage.filter((i) => i.keyword === 'USER');
    expect(users.length).toBeGreaterThan(0);
    const user = users.at(-1)!.args.split(':')[0]!;
    expect(['root', '0']).not.toContain(user);
    expect(image.healthcheck).toEqual(HEALTHCHECK.slice(1));
    const exposed = runStage.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/));
    expect(exposed).toEqual(expect.arrayContaining(['2525', '2587', '2465', '8025']));
    expect(image.cmd).toEqual(['/app/bin/postern.js', 'serve']);
  });

  it('the ENV puts the listeners on 0.0.0.0 at the exposed ports, and every path in the volumes', () => {
    const env = image.env;
    const exposed = runStage.filter((i) => i.keyword === 'EXPOSE').flatMap((i) => i.args.split(/\s+/));
    for (const name of ['RELAY', 'SUBMISSION', 'SUBMISSIONS']) {
      expect(env[`POSTERN_LISTENERS_${name}_HOST`]).toBe('0.0.0.0');
      expect(exposed).toContain(env[`POSTERN_LISTENERS_${name}_PORT`]);
    }
    expect(env.POSTERN_HTTP_HOST).toBe('0.0.0.0');
    expect(exposed).toContain(env.POSTERN_HTTP_PORT);
    const volumes = image.volumes;
    const inVolume = (path: string) => volumes.some((v) => path.startsWith(v + '/'));
    expect(inVolume(env.POSTERN_QUEUE_PATH!)).toBe(true);
    expect(inVolume(env.POSTERN_RELAY_USERS!)).toBe(true);
    // TLS keeps its default (relative) paths, so dev certificates are generated, in the certs volume under WORKDIR.
    expect(env.POSTERN_TLS_CERT).toBeUndefined();
    expect(env.POSTERN_TLS_KEY).toBeUndefined();
    for (const path of ['tls.cert', 'tls.key']) {
      const relative = CONFIG_KEYS.find((k) => k.path === path)!.default as string;
      expect(inVolume(posix.join(image.workdir, relative)), path).toBe(true);
    }
  });

  it('.dockerignore keeps secrets, keys, queues and node_modules out of the build context, but not what COPY needs', async () => {
    const ignored = (await readFile(join(ROOT, '.dockerignore'), 'utf8')).split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(ignored).toEqual(expect.arrayContaining(['.git', 'node_modules', 'data', 'certs', 'docker/secrets', '.env', 'postern.yaml']));
    const copied = instructions.filter((i) => i.keyword === 'COPY' && !i.args.includes('--from=')).flatMap((i) => i.args.split(/\s+/).filter((a) => !a.startsWith('--')).slice(0, -1));
    expect(copied).toEqual(expect.arrayContaining(['package.json', 'package-lock.json', 'bin', 'src']));
    for (const source of copied) expect(ignored, source).not.toContain(source);
  });
});

describe('docker-compose.yml', () => {
  it('parses as YAML without errors or warnings', () => {
    const doc = parseDocument(composeText, { merge: true });
    expect(doc.errors).toEqual([]);
    expect(doc.warnings).toEqual([]);
  });

  it('has postern always, mailpit in profile dev, postgres and two Postern nodes in profile cluster', () => {
    expect(compose.services.postern!.profiles).toBeUndefined();
    expect(compose.services.mailpit!.profiles).toEqual(['dev']);
    for (const name of ['postgres', 'postern-1', 'postern-2']) expect(compose.services[name]!.profiles, name).toEqual(['cluster']);
    expect(Object.keys(compose.services).sort()).toEqual(['mailpit', 'postern', 'postern-1', 'postern-2', 'postgres']);
    for (const name of POSTERN_SERVICES) expect(compose.services[name]!.build, name).toBe('.');
  });

  it('postern maps 25, 587 and 465 onto the listeners, and its HTTP only on the host loopback', () => {
    const env = image.env;
    const ports = publishedPorts(compose.services.postern!);
    expect(ports).toEqual(
      expect.arrayContaining([
        { ip: undefined, host: 25, container: Number(env.POSTERN_LISTENERS_RELAY_PORT) },
        { ip: undefined, host: 587, container: Number(env.POSTERN_LISTENERS_SUBMISSION_PORT) },
        { ip: undefined, host: 465, container: Number(env.POSTERN_LISTENERS_SUBMISSIONS_PORT) },
      ]),
    );
    expect(ports.find((p) => p.container === Number(env.POSTERN_HTTP_PORT))).toEqual({ ip: '127.0.0.1', host: 8026, container: 8025 });
  });

  it('no two services publish the same host port (the profiles can run together)', () => {
    const all = Object.entries(compose.services).flatMap(([name, s]) => publishedPorts(s).map((p) => ({ name, host: p.host })));
    const seen = new Map<number, string>();
    for (const { name, host } of all) {
      expect(seen.get(host), `host port ${host} of ${name}`).toBeUndefined();
      seen.set(host, name);
    }
  });

  it('every Postern service keeps its queue, users and certificates in named volumes at the image volume paths', () => {
    const volumes = image.volumes;
    for (const name of POSTERN_SERVICES) {
      const mounts = (compose.services[name]!.volumes ?? []).map((v) => v.split(':'));
      for (const path of volumes) {
        const mount = mounts.find((m) => m[1] === path);
        expect(mount, `${name} mounts ${path}`).toBeDefined();
        expect(Object.keys(compose.volumes), `${name}: ${mount![0]} is a named volume`).toContain(mount![0]);
      }
    }
    // The cluster nodes share their users and their certificate.
    expect(compose.services['postern-1']!.volumes).toEqual(compose.services['postern-2']!.volumes);
  });

  it('healthchecks: postern health for Postern (as the image), pg_isready for PostgreSQL', () => {
    for (const name of POSTERN_SERVICES) expect(compose.services[name]!.healthcheck!.test, name).toEqual(HEALTHCHECK);
    expect(compose.services.postgres!.healthcheck!.test).toEqual(expect.arrayContaining(['CMD', 'pg_isready']));
  });

  it('secrets come from files under docker/secrets (ignored by git and by the image build), read through the *_FILE keys', async () => {
    expect(Object.keys(compose.secrets).sort()).toEqual(['http_token', 'smarthost_password']);
    for (const secret of Object.values(compose.secrets)) expect(secret.file).toMatch(/^\.\/docker\/secrets\/[a-z_]+$/);
    expect((await readFile(join(ROOT, 'docker/secrets/.gitignore'), 'utf8')).split('\n')).toEqual(expect.arrayContaining(['*', '!.gitignore']));
    for (const name of POSTERN_SERVICES) {
      const service = compose.services[name]!;
      const env = environmentOf(service);
      expect(service.secrets?.slice().sort(), name).toEqual(['http_token', 'smarthost_password']);
      expect(env.POSTERN_OUTBOUND_RELAYHOST_AUTH_PASS_FILE).toBe('/run/secrets/smarthost_password');
      expect(env.POSTERN_HTTP_TOKEN_FILE).toBe('/run/secrets/http_token');
      // Never a secret in plain sight.
      expect(env.POSTERN_OUTBOUND_RELAYHOST_AUTH_PASS, name).toBeUndefined();
      expect(env.POSTERN_HTTP_TOKEN, name).toBeUndefined();
    }
  });

  it('trusts the compose network containers (fixed subnet, ip_range), not the gateway published ports may come from', () => {
    const { subnet, ip_range: range, gateway } = compose.networks.mail!.ipam.config[0]!;
    expect(subnet).toBe('172.28.0.0/16');
    const inSubnet = compileNetworks([subnet]);
    expect(inSubnet(range.split('/')[0]!) && inSubnet(gateway)).toBe(true);
    for (const name of [...POSTERN_SERVICES, 'mailpit', 'postgres']) expect(compose.services[name]!.networks, name).toEqual(['mail']);
    for (const name of POSTERN_SERVICES) {
      const trusted = environmentOf(compose.services[name]!).POSTERN_RELAY_TRUSTED_NETWORKS!.split(',');
      expect(trusted).toContain(range);
      const isTrusted = compileNetworks(trusted);
      expect(isTrusted(gateway), `${name} must not trust the gateway ${gateway}`).toBe(false);
      expect(isTrusted('172.28.1.7') && isTrusted('127.0.0.1')).toBe(true);
    }
  });

  it('dev: Mailpit (pinned) catches everything; its web UI on the host loopback; the catch-all route points at it', () => {
    const mailpit = compose.services.mailpit!;
    expect(mailpit.image).toMatch(/^axllent\/mailpit:v\d+\.\d+/);
    expect(publishedPorts(mailpit)).toEqual([{ ip: '127.0.0.1', host: 8025, container: 8025 }]);
    const routes = JSON.parse(environmentOf(compose.services.postern!).POSTERN_OUTBOUND_ROUTES!) as Record<string, { host: string; port: number; tls: string }>;
    expect(routes).toEqual({ '*': { host: 'mailpit', port: 1025, tls: 'none' } });
    expect(Object.keys(compose.services)).toContain(routes['*']!.host);
  });

  it('cluster: PostgreSQL 16 with a volume; both nodes on its queue, started once it is healthy', () => {
    const postgres = compose.services.postgres!;
    expect(postgres.image).toBe('postgres:16');
    expect(postgres.volumes).toEqual(['postgres-data:/var/lib/postgresql/data']);
    const db = environmentOf(postgres);
    for (const name of ['postern-1', 'postern-2']) {
      const env = environmentOf(compose.services[name]!);
      expect(env.POSTERN_QUEUE_BACKEND).toBe('postgres');
      const url = new URL(env.POSTERN_QUEUE_URL!);
      expect([url.protocol, url.hostname, url.port, url.username, decodeURIComponent(url.password), url.pathname]).toEqual([
        'postgres:',
        'postgres',
        '5432',
        db.POSTGRES_USER,
        db.POSTGRES_PASSWORD,
        `/${db.POSTGRES_DB}`,
      ]);
      expect(compose.services[name]!.depends_on?.postgres).toEqual({ condition: 'service_healthy' });
    }
    // Node 2 waits for node 1, so the dev certificates in the shared volume are made once.
    expect(compose.services['postern-2']!.depends_on?.['postern-1']).toEqual({ condition: 'service_healthy' });
    // The password follows POSTGRES_PASSWORD in both places.
    const custom = readCompose(composeText, { POSTGRES_PASSWORD: 'other' });
    expect(environmentOf(custom.services.postgres!).POSTGRES_PASSWORD).toBe('other');
    expect(new URL(environmentOf(custom.services['postern-1']!).POSTERN_QUEUE_URL!).password).toBe('other');
  });
});

describe('POSTERN_* variables in the container files', () => {
  it('a misspelt variable is caught (the check below is real)', () => {
    expect(unknownPosternVariables('POSTERN_OUTBOUND_RELAYHOST_HOTS: x\nPOSTERN_HTTP_PORT: 1')).toEqual(['POSTERN_OUTBOUND_RELAYHOST_HOTS']);
  });

  it('every POSTERN_* name in docker-compose.yml and the Dockerfile is a config key variable (or POSTERN_CONFIG / POSTERN_LOG_PRETTY)', () => {
    expect(unknownPosternVariables(composeText)).toEqual([]);
    expect(unknownPosternVariables(dockerfileText)).toEqual([]);
    // Names are parsed, not just grepped: every environment key of every service and the image.
    const named = [...Object.keys(image.env), ...Object.values(compose.services).flatMap((s) => Object.keys(s.environment ?? {}))].filter((n) => n.startsWith('POSTERN_'));
    expect(named.length).toBeGreaterThan(15);
    expect(named.filter((n) => !KEY_VARIABLES.has(n) && !NON_KEY_VARIABLES.has(n))).toEqual([]);
  });

  const variableSets: [string, Record<string, string>][] = [
    ['no variables set (the defaults)', {}],
    ['a smarthost and local domains set', { RELAY_HOSTNAME: 'mail.example.com', SMARTHOST_HOST: 'smtp.example.net', SMARTHOST_PORT: '465', SMARTHOST_USER: 'relay@example.com', LOCAL_DOMAINS: 'example.com, example.org', SENDER_DOMAINS: 'example.com, *.example.com' }],
  ];
  for (const [label, vars] of variableSets) {
    it(`each Postern service's environment (image ENV + compose) passes the config loader: ${label}`, () => {
      const resolved = readCompose(composeText, vars);
      for (const name of POSTERN_SERVICES) {
        const env = serviceEnvironment(image, resolved.services[name]!);
        for (const [k, v] of Object.entries(env)) expect(v, `${name} ${k}: uninterpolated`).not.toMatch(/\$\{/);
        const loaded = loadConfig({ env, cwd: emptyDir });
        expect(loaded.warnings, name).toEqual([]);
        expect(loaded.config.listeners.submission).toEqual({ enabled: true, host: '0.0.0.0', port: 2587 });
        if (vars.SMARTHOST_HOST) {
          expect(loaded.config.outbound.relayhost).toMatchObject({ host: vars.SMARTHOST_HOST, port: Number(vars.SMARTHOST_PORT), auth: { user: vars.SMARTHOST_USER } });
          expect(loaded.config.relay.localDomains).toEqual(['example.com', 'example.org']);
          expect(loaded.config.relay.senderDomains).toEqual(['example.com', '*.example.com']);
          expect(loaded.config.hostname).toBe('mail.example.com');
        } else {
          expect(loaded.config.outbound.relayhost.host).toBe('');
          expect(loaded.config.relay.senderDomains).toEqual([]);
        }
      }
    });
  }
});

// ---- a real Compose implementation, when one is installed --------------------

function tryRun(command: string, args: string[], env?: NodeJS.ProcessEnv): Promise<{ ok: boolean; stdout: string; stderr: string }> {
  return new Promise((resolve) =>
    execFile(command, args, { cwd: ROOT, env, timeout: 60_000, maxBuffer: 8 * 1024 * 1024 }, (err, stdout, stderr) => resolve({ ok: !err, stdout, stderr: stderr || (err ? err.message : '') })),
  );
}

/** composeCommand - `docker compose` (the plugin) or `docker-compose`, whichever works without an engine. */
async function composeCommand(): Promise<[string, string[]] | undefined> {
  if ((await tryRun('docker', ['compose', 'version'])).ok) return ['docker', ['compose']];
  if ((await tryRun('docker-compose', ['version'])).ok) return ['docker-compose', []];
  return undefined;
}

describe('docker compose config', () => {
  it('accepts the file with every profile and resolves the variables as this test does', async (ctx) => {
    const found = await composeCommand();
    if (!found) ctx.skip('no Compose here (neither the docker compose plugin nor docker-compose): only the YAML checks ran; apt-get install docker-compose adds this check');
    const [command, prefix] = found!;
    const envFile = join(emptyDir, 'empty.env');
    await writeFile(envFile, '');
    // Hermetic: no .env of a developer, no variables of the shell.
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(RELAY_HOSTNAME|SMARTHOST_|LOCAL_DOMAINS|SENDER_DOMAINS|POSTGRES_PASSWORD|COMPOSE_)/.test(k)));
    const result = await tryRun(command, [...prefix, '--env-file', envFile, '-f', 'docker-compose.yml', '--profile', 'dev', '--profile', 'cluster', 'config'], env);
    expect(result.ok, result.stderr).toBe(true);
    const resolved = parseYaml(result.stdout) as Compose;
    expect(Object.keys(resolved.services).sort()).toEqual(Object.keys(compose.services).sort());
    for (const name of [...POSTERN_SERVICES, 'postgres']) {
      expect(environmentOf(resolved.services[name]!), name).toEqual(environmentOf(compose.services[name]!));
    }
  });
});
