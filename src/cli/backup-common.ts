/**
 * What the backup commands share: the repository and password options, opening a repository,
 * finding a restore point (here, or in the archive it was moved to), error reporting, progress
 * and output helpers. Its own module so the command modules (backup.ts, backup-archive.ts,
 * backup-files.ts, instant-restore.ts) import it and not each other.
 */
import {
  BackupError,
  BackupErrorCode,
  IndexCache,
  Repository,
  WorkerPool,
  cacheRoot,
  locateRestorePoint,
  openBackend,
  type ArchiveRecord,
  type Keys,
  type Located,
  type RepoContext,
  type SnapshotEntry,
} from '../backup/index.ts';
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

/** The archive's password: $TESSERA_ARCHIVE_PASSWORD, else $TESSERA_PASSWORD, else asked on the terminal. */
export async function archivePassword(io: Io): Promise<string> {
  const pw = io.env.TESSERA_ARCHIVE_PASSWORD;
  if (pw !== undefined && pw !== '') return pw;
  const primary = io.env.TESSERA_PASSWORD;
  if (primary !== undefined && primary !== '') return primary;
  return password(io, { envName: 'TESSERA_ARCHIVE_PASSWORD', prompt: 'Archive repository password' });
}

/** What a wrong password of an archive repository adds to its message. */
const archivePasswordNote = "the archive's password comes from TESSERA_ARCHIVE_PASSWORD, else TESSERA_PASSWORD";

/** Opens the repository at `location` around `fn`: the repository alone (no index cache, no worker threads). */
async function withRepository<T>(io: Io, location: string, pw: string, fn: (repo: Repository) => Promise<T>, options: { archive?: boolean } = {}): Promise<T> {
  const backend = await openBackend(location, io.env);
  try {
    const repo = await Repository.open(backend, pw).catch((err) => {
      if (options.archive && err instanceof BackupError && err.code === BackupErrorCode.WRONG_PASSWORD) {
        throw new BackupError(err.code, `${err.message} (${archivePasswordNote})`, { cause: err });
      }
      throw err;
    });
    return await fn(repo);
  } finally {
    await backend.close();
  }
}

/**
 * Opens the repository at `location` with its index cache and a worker pool around `fn`;
 * `archive` says it is an archive repository (a wrong password names where its password comes from).
 */
export async function withRepoAt<T>(io: Io, location: string, pw: string, fn: (r: RepoContext) => Promise<T>, options: { archive?: boolean } = {}): Promise<T> {
  // The worker threads boot while the password's key is derived (scrypt, ~0.1 s): started once
  // the repository was open, their start-up took the cores from the command's first steps.
  let keysOf!: (repo: Repository) => void;
  let noKeys!: (err: Error) => void;
  const pool = new WorkerPool(
    new Promise<Keys>((resolve, reject) => {
      keysOf = (repo) => resolve(repo.keys);
      noKeys = reject;
    }),
  );
  try {
    return await withRepository(
      io,
      location,
      pw,
      async (repo) => {
        keysOf(repo);
        let cache: IndexCache | null = null;
        try {
          cache = IndexCache.open(repo.id, cacheRoot(io.env));
          return await fn({ repo, cache, pool });
        } finally {
          await cache?.close();
        }
      },
      options,
    );
  } finally {
    noKeys(new BackupError(BackupErrorCode.INVALID, 'The repository was not opened')); // if it never was
    await pool.close();
  }
}

/** Opens the --repo repository with its index cache and a worker pool around `fn`. */
export async function withRepo<T>(ctx: CommandContext, fn: (r: RepoContext) => Promise<T>): Promise<T> {
  const location = repoLocation(ctx);
  const pw = await password(ctx.io);
  return reported(() => withRepoAt(ctx.io, location, pw, fn));
}

/**
 * Runs `fn` on restore point `id` of the --repo repository: found there (its own id, or the
 * original's id of an archived copy), or, if it was archived, in the archive its record names
 * (opened with the archive's password, see archivePassword).
 */
export async function withRestorePoint<T>(ctx: CommandContext, id: string, fn: (r: RepoContext, entry: SnapshotEntry, archivedIn: ArchiveRecord | null) => Promise<T>): Promise<T> {
  return withRepo(ctx, async (r) => {
    const found = await locateRestorePoint(r.repo, id);
    if ('entry' in found) return fn(r, found.entry, null);
    const rec = found.archived;
    return withRepoAt(ctx.io, rec.archive.location, await archivePassword(ctx.io), async (a) => fn(a, await findArchivedCopy(a.repo, rec), rec), { archive: true });
  });
}

/** The copy an archived record names, in the archive repository it names. */
async function findArchivedCopy(archive: Repository, rec: ArchiveRecord): Promise<SnapshotEntry> {
  if (archive.id !== rec.archive.repository) {
    throw new BackupError(BackupErrorCode.NOT_FOUND, `Restore point ${rec.id} was archived to repository ${rec.archive.repository.slice(0, 8)} at ${rec.archive.location}, but another repository is there now`);
  }
  return archive.findSnapshot(rec.archive.id);
}

/**
 * Where restore point `id` of the --repo repository is, for a reader that opens repositories
 * itself (the node, for an instant restore): looked up with the repository alone, and with the
 * password the --repo repository opened with.
 */
export async function locateInRepo(ctx: CommandContext, id: string, location: string): Promise<{ located: Located; password: string }> {
  const pw = await password(ctx.io);
  const located = await reported(() => withRepository(ctx.io, location, pw, (repo) => locateRestorePoint(repo, id)));
  return { located, password: pw };
}

/**
 * A progress line on stderr, redrawn at most 4 times a second, only on a terminal. Progress comes
 * per chunk: given a function, the text is made only when the line is drawn.
 */
export function progressLine(io: Io): { update(text: string | (() => string)): void; done(): void } {
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
