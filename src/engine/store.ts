/**
 * A store of thin disks on local storage: the write log (log/) holds every block written, the
 * versioned block index (index/) says where each block's data is now and at any snapshot.
 * Snapshots, clones and revert are metadata over branches of history (history.ts). This file is
 * the public face; docs/engine.md says which file holds which part.
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { RecordType } from './format.ts';
import { WriteLog } from './log/write-log.ts';
import { nodeLogFiles, type LogFiles } from './log/files.ts';
import { DriveHealth, type StoreHealth } from './health.ts';
import { BlockIndex } from './index/block-index.ts';
import { EngineError, EngineErrorCode } from './errors.ts';
import { History, checkName, checkSize, type DiskMeta, type SnapMeta } from './history.ts';
import { Overlay } from './read/overlay.ts';
import { Reader } from './read/reader.ts';
import { Changes } from './read/changes.ts';
import { Appender } from './write/appender.ts';
import { Applier, applyDelayMsDefault } from './apply/applier.ts';
import { Sweeper } from './gc/sweep.ts';
import { Compactor, quietRequestsPerSecondDefault, type CompactStats } from './gc/compact.ts';
import { loadReadOnly, recover, type RecoveryStats } from './recovery.ts';
import { checkStoreDir, damagedSegments, openError } from './open-check.ts';
import { StoreVolume, type VolumeHost, type VolumeTarget } from './volume.ts';
import { Feed } from './feed.ts';
import { LmdbMetaStore } from './meta/lmdb.ts';
import { SpaceGuard, readFileSystem, type SpaceFigures, type SpaceOptions } from './space.ts';
import { ScrubPass, type ScrubOptions, type ScrubReport } from './scrub.ts';
import type { DiskInfo, SnapshotInfo, Volume } from './types.ts';


/** Options of Store.open. */
export interface StoreOptions {
  /** Directory holding the write log segments and the index. Created if missing. */
  dir: string;
  /** Size at which a log segment is sealed and a new one started. Default 256 MiB. */
  segmentBytesMax?: number;
  /** How often appended records are made durable and moved into the index. Default 200 ms. */
  syncIntervalMs?: number;
  /** How often background sweeping and compaction run; 0 disables them. Default 10 s. */
  maintenanceIntervalMs?: number;
  /** Longest a durable record waits for its batch to fill before the index absorbs it. Default 1 s. */
  applyDelayMs?: number;
  /**
   * Below this many requests a second on its volumes the store is quiet, and background
   * compaction takes the whole loop. Default 200.
   */
  quietRequestsPerSecond?: number;
  /** The reserve and the nearfull and full ratios (docs/engine.md, "The reserve and the thresholds"). */
  space?: SpaceOptions;
  /**
   * Opens an existing store without writing anything to its directory, also on a read-only file
   * system; every change is refused with ENGINE_READ_ONLY (docs/engine.md, "Read-only mode").
   */
  readOnly?: boolean;
  /**
   * Called once when the drive starts failing (docs/engine.md, "A failing drive"), with what
   * health() says from then on.
   */
  onDriveFailing?: (health: StoreHealth) => void;
  /** @internal The file layer the write log goes through (tests put a faulty drive here). Default node:fs. */
  files?: LogFiles;
  /**
   * The node's hybrid logical clock (docs/cluster.md, "Time"): each call a new value, above every
   * earlier one. It stamps the snapshots taken without a stamp of their own. Default: none, and
   * such snapshots carry none.
   */
  hlc?: () => bigint;
}

/** Options of Store.createSnapshot and createSnapshots. */
export interface SnapshotOptions {
  /**
   * The snapshot's clock value, recorded as given (a replica records the one its head took);
   * null records none. Default: a value of the store's clock (StoreOptions.hlc), or none.
   */
  hlc?: bigint | null;
}

/** Values a clock stamp may take: an unsigned 64-bit integer. */
const hlcMax = 2n ** 64n - 1n;

