/**
 * `backup forget` and `backup prune` (docs/backup.md, "Prune"). Prune is two-phase: a run first
 * sweeps marks that are old enough and that no running backup can still depend on, then marks the
 * packs no restore point references, removing them from the index so no later backup reuses them.
 */
import { BackupError, BackupErrorCode } from './errors.ts';
import { layout, packPath, pruneGraceMsDefault } from './format.ts';
import { indexBlobsOf, readPackHeader, type IndexedPack } from './pack.ts';
import type { WorkerPool } from './pool.ts';
import { damagedAdvice, mapConcurrent, type ObjectCache, type PruneMark, type Repository, type Snapshot, type SnapshotEntry } from './repository.ts';
import { scanIndex, scanMap, scanMarks } from './scan.ts';

/** Which restore points `forget` keeps, per name; a restore point is kept if any rule keeps it. */
export interface ForgetPolicy {
  keepLast?: number;
  /** The newest of each of the last N UTC days that have a restore point. */
  keepDaily?: number;
  /** The newest of each of the last N ISO weeks (UTC) that have a restore point. */
  keepWeekly?: number;
}

/** What forget did. */
export interface ForgetResult {
  kept: SnapshotEntry[];
  removed: SnapshotEntry[];
}

/** ISO 8601 week of a time, as `YYYY-Www`, in UTC. */
export function isoWeek(ms: number): string {
  const d = new Date(ms);
  const day = (d.getUTCDay() + 6) % 7; // Monday 0
  const thursday = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() - day + 3);
  const year = new Date(thursday).getUTCFullYear();
  const week = 1 + Math.floor((thursday - Date.UTC(year, 0, 4)) / (7 * 86_400_000) + ((new Date(Date.UTC(year, 0, 4)).getUTCDay() + 6) % 7) / 7);
  return `${year}-W${String(week).padStart(2, '0')}`;
}

/** Splits restore points into kept and removed by `policy` (pure). */
export function applyPolicy(entries: readonly SnapshotEntry[], policy: ForgetPolicy): ForgetResult {
  const rules = [policy.keepLast, policy.keepDaily, policy.keepWeekly];
  if (rules.every((n) => n === undefined)) throw new BackupError(BackupErrorCode.INVALID, 'Forget needs at least one of --keep-last, --keep-daily, --keep-weekly');
  for (const n of rules) if (n !== undefined && (!Number.isSafeInteger(n) || n < 0)) throw new BackupError(BackupErrorCode.INVALID, `Bad count ${n}: expected a whole number`);
  const byName = new Map<string, SnapshotEntry[]>();
  for (const e of entries) {
    const list = byName.get(e.snapshot.name) ?? [];
    list.push(e);
    byName.set(e.snapshot.name, list);
  }
  const kept = new Set<SnapshotEntry>();
  for (const list of byName.values()) {
    const newest = [...list].sort((a, b) => b.snapshot.time - a.snapshot.time || b.id.localeCompare(a.id));
    newest.slice(0, policy.keepLast ?? 0).forEach((e) => kept.add(e));
    const bucketed = (n: number | undefined, bucket: (ms: number) => string) => {
      const seen = new Set<string>();
      for (const e of newest) {
        if (seen.size >= (n ?? 0)) break;
        const b = bucket(e.snapshot.time);
        if (seen.has(b)) continue;
        seen.add(b);
        kept.add(e);
      }
    };
    bucketed(policy.keepDaily, (ms) => new Date(ms).toISOString().slice(0, 10));
    bucketed(policy.keepWeekly, isoWeek);
  }
  return { kept: entries.filter((e) => kept.has(e)), removed: entries.filter((e) => !kept.has(e)) };
}

/**
 * Deletes the restore points `policy` does not keep; with `names`, only among the restore points
 * of those names (a backup schedule's disks), the others left alone and out of the result. A
 * damaged restore point (one that cannot be read) has no name or time for the policy to place it
 * by: the call fails before it deletes anything, saying how to forget it by id.
 */
export async function forget(repo: Repository, policy: ForgetPolicy, options: { dryRun?: boolean; cache?: ObjectCache; names?: readonly string[] } = {}): Promise<ForgetResult> {
  const { snapshots, damaged } = await repo.readSnapshots({ cache: options.cache });
  if (damaged.length > 0) throw new BackupError(BackupErrorCode.CORRUPT, `Forget by policy stops: ${damagedAdvice(damaged.map((d) => d.id))}`);
  const names = options.names === undefined ? null : new Set(options.names);
  const result = applyPolicy(names === null ? snapshots : snapshots.filter((e) => names.has(e.snapshot.name)), policy);
  if (!options.dryRun) await mapConcurrent(result.removed, 8, (e) => repo.backend.delete(layout.snapshots + e.id));
  return result;
}

