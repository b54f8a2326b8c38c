/**
 * `tessera backup archive`: moves restore points older than a tenant's policy allows into an
 * archive repository (docs/backup.md, "Archival"; docs/cli.md), and the lookup that lets
 * `backup restore` follow a restore point into the archive it was moved to.
 */
import { readFile } from 'node:fs/promises';
import {
  BackupError,
  BackupErrorCode,
  IndexCache,
  Repository,
  WorkerPool,
  archiveRestorePoint,
  cacheRoot,
  checkTenant,
  copiesIn,
  dueForArchive,
  locateRestorePoint,
  openBackend,
  parsePolicy,
  type ArchiveOutcome,
  type ArchiveRecord,
  type ArchiveRule,
  type RepoContext,
  type SnapshotEntry,
} from '../backup/index.ts';
// backup.ts imports this module too: only functions are taken from it, used at run time.
import { formatTime, parseDuration, password, printJson, progressLine, reported, withRepo } from './backup-common.ts';
import type { Command, CommandContext, Io, OptionSpec } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { formatSize } from './size.ts';

/** The archive's password: $TESSERA_ARCHIVE_PASSWORD, else $TESSERA_PASSWORD, else asked on the terminal. */
async function archivePassword(io: Io): Promise<string> {
  const pw = io.env.TESSERA_ARCHIVE_PASSWORD;
  if (pw !== undefined && pw !== '') return pw;
  const primary = io.env.TESSERA_PASSWORD;
  if (primary !== undefined && primary !== '') return primary;
  return password(io, { envName: 'TESSERA_ARCHIVE_PASSWORD', prompt: 'Archive repository password' });
}

/** Opens the repository at `location` with its cache and pool around `fn`. */
async function withRepoAt<T>(io: Io, location: string, pw: string, fn: (r: RepoContext) => Promise<T>): Promise<T> {
  const backend = await openBackend(location, io.env);
  let cache: IndexCache | null = null;
  let pool: WorkerPool | null = null;
  try {
    const repo = await Repository.open(backend, pw).catch((err) => {
      if (err instanceof BackupError && err.code === BackupErrorCode.WRONG_PASSWORD) {
        throw new BackupError(err.code, `${err.message} (the archive's password comes from TESSERA_ARCHIVE_PASSWORD, else TESSERA_PASSWORD)`, { cause: err });
      }
      throw err;
    });
    cache = IndexCache.open(repo.id, cacheRoot(io.env));
    pool = new WorkerPool(repo.keys);
    return await fn({ repo, cache, pool });
  } finally {
    await pool?.close();
    await cache?.close();
    await backend.close();
  }
}

/**
 * Runs `fn` on restore point `id` of the `--repo` repository: found there (its own id, or the
 * original's id of an archived copy), or, if it was archived, in the archive its record names.
 */
export async function withRestorePoint<T>(ctx: CommandContext, id: string, fn: (r: RepoContext, entry: SnapshotEntry, archivedIn: ArchiveRecord | null) => Promise<T>): Promise<T> {
  return withRepo(ctx, async (r) => {
    const found = await locateRestorePoint(r.repo, id);
    if ('entry' in found) return fn(r, found.entry, null);
    const rec = found.archived;
    return withRepoAt(ctx.io, rec.archive.location, await archivePassword(ctx.io), async (a) => {
      if (a.repo.id !== rec.archive.repository) {
        throw new BackupError(BackupErrorCode.NOT_FOUND, `Restore point ${rec.id} was archived to repository ${rec.archive.repository.slice(0, 8)} at ${rec.archive.location}, but another repository is there now`);
      }
      return fn(a, await a.repo.findSnapshot(rec.archive.id), rec);
    });
  });
}

/** One line of `backup archive`'s report. */
interface ArchiveLine {
  id: string;
  name: string;
  tenant: string;
  time: string;
  archive: string;
  archiveId: string | null;
  copied: boolean;
  chunksVerified: number;
  bytesStored: number;
}

