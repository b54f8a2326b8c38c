import { parseArgs } from 'node:util';
import { ApiClient, ClientError, ClientErrorCode, DEFAULT_API_URL } from '../api/client/index.ts';
import { tesseraVersion } from '../util/version.ts';
import { commands as clientCommands } from './commands.ts';
import type { Command, Io, OptionSpec } from './commands.ts';
import { CliError, usageError } from './errors.ts';
import { serveCommand } from './serve.ts';
import { backupCreateCommand } from './backup-create.ts';
import { backupJobCommands } from './backup-jobs.ts';
import { clusterDownCommand, clusterUpCommand } from './cluster-up.ts';
import { labCommands } from './lab.ts';
import { scheduleCommands } from './schedules.ts';
import { transferCommands } from './transfer.ts';

/**
 * The commands whose modules load little: the node's, those that only talk to its API
 * (`backup create`, which the node runs, its jobs, and the schedules the node keeps, among
 * them), and the lab's.
 */
const lightCommands: Command[] = [serveCommand, ...clientCommands, clusterUpCommand, clusterDownCommand, backupCreateCommand, ...backupJobCommands, ...scheduleCommands, ...transferCommands, ...labCommands];

/**
 * Every command, in the order help lists them. The backup commands' modules load the repository
 * code (lmdb, msgpackr, the worker pool: about 70 ms of every command's start-up), so they are
 * imported only by a command line that may name one of them.
 */
export async function allCommands(): Promise<Command[]> {
  const [backup, files, archive, instant] = await Promise.all([
    import('./backup.ts'),
    import('./backup-files.ts'),
    import('./backup-archive.ts'),
    import('./instant-restore.ts'),
  ]);
  return [...lightCommands, ...backup.backupCommands, ...files.backupFileCommands, ...archive.backupArchiveCommands, ...instant.instantRestoreCommands];
}

/** Command groups: leading words of multi-word commands (`disk`, `backup`, `backup key`). */
function groupsOf(commands: Command[]): Set<string> {
  return new Set(
    commands.flatMap((c) => {
      const words = c.name.split(' ');
      return words.slice(1).map((_, i) => words.slice(0, i + 1).join(' '));
    }),
  );
}

/**
 * Options every command accepts, before or after the command words: a script can put
 * `--api URL` in front of any command line. A command that talks to no node ignores --api.
 * (`--json` is every command's that prints something: its own option, anywhere on the line too.)
 */
const globalOptions: Record<string, OptionSpec> = {
  api: { type: 'string', valueName: 'URL', description: `API of the node the command talks to (default: $TESSERA_API or ${DEFAULT_API_URL})` },
  help: { type: 'boolean', short: 'h', description: 'Show help' },
  version: { type: 'boolean', description: 'Show the version' },
};

/** The version in package.json. */
export const version = tesseraVersion;

type ParseOptions = Record<string, { type: 'string' | 'boolean'; short?: string }>;

function toParseOptions(specs: Record<string, OptionSpec>): ParseOptions {
  const out: ParseOptions = {};
  for (const [name, spec] of Object.entries(specs)) out[name] = spec.short ? { type: spec.type, short: spec.short } : { type: spec.type };
  return out;
}

/** Options a command accepts: its own and the global ones. */
function optionsOf(cmd: Command): Record<string, OptionSpec> {
  return { ...cmd.options, ...globalOptions };
}

/** Options its help lists: its own, and of the global ones those that concern it. */
function helpOptionsOf(cmd: Command): Record<string, OptionSpec> {
  const { api, ...rest } = globalOptions;
  return cmd.usesApi ? { ...cmd.options, api, ...rest } : { ...cmd.options, ...rest };
}

/** `disk create NAME --size SIZE [--json]`: the command with its arguments; the optional ones unless `brief`. */
function synopsis(cmd: Command, brief = false): string {
  const required = Object.entries(cmd.options)
    .filter(([name]) => name === 'size')
    .map(([name, spec]) => `--${name} ${spec.valueName}`);
  const optional = Object.entries(cmd.options)
    .filter(([name]) => name !== 'size')
    .map(([name, spec]) => (spec.type === 'string' ? `[--${name} ${spec.valueName}]` : `[--${name}]`));
  return [cmd.name, ...cmd.args, ...required, ...(brief ? [] : optional)].join(' ');
}

function usageLine(cmd: Command): string {
  return `tessera ${cmd.usesApi ? '[--api URL] ' : ''}${synopsis(cmd)}`;
}

function optionLines(specs: Record<string, OptionSpec>): string {
  const labels = Object.entries(specs).map(([name, spec]) => {
    const flag = (spec.short ? `-${spec.short}, ` : '') + `--${name}`;
    return [spec.type === 'string' ? `${flag} ${spec.valueName}` : flag, spec.description];
  });
  const width = Math.max(...labels.map(([l]) => l.length));
  return labels.map(([l, d]) => `  ${l.padEnd(width)}  ${d}`).join('\n');
}

