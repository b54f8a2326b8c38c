/**
 * What the backup commands share: the repository and password options, opening a repository,
 * error reporting, progress and output helpers. Its own module so the command modules
 * (backup.ts, backup-archive.ts, backup-files.ts) import it and not each other.
 */
import { BackupError, IndexCache, Repository, WorkerPool, cacheRoot, openBackend } from '../backup/index.ts';
import type { CommandContext, Io, OptionSpec } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';

export const repoOption: OptionSpec = { type: 'string', valueName: 'PATH', description: 'Repository: a directory (default: $TESSERA_REPO)' };
export const jsonOption: OptionSpec = { type: 'boolean', description: 'Print JSON instead of text' };

/** The repository location from --repo or $TESSERA_REPO. */
export function repoLocation(ctx: CommandContext): string {
  const repo = (ctx.values.repo as string | undefined) ?? ctx.io.env.TESSERA_REPO;
  if (repo === undefined || repo === '') throw usageError('missing --repo PATH (or set TESSERA_REPO)');
  return repo;
}

/** The password from $TESSERA_PASSWORD, else asked on the terminal. */
export async function password(io: Io, options: { confirm?: boolean; envName?: string; prompt?: string } = {}): Promise<string> {
  const envName = options.envName ?? 'TESSERA_PASSWORD';
  const fromEnv = io.env[envName];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (io.readSecret === undefined) throw new CliError(CliErrorCode.FAILED, `no password: set ${envName} or run on a terminal`);
  const prompt = options.prompt ?? 'Repository password';
  const first = await io.readSecret(`${prompt}: `);
  if (first === '') throw new CliError(CliErrorCode.FAILED, 'the password must not be empty');
  if (options.confirm && (await io.readSecret(`${prompt} again: `)) !== first) throw new CliError(CliErrorCode.FAILED, 'the passwords do not match');
  return first;
}

/** Runs `fn`, turning BackupErrors into one-line CLI failures. */
export async function reported<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof BackupError) throw new CliError(CliErrorCode.FAILED, err.message, { cause: err });
    throw err;
  }
}

/** Opens the repository (and, with `data`, its index cache and a worker pool) around `fn`. */
export async function withRepo<T>(ctx: CommandContext, fn: (r: { repo: Repository; cache: IndexCache; pool: WorkerPool }) => Promise<T>): Promise<T> {
  const location = repoLocation(ctx);
  const pw = await password(ctx.io);
  return reported(async () => {
    const backend = await openBackend(location, ctx.io.env);
    let cache: IndexCache | null = null;
    let pool: WorkerPool | null = null;
    try {
      const repo = await Repository.open(backend, pw);
      cache = IndexCache.open(repo.id, cacheRoot(ctx.io.env));
      pool = new WorkerPool(repo.keys);
      return await fn({ repo, cache, pool });
    } finally {
      await pool?.close();
      await cache?.close();
      await backend.close();
    }
  });
}

/** A progress line on stderr, redrawn at most 4 times a second, only on a terminal. */
export function progressLine(io: Io): { update(text: string): void; done(): void } {
  if (!io.stderrIsTty) return { update() {}, done() {} };
  let last = 0;
  let drawn = false;
  return {
    update(text) {
      const now = Date.now();
      if (now - last < 250) return;
      last = now;
      drawn = true;
      io.stderr(`\r\x1b[K${text}`);
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

/** ms since the epoch as ISO 8601 UTC to the second. */
export function formatTime(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z');
}

/** `value` as indented JSON on stdout. */
export function printJson(io: Io, value: unknown): void {
  io.stdout(JSON.stringify(value, null, 2) + '\n');
}

/** `90s`, `30m`, `1h`, `7d`, `0` → ms. */
export function parseDuration(text: string): number {
  const m = /^(\d{1,9})(ms|s|m|h|d)?$/.exec(text);
  if (m === null || (m[2] === undefined && m[1] !== '0')) throw usageError(`invalid duration '${text}': expected e.g. 0, 90s, 30m, 1h, 2d`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 'ms']!;
  return Number(m[1]) * unit;
}