/** Space figures of a store. */
export interface StoreStats {
  /** Bytes in log segment files. */
  logBytes: number;
  /** Bytes of data blocks still referenced by some disk, snapshot or clone. */
  liveBytes: number;
  segments: number;
}

/** Running totals of a store since it opened, for the node's metrics (Store.metrics). */
export interface StoreMetrics {
  /** Bytes of log records that became durable: data, zeroes, trims and compaction's copies. */
  appendedBytes: number;
  /** Durable records not yet in the index (they are read through the overlay meanwhile). */
  applyLagRecords: number;
  /** Compaction passes finished, background and asked for. */
  compactionRuns: number;
  /** Live bytes compaction copied out of mostly-dead segments. */
  compactionRewrittenBytes: number;
  /** Bytes of segment files compaction removed. */
  compactionReclaimedBytes: number;
  /** Bytes in log segment files. */
  logBytes: number;
  /** Bytes of blocks the index says some disk, snapshot or clone references (records still queued for it not counted). */
  liveBytes: number;
  /** Log segment files. */
  segments: number;
}

/** Disks, snapshots, clones and revert over one write log and one block index. */
export class Store {
  readonly dir: string;
  /** Opened read-only: nothing is written, every change is refused. */
  readonly readOnly: boolean;
  /**
   * What a read-only open found damaged in the log, one sentence each: segments missing or cut
   * short (reads of their blocks fail). A read-write open refuses such a store instead.
   */
  readonly damage: readonly string[];
  /** What the last open replayed: the log tail the index had not absorbed yet. */
  readonly recovery: RecoveryStats = { recordsReplayed: 0, tornBytesDropped: 0 };
  /** Every log record once durable, in log order; the index apply is its first subscriber. */
  readonly feed: Feed;
  private readonly log: WriteLog;
  private readonly index: BlockIndex;
  private readonly drive: DriveHealth;
  private readonly history: History;
  /** Live data bytes per segment, as committed in the index. */
  private readonly live = new Map<number, number>();
  private readonly overlay = new Overlay();
  private readonly reader: Reader;
  private readonly changes: Changes;
  private readonly appender: Appender;
  private readonly applier: Applier;
  private readonly sweeper: Sweeper;
  private readonly compactor: Compactor;
  private readonly spaceGuard: SpaceGuard;
  /** What every volume of this store reaches the engine through. */
  private readonly host: VolumeHost;
  /** `disk` and `disk@snap` → open volumes on it. */
  private readonly openVolumes = new Map<string, number>();
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  /** Aborted by close: scrubs stop at once. */
  private readonly closing = new AbortController();
  /** Scrubs running; close waits for them to stop before it closes the index. */
  private readonly scrubs = new Set<Promise<unknown>>();
  /** Stamps snapshots taken without a stamp of their own (StoreOptions.hlc), or null. */
  private readonly clock: (() => bigint) | null;

  private constructor(dir: string, log: WriteLog, index: BlockIndex, space: SpaceGuard, opts: { readOnly: boolean; damage: string[]; health: DriveHealth; clock: (() => bigint) | null }) {
    this.dir = dir;
    this.readOnly = opts.readOnly;
    this.damage = opts.damage;
    this.clock = opts.clock;
    this.log = log;
    this.index = index;
    const health = (this.drive = opts.health);
    this.spaceGuard = space;
    this.feed = new Feed(log);
    const { live, overlay, feed } = this;
    this.history = new History(new LmdbMetaStore(index));
    const history = this.history;
    this.reader = new Reader({ index, overlay, log });
    const reader = this.reader;
    this.changes = new Changes({ index, overlay, reader, history });
    this.appender = new Appender({ log, history, overlay, reader, checkWritable: () => this.checkWritable(), space });
    this.applier = new Applier({ index, history, live, reader, overlay, health });
    const applier = this.applier;
    this.sweeper = new Sweeper({ index, history, overlay, applier, live });
    this.compactor = new Compactor({ log, index, history, reader, applier, sweeper: this.sweeper, live, space, isClosed: () => this.closed || health.failing, pinned: (id) => feed.pins(id) });
    const changes = this.changes;
    const appender = this.appender;
    this.host = {
      target: (disk, snap) => this.target(disk, snap),
      noteRequest: () => this.compactor.noteRequest(),
      readBlocks: (links, a, e, out, disk) => reader.readBlocks(links, a, e, out, disk),
      appendData: (d, a, payload, first, last, fua) => appender.appendData(d, a, payload, first, last, fua),
      zeroRange: (d, offset, length, type, fua) => appender.zeroRange(d, offset, length, type, fua),
      withBlockLocks: (branch, blocks, fn) => appender.withBlockLocks(branch, blocks, fn),
      changedMasks: (from, to, a, e) => changes.changedMasks(from, to, a, e),
      allocation: (links, a, e) => changes.allocation(links, a, e),
      flush: () => this.flush(),
      release: (disk, snap) => this.releaseVolume(disk, snap),
    };
  }

