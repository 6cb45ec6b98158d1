// Logging: pino JSON to stdout. One child logger per SMTP session (and later
// per delivery) so every line carries the session id or queue id.
// Secrets never reach a log line: AUTH passwords are not passed to loggers,
// and withoutSecrets is a backstop for config objects passed as a line's
// fields (a child logger's bindings, which pino gives to no formatter of
// ours, are ids here). It is ours, not pino's `redact`: that one copied every
// object-valued field of every line to look into it, about 5 µs a line
// (bench/ROUNDS.md, "Twenty-seventh round"); this one copies a line only
// when it has something to censor.
import { pino, type Logger } from 'pino';

export type { Logger };

export interface LoggerOptions {
  level?: string;
  /** Where lines go; stdout unless a test passes its own stream. */
  destination?: NodeJS.WritableStream;
}

/** createLogger - the process's root logger. */
export function createLogger(options: LoggerOptions = {}): Logger {
  const settings = {
    level: options.level ?? 'info',
    base: { service: 'postern' },
    formatters: { log: withoutSecrets },
  };
  // stdout written asynchronously: a sync write per line was three syscalls per relayed message on
  // the event loop. pino flushes what is buffered when the process exits; a SIGKILL can lose the last lines.
  return pino(settings, options.destination ?? pino.destination({ dest: 1, sync: false }));
}

/** Field names whose values a log line never shows: among the line's fields, or among those of a field that is an object. */
const SECRET_NAMES = ['password', 'pass', 'token', 'secret'];
const CENSORED = '[redacted]';

/** withoutSecrets - a line's fields with every SECRET_NAMES value, at the top or one object down, as CENSORED; `fields` itself when it has none. */
export function withoutSecrets(fields: Record<string, unknown>): Record<string, unknown> {
  let censored = fields;
  const censor = (key: string, value: unknown) => {
    if (censored === fields) censored = { ...fields };
    censored[key] = value;
  };
  for (const key in fields) {
    const value = fields[key];
    if (SECRET_NAMES.includes(key)) censor(key, CENSORED);
    else if (value !== null && typeof value === 'object' && !Array.isArray(value) && SECRET_NAMES.some((name) => Object.hasOwn(value, name))) {
      // An Error as pino's serializer shows it (type, message, stack), which a copy of its own fields would lose.
      const shown: object = value instanceof Error ? pino.stdSerializers.err(value) : value;
      censor(key, Object.fromEntries(Object.entries(shown).map(([name, inner]) => [name, SECRET_NAMES.includes(name) ? CENSORED : inner])));
    }
  }
  return censored;
}

/** silentLogger - for tests and CLI subcommands that print their own output. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}

/** errorMessage - what a thrown value says, for a log line or a reply: an Error's message, anything else as text. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * redactUrlPassword - a URL without the password in its user part, for a log line or an error: everything between
 * the user's ':' and the last '@' (a password may hold '/', '@' or '#'), whatever the scheme or its slashes; and the
 * value of any query parameter whose name, decoded, ends in "password" (libpq reads password= and sslpassword=).
 */
export function redactUrlPassword(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/*[^:@/]*):.*@/i, '$1:***@').replace(/([?&])([^=&#]*)=([^&#]*)/g, (whole, sep: string, name: string) => (/password$/i.test(decodedName(name)) ? `${sep}${name}=***` : whole));
}

/** decodedName - a query parameter's name as a URL parser reads it (p%61ssword is password). */
function decodedName(name: string): string {
  try {
    return decodeURIComponent(name.replace(/\+/g, ' '));
  } catch {
    return name;
  }
}

/**
 * printableCredentialUrl - a value meant to be a URL that holds credentials, for an error: the URL without its
 * password, and nothing of a value that is not scheme://... (a libpq keyword string "host=db password=...", or a URL
 * with a mistyped scheme, holds the password where no URL rule finds it).
 */
export function printableCredentialUrl(url: string): string {
  return url === '' || /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? redactUrlPassword(url) : '(not shown: not a scheme:// URL, and it may hold a password)';
}
