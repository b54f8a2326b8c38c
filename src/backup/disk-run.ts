/**
 * A disk backup from start to end (docs/backup.md, "Disk backups through the node"): hooks around
 * one (group) snapshot, which base each disk's backup starts from, the node snapshots kept as
 * bases, and the removal of those interrupted backups left. What it asks of the node holding the
 * disks goes through a DiskHost: the node's own over its engine (src/node/backups.ts), or, for
 * `backup create --local`, the CLI's over the node's HTTP API (src/cli/backup-disk.ts).
 */
import { randomBytes } from 'node:crypto';
import { backupDisk, backupSnapshotName, latestDiskRestorePoints, staleBackupSnapshots, type DiskBackupProgress, type DiskBackupResult, type DiskSnapshotSource } from './disk.ts';
import type { IndexCache } from './cache.ts';
import type { WorkerPool } from './pool.ts';
import { damagedAdvice, type Repository, type SnapshotEntry } from './repository.ts';
import { checkTenant } from './writer.ts';

/** What a disk backup asks of the node holding the disks. */
export interface DiskHost {
  /** The names of `disk`'s snapshots. */
  snapshotNames(disk: string): Promise<string[]>;
  /** Takes one snapshot named `name` of all of `disks` at the same instant; their sizes, in order. */
  snapshot(name: string, disks: readonly string[]): Promise<{ sizeBytes: number }[]>;
  deleteSnapshot(disk: string, name: string): Promise<void>;
  /** A backup source over `disk@snap`. */
  source(disk: string, snap: string, sizeBytes: number): DiskSnapshotSource;
}

/** The environment of a backup's hooks. */
export interface HookEnv {
  /** The disks, space-separated. */
  TESSERA_DISKS: string;
  /** The snapshot's name (taken after `pre`, before `post`). */
  TESSERA_SNAPSHOT: string;
}

/** Options of runDiskBackup. */
export interface DiskBackupRun {
  /** The disks, each named once. */
  disks: string[];
  /** Runs before the snapshot; a failure (its message) aborts the backup. */
  pre?: (env: HookEnv) => Promise<string | null>;
  /** Runs after the snapshot, also when it failed (once `pre` ran); a failure is reported, not thrown. */
  post?: (env: HookEnv) => Promise<string | null>;
  /** The error a failed `pre` is thrown as. */
  hookFailed: (message: string) => Error;
  /**
   * A line for the user: why a disk gets a full backup, a snapshot removed, and warnings (those
   * start with `warning: `; a damaged restore point, an old base that could not be deleted).
   */
  note: (message: string) => void;
  onProgress?: (p: DiskBackupProgress) => void;
  /** Tenant of the new restore points (archival policies are per tenant); unset means `default`. */
  tenant?: string;
  /** Clock, for the snapshot name. */
  now?: () => number;
}

/** What a disk backup made, per disk. */
export interface DiskBackupOutcome {
  disk: string;
  result: DiskBackupResult;
  /** Why a disk with an earlier restore point got a full backup, or null. */
  fullReason: string | null;
  /** Backup snapshots of the disk left by interrupted backups into this repository, removed after this one. */
  staleSnapshotsRemoved: string[];
}

/**
 * Backs up node disks: hooks around one (group) snapshot, then each disk from its base, then the
 * old bases are deleted, and the snapshots interrupted backups into this repository left. On
 * failure, the new snapshots of disks without a restore point are deleted again, so their old
 * bases stay the bases. `postError` is a failed `post`'s message (the backup itself completed).
 */