  /**
   * Opens (creating if needed) a store and recovers it: replays the log tail into the index.
   * Before anything is changed, the log segments the index points into are checked to be there
   * and whole: a missing or cut one is ENGINE_CORRUPT naming it (read-only, it is listed in
   * `damage` and the rest is served). Should the open fail part-way, what it opened is closed.
   */
  static async open(opts: StoreOptions): Promise<Store> {
    const readOnly = opts.readOnly === true;
    checkStoreDir(opts.dir, readOnly);
    const opened: { index: BlockIndex | null; log: WriteLog | null; store: Store | null } = { index: null, log: null, store: null };
    try {
      return await Store.openParts(opts, readOnly, opened);
    } catch (err) {
      // Half open: nothing is applied or synced on the way out, only the files let go.
      await opened.store?.abandon();
      opened.log?.close();
      await opened.index?.close();
      throw openError(err, opts.dir);
    }
  }

  /** Store.open's steps; what they opened is in `opened`, for open to close should one fail. */
  private static async openParts(opts: StoreOptions, readOnly: boolean, opened: { index: BlockIndex | null; log: WriteLog | null; store: Store | null }): Promise<Store> {
    let log: WriteLog | null = null;
    const space = new SpaceGuard({ ...opts.space, read: () => readFileSystem(opts.dir), appendedBytes: () => log?.appendedBytes ?? 0 });
    // Recovery, compaction and the index live in the reserve: a store whose file system is
    // already below it (filled by something else) does not start writing there. Read-only, it
    // writes nothing.
    const short = readOnly ? null : space.belowReserve();
    if (short !== null) {
      throw new EngineError(EngineErrorCode.NO_SPACE, `Cannot open the store in ${opts.dir}: ${short}; free space, grow the file system or lower the reserve, or open it read-only to copy data off`);
    }
    // Compacting one segment needs room for its live blocks: a segment is at most a quarter of
    // the reserve, so that always fits (docs/engine.md, "Getting space back").
    const segmentBytesMax = Math.min(opts.segmentBytesMax ?? 256 * 1024 * 1024, space.segmentBytesMax());
    const health = new DriveHealth(opts.onDriveFailing);
    const index = (opened.index = new BlockIndex(path.join(opts.dir, 'index'), { readOnly, health }));
    const damage = damagedSegments(index, path.join(opts.dir, 'log'));
    if (damage.length > 0 && !readOnly) {
      throw new EngineError(EngineErrorCode.CORRUPT, `The write log is damaged: ${damage.join('; ')}. Nothing was changed; a read-only open serves what is left`);
    }
    if (!readOnly) index.keepSegmentEnds();
    log = opened.log = WriteLog.open(path.join(opts.dir, 'log'), segmentBytesMax, { readOnly, files: opts.files ?? nodeLogFiles, health });
    const store = (opened.store = new Store(opts.dir, log, index, space, { readOnly, damage, health, clock: opts.hlc ?? null }));
    if (readOnly) {
      // Nothing is applied, synced, swept or compacted: no feed, no index writer, no timers.
      const { history, overlay, live } = store;
      await loadReadOnly({ log, index, history, overlay, live }, store.recovery);
      return store;
    }
    const { history, applier, sweeper, compactor, live } = store;
    await recover({ log, index, history, applier, sweeper, compactor, live }, store.recovery);
    compactor.setQuietRequestsPerSecond(opts.quietRequestsPerSecond ?? quietRequestsPerSecondDefault);
    applier.start({ indexPath: path.join(opts.dir, 'index'), delayMs: opts.applyDelayMs ?? applyDelayMsDefault });
    const { feed } = store;
    feed.start(history.seqNext - 1);
    feed.subscribe({
      fromSeq: history.seqNext,
      relocations: true,
      onRecords: (records) => applier.enqueue(records),
      onFallBehind: (info) => assert.fail(`the index apply takes every record at once, yet fell behind: ${JSON.stringify(info)}`),
    });
    log.onDurable = (appends) => feed.publish(appends);
    const syncMs = opts.syncIntervalMs ?? 200;
    store.timers.push(setInterval(() => store.backgroundSync(), syncMs).unref());
    const maintMs = opts.maintenanceIntervalMs ?? 10_000;
    if (maintMs > 0) {
      store.timers.push(setInterval(() => compactor.background(), maintMs).unref());
      compactor.startAuto();
      space.onRefused = () => compactor.soon();
    }
    return store;
  }

