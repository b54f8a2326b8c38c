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
  openRepoBackend,
  type ArchiveRecord,
  type Keys,
  type Located,
  type RepoContext,
  type SnapshotEntry,
} from '../backup/index.ts';
import type { CommandContext, Io } from './commands.ts';
import { CliError, CliErrorCode } from './errors.ts';
import { password, repoLocation } from './backup-options.ts';

export { awsEnv, nodeLocation, parseDuration, password, percent, progressLine, repoLocation, repoOption } from './backup-options.ts';

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
  const backend = await openRepoBackend(location, io.env);
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
