/**
 * The node's instant restores (docs/backup.md, "Instant restore"): starting one, resuming after
 * a restart, status, cancel, and the Volume an NBD client of a restoring disk gets.
 */
import type { Store, Volume } from '../engine/index.ts';
import { EngineError, EngineErrorCode } from '../engine/index.ts';
import { HydrateError, HydrateErrorCode } from './errors.ts';
import { Hydrator, type HydratorLimits } from './hydrator.ts';
import { ChunkSource, checkEnv, type RepoCredentials } from './source.ts';
import { CopiedLog, isArchivedOrigin, readStates, removeState, writeState, type ArchivedOrigin, type RestoreState } from './state.ts';

/** Where a restore stands. */
export type InstantRestoreStateName = 'copying' | 'retrying' | 'needs-password' | 'done' | 'damaged';

/** What the API and `backup instant-restore status` show of a restore. */
export interface InstantRestoreInfo {
  disk: string;
  /** Repository location. */
  repo: string;
  /** Restore point id (64 hex digits), or null for a damaged state file. */
  snapshot: string | null;
  state: InstantRestoreStateName;
  /** Image size in the restore point (the disk is this rounded up to 512 bytes). */
  imageBytes: number;
  chunkSizeBytes: number;
  chunks: number;
  chunksZero: number;
  chunksCopied: number;
  chunksMissing: number;
  bytesCopied: number;
  /** Chunks fetched because a client read or wrote them before the copier got there. */
  chunksFetchedForClients: number;
  /** Bytes read from the repository by this node run. */
  bytesRead: number;
  startedMs: number;
  /** When the last chunk was copied, or null. */
  finishedMs: number | null;
  /** Why the copier is retrying, or why the restore is damaged; else null. */
  lastError: string | null;
  /** For a restore from an archive repository (`repo`): the primary repository and restore point it was archived from; else null. */
  archivedFrom: ArchivedOrigin | null;
}

/** What starting a restore takes. */
export interface StartOptions {
  disk: string;
  /** A directory path (absolute: the node's working directory is not the caller's) or an s3:// URL. */
  repo: string;
  /** Restore point id or unique prefix. */
  snapshot: string;
  password: string;
  /** AWS_* variables for an s3:// repository. */
  env: Record<string, unknown>;
  /** When `repo` is an archive and `snapshot` the copy there: where the restore point was archived from (kept in the state, shown in the status). */
  archivedFrom?: unknown;
}

/** Options of InstantRestores.open. */
export interface InstantRestoresOptions {
  store: Store;
  /** Directory of the state files (the node's `DATA/instant-restore`). */
  dir: string;
  /** Directory of the index caches (the node's `DATA/backup-cache`). */
  cacheDir: string;
  log?: (msg: string) => void;
  limits?: HydratorLimits;
  /** Worker threads per restore. Default 2. */
  workers?: number;
  /**
   * The node runs read-only: nothing is written to `dir`, no restore starts, resumes or is
   * cancelled, and the disk of an unfinished one is refused (its data is incomplete).
   */
  readOnly?: boolean;
}

interface Entry {
  disk: string;
  state: RestoreState | null;
  hydrator: Hydrator | null;
  /** Bytes read by sources that are closed (done). */
  bytesRead: number;
  source: ChunkSource | null;
  finishedMs: number | null;
  damaged: string | null;
  /** Set while starting or resuming, so that a second call is refused. */
  busy: boolean;
  /** Progress kept once done. */
  final: ReturnType<Hydrator['progress']> | null;
}

const diskNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Rounds up to a multiple of 512 (a disk size). */
function diskSize(imageBytes: number): number {
  return Math.max(512, Math.ceil(imageBytes / 512) * 512);
}

/** Every instant restore of one node. */
export class InstantRestores {
  private readonly store: Store;
  private readonly dir: string;
  private readonly cacheDir: string;
  private readonly log: (msg: string) => void;
  private readonly limits: HydratorLimits | undefined;
  private readonly workers: number | undefined;
  private readonly readOnly: boolean;
  private readonly entries = new Map<string, Entry>();
  private closed = false;

  private constructor(opts: InstantRestoresOptions) {
    this.store = opts.store;
    this.dir = opts.dir;
    this.cacheDir = opts.cacheDir;
    this.log = opts.log ?? (() => {});
    this.limits = opts.limits;
    this.workers = opts.workers;
    this.readOnly = opts.readOnly === true;
  }

