/**
 * The node side of `tessera backup create` and `backup restore --to-disk` (docs/cli.md): hooks,
 * the (group) snapshot, which base each disk's backup starts from, the node snapshots kept as
 * bases, and the removal of those interrupted backups left. The backup itself runs here, in the
 * CLI process: the password never reaches the node.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  backupDisk,
  backupSnapshotName,
  damagedAdvice,
  checkTenant,
  diskSizeOf,
  latestDiskRestorePoints,
  restoreTo,
  staleBackupSnapshots,
  type DiskBackupProgress,
  type DiskBackupResult,
  type IndexCache,
  type Repository,
  type RestoreProgress,
  type SnapshotEntry,
  type WorkerPool,
} from '../backup/index.ts';
import type { DiskInfo, SnapshotInfo } from '../engine/index.ts';
import type { ApiClient } from './client.ts';
import type { Io } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { NodeData } from './node-data.ts';

/** A hook runs at most this long before it is killed and counts as failed. */
export const hookTimeoutMs = 10 * 60_000;

const seg = encodeURIComponent;

/** Options of runDiskBackup. */
export interface DiskBackupRun {
  disks: string[];
  /** Shell command run before the snapshot; failing aborts the backup. */
  pre?: string;
  /** Shell command run after the snapshot (also when it failed, once --pre ran). */
  post?: string;
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

/** Runs `command` with `sh -c`, its output on our stderr; resolves to a failure message or null. */
export function runHook(io: Io, which: 'pre' | 'post', command: string, env: Record<string, string>): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...io.env, ...env } as NodeJS.ProcessEnv });
    child.stdout.setEncoding('utf8').on('data', (t: string) => io.stderr(t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => io.stderr(t));
    const timer = setTimeout(() => child.kill('SIGKILL'), hookTimeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve(`the --${which} hook could not run: ${err.message}`);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(null);
      else resolve(`the --${which} hook failed (${signal !== null ? `killed by ${signal}` : `exit ${code}`}): ${command}`);
    });
  });
}

/**
 * Backs up node disks: hooks around one (group) snapshot, then each disk from its base, then the
 * old bases are deleted, and the snapshots interrupted backups into this repository left. On
 * failure, the new snapshots of disks without a restore point are deleted again, so their old
 * bases stay the bases.
 */
export async function runDiskBackup(
  r: { repo: Repository; cache: IndexCache; pool: WorkerPool },
  client: ApiClient,
  io: Io,
  run: DiskBackupRun,
): Promise<{ outcomes: DiskBackupOutcome[]; postError: string | null }> {
  const { disks } = run;
  const dup = disks.find((d, i) => disks.indexOf(d) !== i);
  if (dup !== undefined) throw usageError(`disk ${dup} is named twice`);
  if (run.tenant !== undefined) checkTenant(run.tenant); // before any snapshot is taken
  // The snapshot lists, not the disks' info: that counts each disk's allocated bytes (a scan of
  // its index on the node, 15–30 ms for a 2 GiB disk). Asked of the node while the repository's
  // restore points are read.
  const [snapshotsOf, { parents, damaged }] = await Promise.all([
    Promise.all(disks.map((d) => snapshotNames(client, d))),
    latestDiskRestorePoints(r.repo, disks, r.cache),
  ]);
  if (damaged.length > 0) io.stderr(`tessera: warning: ${damagedAdvice(damaged)}; it is not used as a parent\n`);

  const snapName = backupSnapshotName((run.now ?? Date.now)(), r.repo.id);
  const hookEnv = { TESSERA_DISKS: disks.join(' '), TESSERA_SNAPSHOT: snapName };
  // The marker names the snapshot before it exists, so that no other backup into this repository
  // takes it for one an interrupted backup left (see removeStaleSnapshots).
  const marker = await r.repo.startWriter({ nodeSnapshot: snapName });
  // The index cache is synced (after the marker: see Concurrency in docs/backup.md) while the
  // hooks run and the node takes the snapshot.
  const synced = r.cache.sync(r.repo);
  synced.catch(() => {}); // awaited below, unless the snapshot failed first
  try {
    if (run.pre !== undefined) {
      const preError = await runHook(io, 'pre', run.pre, { ...hookEnv, TESSERA_HOOK: 'pre' });
      if (preError !== null) {
        // The --pre hook may have done part of its work (frozen one file system of two): undo it.
        const postError = run.post !== undefined ? await runHook(io, 'post', run.post, { ...hookEnv, TESSERA_HOOK: 'post' }) : null;
        throw new CliError(CliErrorCode.FAILED, `${preError}; no snapshot taken${postError !== null ? `; and ${postError}` : ''}`);
      }
    }
    let snaps: SnapshotInfo[];
    let postError: string | null = null;
    try {
      snaps = await client.request('POST', '/snapshots', { body: { name: snapName, disks } });
    } finally {
      if (run.post !== undefined) postError = await runHook(io, 'post', run.post, { ...hookEnv, TESSERA_HOOK: 'post' });
    }

    const data = new NodeData(client.baseUrl);
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
          io.stderr(`tessera: ${fullReason}: full backup of ${disk}\n`);
          parent = null;
        } else if (parent !== null && parent.snapshot.chunkSizeBytes !== r.repo.config.chunkSizeBytes) {
          fullReason = `restore point ${parent.id.slice(0, 8)} has another chunk size`;
          parent = null;
        }
        const result = await backupDisk(r, data.source(disk, snapName, snaps[i].sizeBytes), { parent, group, tenant: run.tenant, onProgress: run.onProgress });
        backedUp.push({ disk, result, fullReason });
        if (base !== null && snapshotsOf[i].includes(base)) {
          // The new snapshot is the next base; the old one only pins old data now.
          await client.request('DELETE', `/disks/${seg(disk)}/snapshots/${seg(base)}`).catch((err: Error) => {
            io.stderr(`tessera: warning: could not delete the old base snapshot ${disk}@${base}: ${err.message}\n`);
          });
        }
      }
    } catch (err) {
      for (const disk of disks.slice(backedUp.length)) {
        await client.request('DELETE', `/disks/${seg(disk)}/snapshots/${seg(snapName)}`).catch(() => {});
      }
      throw err;
    } finally {
      data.close();
    }
    const outcomes: DiskBackupOutcome[] = [];
    for (const o of backedUp) outcomes.push({ ...o, staleSnapshotsRemoved: await removeStaleSnapshots(r, client, io, o.disk, snapName) });
    return { outcomes, postError };
  } finally {
    await synced.catch(() => {}); // no sync runs on after the marker is gone
    await marker.stop();
  }
}

