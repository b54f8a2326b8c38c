/**
 * How every command prints: its `--json` option, the JSON itself, and times. One place, so
 * that `--json` output and times read the same in every command.
 */
// No import of commands.ts (whose commands import this): the shapes are spelled out, and
// commands.ts's OptionSpec and Io take them as they are.

/** The `--json` option of every command that prints something. */
export const jsonOption = { type: 'boolean', description: 'Print JSON instead of text' } as const;

/** `value` as indented JSON on stdout. */
export function printJson(io: { stdout(text: string): void }, value: unknown): void {
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

/**
 * A progress line on stderr, redrawn at most 4 times a second, only on a terminal. Progress comes
 * per chunk: given a function, the text is made only when the line is drawn.
 */
export function progressLine(io: { stderr(text: string): void; stderrIsTty?: boolean }): { update(text: string | (() => string)): void; done(): void } {
  if (!io.stderrIsTty) return { update() {}, done() {} };
  let last = 0;
  let drawn = false;
  return {
    update(text) {
      const now = Date.now();
      if (now - last < 250) return;
      last = now;
      drawn = true;
      io.stderr(`\r\x1b[K${typeof text === 'function' ? text() : text}`);
    },
    done() {
      if (drawn) io.stderr('\r\x1b[K');
    },
  };
}

/** `part` of `whole` as a whole percentage. */
export function percent(part: number, whole: number): string {
  return whole === 0 ? '100%' : `${Math.floor((100 * part) / whole)}%`;
}
