/**
 * `tessera backup ...`: the backup commands that need no node (docs/cli.md, "Backups"). They run
 * in the CLI process: the password and the data never reach a node.
 */
import {
  outcomeJson,
  restorePointJson,
  Repository,
  backupFile,
  damagedAdvice,
  forget,
  forgetIds,
  listArchived,
  openRepoBackend,
  prune,
  restoreToFile,
  tenantOf,
  verify,
  type ArchiveRecord,
  type IndexCache,
  type PruneReport,
  type SnapshotEntry,
  type WorkerPool,
} from '../backup/index.ts';
import { parseDuration, password, percent, progressLine, repoLocation, repoOption, reported, withRepo, withRestorePoint } from './backup-common.ts';
import { backedUpLine, progressText } from './backup-options.ts';
import { formatTime, isoTime, jsonOption, printJson } from './output.ts';
import { runDiskBackup, restoreToNodeDisk } from './backup-disk.ts';
import type { Command, CommandContext, OptionSpec } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { formatSize, parseSize } from './size.ts';
import { formatTable } from './table.ts';

/**
 * A restore point archived out of this repository as `backup list --json` shows it: the fields
 * its record keeps, null for those only the copy in the archive has, `where` `archived`.
 */
function archivedJson(r: ArchiveRecord): object {
  return {
    id: r.id,
    time: isoTime(r.snapshotTime),
    kind: null,
    name: r.name,
    hostname: null,
    sizeBytes: null,
    chunkSizeBytes: null,
    parent: null,
    source: null,
    group: null,
    tenant: r.tenant,
    archivedFrom: null,
    stats: null,
    where: 'archived',
    archive: { location: r.archive.location, repository: r.archive.repository, id: r.archive.id, time: isoTime(r.archivedTime) },
  };
}

/** A whole number from an option, or undefined if absent. */
function count(values: CommandContext['values'], name: string): number | undefined {
  const v = values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^\d{1,9}$/.test(v)) throw usageError(`invalid --${name} '${String(v)}': expected a whole number`);
  return Number(v);
}

function pruneSummary(r: PruneReport): string {
  const parts = [`${formatSize(r.bytesFreed)} freed (${r.packsDeleted} packs deleted)`];
  if (r.packsMarked > 0) parts.push(`${r.packsMarked} packs (${formatSize(r.bytesMarked)}) marked, freed by a prune after the grace period`);
  if (r.marksWaiting > 0) parts.push(`${r.marksWaiting} marks waiting for the grace period or running backups`);
  if (r.packsResurrected > 0) parts.push(`${r.packsResurrected} packs kept for a backup that reused them`);
  if (r.packsPartlyUsed > 0) parts.push(`${r.packsPartlyUsed} partly used packs (${formatSize(r.bytesPartlyUsed)}) kept whole`);
  if (r.temporariesRemoved > 0) parts.push(`${r.temporariesRemoved} temporary files of killed backups (${formatSize(r.temporaryBytesRemoved)}) removed`);
  return `Pruned: ${parts.join('; ')}\n`;
}

async function runPrune(ctx: CommandContext, r: { repo: Repository; pool: WorkerPool; cache: IndexCache }): Promise<PruneReport> {
  const grace = ctx.values.grace;
  return prune(r, { graceMs: typeof grace === 'string' ? parseDuration(grace) : undefined });
}

/** `backup restore ID --to-disk NAME [--force]`. */
async function restoreDiskCommand(ctx: CommandContext, disk: string): Promise<void> {
  const progress = progressLine(ctx.io);
  const started = Date.now();
  // The restore point may have been moved to an archive repository: its record there says where.
  const { entry, out, from } = await withRestorePoint(ctx, ctx.args[0], async (r, entry, archivedIn) => {
    const out = await restoreToNodeDisk(r, entry, ctx.client(), {
      disk,
      force: ctx.values.force === true,
      onProgress: (p) => progress.update(() => `restore ${formatSize(p.bytesWritten)} written of ${formatSize(p.sizeBytes)}`),
    }).finally(() => progress.done());
    return { entry, out, from: archivedIn?.archive.location ?? null };
  });
  const ms = Date.now() - started;
  const p = out.progress;
  if (ctx.values.json) return printJson(ctx.io, { id: entry.id, disk, created: out.created, sizeBytes: p.sizeBytes, bytesWritten: p.bytesWritten, bytesRead: p.bytesRead, durationMs: ms, archive: from });
  ctx.io.stdout(`Restored ${entry.id.slice(0, 8)} (${entry.snapshot.name})${fromArchive(from)} to ${out.created ? 'new ' : ''}disk ${disk}: ${formatSize(p.sizeBytes)}, ${formatSize(p.bytesWritten)} of data, in ${(ms / 1000).toFixed(1)} s\n`);
}