const sizeHelp =
  'SIZE is a number of bytes, or a number with a binary suffix K, M, G, T or P (also KiB, MiB, ...):\n' +
  '1G = 1GiB = 1073741824 bytes, as qemu-img reads it. Fractions are fine when the result is a whole\n' +
  'number of bytes (1.5G). Disk sizes are multiples of 512 bytes.';

function globalHelp(commands: Command[]): string {
  const names = commands.map((c) => [synopsis(c, true), c.summary]);
  const width = Math.max(...names.map(([n]) => n.length));
  return [
    'Usage: tessera [--api URL] COMMAND [ARGS] [OPTIONS]',
    '',
    'Tessera stores thin virtual disks with snapshots and clones, served over NBD.',
    '',
    'Commands:',
    ...names.map(([n, s]) => `  ${n.padEnd(width)}  ${s}`),
    '  help [COMMAND]'.padEnd(width + 4) + 'Show help of one command',
    '',
    'Options:',
    optionLines(globalOptions),
    '',
    sizeHelp,
    '',
    'Run `tessera help COMMAND` for the options and examples of a command.',
    '',
  ].join('\n');
}

function commandHelp(cmd: Command): string {
  return [
    `Usage: ${usageLine(cmd)}`,
    '',
    cmd.summary + '.',
    '',
    'Options:',
    optionLines(helpOptionsOf(cmd)),
    ...(cmd.options.size ? ['', sizeHelp] : []),
    '',
    'Examples:',
    ...cmd.examples.map((e) => `  ${e}`),
    '',
  ].join('\n');
}

function groupHelp(commands: Command[], group: string): string {
  const members = commands.filter((c) => c.name.startsWith(group + ' '));
  const width = Math.max(...members.map((c) => synopsis(c).length));
  return [
    `Usage: tessera [--api URL] ${group} COMMAND [ARGS] [OPTIONS]`,
    '',
    'Commands:',
    ...members.map((c) => `  ${synopsis(c).padEnd(width)}  ${c.summary}`),
    '',
    'Run `tessera help COMMAND` for the options and examples of a command.',
    '',
  ].join('\n');
}

/** Finds the command named by the leading positionals, or explains what is wrong. */
function findCommand(commands: Command[], words: string[]): { cmd: Command; wordCount: number } | { group: string; wordCount: number } | null {
  if (words.length === 0) return null;
  // The longest command, else the longest group, that the leading words name.
  for (let n = Math.min(words.length, 3); n >= 1; n--) {
    const cmd = commands.find((c) => c.name === words.slice(0, n).join(' '));
    if (cmd) return { cmd, wordCount: n };
  }
  const groups = groupsOf(commands);
  for (let n = Math.min(words.length, 2); n >= 1; n--) {
    const group = words.slice(0, n).join(' ');
    if (groups.has(group)) return { group, wordCount: n };
  }
  throw usageError(`unknown command '${words[0]}'; run \`tessera --help\` for the list`);
}

/** Every option any command knows, so that option values are not taken for command words. */
function allParseOptions(commands: Command[]): ParseOptions {
  let all: Record<string, OptionSpec> = { ...globalOptions };
  for (const cmd of commands) all = { ...all, ...cmd.options };
  return toParseOptions(all);
}

/** parseArgs's messages are long and capitalised: shorten the common ones. */
function describeParseError(err: unknown): string {
  const { code, message } = err as { code?: string; message: string };
  const option = /'(-[^' ]+)/.exec(message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option) return `unknown option '${option}'`;
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option) {
    if (message.includes('argument missing')) return `option '${option}' needs a value`;
    if (message.includes('ambiguous')) return `the value of option '${option}' starts with '-'; write ${option}=VALUE`;
    if (message.includes('does not take an argument')) return `option '${option}' takes no value`;
  }
  return message.split('\n')[0].replace(/\.$/, '');
}

/**
 * Runs the CLI on `argv` (without the node and script paths) and resolves to the exit status:
 * 0 on success, 1 when the command failed, 2 on a usage error. Failures are reported as one
 * line `tessera: error: MESSAGE` on stderr.
 */
export async function runCli(argv: string[], io: Io): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (err) {
    if (err instanceof CliError) {
      io.stderr(`tessera: error: ${err.message}\n`);
      return err.exitCode;
    }
    if (err instanceof ClientError) {
      const hint = err.code === ClientErrorCode.UNREACHABLE ? '; is `tessera serve` running?' : '';
      io.stderr(`tessera: error: ${err.message}${hint}\n`);
      return err.code === ClientErrorCode.BAD_URL ? 2 : 1;
    }
    io.stderr(`tessera: error: internal error: ${(err as Error)?.stack ?? String(err)}\n`);
    return 1;
  }
}

