// SMTP AUTH users: a JSON file of scrypt hashes (relay.users), written by
// `postern users` and read again whenever it changes, so adding a user
// needs no restart. verify() compares in constant time and spends the same
// scrypt work on unknown users, so timing does not reveal who exists.
// Fails: a malformed file throws when read (named in the message); a
// missing file means no users.
import { randomBytes, scrypt as scryptCallback, timingSafeEqual, type ScryptOptions } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

interface UserRecord {
  hash: string;
  created: string;
}

interface UserFile {
  version: 1;
  users: Record<string, UserRecord>;
}

// N=2^15, r=8, p=1: ~50 ms and 32 MB per check on this machine class (OWASP minimum is 2^17 with less
// memory; 2^15 keeps a burst of logins from stalling the event loop's thread pool).
const PARAMS = { N: 32768, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };
const KEY_LENGTH = 32;
const NAME_PATTERN = /^[A-Za-z0-9._@+-]{1,128}$/;

function scrypt(password: string, salt: Buffer, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCallback(password, salt, KEY_LENGTH, options, (err, key) => (err ? reject(err) : resolve(key)));
  });
}

/** hashPassword - "scrypt$N$r$p$salt$hash" (base64 parts). */
async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const key = await scrypt(password, salt, PARAMS);
  return ['scrypt', PARAMS.N, PARAMS.r, PARAMS.p, salt.toString('base64'), key.toString('base64')].join('$');
}

/** verifyPassword - constant-time comparison against a stored hash. */
async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [scheme, n, r, p, salt, hash] = stored.split('$');
  if (scheme !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64');
  const actual = await scrypt(password, Buffer.from(salt, 'base64'), { N: Number(n), r: Number(r), p: Number(p), maxmem: PARAMS.maxmem });
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

/** isValidUserName - names we store (no spaces or control characters). */
function isValidUserName(name: string): boolean {
  return NAME_PATTERN.test(name);
}

/** ownRecord - the user's record, looked up among the names stored only ("constructor" is no user). */
function ownRecord(users: UserFile['users'], name: string): UserFile['users'][string] | undefined {
  return Object.hasOwn(users, name) ? users[name] : undefined;
}

export class UserStore {
  private cache: { mtimeMs: number; data: UserFile } | undefined;
  // Made on the first verify: `postern users` commands never need it.
  private dummyHash: Promise<string> | undefined;

  constructor(private readonly path: string) {}

  /** verify - true when the user exists and the password matches. */
  async verify(name: string, password: string): Promise<boolean> {
    const record = ownRecord((await this.read()).users, name);
    this.dummyHash ??= hashPassword(randomBytes(16).toString('hex'));
    const ok = await verifyPassword(password, record?.hash ?? (await this.dummyHash));
    return ok && record !== undefined;
  }

  /** list - user names, sorted. */
  async list(): Promise<string[]> {
    return Object.keys((await this.read()).users).sort();
  }

  /** add - create or replace a user's password. */
  async add(name: string, password: string): Promise<void> {
    if (!isValidUserName(name)) throw new Error(`user name ${JSON.stringify(name)}: use 1-128 letters, digits or . _ @ + -`);
    if (password.length === 0) throw new Error('the password must not be empty');
    const data = structuredClone(await this.read());
    // Defined, not assigned: "__proto__" would set the object's prototype and store nothing.
    Object.defineProperty(data.users, name, { value: { hash: await hashPassword(password), created: new Date().toISOString() }, enumerable: true, writable: true, configurable: true });
    await this.write(data);
  }

  /** remove - delete a user; false when there was none. */
  async remove(name: string): Promise<boolean> {
    const data = structuredClone(await this.read());
    if (!ownRecord(data.users, name)) return false;
    delete data.users[name];
    await this.write(data);
    return true;
  }

  private async read(): Promise<UserFile> {
    let mtimeMs: number;
    try {
      mtimeMs = (await stat(this.path)).mtimeMs;
    } catch {
      return { version: 1, users: {} };
    }
    // The cached data is shared and read-only: add and remove copy it before changing it.
    if (this.cache?.mtimeMs === mtimeMs) return this.cache.data;
    const text = await readFile(this.path, 'utf8');
    let data: UserFile;
    try {
      data = JSON.parse(text) as UserFile;
    } catch (err) {
      throw new Error(`${this.path}: not a valid user file: ${(err as Error).message}`);
    }
    if (data.version !== 1 || typeof data.users !== 'object' || data.users === null) throw new Error(`${this.path}: not a valid user file (expected {"version":1,"users":{...}})`);
    this.cache = { mtimeMs, data };
    return data;
  }

  private async write(data: UserFile): Promise<void> {
    await mkdir(dirname(this.path), { recursive: true });
    const temp = `${this.path}.${process.pid}.tmp`;
    await writeFile(temp, JSON.stringify(data, null, 2) + '\n', { mode: 0o600 });
    await rename(temp, this.path);
    this.cache = undefined;
  }
}
