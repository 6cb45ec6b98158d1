// `postern health [--config FILE] [--json]`: asks the running relay's
// /healthz and /readyz (on http.host:http.port from the same config) and
// prints both, for a person or a container HEALTHCHECK.
// Exit codes: 0 both answered 200; 1 either did not (503, no answer,
// http.enabled false); 78 a bad configuration.
//
//   registerHealthCommand - add `health` to the command line.
//   checkHealth           - ask both endpoints; the exit code and what to print.
import { request } from 'node:http';
import type { Command } from 'commander';
import type { Config } from '../config/config.ts';
import { loadConfigOrExit } from './context.ts';
import { reachableHost } from '../observability/health.ts';

const TIMEOUT_MS = 20_000;

interface EndpointAnswer {
  /** HTTP status, or 0 when there was no answer. */
  status: number;
  body?: unknown;
  error?: string;
}

/** registerHealthCommand - add `health` to the command line. */
export function registerHealthCommand(program: Command): void {
  program
    .command('health')
    .description("ask the running relay's /healthz and /readyz; exit 0 when both are healthy, 1 when not (container health checks)")
    .option('--json', 'machine-readable output')
    .action(async (options: { json?: boolean }, command: Command) => {
      const { config } = loadConfigOrExit(command.optsWithGlobals<{ config?: string }>().config);
      const result = await checkHealth(config);
      process.stdout.write(options.json ? JSON.stringify(result.json, null, 2) + '\n' : result.text);
      process.exitCode = result.healthy ? 0 : 1;
    });
}

/** checkHealth - ask both endpoints; whether healthy, and what to print. */
export async function checkHealth(config: Config): Promise<{ healthy: boolean; text: string; json: unknown }> {
  if (!config.http.enabled) {
    const error = 'http.enabled is false: the relay has no health endpoints to ask';
    return { healthy: false, text: `postern health: ${error}\n`, json: { healthy: false, error } };
  }
  const base = `http://${urlHost(config.http.host)}:${config.http.port}`;
  const [healthz, readyz] = await Promise.all([getJson(`${base}/healthz`), getJson(`${base}/readyz`)]);
  const healthy = healthz.status === 200 && readyz.status === 200;
  const text = `${describe('healthz', `${base}/healthz`, healthz)}${describe('readyz', `${base}/readyz`, readyz)}`;
  return { healthy, text, json: { healthy, healthz, readyz } };
}

// urlHost - where to reach a listener bound to every address, in URL form (IPv6 in brackets).
function urlHost(host: string): string {
  const reachable = reachableHost(host);
  return reachable.includes(':') ? `[${reachable}]` : reachable;
}

function getJson(url: string): Promise<EndpointAnswer> {
  return new Promise((resolve) => {
    // agent false: one connection, closed after the answer, so the command exits at once.
    const req = request(url, { agent: false, timeout: TIMEOUT_MS, headers: { accept: 'application/json' } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (chunk: Buffer) => chunks.push(chunk));
      res.on('error', (err) => resolve({ status: 0, error: err.message }));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as unknown });
        } catch {
          resolve({ status: res.statusCode ?? 0, error: `not JSON: ${text.slice(0, 200)}` });
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${TIMEOUT_MS / 1000} s`)));
    req.on('error', (err) => resolve({ status: 0, error: err.message }));
    req.end();
  });
}

/** describe - one endpoint for a person: status line, then each check and its problem. */
function describe(name: string, url: string, answer: EndpointAnswer): string {
  if (answer.status === 0) return `${name}: no answer from ${url}: ${answer.error}\n`;
  const body = (answer.body ?? {}) as Record<string, unknown>;
  const lines = [`${name}: ${answer.status} ${typeof body.status === 'string' ? body.status : answer.error ?? ''}`.trimEnd()];
  const checks: [string, unknown][] = name === 'healthz' ? Object.entries((body.listeners ?? {}) as Record<string, unknown>) : Object.entries(body).filter(([k]) => k !== 'status');
  for (const [check, value] of checks) {
    const v = (value ?? {}) as { ok?: boolean; error?: string; address?: string; host?: string; tls?: string };
    const where = v.address ?? v.host;
    // A smarthost that fails does not make the relay unready: its mail waits in the queue.
    const failure = check === 'relayhost' ? 'FAILED (mail waits in the queue)' : 'FAILED';
    const detail = v.ok ? `ok${v.tls ? ` (${v.tls})` : ''}` : `${failure}: ${v.error ?? 'unknown'}`;
    lines.push(`  ${check}${where ? ` ${where}` : ''}: ${detail}`);
  }
  return lines.join('\n') + '\n';
}
