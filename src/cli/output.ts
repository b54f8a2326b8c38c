/**
 * How every command prints: its `--json` option, the JSON itself, and times. One place, so
 * that `--json` output and times read the same in every command.
 */
import type { Io, OptionSpec } from './commands.ts';

/** The `--json` option of every command that prints something. */
export const jsonOption: OptionSpec = { type: 'boolean', description: 'Print JSON instead of text' };

/** `value` as indented JSON on stdout. */
export function printJson(io: Io, value: unknown): void {
  io.stdout(JSON.stringify(value, null, 2) + '\n');
}

/** ms since the epoch as ISO 8601 UTC to the second, for text output. */
export function formatTime(ms: number): string {
  return isoTime(ms).replace(/\.\d+Z$/, 'Z');
}

/** ms since the epoch as ISO 8601 UTC to the millisecond, for JSON output and log lines. */
export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}