/** ` from the archive at URL` for a restore point read from an archive, else nothing. */
function fromArchive(location: string | null): string {
  return location === null ? '' : ` from the archive at ${location}`;
}

const graceOption: OptionSpec = { type: 'string', valueName: 'DURATION', description: 'Only sweep marks older than this (default 1h; e.g. 0, 30m, 2h)' };

/** The backup commands. */
export const backupCommands: Command[] = [
  {
    name: 'backup init',
    args: [],
    summary: 'Create an encrypted backup repository',
    options: { repo: repoOption, 'chunk-size': { type: 'string', valueName: 'SIZE', description: 'Chunk size, a power of two from 64K to 16M (default 1M)' }, json: jsonOption },
    examples: ['TESSERA_PASSWORD=... tessera backup init --repo /srv/backups', 'tessera backup init --repo /srv/backups --chunk-size 4M'],
    usesApi: false,
    async run(ctx) {
      const location = repoLocation(ctx);
      const chunk = ctx.values['chunk-size'];
      const chunkSizeBytes = typeof chunk === 'string' ? parseSize(chunk) : undefined;
      const pw = await password(ctx.io, { confirm: true, prompt: 'New repository password' });
      const repo = await reported(async () => {
        const backend = await openRepoBackend(location, ctx.io.env);
        try {
          return await Repository.init(backend, pw, { chunkSizeBytes });
        } finally {
          await backend.close();
        }
      });
      if (ctx.values.json) return printJson(ctx.io, { id: repo.id, location: repo.backend.location, chunkSizeBytes: repo.config.chunkSizeBytes });
      ctx.io.stdout(`Created backup repository ${repo.id.slice(0, 8)} at ${repo.backend.location} (chunks of ${formatSize(repo.config.chunkSizeBytes)})\n`);
    },
  },
  {
    name: 'backup file',
    args: ['IMAGE'],
    summary: 'Back up a raw image file (no node needed): zero chunks and repeated chunks cost nothing',
    options: {
      repo: repoOption,
      name: { type: 'string', valueName: 'NAME', description: 'Name of the restore point (required)' },
      tenant: { type: 'string', valueName: 'NAME', description: 'Tenant the restore point belongs to, for archival policies (default: default)' },
      json: jsonOption,
    },
    examples: ['tessera backup file vm1.raw --repo /srv/backups --name vm1', 'tessera backup file vm1.raw --repo /srv/backups --name vm1 --tenant acme'],
    usesApi: false,
    async run(ctx) {
      const name = ctx.values.name;
      if (typeof name !== 'string') throw usageError('missing --name NAME');
      const progress = progressLine(ctx.io);
      const r = await withRepo(ctx, (r) =>
        backupFile(r, ctx.args[0], {
          name,
          tenant: typeof ctx.values.tenant === 'string' ? ctx.values.tenant : undefined,
          onProgress: (p) => progress.update(() => `backup ${percent(p.bytesScanned, p.sizeBytes)}  ${formatSize(p.bytesScanned)} of ${formatSize(p.sizeBytes)} read, ${formatSize(p.bytesStored)} stored`),
        }).finally(() => progress.done()),
      );
      if (ctx.values.json) return printJson(ctx.io, { ...restorePointJson(r), movers: r.writer.movers() });
      const s = r.snapshot.stats;
      ctx.io.stdout(
        `Backed up ${ctx.args[0]} as restore point ${r.id.slice(0, 8)} (${name}): ${formatSize(s.bytesScanned)} read, ` +
          `${formatSize(s.bytesNew)} new stored as ${formatSize(s.bytesStored)}, ${s.chunksReused} chunks reused, ${s.chunksZero} zero, in ${(s.durationMs / 1000).toFixed(1)} s\n`,
      );
    },
  },
  {
    name: 'backup restore',
    args: ['ID'],
    summary: 'Restore a restore point into a new file (zero chunks stay holes) or a disk of the node',
    options: {
      repo: repoOption,
      'to-file': { type: 'string', valueName: 'PATH', description: 'New file to write' },
      sync: { type: 'boolean', description: 'With --to-file: make the file durable (fsync) before reporting success' },
      'to-disk': { type: 'string', valueName: 'NAME', description: 'Disk of the node to write (a new one unless --force)' },
      force: { type: 'boolean', description: 'With --to-disk: restore into an existing disk, replacing its content' },
      json: jsonOption,
    },
    examples: ['tessera backup restore 3f2a9c1e --repo /srv/backups --to-file vm1-restored.raw', 'tessera backup restore 3f2a9c1e --repo /srv/backups --to-disk vm1-restored'],
    usesApi: true,
    async run(ctx) {
      const to = ctx.values['to-file'];
      const toDisk = ctx.values['to-disk'];
      if (typeof to === 'string' && typeof toDisk === 'string') throw usageError('give one of --to-file PATH and --to-disk NAME');
      if (ctx.values.sync && typeof toDisk === 'string') throw usageError('--sync goes with --to-file (a restore to a disk always ends with a flush)');
      if (typeof toDisk === 'string' && toDisk !== '') return restoreDiskCommand(ctx, toDisk);
      if (ctx.values.force) throw usageError('--force goes with --to-disk');
      if (typeof to !== 'string' || to === '') throw usageError('missing --to-file PATH or --to-disk NAME');
      const progress = progressLine(ctx.io);
      const started = Date.now();
      // The restore point may have been moved to an archive repository: its record there says where.
      const { entry, p, from } = await withRestorePoint(ctx, ctx.args[0], async (r, entry, archivedIn) => {
        const p = await restoreToFile(r, entry.snapshot, to, {
          sync: ctx.values.sync === true,
          onProgress: (p) => progress.update(() => `restore ${formatSize(p.bytesWritten)} written of ${formatSize(p.sizeBytes)}`),
        }).finally(() => progress.done());
        return { entry, p, from: archivedIn?.archive.location ?? null };
      });
      const ms = Date.now() - started;
      if (ctx.values.json) {
        return printJson(ctx.io, { id: entry.id, path: to, sizeBytes: p.sizeBytes, bytesWritten: p.bytesWritten, bytesRead: p.bytesRead, durationMs: ms, archive: from, writes: p.writes, movers: p.movers });
      }
      ctx.io.stdout(`Restored ${entry.id.slice(0, 8)} (${entry.snapshot.name})${fromArchive(from)} to ${to}: ${formatSize(p.sizeBytes)}, ${formatSize(p.bytesWritten)} of data, in ${(ms / 1000).toFixed(1)} s${p.writes.synced ? ', synced' : ''}\n`);
    },
  },
  {
    name: 'backup list',
    args: [],
    summary: 'List the restore points of a repository, oldest first, with those archived out of it (where they went); damaged ones are listed and fail the command',
    options: { repo: repoOption, json: jsonOption },
    examples: ['tessera backup list --repo /srv/backups', 'tessera backup list --repo /srv/backups --json | jq -r \'.[] | select(.where == "here") | .id\''],
    usesApi: false,
    async run(ctx) {
      const { entries, damaged, records } = await withRepo(ctx, async ({ repo, cache }) => {
        const { snapshots, damaged } = await repo.readSnapshots({ cache });
        return { entries: snapshots, damaged: damaged.map((d) => d.id), records: await listArchived(repo) };
      });
      // A run of backup archive killed between the record and the forget leaves both: the restore
      // point is still here (and is read here), so it is listed once, as here.
      const here = new Set(entries.map((e) => e.id));
      const rows: { time: number; id: string; json: object; cells: string[] }[] = [
        ...entries.map((e) => {
          const s = e.snapshot;
          return { time: s.time, id: e.id, json: restorePointJson(e), cells: [e.id.slice(0, 8), formatTime(s.time), s.kind, s.name, formatSize(s.sizeBytes), formatSize(s.stats.bytesStored), 'here'] };
        }),
        ...records
          .filter((r) => !here.has(r.id))
          .map((r) => ({ time: r.snapshotTime, id: r.id, json: archivedJson(r), cells: [r.id.slice(0, 8), formatTime(r.snapshotTime), '-', r.name, '-', '-', `archived → ${r.archive.location}`] })),
        // A damaged restore point has no time to sort by: it is listed last.
        ...damaged.map((id) => ({ time: Infinity, id, json: { id, damaged: true, where: 'here' }, cells: [id.slice(0, 8), '-', 'damaged', '-', '-', '-', 'here'] })),
      ].sort((a, b) => a.time - b.time || a.id.localeCompare(b.id));
      if (ctx.values.json) printJson(ctx.io, rows.map((r) => r.json));
      else ctx.io.stdout(formatTable({ headers: ['ID', 'TIME', 'KIND', 'NAME', 'SIZE', 'ADDED', 'WHERE'], rows: rows.map((r) => r.cells), align: ['left', 'left', 'left', 'left', 'right', 'right', 'left'] }));
      if (damaged.length > 0) throw new CliError(CliErrorCode.FAILED, damagedAdvice(damaged));
    },
  },
  {
    name: 'backup verify',
    args: [],
    summary: 'Check the repository; with --read-data also every byte of every pack',
    options: { repo: repoOption, 'read-data': { type: 'boolean', description: 'Read and check every pack and blob' }, json: jsonOption },
    examples: ['tessera backup verify --repo /srv/backups', 'tessera backup verify --repo /srv/backups --read-data'],
    usesApi: false,
    async run(ctx) {
      const progress = progressLine(ctx.io);
      const report = await withRepo(ctx, (r) =>
        verify(r, { readData: ctx.values['read-data'] === true, onProgress: (p) => progress.update(`verify ${p.packsRead} of ${p.packs} packs read`) }).finally(() => progress.done()),
      );
      if (ctx.values.json) printJson(ctx.io, report);
      else {
        ctx.io.stdout(
          `Checked ${report.restorePoints} restore points, ` +
            (report.archivedRecords > 0 ? `${report.archivedRecords} archived records, ` : '') +
            `${report.indexFiles} index files, ${report.packs} packs` +
            (ctx.values['read-data'] ? ` (${report.packsRead} read, ${report.blobsChecked} blobs)` : '') +
            (report.unindexedPacks > 0 ? `; ${report.unindexedPacks} packs of interrupted backups await prune` : '') +
            `: ${report.faults.length === 0 ? 'no faults' : `${report.faults.length} faults`}\n`,
        );
        for (const f of report.faults) {
          const who = f.restorePoints.length === 0 ? 'no restore point affected' : `affects ${f.restorePoints.join(', ')}`;
          ctx.io.stdout(`  ${f.subject}: ${f.message}; ${who}\n`);
        }
      }
      if (report.faults.length > 0) {
        const affected = new Set(report.faults.flatMap((f) => f.restorePoints));
        throw new CliError(CliErrorCode.FAILED, `verify found ${report.faults.length} faults affecting ${affected.size} restore points`);
      }
    },
  },
  {
    name: 'backup forget',
    args: ['[ID...]'],
    summary: 'Delete the restore points given by id (damaged ones too), or those a policy does not keep, per name; with --prune also free their space',
    options: {
      repo: repoOption,
      'keep-last': { type: 'string', valueName: 'N', description: 'Keep the N newest restore points' },
      'keep-daily': { type: 'string', valueName: 'N', description: 'Keep the newest of each of the last N days (UTC)' },
      'keep-weekly': { type: 'string', valueName: 'N', description: 'Keep the newest of each of the last N ISO weeks (UTC)' },
      'dry-run': { type: 'boolean', description: 'Only show what would be deleted' },
      prune: { type: 'boolean', description: 'Run prune afterwards' },
      grace: graceOption,
      json: jsonOption,
    },
    examples: ['tessera backup forget --repo /srv/backups --keep-last 3 --keep-daily 7 --keep-weekly 4 --prune', 'tessera backup forget --repo /srv/backups 725dd79b'],
    usesApi: false,
    async run(ctx) {
      const policy = { keepLast: count(ctx.values, 'keep-last'), keepDaily: count(ctx.values, 'keep-daily'), keepWeekly: count(ctx.values, 'keep-weekly') };
      const byPolicy = Object.values(policy).some((v) => v !== undefined);
      const dryRun = ctx.values['dry-run'] === true;
      if (ctx.args.length > 0) {
        if (byPolicy) throw usageError('forget takes restore point ids or a policy (--keep-…), not both');
        const out = await withRepo(ctx, async (r) => {
          const removed = await forgetIds(r.repo, ctx.args, { dryRun });
          const pruned = ctx.values.prune && !dryRun ? await runPrune(ctx, r) : null;
          return { removed, pruned };
        });
        if (ctx.values.json) return printJson(ctx.io, { removed: out.removed.map((f) => f.id), damaged: out.removed.filter((f) => f.snapshot === null).map((f) => f.id), prune: out.pruned });
        for (const f of out.removed) {
          const what = f.snapshot === null ? '(damaged)' : `${formatTime(f.snapshot.time)} ${f.snapshot.name}`;
          ctx.io.stdout(`${dryRun ? 'Would forget' : 'Forgot'} ${f.id.slice(0, 8)} ${what}\n`);
        }
        if (out.pruned) ctx.io.stdout(pruneSummary(out.pruned));
        return;
      }
      if (!byPolicy) throw usageError('forget needs restore point ids, or at least one of --keep-last, --keep-daily, --keep-weekly');
      const out = await withRepo(ctx, async (r) => {
        const result = await forget(r.repo, policy, { dryRun, cache: r.cache });
        const pruned = ctx.values.prune && !dryRun ? await runPrune(ctx, r) : null;
        return { result, pruned };
      });
      if (ctx.values.json) return printJson(ctx.io, { kept: out.result.kept.map((e) => e.id), removed: out.result.removed.map((e) => e.id), prune: out.pruned });
      for (const e of out.result.removed) ctx.io.stdout(`${dryRun ? 'Would forget' : 'Forgot'} ${e.id.slice(0, 8)} ${formatTime(e.snapshot.time)} ${e.snapshot.name}\n`);
      ctx.io.stdout(`Kept ${out.result.kept.length} restore points, ${dryRun ? 'would forget' : 'forgot'} ${out.result.removed.length}\n`);
      if (out.pruned) ctx.io.stdout(pruneSummary(out.pruned));
    },
  },
  {
    name: 'backup prune',
    args: [],
    summary: 'Free the space no restore point uses (two-phase: marks now, deletes after the grace period)',
    options: { repo: repoOption, grace: graceOption, json: jsonOption },
    examples: ['tessera backup prune --repo /srv/backups', 'tessera backup prune --repo /srv/backups --grace 0'],
    usesApi: false,
    async run(ctx) {
      const report = await withRepo(ctx, (r) => runPrune(ctx, r));
      if (ctx.values.json) return printJson(ctx.io, report);
      ctx.io.stdout(pruneSummary(report));
    },
  },
  {
    name: 'backup key add',
    args: [],
    summary: 'Add a password to a repository (the new one from $TESSERA_NEW_PASSWORD or a prompt)',
    options: { repo: repoOption },
    examples: ['tessera backup key add --repo /srv/backups'],
    usesApi: false,
    async run(ctx) {
      const id = await withRepo(ctx, async ({ repo }) => {
        const pw = await password(ctx.io, { envName: 'TESSERA_NEW_PASSWORD', confirm: true, prompt: 'New password' });
        return repo.addKey(pw);
      });
      ctx.io.stdout(`Added key ${id.slice(0, 8)}\n`);
    },
  },
  {
    name: 'backup key list',
    args: [],
    summary: "List a repository's keys (one per password)",
    options: { repo: repoOption, json: jsonOption },
    examples: ['tessera backup key list --repo /srv/backups'],
    usesApi: false,
    async run(ctx) {
      const keys = await withRepo(ctx, ({ repo }) => repo.listKeys());
      if (ctx.values.json) return printJson(ctx.io, keys);
      const rows = keys.map((k) => [(k.current ? '*' : ' ') + k.id.slice(0, 8), k.created.replace(/\.\d+Z$/, 'Z'), k.username || '-', k.hostname || '-']);
      ctx.io.stdout(formatTable({ headers: [' ID', 'CREATED', 'USER', 'HOST'], rows }));
    },
  },
  {
    name: 'backup key rm',
    args: ['KEYID'],
    summary: 'Remove a password (a key) from a repository; the last one stays',
    options: { repo: repoOption },
    examples: ['tessera backup key rm 9c1e0a2b --repo /srv/backups'],
    usesApi: false,
    async run(ctx) {
      const id = await withRepo(ctx, ({ repo }) => repo.removeKey(ctx.args[0]));
      ctx.io.stdout(`Removed key ${id.slice(0, 8)}\n`);
    },
  },
];

/**
 * `backup create --local`: the backup runs in this process (src/cli/backup-disk.ts); the command
 * itself is backup-create.ts, which loads this module only then.
 */
export async function createLocally(ctx: CommandContext): Promise<void> {
  const progress = progressLine(ctx.io);
  const { outcomes, postError } = await withRepo(ctx, (r) =>
    runDiskBackup(r, ctx.client(), ctx.io, {
      disks: ctx.args,
      pre: ctx.values.pre as string | undefined,
      post: ctx.values.post as string | undefined,
      tenant: typeof ctx.values.tenant === 'string' ? ctx.values.tenant : undefined,
      onProgress: (p) => progress.update(() => progressText(p)),
    }).finally(() => progress.done()),
  );
  if (ctx.values.json) printJson(ctx.io, outcomes.map(outcomeJson));
  else for (const { disk, result } of outcomes) ctx.io.stdout(backedUpLine(disk, result.id, result.incremental, result.snapshot.stats));
  if (postError !== null) throw new CliError(CliErrorCode.FAILED, `${postError} (the backup itself completed)`);
}
