/**
 * Disk backups run by the node (docs/backup.md, "Disk backups run by the node"): the steps of
 * runDiskBackup over the engine itself, with the repository's worker threads and derived key kept
 * between backups, so that a backup pays neither a process's start nor the node's HTTP API. Each
 * runs as a job (backup-jobs.ts) that goes on when the client that asked for it goes away.
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
  type DiskHost,
  type DiskSnapshotSource,
} from '../backup/index.ts';
import type { Backend } from '../objstore/index.ts';
import { extentRunsOf } from '../api/index.ts';
import type { Replication } from '../cluster/index.ts';
import type { Store, Volume } from '../engine/index.ts';
import { RateLimiter } from '../flow/index.ts';
import { Logger } from '../observe/index.ts';
import { BackupTotals } from './metrics.ts';
import { BackupJob, cancelledError, type BackupJobEnd, type NodeBackupEvent } from './backup-jobs.ts';

export { BackupJob, type BackupJobEnd, type BackupJobEvent, type BackupJobFacts, type BackupJobState, type NodeBackupEvent } from './backup-jobs.ts';

/** A backup the node is asked to run. */
export interface NodeBackupRequest {
  disks: string[];
  /** Repository location as this node sees it: a directory path or `s3://bucket/prefix`. */
  repo: string;
  password: string;
  /** AWS variables for an s3:// repository. */
  env: Record<string, string>;
  tenant?: string;
  /** Bytes a second the backup reads of the disks at most; full speed when left out. */
  rateBytesPerSecond?: number;
}

/** Extents asked of the engine per call: the API's window. */
const extentWindowBytes = 1 << 30;

/**
 * The engine's disks and snapshots, for runDiskBackup: `onSnapshot` hears the snapshot once it is
 * taken; reads (and a snapshot not taken yet) fail once `signal` aborts; `rateBytesPerSecond`
 * paces the reads.
 *
 * A store opened read-only takes no snapshot and needs none: its disks cannot change. The backup
 * reads their heads under the snapshot's name, which the node then never has, so the next backup
 * of those disks is a full one.
 */
export class EngineDiskHost implements DiskHost {
  private readonly store: Store;
  private readonly signal: AbortSignal | undefined;
  private readonly onSnapshot: ((name: string) => void) | undefined;
  private readonly rate: RateLimiter | null;
  /** Snapshot names that stand for the disks' heads (a read-only store). */
  private readonly heads = new Set<string>();

  /** In a cluster: the node's replication, through whose chains snapshots are taken and deleted at every replica. */
  private readonly cluster: Replication | null;

  constructor(store: Store, options: { signal?: AbortSignal; onSnapshot?: (name: string) => void; cluster?: Replication | null; rateBytesPerSecond?: number } = {}) {
    this.store = store;
    this.signal = options.signal;
    this.onSnapshot = options.onSnapshot;
    this.cluster = options.cluster ?? null;
    this.rate = options.rateBytesPerSecond === undefined ? null : new RateLimiter({ perSecond: options.rateBytesPerSecond });
  }

  /** Throws once the backup is cancelled. */
  private check(): void {
    if (this.signal?.aborted) throw cancelledError();
  }

  /** Waits as the rate asks before reading `bytes`; a cancel ends the wait. */
  private async pace(bytes: number): Promise<void> {
    if (this.rate === null) return;
    try {
      await this.rate.wait(bytes, this.signal);
    } catch (err) {
      if (this.signal?.aborted) throw cancelledError();
      throw err;
    }
  }

  async snapshotNames(disk: string): Promise<string[]> {
    return this.store.listSnapshots(disk).map((s) => s.name);
  }

