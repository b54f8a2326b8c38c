/**
 * The node side of `tessera backup create --local` and `backup restore --to-disk` (docs/cli.md):
 * the node's disks and snapshots through its HTTP API for the backup's steps
 * (src/backup/disk-run.ts), which run here, in the CLI process: the password never reaches the
 * node.
 */
import {
  diskSizeOf,
  restoreTo,
  runDiskBackup as runBackup,
  type DiskBackupOutcome,
  type DiskBackupProgress,
  type DiskHost,
  type DiskSnapshotSource,
  type HookEnv,
  type IndexCache,
  type Repository,
  type RestoreProgress,
  type RestoreSink,
  type SnapshotEntry,
  type WorkerPool,
} from '../backup/index.ts';
import { ApiErrorCode, ClientError, NodeData, type ApiClient, type DiskInfo, type SnapshotInfo } from '../api/client/index.ts';
import type { Io } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { runHook } from './hooks.ts';

export { hookTimeoutMs, runHook } from './hooks.ts';

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

/** The node's disks and snapshots through its HTTP API, for runDiskBackup. */
class ApiDiskHost implements DiskHost {
  private readonly client: ApiClient;
  private readonly data: NodeData;

  constructor(client: ApiClient) {
    this.client = client;
    this.data = new NodeData(client.baseUrl);
  }

  async snapshotNames(disk: string): Promise<string[]> {
    return (await this.client.listSnapshots(disk)).map((s) => s.name);
  }

  snapshot(name: string, disks: readonly string[]): Promise<SnapshotInfo[]> {
    return this.client.snapshotGroup({ name, disks: [...disks] });
  }

  async deleteSnapshot(disk: string, name: string): Promise<void> {
    await this.client.deleteSnapshot(disk, name);
  }

  source(disk: string, snap: string, sizeBytes: number): DiskSnapshotSource {
    return sourceOf(this.data, disk, snap, sizeBytes);
  }

  /** Closes the data connections. */
  close(): void {
    this.data.close();
  }
}

/**
 * Backs up node disks (runDiskBackup of src/backup/disk-run.ts) through the node's API, with the
 * shell hooks of --pre and --post; notes go to stderr.
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
  const hook = (which: 'pre' | 'post', command: string | undefined) =>
    command === undefined ? undefined : (env: HookEnv) => runHook(io, which, command, { ...env, TESSERA_HOOK: which });
  const host = new ApiDiskHost(client);
  try {
    return await runBackup(r, host, {
      disks,
      pre: hook('pre', run.pre),
      post: hook('post', run.post),
      hookFailed: (message) => new CliError(CliErrorCode.FAILED, message),
      note: (message) => io.stderr(`tessera: ${message}\n`),
      onProgress: run.onProgress,
      tenant: run.tenant,
      now: run.now,
    });
  } finally {
    host.close();
  }
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
  let created = false;
  let existing: DiskInfo | null = null;
  if (options.force) {
    existing = await client.getDisk(options.disk).catch((err: unknown) => {
      if (err instanceof ClientError && err.nodeCode === ApiErrorCode.NOT_FOUND) return null;
      throw err;
    });
  }
  if (existing === null) {
    await client.createDisk({ name: options.disk, sizeBytes }).catch((err: unknown) => {
      if (err instanceof ClientError && err.nodeCode === ApiErrorCode.EXISTS) throw new CliError(CliErrorCode.FAILED, `${err.message}; --force restores into it`, { cause: err });
      throw err;
    });
    created = true;
  } else if (existing.sizeBytes !== sizeBytes) {
    await client.resizeDisk(options.disk, sizeBytes);
  }
  const data = new NodeData(client.baseUrl);
  try {
    const progress = await restoreTo(r, entry.snapshot, sinkOf(data, options.disk, !created), { onProgress: options.onProgress });
    // An image whose size is not a multiple of 512 leaves a tail of the disk that is not its own.
    if (!created && sizeBytes > entry.snapshot.sizeBytes) await data.trim(options.disk, entry.snapshot.sizeBytes, sizeBytes - entry.snapshot.sizeBytes);
    await data.flush(options.disk);
    return { progress, created };
  } catch (err) {
    if (created) await client.deleteDisk(options.disk).catch(() => {});
    throw err;
  } finally {
    data.close();
  }
}

/** A backup source over `disk@snap` of the node. */
function sourceOf(data: NodeData, disk: string, snap: string, sizeBytes: number): DiskSnapshotSource {
  return {
    disk,
    snapshot: snap,
    sizeBytes,
    extents: (visit, since) => data.extents(disk, snap, visit, since),
    read: (offset, into) => data.read(disk, snap, offset, into),
    readMany: (offset, into) => data.readMany(disk, snap, offset, into),
  };
}

/** A restore sink into `disk` of the node; with `trimZeroes`, zero chunks are trimmed (the disk held data). */
function sinkOf(data: NodeData, disk: string, trimZeroes: boolean): RestoreSink {
  return {
    write: (bytes, offset) => data.write(disk, offset, bytes),
    zero: trimZeroes ? (offset, length) => data.trim(disk, offset, length) : undefined,
  };
}