/** The names of `disk`'s snapshots. */
async function snapshotNames(client: ApiClient, disk: string): Promise<string[]> {
  const snaps: SnapshotInfo[] = await client.request('GET', `/disks/${seg(disk)}/snapshots`);
  return snaps.map((s) => s.name);
}

/**
 * Deletes the backup snapshots of `disk` that backups into `repo` killed before their end left
 * on the node (staleBackupSnapshots says which; `current` is this backup's). Best effort: what
 * fails is a warning, the backup itself is done.
 */
async function removeStaleSnapshots(r: { repo: Repository; cache: IndexCache }, client: ApiClient, io: Io, disk: string, current: string): Promise<string[]> {
  const removed: string[] = [];
  try {
    // Listed before staleBackupSnapshots reads the markers and restore points: see there why.
    const names = await snapshotNames(client, disk);
    for (const name of await staleBackupSnapshots(r.repo, disk, names, current, r.cache)) {
      await client.request('DELETE', `/disks/${seg(disk)}/snapshots/${seg(name)}`);
      removed.push(name);
      io.stderr(`tessera: removed ${disk}@${name}, left by an interrupted backup into this repository\n`);
    }
  } catch (err) {
    io.stderr(`tessera: warning: could not remove snapshots of ${disk} left by interrupted backups: ${(err as Error).message}\n`);
  }
  return removed;
}

/**
 * Restores a restore point into disk `name` of the node: a new disk, or with `force` an existing
 * one (resized to the image, its zero chunks trimmed). A new disk is deleted again if the restore
 * fails. Ends with a flush: the data is durable when this returns.
 */
export async function restoreToNodeDisk(
  r: { repo: Repository; cache: IndexCache; pool: WorkerPool },
  entry: SnapshotEntry,
  client: ApiClient,
  options: { disk: string; force: boolean; onProgress?: (p: RestoreProgress) => void },
): Promise<{ progress: RestoreProgress; created: boolean }> {
  const sizeBytes = diskSizeOf(entry.snapshot);
  const path = `/disks/${seg(options.disk)}`;
  let created = false;
  let existing: DiskInfo | null = null;
  if (options.force) {
    existing = await client.request('GET', path).catch((err: CliError) => {
      if (/No disk named/.test(err.message)) return null;
      throw err;
    });
  }
  if (existing === null) {
    await client.request('POST', '/disks', { body: { name: options.disk, sizeBytes } }).catch((err: CliError) => {
      if (/exists already/.test(err.message)) throw new CliError(CliErrorCode.FAILED, `${err.message}; --force restores into it`);
      throw err;
    });
    created = true;
  } else if (existing.sizeBytes !== sizeBytes) {
    await client.request('POST', `${path}/resize`, { body: { sizeBytes } });
  }
  const data = new NodeData(client.baseUrl);
  try {
    const progress = await restoreTo(r, entry.snapshot, data.sink(options.disk, !created), { onProgress: options.onProgress });
    // An image whose size is not a multiple of 512 leaves a tail of the disk that is not its own.
    if (!created && sizeBytes > entry.snapshot.sizeBytes) await data.trim(options.disk, entry.snapshot.sizeBytes, sizeBytes - entry.snapshot.sizeBytes);
    await data.flush(options.disk);
    return { progress, created };
  } catch (err) {
    if (created) await client.request('DELETE', path).catch(() => {});
    throw err;
  } finally {
    data.close();
  }
}