  /** Lets go of a store whose open failed: the timers, the index writer thread. */
  private async abandon(): Promise<void> {
    this.closed = true;
    this.applier.stop();
    for (const t of this.timers) clearInterval(t);
    await this.applier.close();
  }

  /** @internal Batches the index writer committed (tests check the path is taken). */
  get offThreadApplies(): number {
    return this.applier.offThreadApplies;
  }

  private checkOpen(): void {
    if (this.closed) throw new EngineError(EngineErrorCode.CLOSED, 'The store is closed');
  }

  /** checkOpen, and refuses a change of a store opened read-only (ENGINE_READ_ONLY) or on a failing drive (ENGINE_IO). */
  private checkWritable(): void {
    this.checkOpen();
    if (this.readOnly) throw new EngineError(EngineErrorCode.READ_ONLY, `The store in ${this.dir} is open read-only: nothing in it can be changed`);
    this.drive.check();
  }

  /**
   * The drive under the store: `ok`, or `failing` since a log write, a log sync or an index
   * transaction failed (not for a full file system). While failing, writes, zeroes, trims,
   * flushes, compaction and disk and snapshot changes are refused with ENGINE_IO; reads go on.
   * It lasts until the store is opened again.
   */
  health(): StoreHealth {
    return this.drive.status();
  }

  private info(d: DiskMeta): DiskInfo {
    return {
      name: d.name,
      sizeBytes: d.sizeBytes,
      allocatedBytes: this.changes.allocatedBytes(d),
      snapshots: d.snapshots.map((s) => s.name),
      origin: d.origin,
      createdMs: d.createdMs,
    };
  }

  // ---------------------------------------------------------------- disks

  /** Every disk, by name. */
  listDisks(): DiskInfo[] {
    return [...this.history.disks.values()].sort((a, b) => a.name.localeCompare(b.name)).map((d) => this.info(d));
  }

  /** One disk, or ENGINE_NOT_FOUND. */
  getDisk(name: string): DiskInfo {
    return this.info(this.history.disk(name));
  }

  /** Creates an empty thin disk. */
  async createDisk(name: string, sizeBytes: number): Promise<DiskInfo> {
    this.checkWritable();
    await this.applier.idle(); // see Applier.idle: the transaction below then never waits on the loop
    checkName('disk', name);
    checkSize(sizeBytes);
    if (this.history.disks.has(name)) throw new EngineError(EngineErrorCode.EXISTS, `A disk named "${name}" exists already`);
    const d: DiskMeta = { name, branch: 0, sizeBytes, createdMs: Date.now(), origin: null, snapshots: [] };
    await this.history.headNewBranch(d, null);
    return this.info(d);
  }