/** Whether the command words may name a command beyond the light ones (or help lists them all). */
function needsAllCommands(words: string[], version: boolean): boolean {
  if (words.length === 0) return !version;
  if (words[0] === 'help') return true;
  if (lightCommands.some((c) => c.name.split(' ').every((w, i) => words[i] === w))) return false;
  // The other backup commands are not light, though `backup create` is.
  return words[0] === 'backup' || !lightCommands.some((c) => c.name.split(' ')[0] === words[0]);
}

/** `--version`: the version and whether the native helpers loaded. */
async function printVersion(io: Io): Promise<number> {
  const { nativeStatus } = await import('../native/index.ts');
  io.stdout(`tessera ${version()}\nnative helpers: ${nativeStatus}\n`);
  return 0;
}

async function dispatch(argv: string[], io: Io): Promise<number> {
  // First pass: find the command words, knowing which options take values.
  let commands = lightCommands;
  let first = parseArgs({ args: argv, options: allParseOptions(commands), allowPositionals: true, strict: false });
  if (needsAllCommands(first.positionals, first.values.version === true)) {
    // key-ahead.ts loads the key derivation of the backup code: only command lines that may
    // name a backup command pay for it (a few ms), before the backup modules' ~70 ms.
    (await import('./key-ahead.ts')).deriveKeyAhead(argv, io.env);
    commands = await allCommands();
    first = parseArgs({ args: argv, options: allParseOptions(commands), allowPositionals: true, strict: false });
  }
  const words = first.positionals;
  if (words[0] === 'help') {
    const found = findCommand(commands, words.slice(1));
    if (found === null) io.stdout(globalHelp(commands));
    else if ('group' in found) io.stdout(groupHelp(commands, found.group));
    else io.stdout(commandHelp(found.cmd));
    return 0;
  }
  const found = findCommand(commands, words);
  if (found === null) {
    if (first.values.version === true) return printVersion(io);
    if (first.values.help === true) {
      io.stdout(globalHelp(commands));
      return 0;
    }
    io.stderr(globalHelp(commands));
    return 2;
  }
  if ('group' in found) {
    if (first.values.help === true) {
      io.stdout(groupHelp(commands, found.group));
      return 0;
    }
    const next = words[found.wordCount];
    const sub = next === undefined ? 'missing a command' : `unknown command '${found.group} ${next}'`;
    const names = [...new Set(commands.filter((c) => c.name.startsWith(found.group + ' ')).map((c) => c.name.split(' ')[found.wordCount]))];
    throw usageError(`${sub}; \`tessera ${found.group}\` takes one of: ${names.join(', ')}`);
  }
  const { cmd, wordCount } = found;
  // Second pass: strict, with only this command's options.
  let parsed;
  try {
    parsed = parseArgs({ args: argv, options: toParseOptions(optionsOf(cmd)), allowPositionals: true, strict: true });
  } catch (err) {
    if (first.values.help === true) {
      io.stdout(commandHelp(cmd));
      return 0;
    }
    throw usageError(`${describeParseError(err)}; see \`tessera help ${cmd.name}\``);
  }
  if (parsed.values.help === true) {
    io.stdout(commandHelp(cmd));
    return 0;
  }
  if (parsed.values.version === true) return printVersion(io);
  const args = parsed.positionals.slice(wordCount);
  // A last argument named `X...` takes one or more values, `[X...]` any number.
  const variadic = /\.\.\.\]?$/.test(cmd.args.at(-1) ?? '');
  // Arguments named `[X]` (last ones) may be left out.
  const argsMin = cmd.args.filter((a) => !a.startsWith('[')).length;
  if (args.length < argsMin || (!variadic && args.length > cmd.args.length)) {
    const what = args.length < cmd.args.length ? `missing ${cmd.args.slice(args.length).join(' ')}` : `unexpected argument '${args[cmd.args.length]}'`;
    throw usageError(`${what}; usage: ${usageLine(cmd)}`);
  }
  for (const [i, arg] of args.entries()) {
    if (arg === '') throw usageError(`${cmd.args[Math.min(i, cmd.args.length - 1)]} must not be empty`);
  }
  let client: ApiClient | null = null;
  const apiUrl = (parsed.values.api as string | undefined) ?? (io.env.TESSERA_API || DEFAULT_API_URL);
  const status = await cmd.run({
    args,
    values: parsed.values as Record<string, string | boolean | undefined>,
    io,
    client: () => (client ??= new ApiClient(apiUrl)),
  });
  // Only a number is an exit status: a command ending with `return io.stdout(…)` hands back what
  // the stream's write returned (a boolean), which `void` lets through the types.
  return typeof status === 'number' ? status : 0;
}