  /**
   * Loads the unfinished restores of the data directory. Each waits for its password; one whose
   * disk is gone (or is another disk of the same name) is dropped.
   */
  static async open(opts: InstantRestoresOptions): Promise<InstantRestores> {
    const self = new InstantRestores(opts);
    const { states, damaged } = await readStates(opts.dir);
    for (const s of states) {
      let disk;
      try {
        disk = opts.store.getDisk(s.disk);
      } catch {
        disk = null;
      }
      const ours = disk !== null && (s.diskCreatedMs === null ? disk.createdMs >= s.startedMs : disk.createdMs === s.diskCreatedMs);
      if (!ours) {
        self.log(`hydrate: ${s.disk}: ${self.readOnly ? 'leaving' : 'dropping'} an unfinished instant restore whose disk is gone`);
        if (!self.readOnly) await removeState(opts.dir, s.disk);
        continue;
      }
      if (s.diskCreatedMs === null && !self.readOnly) await writeState(opts.dir, { ...s, diskCreatedMs: disk!.createdMs });
      self.entries.set(s.disk, { disk: s.disk, state: { ...s, diskCreatedMs: disk!.createdMs }, hydrator: null, bytesRead: 0, source: null, finishedMs: null, damaged: null, busy: false, final: null });
      self.log(self.readOnly
        ? `hydrate: ${s.disk}: unfinished instant restore; the node runs read-only, so the disk is refused (its data is incomplete)`
        : `hydrate: ${s.disk}: unfinished instant restore waits for its password (tessera backup instant-restore resume ${s.disk})`);
    }
    for (const d of damaged) {
      self.entries.set(d.disk, { disk: d.disk, state: null, hydrator: null, bytesRead: 0, source: null, finishedMs: null, damaged: d.error.message, busy: false, final: null });
      self.log(`hydrate: ${d.disk}: ${d.error.message}; the disk is refused until the restore is cancelled`);
    }
    return self;
  }

  private checkOpen(): void {
    if (this.closed) throw new HydrateError(HydrateErrorCode.CLOSED, 'The node is shutting down');
  }

