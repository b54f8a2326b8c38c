/**
 * Disk backups run by the node (docs/backup.md, "Disk backups run by the node"): the steps of
 * runDiskBackup over the engine itself, with the repository's worker threads and derived key kept
 * between backups, so that a backup pays neither a process's start nor the node's HTTP API.
 */
import { join } from 'node:path';
import {
  BackupError,
  BackupErrorCode,
  IndexCache,
  Repository,
  WorkerPool,
  openRepoBackend,
  outcomeJson,
  runDiskBackup,
  type DiskBackupProgress,
  type DiskHost,
  type DiskSnapshotSource,
} from '../backup/index.ts';
import type { Backend } from '../objstore/index.ts';
import { extentRunsOf } from '../api/index.ts';
import type { Replication } from '../cluster/index.ts';
import type { Store, Volume } from '../engine/index.ts';
import { BackupTotals } from './metrics.ts';

/** A backup the node is asked to run. */
export interface NodeBackupRequest {
  disks: string[];
  /** Repository location as this node sees it: a directory path or `s3://bucket/prefix`. */
  repo: string;
  password: string;
  /** AWS variables for an s3:// repository. */
  env: Record<string, string>;
  tenant?: string;
}

/** What a running backup reports. */
export type NodeBackupEvent = { event: 'snapshot'; name: string } | { event: 'progress'; progress: DiskBackupProgress } | { event: 'note'; message: string };

/** Extents asked of the engine per call: the API's window. */
const extentWindowBytes = 1 << 30;

/**
 * The engine's disks and snapshots, for runDiskBackup: `onSnapshot` hears the snapshot once it is
 * taken; reads fail once `signal` aborts.
 *
 * A store opened read-only takes no snapshot and needs none: its disks cannot change. The backup
 * reads their heads under the snapshot's name, which the node then never has, so the next backup
 * of those disks is a full one.
 */
export class EngineDiskHost implements DiskHost {
  private readonly store: Store;
  private readonly signal: AbortSignal | undefined;
  private readonly onSnapshot: ((name: string) => void) | undefined;
  /** Snapshot names that stand for the disks' heads (a read-only store). */
  private readonly heads = new Set<string>();

  /** In a cluster: the node's replication, through whose chains snapshots are taken and deleted at every replica. */
  private readonly cluster: Replication | null;

  constructor(store: Store, options: { signal?: AbortSignal; onSnapshot?: (name: string) => void; cluster?: Replication | null } = {}) {
    this.store = store;
    this.signal = options.signal;
    this.onSnapshot = options.onSnapshot;
    this.cluster = options.cluster ?? null;
  }

  async snapshotNames(disk: string): Promise<string[]> {
    return this.store.listSnapshots(disk).map((s) => s.name);
  }

  async snapshot(name: string, disks: readonly string[]): Promise<{ sizeBytes: number }[]> {
    if (this.store.readOnly) {
      this.heads.add(name);
      return disks.map((d) => ({ sizeBytes: this.store.getDisk(d).sizeBytes }));
    }
    if (this.cluster !== null) {
      // Replicated disks: one snapshot op through each disk's chain (this node heads them all),
      // so every replica has it; one after the other, not one cut across the disks.
      for (const d of disks) await this.cluster.disks.submit(d, { kind: 'snapshot', name });
      this.onSnapshot?.(name);
      return disks.map((d) => ({ sizeBytes: this.store.listSnapshots(d).find((s) => s.name === name)!.sizeBytes }));
    }
    const snaps = await this.store.createSnapshots(disks, name);
    this.onSnapshot?.(name);
    return snaps;
  }

  deleteSnapshot(disk: string, name: string): Promise<void> {
    if (this.heads.has(name)) return Promise.resolve();
    if (this.cluster !== null) return this.cluster.disks.submit(disk, { kind: 'snapshot-delete', name });
    return this.store.deleteSnapshot(disk, name);
  }

  source(disk: string, snap: string, sizeBytes: number): DiskSnapshotSource {
    const { store, signal } = this;
    const check = (): void => {
      if (signal?.aborted) throw new BackupError(BackupErrorCode.INVALID, 'The backup was cancelled: its client went away');
    };
    const withVolume = async <T>(fn: (v: Volume) => Promise<T>): Promise<T> => {
      check();
      const vol = store.openVolume(disk, this.heads.has(snap) ? null : snap);
      try {
        return await fn(vol);
      } finally {
        vol.close();
      }
    };
    return {
      disk,
      snapshot: snap,
      sizeBytes,
      extents: (visit, since) =>
        withVolume(async (vol) => {
          for (let at = 0; at < sizeBytes; at += extentWindowBytes) {
            for (const e of await extentRunsOf(vol, at, Math.min(extentWindowBytes, sizeBytes - at), since)) visit(e);
          }
        }),
      read: (offset, into) => withVolume((vol) => readInto(vol, offset, into)),
      readMany: (offset, into) =>
        withVolume(async (vol) => {
          for (const buf of into) {
            await readInto(vol, offset, buf);
            offset += buf.length;
          }
        }),
    };
  }
}