  /** Deletes a disk and its snapshots; clones of them stay. ENGINE_IN_USE while a volume is open on it. */
  async deleteDisk(name: string): Promise<void> {
    this.checkWritable();
    await this.applier.idle();
    const d = this.history.disk(name);
    const users = this.openVolumes.get(name) ?? 0;
    if (users > 0) throw new EngineError(EngineErrorCode.IN_USE, `Disk "${name}" is in use by ${users} open connection(s)`);
    await this.history.removeDisk(name);
    this.changes.forget(name);
    this.sweeper.enqueue(d.branch);
    for (const s of d.snapshots) this.sweeper.enqueue(s.branch);
    this.compactor.soon();
  }

  /** Changes a disk's size; shrinking deallocates the part cut off. */
  async resizeDisk(name: string, sizeBytes: number): Promise<DiskInfo> {
    this.checkWritable();
    const d = this.history.disk(name);
    checkSize(sizeBytes);
    if (sizeBytes < d.sizeBytes) {
      // Shrinking deallocates the cut-off part, so growing again later reads zeroes there.
      await this.appender.zeroRange(d, sizeBytes, d.sizeBytes - sizeBytes, RecordType.TRIM, true);
    }
    await this.applier.idle();
    d.sizeBytes = sizeBytes;
    await this.history.persistDisks([d]);
    return this.info(d);
  }

  // ---------------------------------------------------------------- snapshots

  /** A disk's snapshots, oldest first. */
  listSnapshots(disk: string): SnapshotInfo[] {
    const d = this.history.disk(disk);
    return d.snapshots.map((s) => snapshotInfo(d, s));
  }

  /** Takes a snapshot of a disk: O(1), durable when it resolves. */
  async createSnapshot(disk: string, snap: string, opts: SnapshotOptions = {}): Promise<SnapshotInfo> {
    return (await this.createSnapshots([disk], snap, opts))[0];
  }

  /**
   * Snapshots several disks at the same instant (a consistency group): every snapshot gets the
   * same seq and the same clock value, taken synchronously after all checks, so no write can
   * land between them. All are made durable by one log sync and persisted in one index
   * transaction, or none is.
   */
  async createSnapshots(disks: readonly string[], snap: string, opts: SnapshotOptions = {}): Promise<SnapshotInfo[]> {
    this.checkWritable();
    if (disks.length === 0) throw new EngineError(EngineErrorCode.INVALID, 'A snapshot needs at least one disk');
    if (opts.hlc != null && !(opts.hlc >= 0n && opts.hlc <= hlcMax)) throw new EngineError(EngineErrorCode.INVALID, `Invalid snapshot clock value ${opts.hlc}: it must be an unsigned 64-bit integer`);
    const ds = disks.map((name) => this.history.disk(name));
    checkName('snapshot', snap);
    const seen = new Set<string>();
    for (const d of ds) {
      if (seen.has(d.name)) throw new EngineError(EngineErrorCode.INVALID, `Disk "${d.name}" is named twice`);
      seen.add(d.name);
      if (d.snapshots.some((s) => s.name === snap)) throw new EngineError(EngineErrorCode.EXISTS, `Disk "${d.name}" has a snapshot named "${snap}" already`);
    }
    // The snapshot is a point in the log: every write with a lower seq is in it. It is made
    // durable with those writes, like a flush.
    const seq = this.history.seqNext - 1;
    const createdMs = Date.now();
    const hlc = opts.hlc !== undefined ? opts.hlc : (this.clock?.() ?? null);
    // Without a stamp the record is as before stamps existed: the same fields, the same bytes.
    const made = ds.map((d) => ({ d, s: { name: snap, branch: d.branch, seq, sizeBytes: d.sizeBytes, createdMs, ...(hlc === null ? {} : { hlc: hlc.toString() }) } satisfies SnapMeta }));
    for (const { d, s } of made) d.snapshots.push(s);
    this.history.invalidate();
    try {
      await this.log.sync();
      await this.applier.idle();
      await this.history.persistDisks(made.map(({ d }) => d));
    } catch (err) {
      for (const { d, s } of made) d.snapshots = d.snapshots.filter((x) => x !== s);
      this.history.invalidate();
      throw err;
    }
    return made.map(({ d, s }) => snapshotInfo(d, s));
  }