/** A restore point forget by id removed: its record, or null if it was damaged. */
export interface ForgottenById {
  id: string;
  snapshot: Snapshot | null;
}

/**
 * Deletes the restore points named by `ids` (each a full id or a unique prefix of at least 4 hex
 * digits), damaged ones included: they are found by their names alone. All are found before
 * any is deleted.
 */
export async function forgetIds(repo: Repository, ids: readonly string[], options: { dryRun?: boolean } = {}): Promise<ForgottenById[]> {
  const stored = await repo.listIds(layout.snapshots);
  const found = new Set<string>();
  for (const prefix of ids) {
    if (!/^[0-9a-f]{4,64}$/.test(prefix)) throw new BackupError(BackupErrorCode.INVALID, `Bad restore point id '${prefix}': expected at least 4 hex digits`);
    const matches = stored.filter((id) => id.startsWith(prefix));
    if (matches.length === 0) throw new BackupError(BackupErrorCode.NOT_FOUND, `No restore point ${prefix} in ${repo.backend.location}`);
    if (matches.length > 1) throw new BackupError(BackupErrorCode.INVALID, `Restore point id ${prefix} is ambiguous: ${matches.length} match`);
    found.add(matches[0]);
  }
  const out = await mapConcurrent([...found], 8, async (id): Promise<ForgottenById> => {
    try {
      return { id, snapshot: await repo.readSnapshot(id) };
    } catch (err) {
      if (err instanceof BackupError && err.code === BackupErrorCode.CORRUPT) return { id, snapshot: null };
      throw err;
    }
  });
  if (!options.dryRun) await mapConcurrent(out, 8, (f) => repo.backend.delete(layout.snapshots + f.id));
  return out;
}

/** What prune did. */
export interface PruneReport {
  /** Marks swept in this run, and marks left waiting (too young, or a backup older than them runs). */
  marksSwept: number;
  marksWaiting: number;
  packsDeleted: number;
  bytesFreed: number;
  /** Marked packs a backup reused meanwhile, listed in the index again. */
  packsResurrected: number;
  /** Packs marked in this run (freed by a later run after the grace period). */
  packsMarked: number;
  bytesMarked: number;
  /** Packs kept whole though only part of their blobs are referenced, and their size. */
  packsPartlyUsed: number;
  bytesPartlyUsed: number;
  /** Index files replaced by one. */
  indexFilesReplaced: number;
  /** Stale writer markers (of dead backups) removed. */
  writersRemoved: number;
  /** Temporary files of killed writers removed (older than the grace period), and their bytes. */
  temporariesRemoved: number;
  temporaryBytesRemoved: number;
}

/** Options of prune. */
export interface PruneOptions {
  /** Marks (and temporary files) younger than this are not swept. Default 1 hour. */
  graceMs?: number;
}