export async function runDiskBackup(
  r: { repo: Repository; cache: IndexCache; pool: WorkerPool },
  host: DiskHost,
  run: DiskBackupRun,
): Promise<{ outcomes: DiskBackupOutcome[]; postError: string | null }> {
  const { disks } = run;
  if (run.tenant !== undefined) checkTenant(run.tenant); // before any snapshot is taken
  // The snapshot lists, not the disks' info: that counts each disk's allocated bytes (a scan of
  // its index on the node, 15–30 ms for a 2 GiB disk). Asked of the node while the repository's
  // restore points are read.
  const [snapshotsOf, { parents, damaged }] = await Promise.all([Promise.all(disks.map((d) => host.snapshotNames(d))), latestDiskRestorePoints(r.repo, disks, r.cache)]);
  if (damaged.length > 0) run.note(`warning: ${damagedAdvice(damaged)}; it is not used as a parent`);

  const snapName = backupSnapshotName((run.now ?? Date.now)(), r.repo.id);
  const hookEnv: HookEnv = { TESSERA_DISKS: disks.join(' '), TESSERA_SNAPSHOT: snapName };
  // The marker names the snapshot before it exists, so that no other backup into this repository
  // takes it for one an interrupted backup left (see removeStaleSnapshots).
  const marker = await r.repo.startWriter({ nodeSnapshot: snapName });
  // The index cache is synced (after the marker: see Concurrency in docs/backup.md) while the
  // hooks run and the node takes the snapshot.
  const synced = r.cache.sync(r.repo);
  synced.catch(() => {}); // awaited below, unless the snapshot failed first
  try {
    if (run.pre !== undefined) {
      const preError = await run.pre(hookEnv);
      if (preError !== null) {
        // The pre hook may have done part of its work (frozen one file system of two): undo it.
        const postError = run.post !== undefined ? await run.post(hookEnv) : null;
        throw run.hookFailed(`${preError}; no snapshot taken${postError !== null ? `; and ${postError}` : ''}`);
      }
    }
    let snaps: { sizeBytes: number }[];
    let postError: string | null = null;
    try {
      snaps = await host.snapshot(snapName, disks);
    } finally {
      if (run.post !== undefined) postError = await run.post(hookEnv);
    }

    const group = disks.length > 1 ? randomBytes(32) : null;
    const backedUp: Omit<DiskBackupOutcome, 'staleSnapshotsRemoved'>[] = [];
    try {
      await synced;
      for (const [i, disk] of disks.entries()) {
        let parent: SnapshotEntry | null = parents.get(disk) ?? null;
        let fullReason: string | null = null;
        const base = parent !== null && 'snapshot' in parent.snapshot.source ? parent.snapshot.source.snapshot : null;
        if (parent !== null && (base === null || !snapshotsOf[i].includes(base))) {
          fullReason = `the base snapshot ${disk}@${base} of restore point ${parent.id.slice(0, 8)} is gone`;
          run.note(`${fullReason}: full backup of ${disk}`);
          parent = null;
        } else if (parent !== null && parent.snapshot.chunkSizeBytes !== r.repo.config.chunkSizeBytes) {
          fullReason = `restore point ${parent.id.slice(0, 8)} has another chunk size`;
          parent = null;
        }
        const result = await backupDisk(r, host.source(disk, snapName, snaps[i].sizeBytes), { parent, group, tenant: run.tenant, onProgress: run.onProgress });
        backedUp.push({ disk, result, fullReason });
        if (base !== null && snapshotsOf[i].includes(base)) {
          // The new snapshot is the next base; the old one only pins old data now.
          await host.deleteSnapshot(disk, base).catch((err: Error) => {
            run.note(`warning: could not delete the old base snapshot ${disk}@${base}: ${err.message}`);
          });
        }
      }
    } catch (err) {
      for (const disk of disks.slice(backedUp.length)) await host.deleteSnapshot(disk, snapName).catch(() => {});
      throw err;
    }
    const outcomes: DiskBackupOutcome[] = [];
    for (const o of backedUp) outcomes.push({ ...o, staleSnapshotsRemoved: await removeStaleSnapshots(r, host, run.note, o.disk, snapName) });
    return { outcomes, postError };
  } finally {
    await synced.catch(() => {}); // no sync runs on after the marker is gone
    await marker.stop();
  }
}

/**
 * Deletes the backup snapshots of `disk` that backups into `repo` killed before their end left
 * on the node (staleBackupSnapshots says which; `current` is this backup's). Best effort: what
 * fails is a warning, the backup itself is done.
 */
async function removeStaleSnapshots(r: { repo: Repository; cache: IndexCache }, host: DiskHost, note: (message: string) => void, disk: string, current: string): Promise<string[]> {
  const removed: string[] = [];
  try {
    // Listed before staleBackupSnapshots reads the markers and restore points: see there why.
    const names = await host.snapshotNames(disk);
    for (const name of await staleBackupSnapshots(r.repo, disk, names, current, r.cache)) {
      await host.deleteSnapshot(disk, name);
      removed.push(name);
      note(`removed ${disk}@${name}, left by an interrupted backup into this repository`);
    }
  } catch (err) {
    note(`warning: could not remove snapshots of ${disk} left by interrupted backups: ${(err as Error).message}`);
  }
  return removed;
}