  /** Deletes a snapshot; its space is reclaimed by the next sweep. ENGINE_IN_USE while a volume is open on it. */
  async deleteSnapshot(disk: string, snap: string): Promise<void> {
    this.checkWritable();
    await this.applier.idle();
    const d = this.history.disk(disk);
    const s = this.history.snap(d, snap);
    const users = this.openVolumes.get(`${disk}@${snap}`) ?? 0;
    if (users > 0) throw new EngineError(EngineErrorCode.IN_USE, `Snapshot ${disk}@${snap} is in use by ${users} open connection(s)`);
    d.snapshots = d.snapshots.filter((x) => x !== s);
    await this.history.persistDisks([d]);
    this.history.invalidate();
    // Clones forked from it keep their own viewpoint, so what they read stays. A version only
    // this snapshot read lies between the viewpoints left around it: with one above, the block
    // was written again after the snapshot; with none, it is newer than the one below.
    const views = this.history.viewpoints(s.branch);
    const above = views.some((v) => v > s.seq);
    this.sweeper.enqueue(s.branch, above ? s.seq : (views.filter((v) => v < s.seq).at(-1) ?? 0));
    this.compactor.soon();
  }

  /** Moves a disk's head back to a snapshot, on a new branch; every snapshot stays. */
  async revertDisk(disk: string, snap: string): Promise<DiskInfo> {
    this.checkWritable();
    await this.applier.idle();
    const d = this.history.disk(disk);
    const s = this.history.snap(d, snap);
    const old = d.branch;
    await this.history.headNewBranch(d, s);
    this.sweeper.enqueue(old);
    this.compactor.soon();
    return this.info(d);
  }

  /** A new disk forked at `disk@snap`, copying nothing. */
  async cloneDisk(disk: string, snap: string, newName: string): Promise<DiskInfo> {
    this.checkWritable();
    await this.applier.idle();
    const d = this.history.disk(disk);
    const s = this.history.snap(d, snap);
    checkName('disk', newName);
    if (this.history.disks.has(newName)) throw new EngineError(EngineErrorCode.EXISTS, `A disk named "${newName}" exists already`);
    const c: DiskMeta = { name: newName, branch: 0, sizeBytes: s.sizeBytes, createdMs: Date.now(), origin: `${disk}@${snap}`, snapshots: [] };
    await this.history.headNewBranch(c, s);
    return this.info(c);
  }

  // ---------------------------------------------------------------- volumes

  /** Opens a disk's head (read-write; read-only in a store opened so) or one of its snapshots (read-only). */
  openVolume(disk: string, snap?: string | null): Volume {
    this.checkOpen();
    const d = this.history.disk(disk);
    if (snap != null) this.history.snap(d, snap);
    this.countUser(disk, 1);
    if (snap != null) this.countUser(`${disk}@${snap}`, 1);
    return new StoreVolume(this.host, d.name, snap ?? null, { storeReadOnly: this.readOnly });
  }

  private countUser(key: string, n: number): void {
    const v = (this.openVolumes.get(key) ?? 0) + n;
    if (v <= 0) this.openVolumes.delete(key);
    else this.openVolumes.set(key, v);
  }

  private releaseVolume(disk: string, snap: string | null): void {
    this.countUser(disk, -1);
    if (snap !== null) this.countUser(`${disk}@${snap}`, -1);
  }

  /** Resolves what a volume reads: its disk's head, or a snapshot. */
  private target(disk: string, snap: string | null): VolumeTarget {
    this.checkOpen();
    const d = this.history.disk(disk);
    if (snap === null) return { d, links: this.history.chain(d.branch, Infinity), sizeBytes: d.sizeBytes, readOnly: this.readOnly };
    const s = this.history.snap(d, snap);
    return { d, links: this.history.chain(s.branch, s.seq), sizeBytes: s.sizeBytes, readOnly: true };
  }

