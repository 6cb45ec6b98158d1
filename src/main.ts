// The `postern` command line. Subcommands are thin: they load the config
// (every one takes --config FILE) and call one module.
import { Command } from 'commander';
import { EXIT_CONFIG, loadConfigOrExit } from './cli/context.ts';
import { fileProblems } from './config/files.ts';
import { ConfigError } from './config/load.ts';
import { registerHealthCommand } from './cli/health.ts';
import { changeMessages, listQueue, printMessage, shapeQueue, showMessage } from './cli/queue.ts';
import type { QueueVerb } from './queue/queue-store.ts';
import { registerSendCommand } from './cli/send.ts';
import { errorMessage } from './observability/logger.ts';
import { serve } from './cli/serve.ts';
import { addUser, listUsers, removeUser } from './cli/users.ts';

const program = new Command('postern')
  .description('Postern mail relay')
  .option('-c, --config <file>', 'configuration file (default: ./postern.yaml when present)')
  .showHelpAfterError();

function config(command: Command) {
  return loadConfigOrExit(command.optsWithGlobals<{ config?: string }>().config).config;
}

program
  .command('serve')
  .description('run the relay')
  .action(async (_options, command: Command) => serve(config(command)));

program
  .command('config')
  .description('configuration')
  .command('check')
  .description('validate the configuration and exit')
  .action((_options, command: Command) => {
    const loaded = loadConfigOrExit(command.optsWithGlobals<{ config?: string }>().config);
    const unreadable = fileProblems(loaded.config);
    if (unreadable.length > 0) {
      process.stderr.write(`postern: ${new ConfigError(unreadable).message}\n`);
      process.exit(EXIT_CONFIG);
    }
    process.stdout.write(`configuration ok${loaded.source ? ` (${loaded.source})` : ' (defaults and environment)'}\n`);
  });

const users = program.command('users').description('SMTP AUTH users');
users
  .command('add <name>')
  .description('add a user or change a password (prompted; or --password-stdin)')
  .option('--password-stdin', 'read the password from the first line of stdin')
  .action(async (name: string, options: { passwordStdin?: boolean }, command: Command) => addUser(config(command), name, options));
users
  .command('list')
  .description('list users')
  .action(async (_options, command: Command) => listUsers(config(command)));
users
  .command('remove <name>')
  .description('remove a user')
  .action(async (name: string, _options, command: Command) => removeUser(config(command), name));

const queue = program.command('queue').description('the mail queue');
queue
  .command('list')
  .description('list queued messages')
  .option('--all', 'also delivered and bounced messages, with their outcome')
  .option('--domain <domain>', 'only messages with a recipient in this domain still to be tried')
  .option('--sender <address>', 'only messages from this sender (<> for the null sender: reports)')
  .option('--ids', 'only the ids, one a line (for `queue VERB -`)')
  .option('--json', 'machine-readable output')
  .action(async (options: { all?: boolean; json?: boolean; ids?: boolean; domain?: string; sender?: string }, command: Command) => listQueue(config(command), options));

queue
  .command('shape')
  .description('messages not done by destination domain and age in minutes (Postfix qshape)')
  .option('--sender <address>', 'only messages from this sender (<> for the null sender: reports)')
  .action(async (options: { sender?: string }, command: Command) => shapeQueue(config(command), options));

queue
  .command('show <id>')
  .description('everything about one message: recipients, attempts, TLS facts')
  .option('--json', 'machine-readable output')
  .action(async (id: string, options: { json?: boolean }, command: Command) => showMessage(config(command), id, options));

queue
  .command('cat <id>')
  .description('the stored message, as it goes to the next hop (postcat -q)')
  .action(async (id: string, _options, command: Command) => printMessage(config(command), id));

const verbs: [QueueVerb, string][] = [
  ['retry', 'attempt delivery now'],
  ['hold', 'stop delivering until released'],
  ['release', 'resume delivery of held messages'],
  ['delete', 'remove messages without delivering or bouncing'],
  ['bounce', 'return messages to their senders now: pending recipients bounce, with a report (postsuper -e)'],
];
for (const [verb, description] of verbs) {
  queue
    .command(`${verb} [ids...]`)
    .usage('[options] ID... | - | --all')
    .description(description)
    .option('--all', 'every message in the queue')
    .option('--json', 'machine-readable output')
    .action(async (ids: string[], options: { all?: boolean; json?: boolean }, command: Command) => changeMessages(config(command), verb, ids, options));
}
queue
  .command('flush')
  .description('attempt every deferred message now (retry --all)')
  .option('--json', 'machine-readable output')
  .action(async (options: { json?: boolean }, command: Command) => changeMessages(config(command), 'retry', [], { ...options, all: true }));

registerSendCommand(program);
registerHealthCommand(program);

program.parseAsync().catch((err: unknown) => {
  process.stderr.write(`postern: ${errorMessage(err)}\n`);
  // A setting found bad only at start (a file it names cannot be read) is a bad configuration too.
  process.exit(err instanceof ConfigError ? EXIT_CONFIG : 1);
});