/** Runs both phases of prune once: sweep old marks, then mark what is unreferenced now. */
export async function prune(ctx: { repo: Repository; pool: WorkerPool; cache?: ObjectCache }, options: PruneOptions = {}): Promise<PruneReport> {
  const { repo, pool } = ctx;
  const graceMs = options.graceMs ?? pruneGraceMsDefault;
  if (!Number.isSafeInteger(graceMs) || graceMs < 0) throw new BackupError(BackupErrorCode.INVALID, `Bad grace period ${graceMs} ms`);
  const report: PruneReport = { marksSwept: 0, marksWaiting: 0, packsDeleted: 0, bytesFreed: 0, packsResurrected: 0, packsMarked: 0, bytesMarked: 0, packsPartlyUsed: 0, bytesPartlyUsed: 0, indexFilesReplaced: 0, writersRemoved: 0, temporariesRemoved: 0, temporaryBytesRemoved: 0 };

  // Live writers hold the sweep of marks made after they started; stale markers are removed.
  const writers = await repo.listWriters();
  const live = writers.filter((w) => repo.writerIsLive(w.marker));
  for (const w of writers) {
    if (!live.includes(w)) {
      await repo.backend.delete(layout.writers + w.id);
      report.writersRemoved++;
    }
  }
  // Temporary files of writers killed in a put: one older than the grace period, and written
  // before every live writer started, belongs to none of them.
  for (const t of await repo.backend.listTemporaries()) {
    if (repo.now() - t.modifiedMs < graceMs || live.some((w) => w.marker.started <= t.modifiedMs)) continue;
    await repo.backend.deleteTemporary(t.path);
    report.temporariesRemoved++;
    report.temporaryBytesRemoved += t.sizeBytes;
  }
  const { snapshots, damaged } = await repo.readSnapshots({ cache: ctx.cache });
  if (damaged.length > 0) throw new BackupError(BackupErrorCode.CORRUPT, `Prune stops: ${damagedAdvice(damaged.map((d) => d.id))}`);
  const index = await scanIndex(repo);
  if (index.damaged.length > 0) throw new BackupError(BackupErrorCode.CORRUPT, `Index file ${index.damaged[0].id} is damaged; prune would lose track of its packs (run \`tessera backup verify\`)`);
  const stored = new Map((await repo.backend.list(layout.data)).map((o) => [o.path.slice(o.path.lastIndexOf('/') + 1), o.sizeBytes]));
  // Restore points made by backups running at a mark may use blobs of marked packs.
  const marks = await scanMarks(repo, index, stored);
  const referenced = new Set<string>();
  for (const e of snapshots) {
    const scan = await scanMap(repo, pool, index, e.snapshot);
    if (scan.faults.length > 0) throw new BackupError(BackupErrorCode.CORRUPT, `Restore point ${e.id} cannot be read whole (${scan.faults[0].message}); run \`tessera backup verify\``);
    for (const b of scan.blobs) referenced.add(b);
  }

  // Phase 1: sweep.
  const resurrected: IndexedPack[] = [];
  const stillMarked = new Set<string>();
  for (const { id, mark } of marks) {
    const ready = repo.now() - mark.time >= graceMs && !live.some((w) => w.marker.started < mark.time);
    if (!ready) {
      report.marksWaiting++;
      for (const p of mark.packs) stillMarked.add(p.id.toString('hex'));
      continue;
    }
    for (const p of mark.packs) {
      const hex = p.id.toString('hex');
      if (index.packs.has(hex)) continue; // its backup indexed it after all
      const size = stored.get(hex);
      if (size === undefined) continue;
      if (p.blobs.some((b) => referenced.has(b.toString('hex')))) {
        const entries = await readPackHeader(repo.backend, repo.keys, hex, size);
        resurrected.push({ id: p.id, size, blobs: indexBlobsOf(entries) });
        continue;
      }
      await repo.backend.delete(packPath(hex));
      stored.delete(hex);
      report.packsDeleted++;
      report.bytesFreed += size;
    }
    await repo.backend.delete(layout.prune + id);
    report.marksSwept++;
  }
  report.packsResurrected = resurrected.length;

  // Phase 2: mark. Candidates are indexed packs with no referenced blob; orphans are packs no
  // index lists (left by killed backups, or uploaded by running ones: the sweep checks again).
  const livePacks: IndexedPack[] = [...resurrected];
  const newMark: PruneMark['packs'] = [];
  for (const [hex, { pack }] of index.packs) {
    const used = pack.blobs.filter((b) => referenced.has(b[5].toString('hex'))).length;
    if (used === 0 && !stillMarked.has(hex)) {
      newMark.push({ id: pack.id, size: pack.size, blobs: pack.blobs.map((b) => b[5]) });
      report.packsMarked++;
      report.bytesMarked += pack.size;
      continue;
    }
    if (used > 0 && used < pack.blobs.length) {
      report.packsPartlyUsed++;
      report.bytesPartlyUsed += pack.size;
    }
    livePacks.push(pack);
  }
  for (const [hex, size] of stored) {
    if (index.packs.has(hex) || stillMarked.has(hex) || resurrected.some((p) => p.id.toString('hex') === hex)) continue;
    newMark.push({ id: Buffer.from(hex, 'hex'), size, blobs: [] });
    report.packsMarked++;
    report.bytesMarked += size;
  }
  if (newMark.length > 0 || index.fileIds.length > 1 || resurrected.length > 0) {
    const supersedes = index.fileIds.map((id) => Buffer.from(id, 'hex'));
    const written = await repo.writeIndexFile(livePacks, supersedes);
    await mapConcurrent(index.fileIds.filter((id) => id !== written.id), 8, (id) => repo.backend.delete(layout.index + id));
    report.indexFilesReplaced = index.fileIds.length;
  }
  if (newMark.length > 0) {
    // The mark's time is taken once the index no longer lists its packs: a backup whose
    // marker is younger than that cannot have seen them.
    await repo.putObject(layout.prune, { time: repo.now(), packs: newMark } satisfies PruneMark);
  }
  return report;
}
