/**
 * `tessera backup archive`: moves restore points older than a tenant's policy allows into an
 * archive repository (docs/backup.md, "Archival"; docs/cli.md). The commands that read a restore
 * point follow it into its archive through withRestorePoint (backup-common.ts).
 */
import { readFile } from 'node:fs/promises';
import { archiveRestorePoint, checkTenant, copiesIn, dueForArchive, parsePolicy, type ArchiveOutcome, type ArchiveRule, type SnapshotEntry } from '../backup/index.ts';
import { archivePassword, parseDuration, progressLine, repoOption, reported, withRepo, withRepoAt } from './backup-common.ts';
import { formatTime, isoTime, jsonOption, printJson } from './output.ts';
import type { Command, CommandContext, OptionSpec } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { formatSize } from './size.ts';

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
        time: isoTime(e.snapshot.time),
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
            withRepoAt(
              ctx.io,
              location,
              archivePw,
              async (archive) => {
                const copies = await copiesIn(archive.repo);
                for (const [i, t] of list.entries()) {
                  progress.update(`archive ${i + 1} of ${list.length} to ${location}: ${t.entry.id.slice(0, 8)} ${t.entry.snapshot.name}`);
                  const o = await archiveRestorePoint(primary, archive, t.entry, location, copies);
                  lines.push(lineOf(t.entry, t.tenant, location, o));
                }
              },
              { archive: true },
            ),
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