  // ---------------------------------------------------------------- the whole store

  /** Makes everything acknowledged so far durable (read-only: there is nothing to). */
  async flush(): Promise<void> {
    this.checkOpen();
    if (this.readOnly) return;
    this.drive.check();
    await this.log.sync();
  }

  private backgroundSync(): void {
    if (this.closed || this.drive.failing || !this.log.hasUnsynced) return;
    this.log.sync().catch(() => {
      // A failing sync surfaces to the next flush/FUA caller; nothing to do here.
    });
  }

  /** How full the file system under the store is, read again if the last reading is over a second old. */
  space(): SpaceFigures {
    return this.spaceGuard.figures();
  }

  /** Running totals since open, read without waiting (the figures the node's /metrics reports). */
  metrics(): StoreMetrics {
    const a = this.applier.totals;
    const c = this.compactor.totals;
    return {
      appendedBytes: a.bytes,
      applyLagRecords: a.records - a.appliedRecords,
      compactionRuns: c.runs,
      compactionRewrittenBytes: c.rewrittenBytes,
      compactionReclaimedBytes: c.reclaimedBytes,
      ...this.#space(),
    };
  }

  /** Log, live and segment figures as they stand (no work done for them). */
  #space(): StoreStats {
    let liveBytes = 0;
    for (const v of this.live.values()) liveBytes += v;
    return { logBytes: this.log.totalBytes(), liveBytes, segments: this.log.segmentIds().length };
  }

  /** Space figures; durable records still waiting for the index are absorbed first, so they count. */
  async stats(): Promise<StoreStats> {
    if (!this.closed) {
      try {
        await this.applier.applyQueued();
      } catch {
        // Queued again with a retry timer; the figures then leave those records out.
      }
    }
    return this.#space();
  }

  /**
   * Runs a compaction pass now: sweeps versions no snapshot, clone or disk can read any more,
   * drops segments left without live data, and rewrites the live data of mostly-dead segments.
   */
  async compact(): Promise<CompactStats> {
    this.checkWritable();
    return this.compactor.compact();
  }

  /**
   * Reads every log record holding live blocks of the disks asked (all by default) and checks
   * its checksums; reports the damaged blocks by disk and offset, with the snapshots that see
   * them (docs/engine.md, "Scrub"). ENGINE_NOT_FOUND for an unknown disk; rejects with the
   * signal's reason when aborted, ENGINE_CLOSED when the store closes meanwhile.
   */
  async scrub(opts: ScrubOptions = {}): Promise<ScrubReport> {
    this.checkOpen();
    const { log, index, history, reader, live, applier } = this;
    // Read-only, the applier takes nothing: the index's own checkpoint says what it holds (the
    // tail past it is in the overlay).
    const pass = new ScrubPass({ log, index, history, reader, live, applied: () => (this.readOnly ? index.checkpoint().applied : applier.applied), isClosed: () => this.closed, closing: this.closing.signal }, opts);
    const running = pass.run();
    const settled: Promise<unknown> = running.then(
      () => this.scrubs.delete(settled),
      () => this.scrubs.delete(settled),
    );
    this.scrubs.add(settled);
    return running;
  }

  /** Makes everything durable, absorbs it into the index and closes the files. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.applier.stop();
    for (const t of this.timers) clearInterval(t);
    this.closing.abort(new EngineError(EngineErrorCode.CLOSED, 'The store is closed'));
    await Promise.all(this.scrubs);
    await this.compactor.idle();
    await this.log.sync().catch(() => {});
    await this.applier.idle();
    try {
      this.applier.applyNow();
    } catch {
      // The records stay in the log; the next open replays them into the index.
    }
    await this.applier.close();
    this.log.close();
    await this.index.close();
  }
}

/** A snapshot of `d` as the engine reports it. */
function snapshotInfo(d: DiskMeta, s: SnapMeta): SnapshotInfo {
  return { name: s.name, disk: d.name, sizeBytes: s.sizeBytes, seq: s.seq, createdMs: s.createdMs, hlc: s.hlc ?? null };
}
