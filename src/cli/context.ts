// What every subcommand starts from: the validated configuration (with
// --config FILE honoured the same way everywhere), or a clean exit naming
// the bad key. Exit code 78 (EX_CONFIG) for a bad configuration.
import { ConfigError, loadConfig, type LoadedConfig } from '../config/load.ts';

export const EXIT_CONFIG = 78;

/** loadConfigOrExit - the configuration, or the problems printed and the process ended. */
export function loadConfigOrExit(file: string | undefined): LoadedConfig {
  try {
    const loaded = loadConfig({ file });
    for (const warning of loaded.warnings) process.stderr.write(`postern: warning: ${warning}\n`);
    return loaded;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`postern: ${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
}
