/** The command-line interface: `tessera serve` and the client commands. See docs/cli.md. */
export { allCommands, runCli, version } from './run.ts';
export type { Io } from './commands.ts';
export { parseSize, parseDiskSize, formatSize } from './size.ts';
export { formatTable, formatFields } from './table.ts';
export type { Align, Table } from './table.ts';
export { CliError, CliErrorCode } from './errors.ts';
export type { CliErrorCodeValue } from './errors.ts';
export { defaultDataDir } from './serve.ts';