/** The rule from the options: --policy FILE, or --archive-repo URL with --older-than. */
async function ruleOf(ctx: CommandContext): Promise<ArchiveRule> {
  const v = ctx.values;
  const tenant = typeof v.tenant === 'string' ? v.tenant : undefined;
  if (tenant !== undefined) {
    try {
      checkTenant(tenant);
    } catch (err) {
      throw usageError((err as Error).message);
    }
  }
  if (typeof v.policy === 'string') {
    if (v['archive-repo'] !== undefined || v['older-than'] !== undefined) throw usageError('give either --policy FILE or --archive-repo URL with --older-than DURATION');
    let text: string;
    try {
      const bytes = await readFile(v.policy);
      text = bytes.toString('utf8');
    } catch (err) {
      throw new CliError(CliErrorCode.FAILED, `cannot read the policy file ${v.policy}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    try {
      return { policy: parsePolicy(text, `Policy file ${v.policy}`), tenant };
    } catch (err) {
      throw new CliError(CliErrorCode.FAILED, (err as Error).message);
    }
  }
  if (typeof v['archive-repo'] !== 'string' || typeof v['older-than'] !== 'string') throw usageError('give --policy FILE, or --archive-repo URL with --older-than DURATION');
  return { archive: v['archive-repo'], olderThanMs: parseDuration(v['older-than']), tenant };
}

const repoOption: OptionSpec = { type: 'string', valueName: 'PATH', description: 'Repository: a directory or s3://BUCKET/PREFIX (default: $TESSERA_REPO)' };
const jsonOption: OptionSpec = { type: 'boolean', description: 'Print JSON instead of text' };

/** The archive commands. */
export const backupArchiveCommands: Command[] = [
  {
    name: 'backup archive',
    args: [],
    summary: 'Move restore points older than a per-tenant policy to an archive repository (copy, verify, then forget)',
    options: {
      repo: repoOption,
      policy: { type: 'string', valueName: 'FILE', description: 'Policy file: {"version":1,"tenants":{"NAME":{"archiveAfterDays":N,"archive":"URL"}}}' },
      'archive-repo': { type: 'string', valueName: 'URL', description: 'Without --policy: the archive repository' },
      'older-than': { type: 'string', valueName: 'DURATION', description: 'Without --policy: archive restore points at least this old (e.g. 30d)' },
      tenant: { type: 'string', valueName: 'NAME', description: 'Only restore points of this tenant' },
      'dry-run': { type: 'boolean', description: 'Only show what would be archived' },
      json: jsonOption,
    },
    examples: [
      'tessera backup archive --repo /srv/backups --policy /etc/tessera/archive.json',
      'TESSERA_ARCHIVE_PASSWORD=... tessera backup archive --repo /srv/backups --archive-repo s3://cold/backups --older-than 90d --tenant acme',
    ],
    usesApi: false,
    async run(ctx) {
      const rule = await ruleOf(ctx);
      const dryRun = ctx.values['dry-run'] === true;
      const progress = progressLine(ctx.io);
      const lines: ArchiveLine[] = [];
      const lineOf = (e: SnapshotEntry, tenant: string, archive: string, o: ArchiveOutcome | null): ArchiveLine => ({
        id: e.id,
        name: e.snapshot.name,
        tenant,
        time: new Date(e.snapshot.time).toISOString(),
        archive,
        archiveId: o?.archiveId ?? null,
        copied: o?.copied ?? false,
        chunksVerified: o?.chunksVerified ?? 0,
        bytesStored: o?.bytesStored ?? 0,
      });
      await withRepo(ctx, async (primary) => {
        const tasks = dueForArchive(await primary.repo.listSnapshots(), rule, primary.repo.now());
        if (dryRun) {
          for (const t of tasks) lines.push(lineOf(t.entry, t.tenant, t.archive, null));
          return;
        }
        const byArchive = new Map<string, typeof tasks>();
        for (const t of tasks) byArchive.set(t.archive, [...(byArchive.get(t.archive) ?? []), t]);
        for (const [location, list] of byArchive) {
          const archivePw = await archivePassword(ctx.io);
          await reported(() =>
            withRepoAt(ctx.io, location, archivePw, async (archive) => {
              const copies = await copiesIn(archive.repo);
              for (const [i, t] of list.entries()) {
                progress.update(`archive ${i + 1} of ${list.length} to ${location}: ${t.entry.id.slice(0, 8)} ${t.entry.snapshot.name}`);
                const o = await archiveRestorePoint(primary, archive, t.entry, location, copies);
                lines.push(lineOf(t.entry, t.tenant, location, o));
              }
            }),
          ).finally(() => progress.done());
        }
      });
      if (ctx.values.json) return printJson(ctx.io, { dryRun, archived: lines });
      for (const l of lines) {
        const what = `${l.id.slice(0, 8)} ${formatTime(Date.parse(l.time))} ${l.name} (tenant ${l.tenant})`;
        if (dryRun) ctx.io.stdout(`Would archive ${what} to ${l.archive}\n`);
        else ctx.io.stdout(`Archived ${what} to ${l.archive} as ${l.archiveId!.slice(0, 8)}: ${l.copied ? `${formatSize(l.bytesStored)} stored` : 'copied by an earlier run'}, ${l.chunksVerified} chunks verified\n`);
      }
      ctx.io.stdout(`${dryRun ? 'Would archive' : 'Archived'} ${lines.length} restore points\n`);
    },
  },
];