  /** checkOpen, and refuses to start, resume or cancel a restore on a node that runs read-only. */
  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw new EngineError(EngineErrorCode.READ_ONLY, 'The node runs read-only: instant restores do not start, resume or cancel');
  }

  private entry(disk: string): Entry {
    const e = this.entries.get(disk);
    if (e === undefined) throw new HydrateError(HydrateErrorCode.NOT_FOUND, `No instant restore of disk "${disk}"`);
    return e;
  }

  /**
   * Starts an instant restore: opens the repository, creates the disk and starts copying. When
   * it resolves the disk is exported and serves reads and writes.
   */
  async start(opts: StartOptions): Promise<InstantRestoreInfo> {
    this.checkWritable();
    if (typeof opts.disk !== 'string' || !diskNamePattern.test(opts.disk)) {
      throw new HydrateError(HydrateErrorCode.INVALID, `Invalid disk name "${opts.disk}": 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    }
    const env = checkEnv(opts.env);
    if (opts.archivedFrom !== undefined && !isArchivedOrigin(opts.archivedFrom)) {
      throw new HydrateError(HydrateErrorCode.INVALID, 'archivedFrom must be {repo, snapshot}: the primary repository and the 64 hex digit id of the restore point there');
    }
    const existing = this.entries.get(opts.disk);
    if (existing !== undefined && existing.finishedMs === null) throw new HydrateError(HydrateErrorCode.EXISTS, `Disk "${opts.disk}" is being restored already`);
    if (this.store.listDisks().some((d) => d.name === opts.disk)) throw new EngineError(EngineErrorCode.EXISTS, `A disk named "${opts.disk}" exists already`);
    const e: Entry = { disk: opts.disk, state: null, hydrator: null, bytesRead: 0, source: null, finishedMs: null, damaged: null, busy: true, final: null };
    this.entries.set(opts.disk, e);
    let source: ChunkSource | null = null;
    let created = false;
    try {
      source = await ChunkSource.open({ repo: opts.repo, password: opts.password, env }, opts.snapshot, { cacheDir: this.cacheDir, workers: this.workers });
      this.checkOpen();
      const s = source.snapshot;
      const state: RestoreState = {
        version: 1,
        disk: opts.disk,
        repo: opts.repo,
        snapshot: source.snapshotId,
        imageBytes: s.sizeBytes,
        chunkSizeBytes: s.chunkSizeBytes,
        startedMs: Date.now(),
        diskCreatedMs: null,
        // Only when given: other state files keep the fields of before.
        ...(opts.archivedFrom !== undefined ? { archivedFrom: { repo: opts.archivedFrom.repo, snapshot: opts.archivedFrom.snapshot } } : {}),
      };
      // The state file first: a crash after the disk exists must leave a restore, not an empty disk.
      await writeState(this.dir, state);
      const info = await this.store.createDisk(opts.disk, diskSize(s.sizeBytes));
      created = true;
      state.diskCreatedMs = info.createdMs;
      await writeState(this.dir, state);
      e.state = state;
      await this.run(e, source);
      source = null;
      this.log(`hydrate: ${opts.disk}: instant restore of ${state.snapshot.slice(0, 8)} from ${state.repo} started`);
      return this.info(e);
    } catch (err) {
      await source?.close();
      if (created) await this.store.deleteDisk(opts.disk).catch((e2) => this.log(`hydrate: ${opts.disk}: cannot delete the disk of a failed start: ${(e2 as Error).message}`));
      await removeState(this.dir, opts.disk).catch(() => {});
      this.entries.delete(opts.disk);
      throw err;
    } finally {
      e.busy = false;
    }
  }

  /** Opens the copied log, starts the hydrator and its copier for `e` from `source` (owned from now on). */
  private async run(e: Entry, source: ChunkSource): Promise<void> {
    const state = e.state!;
    const { log, chunks } = await CopiedLog.open(this.dir, e.disk, source.chunkCount);
    let volume: Volume;
    try {
      volume = this.store.openVolume(e.disk);
    } catch (err) {
      await log.close();
      throw err;
    }
    const h = new Hydrator({ disk: e.disk, source, volume, log, logged: chunks, limits: this.limits, onLog: this.log });
    e.hydrator = h;
    e.source = source;
    h.start(async () => {
      // Every chunk is copied and logged, and the hydrator has let go of the repository: the
      // disk is an ordinary disk from now on.
      await removeState(this.dir, e.disk);
      e.final = h.progress();
      e.bytesRead += source.bytesRead;
      e.finishedMs = Date.now();
      e.hydrator = null;
      e.source = null;
      this.log(`hydrate: ${e.disk}: instant restore of ${state.snapshot.slice(0, 8)} done in ${((e.finishedMs - state.startedMs) / 1000).toFixed(1)} s`);
    });
  }

  /** Resumes a restore that waits for its password (after a node restart). */
  async resume(disk: string, creds: { password: string; env: Record<string, unknown> }): Promise<InstantRestoreInfo> {
    this.checkWritable();
    const e = this.entry(disk);
    if (e.damaged !== null) throw new HydrateError(HydrateErrorCode.CORRUPT, `${e.damaged}; cancel the restore`);
    if (e.busy || e.hydrator !== null || e.finishedMs !== null) return this.info(e);
    const env = checkEnv(creds.env);
    const state = e.state!;
    e.busy = true;
    try {
      const source = await ChunkSource.open({ repo: state.repo, password: creds.password, env } satisfies RepoCredentials, state.snapshot, { cacheDir: this.cacheDir, workers: this.workers });
      const s = source.snapshot;
      if (s.sizeBytes !== state.imageBytes || s.chunkSizeBytes !== state.chunkSizeBytes) {
        await source.close();
        throw new HydrateError(HydrateErrorCode.CORRUPT, `Restore point ${state.snapshot.slice(0, 8)} no longer matches the restore of disk "${disk}"`);
      }
      if (this.closed) {
        await source.close();
        this.checkOpen();
      }
      await this.run(e, source);
      this.log(`hydrate: ${disk}: instant restore resumed`);
      return this.info(e);
    } finally {
      e.busy = false;
    }
  }

  private info(e: Entry): InstantRestoreInfo {
    const p = e.hydrator?.progress() ?? e.final;
    const s = e.state;
    let state: InstantRestoreStateName;
    if (e.damaged !== null) state = 'damaged';
    else if (e.finishedMs !== null) state = 'done';
    else if (e.hydrator === null) state = 'needs-password';
    else state = p?.lastError ? 'retrying' : 'copying';
    const chunks = s === null ? 0 : Math.ceil(s.imageBytes / s.chunkSizeBytes);
    return {
      disk: e.disk,
      repo: s?.repo ?? '',
      snapshot: s?.snapshot ?? null,
      state,
      imageBytes: s?.imageBytes ?? 0,
      chunkSizeBytes: s?.chunkSizeBytes ?? 0,
      chunks: p?.chunks ?? chunks,
      chunksZero: p?.chunksZero ?? 0,
      chunksCopied: p?.chunksCopied ?? 0,
      chunksMissing: p?.chunksMissing ?? chunks,
      bytesCopied: p?.bytesCopied ?? 0,
      chunksFetchedForClients: p?.chunksFetchedForClients ?? 0,
      bytesRead: e.bytesRead + (e.source?.bytesRead ?? 0),
      startedMs: s?.startedMs ?? 0,
      finishedMs: e.finishedMs,
      lastError: e.damaged ?? p?.lastError ?? null,
      archivedFrom: s?.archivedFrom ?? null,
    };
  }

  /** Every restore of this node run, by disk name (done ones until the node restarts). */
  list(): InstantRestoreInfo[] {
    return [...this.entries.values()].filter((e) => !e.busy || e.state !== null).sort((a, b) => a.disk.localeCompare(b.disk)).map((e) => this.info(e));
  }

  /** One restore. */
  get(disk: string): InstantRestoreInfo {
    return this.info(this.entry(disk));
  }

  /** Stops an unfinished restore and deletes its disk (refused while NBD clients have it open). */
  async cancel(disk: string): Promise<void> {
    this.checkWritable();
    const e = this.entry(disk);
    if (e.busy) throw new HydrateError(HydrateErrorCode.BUSY, `The restore of disk "${disk}" is starting or resuming; try again`);
    if (e.finishedMs !== null) throw new HydrateError(HydrateErrorCode.INVALID, `The restore of disk "${disk}" is done; the disk is an ordinary disk now`);
    const h = e.hydrator;
    const source = e.source;
    if (h !== null) {
      e.busy = true;
      e.hydrator = null;
      e.source = null;
      await h.stop();
      e.busy = false;
    }
    try {
      await this.store.deleteDisk(disk);
    } catch (err) {
      if (!(err instanceof EngineError && err.code === EngineErrorCode.NOT_FOUND)) {
        // Still in use: the restore waits for its password again rather than run half-stopped.
        if (h !== null && source !== null) this.log(`hydrate: ${disk}: cancel refused (${(err as Error).message}); resume it to go on`);
        throw err;
      }
    }
    await removeState(this.dir, disk);
    this.entries.delete(disk);
    this.log(`hydrate: ${disk}: instant restore cancelled, disk deleted`);
  }

  /**
   * The Volume of export `name` when its disk is being restored (null: not ours, open it as
   * usual). A restore waiting for its password refuses the export.
   */
  openExport(name: string): Volume | null {
    if (name.includes('@')) return null;
    const e = this.entries.get(name);
    if (e === undefined || e.finishedMs !== null) return null;
    if (e.hydrator === null) {
      const why = e.damaged !== null
        ? `its restore state is damaged (${e.damaged})`
        : this.readOnly
          ? 'its instant restore is unfinished and the node runs read-only (its data is incomplete until the restore resumes)'
          : `its instant restore waits for the repository password: run \`tessera backup instant-restore resume ${name}\``;
      throw new HydrateError(HydrateErrorCode.NEEDS_PASSWORD, `Disk "${name}" cannot be opened yet: ${why}`);
    }
    return e.hydrator.wrap(this.store.openVolume(name));
  }

  /** Throws if `disk` is being restored: snapshots, clones, reverts, resizes and direct writes would see missing chunks. */
  checkDiskChange(disk: string, what: string): void {
    const e = this.entries.get(disk);
    if (e !== undefined && e.finishedMs === null) {
      throw new HydrateError(HydrateErrorCode.BUSY, `Disk "${disk}" is being restored from a backup; ${what} waits until the restore is done (see \`tessera backup instant-restore status\`)`);
    }
  }

  /** Stops every copier (what was copied is logged), for a node shutdown. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      [...this.entries.values()].map(async (e) => {
        const h = e.hydrator;
        e.hydrator = null;
        e.source = null;
        await h?.stop();
      }),
    );
  }
}
