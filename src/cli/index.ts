/** The command-line interface: `tessera serve` and the client commands. See docs/cli.md. */
export { version } from './run.ts';
export type { Io } from './commands.ts';
export { parseSize } from './size.ts';
export { CliError, CliErrorCode } from './errors.ts';
export type { CliErrorCodeValue } from './errors.ts';
