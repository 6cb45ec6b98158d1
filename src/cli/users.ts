// `postern users add|list|remove`: manage SMTP AUTH users in relay.users.
// Passwords come from a prompt without echo (asked twice) or, for scripts,
// from the first line of stdin (--password-stdin); never from argv, where
// other users of the machine could read them.
import type { Config } from '../config/config.ts';
import { UserStore } from '../inbound/user-store.ts';
import { promptHidden, readFirstLine } from './prompt.ts';

/** addUser - create or replace a user. */
export async function addUser(config: Config, name: string, options: { passwordStdin?: boolean }): Promise<void> {
  const password = options.passwordStdin ? await readFirstLine(process.stdin) : await promptTwice();
  await new UserStore(config.relay.users).add(name, password);
  process.stdout.write(`user ${name} saved in ${config.relay.users}\n`);
}

/** listUsers - one name per line. */
export async function listUsers(config: Config): Promise<void> {
  for (const name of await new UserStore(config.relay.users).list()) process.stdout.write(`${name}\n`);
}

/** removeUser - exit 1 when the user did not exist. */
export async function removeUser(config: Config, name: string): Promise<void> {
  if (!(await new UserStore(config.relay.users).remove(name))) {
    process.stderr.write(`postern: no user ${name} in ${config.relay.users}\n`);
    process.exitCode = 1;
    return;
  }
  process.stdout.write(`user ${name} removed\n`);
}

/** promptTwice - a password typed twice without echo; throws with no terminal or when the two differ. */
async function promptTwice(): Promise<string> {
  if (!process.stdin.isTTY) throw new Error('no terminal to ask for a password: use --password-stdin');
  const first = await promptHidden('Password: ');
  const second = await promptHidden('Again: ');
  if (first !== second) throw new Error('the passwords do not match');
  return first;
}