  async snapshot(name: string, disks: readonly string[]): Promise<{ sizeBytes: number }[]> {
    this.check();
    if (this.store.readOnly) {
      this.heads.add(name);
      return disks.map((d) => ({ sizeBytes: this.store.getDisk(d).sizeBytes }));
    }
    if (this.cluster !== null) {
      // Replicated disks: a group snapshot through each disk's chain (this node heads them all),
      // so every replica has it, at one cut across the disks (docs/cluster.md, "Group snapshots").
      const snaps = await this.cluster.snapshotGroup(disks, name);
      this.onSnapshot?.(name);
      return snaps;
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
    const { store } = this;
    const withVolume = async <T>(fn: (v: Volume) => Promise<T>): Promise<T> => {
      this.check();
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
      read: async (offset, into) => {
        await this.pace(into.length);
        return withVolume((vol) => readInto(vol, offset, into));
      },
      readMany: async (offset, into) => {
        await this.pace(into.reduce((n, b) => n + b.length, 0));
        return withVolume(async (vol) => {
          for (const buf of into) {
            await readInto(vol, offset, buf);
            offset += buf.length;
          }
        });
      },
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

/** Finished jobs whose records are kept (the newest); older ones are forgotten. */
export const finishedJobsMax = 32;

/** How long close() waits for a cancelled job to end (delete its snapshot) before going on. */
const closeWaitMs = 30_000;

/**
 * The node's backups, each a job: one runs at a time (another is refused while one runs); the
 * records of the last finishedJobsMax finished ones are kept, in memory only; the last repository
 * stays open, with its index cache and worker threads, for keepOpenMs.
 */
export class NodeBackups {
  private readonly store: Store;
  private readonly cacheDir: string;
  private readonly totals: BackupTotals;
  private readonly log: Logger;
  /** Running and finished jobs, oldest first. */
  private readonly jobList: BackupJob[] = [];
  private runningJob: BackupJob | null = null;
  private open: OpenRepository | null = null;
  private idleTimer: NodeJS.Timeout | null = null;
  /** In a cluster: the node's replication once it joined (snapshots go through the chains). */
  #cluster: () => Replication | null;

  /**
   * `totals` hears what each backup read, stored and found deduplicated (the node's metrics).
   * The repository's index cache goes in `cacheDir`, by default `DATA/backup-writer-cache`.
   */
  constructor(options: { store: Store; dataDir: string; totals?: BackupTotals; cacheDir?: string; cluster?: () => Replication | null; log?: Logger }) {
    this.#cluster = options.cluster ?? (() => null);
    this.store = options.store;
    this.totals = options.totals ?? new BackupTotals();
    this.log = options.log ?? Logger.silent();
    // Not the instant restores' cache directory: each opens its own caches.
    this.cacheDir = options.cacheDir ?? join(options.dataDir, 'backup-writer-cache');
  }

  /** Whether a job is running (start() refuses another meanwhile). */
  get busy(): boolean {
    return this.runningJob !== null;
  }

  /** The running job, or null. */
  get running(): BackupJob | null {
    return this.runningJob;
  }

  /** Running and recently finished jobs, newest first. */
  jobs(): BackupJob[] {
    return [...this.jobList].reverse();
  }

  /** The job with this id, or with this unique prefix of at least 4 digits; null if none. */
  job(id: string): BackupJob | null {
    const exact = this.jobList.find((j) => j.id === id);
    if (exact !== undefined || id.length < 4) return exact ?? null;
    const matches = this.jobList.filter((j) => j.id.startsWith(id));
    return matches.length === 1 ? matches[0] : null;
  }

  /**
   * Starts a backup as a job and returns it at once: `job.finished` resolves to its end (never
   * rejects), `job.follow` hears its events, `job.cancel()` stops it. Throws, before any job
   * exists, when a job is running (BackupError INVALID: see `busy`) or a disk is unknown (the
   * engine's NOT_FOUND). The request (password and AWS variables included) lives in the job's
   * work only, and is let go when it ends.
   */
  start(req: NodeBackupRequest): BackupJob {
    if (this.runningJob !== null) throw new BackupError(BackupErrorCode.INVALID, 'A backup is running on this node already; try again when it is done');
    for (const d of req.disks) this.store.getDisk(d);
    const job = BackupJob.start(
      { disks: [...req.disks], repo: req.repo, tenant: req.tenant ?? null, rateBytesPerSecond: req.rateBytesPerSecond ?? null },
      ({ signal, report }) => this.backUp(req, signal, report),
      { onEnd: (j, end) => this.ended(j, end) },
    );
    this.runningJob = job;
    this.jobList.push(job);
    this.totals.running++;
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    this.log.info(`backup job ${job.id} started`, { job: job.id, disks: req.disks, repo: req.repo, ...(req.tenant !== undefined ? { tenant: req.tenant } : {}) });
    return job;
  }

  /** A job ended: counted, logged, the oldest finished records beyond the bound forgotten. */
  private ended(job: BackupJob, end: BackupJobEnd): void {
    this.totals.running--;
    if (end.state === 'done') this.totals.runsSucceeded++;
    else this.totals.runsFailed++;
    if (end.state === 'done') this.log.info(`backup job ${job.id} done`, { job: job.id, restorePoints: end.outcomes.map((o) => (o as { id: string }).id) });
    else this.log.warn(`backup job ${job.id} ${end.state}: ${end.error.message}`, { job: job.id, disks: job.facts.disks, err: end.error });
    this.runningJob = null;
    let finished = this.jobList.filter((j) => j.state !== 'running').length;
    for (let i = 0; i < this.jobList.length && finished > finishedJobsMax; ) {
      if (this.jobList[i].state === 'running') i++;
      else {
        this.jobList.splice(i, 1);
        finished--;
      }
    }
    this.idleTimer = setTimeout(() => void this.closeRepository(), keepOpenMs);
    this.idleTimer.unref();
  }

  /** A job's work: the backup, with the repository opened (or kept open) for it. */
  private async backUp(req: NodeBackupRequest, signal: AbortSignal, report: (e: NodeBackupEvent) => void): Promise<object[]> {
    const totals = this.totals;
    if (this.store.readOnly) report({ event: 'note', message: 'the node runs read-only: the disks are backed up as they are, without a snapshot (they cannot change); their next backup is a full one' });
    const r = await this.repository(req);
    const host = new EngineDiskHost(this.store, { signal, onSnapshot: (name) => report({ event: 'snapshot', name }), cluster: this.#cluster(), rateBytesPerSecond: req.rateBytesPerSecond });
    // Progress figures are per disk and cumulative; the totals grow by their differences.
    const seen = new Map<string, { read: number; stored: number; reused: number }>();
    const chunkBytes = r.repo.config.chunkSizeBytes;
    const { outcomes } = await runDiskBackup(r, host, {
      disks: req.disks,
      tenant: req.tenant,
      hookFailed: (message) => new BackupError(BackupErrorCode.INVALID, message), // no hooks here: the client runs them
      note: (message) => report({ event: 'note', message }),
      onProgress: (progress) => {
        const last = seen.get(progress.disk) ?? { read: 0, stored: 0, reused: 0 };
        totals.readBytes += progress.bytesRead - last.read;
        totals.storedBytes += progress.bytesStored - last.stored;
        totals.dedupedBytes += (progress.chunksReused - last.reused) * chunkBytes;
        seen.set(progress.disk, { read: progress.bytesRead, stored: progress.bytesStored, reused: progress.chunksReused });
        report({ event: 'progress', progress });
      },
    });
    return outcomes.map(outcomeJson);
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

  /** Closes the repository kept open, unless a job may be using it. */
  private async closeRepository(): Promise<void> {
    const o = this.open;
    // A job that has started but not opened its repository yet opens it after this: not closed under it.
    if (o === null || this.runningJob !== null) return;
    this.open = null;
    await o.pool.close();
    await o.cache.close();
    await o.backend.close();
  }

  /**
   * Cancels the running job and waits (up to 30 s) for it to end, so that it deletes its new
   * snapshot while the store is open; then closes what is kept open. Job records go with the
   * process: they are in memory only.
   */
  async close(): Promise<void> {
    if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    const job = this.runningJob;
    if (job !== null) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([job.cancel(), new Promise((resolve) => (timer = setTimeout(resolve, closeWaitMs)))]);
      clearTimeout(timer);
      if (this.idleTimer !== null) clearTimeout(this.idleTimer);
    }
    this.runningJob = null;
    await this.closeRepository();
  }
}