/** Reads `into.length` bytes at `offset` of `vol` into `into` (the engine may return them elsewhere). */
async function readInto(vol: Volume, offset: number, into: Buffer): Promise<void> {
  const got = await vol.read(offset, into.length, into);
  if (got.buffer !== into.buffer || got.byteOffset !== into.byteOffset) got.copy(into);
}

/** A repository opened for backups, kept between them with its worker threads. */
interface OpenRepository {
  location: string;
  password: string;
  env: string;
  backend: Backend;
  repo: Repository;
  cache: IndexCache;
  pool: WorkerPool;
}

/** The worker threads and the repository stay open this long after a backup. */
export const keepOpenMs = 60_000;

/**
 * The node's backups: one at a time (another is refused while one runs); the last repository
 * stays open, with its index cache and worker threads, for keepOpenMs.
 */
export class NodeBackups {
  private readonly store: Store;
  private readonly cacheDir: string;
  private running = false;
  private readonly totals: BackupTotals;

  /** Whether a backup is running (run() refuses another meanwhile). */
  get busy(): boolean {
    return this.running;
  }
  private open: OpenRepository | null = null;
  private idleTimer: NodeJS.Timeout | null = null;

  /**
   * `totals` hears what each backup read, stored and found deduplicated (the node's metrics).
   * The repository's index cache goes in `cacheDir`, by default `DATA/backup-writer-cache`.
   */
  /** In a cluster: the node's replication once it joined (snapshots go through the chains). */
  #cluster: () => Replication | null;

  constructor(options: { store: Store; dataDir: string; totals?: BackupTotals; cacheDir?: string; cluster?: () => Replication | null }) {
    this.#cluster = options.cluster ?? (() => null);
    this.store = options.store;
    this.totals = options.totals ?? new BackupTotals();
    // Not the instant restores' cache directory: each opens its own caches.
    this.cacheDir = options.cacheDir ?? join(options.dataDir, 'backup-writer-cache');
  }

  /** Runs a backup; `onEvent` hears its snapshot and progress; `signal` cancels it. Outcomes as `backup create --json` prints them. */
  async run(req: NodeBackupRequest, onEvent: (e: NodeBackupEvent) => void, signal?: AbortSignal): Promise<{ outcomes: object[] }> {
    if (this.running) throw new BackupError(BackupErrorCode.INVALID, 'A backup is running on this node already; try again when it is done');
    this.running = true;
    const totals = this.totals;
    totals.running++;
    let succeeded = false;
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    try {
      if (this.store.readOnly) onEvent({ event: 'note', message: 'the node runs read-only: the disks are backed up as they are, without a snapshot (they cannot change); their next backup is a full one' });
      const r = await this.repository(req);
      const host = new EngineDiskHost(this.store, { signal, onSnapshot: (name) => onEvent({ event: 'snapshot', name }), cluster: this.#cluster() });
      // Progress figures are per disk and cumulative; the totals grow by their differences.
      const seen = new Map<string, { read: number; stored: number; reused: number }>();
      const chunkBytes = r.repo.config.chunkSizeBytes;
      const { outcomes } = await runDiskBackup(r, host, {
        disks: req.disks,
        tenant: req.tenant,
        hookFailed: (message) => new BackupError(BackupErrorCode.INVALID, message), // no hooks here: the client runs them
        note: (message) => onEvent({ event: 'note', message }),
        onProgress: (progress) => {
          const last = seen.get(progress.disk) ?? { read: 0, stored: 0, reused: 0 };
          totals.readBytes += progress.bytesRead - last.read;
          totals.storedBytes += progress.bytesStored - last.stored;
          totals.dedupedBytes += (progress.chunksReused - last.reused) * chunkBytes;
          seen.set(progress.disk, { read: progress.bytesRead, stored: progress.bytesStored, reused: progress.chunksReused });
          onEvent({ event: 'progress', progress });
        },
      });
      succeeded = true;
      return { outcomes: outcomes.map(outcomeJson) };
    } finally {
      totals.running--;
      if (succeeded) totals.runsSucceeded++;
      else totals.runsFailed++;
      this.running = false;
      this.idleTimer = setTimeout(() => void this.closeRepository(), keepOpenMs);
      this.idleTimer.unref();
    }
  }

  /** The request's repository: the one kept open if it is the same, else opened anew. */
  private async repository(req: NodeBackupRequest): Promise<OpenRepository> {
    const env = JSON.stringify(Object.entries(req.env).sort());
    const o = this.open;
    if (o !== null && o.location === req.repo && o.password === req.password && o.env === env) return o;
    await this.closeRepository();
    const backend = await openRepoBackend(req.repo, req.env as NodeJS.ProcessEnv);
    try {
      const repo = await Repository.open(backend, req.password);
      const cache = IndexCache.open(repo.id, this.cacheDir);
      const pool = new WorkerPool(repo.keys);
      this.open = { location: req.repo, password: req.password, env, backend, repo, cache, pool };
      return this.open;
    } catch (err) {
      await backend.close();
      throw err;
    }
  }

  private async closeRepository(): Promise<void> {
    const o = this.open;
    if (o === null || this.running) return;
    this.open = null;
    await o.pool.close();
    await o.cache.close();
    await o.backend.close();
  }

  /** Closes what is kept open (a running backup is not waited for). */
  async close(): Promise<void> {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.running = false;
    await this.closeRepository();
  }
}
