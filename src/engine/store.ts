/**
 * A store of thin disks on local storage: the write log (log.ts) holds every block written, the
 * versioned block index (blockindex.ts) says where each block's data is now and at any snapshot.
 * Snapshots, clones and revert are metadata over branches of history; see docs/engine.md.
 */
import fs from 'node:fs';
import path from 'node:path';
import assert from 'node:assert/strict';
import { crc32 } from '../native/index.ts';
import { Format, RecordType, EntryKind, type RecordHeader, type Entry, type EntryKindValue } from './format.ts';
import { WriteLog, comparePositions, ioError, type Append, type LogPosition } from './log/write-log.ts';
import { BlockIndex, blockIndexEnd, type Found } from './index/block-index.ts';
import { IndexWriter, type IndexOp } from './index/writer.ts';
import { EngineError, EngineErrorCode } from './errors.ts';
import { Pacer } from '../flow/index.ts';
import type { DiskInfo, SnapshotInfo, Volume, AllocationExtent, ChangeExtent, WriteOptions, ZeroOptions } from './types.ts';

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
   * compaction takes the whole loop (see maintenanceDuty). Default 200.
   */
  quietRequestsPerSecond?: number;
}

/** Space figures of a store. */
export interface StoreStats {
  /** Bytes in log segment files. */
  logBytes: number;
  /** Bytes of data blocks still referenced by some disk, snapshot or clone. */
  liveBytes: number;
  segments: number;
}

/** What one compaction pass did. */
export interface CompactStats {
  segmentsRemoved: number;
  bytesReclaimed: number;
  bytesRewritten: number;
}

interface SnapMeta {
  name: string;
  branch: number;
  seq: number;
  sizeBytes: number;
  createdMs: number;
}

interface DiskMeta {
  name: string;
  branch: number;
  sizeBytes: number;
  createdMs: number;
  origin: string | null;
  snapshots: SnapMeta[];
}

interface BranchMeta {
  id: number;
  /** Branch this one forked from, or null for a fresh disk. */
  parent: number | null;
  /** Seq on the parent the fork sees (inclusive). */
  forkSeq: number;
}

/** An entry visible to readers before the index transaction holding it has committed. */
interface OverlayRange {
  seq: number;
  blockStart: number;
  blockEnd: number;
  kind: EntryKindValue;
}

/** One step of a read path: a branch and the newest seq visible on it. */
interface ChainLink {
  branch: number;
  maxSeq: number;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const BS = Format.blockBytes;
const SECTORS = BS / Format.sectorBytes;
const FULL_MASK = 0xff;
/** Largest virtual disk: 1 PiB. */
export const diskBytesMax = 2 ** 50;
const FORMAT_TAG = 'tessera-store/1';
/** A ZERO/TRIM record's block count is a u32: longer ranges take several records. */
const zeroBlocksPerRecordMax = 2 ** 31;
/**
 * Blocks of durable records gathered before the index absorbs them. One transaction rewrites
 * each index page it touches once, so at random 4 KiB writes a few large transactions cost about
 * half as much per write as many small ones.
 */
const APPLY_BATCH_BLOCKS = 65536;
/** Longest a durable record waits in the overlay for a batch to fill (StoreOptions.applyDelayMs). */
const APPLY_DELAY_MS = 1000;
/** Requests a second on a store's volumes below which it is quiet (StoreOptions.quietRequestsPerSecond). */
const QUIET_REQUESTS_PER_SECOND = 200;
/** Blocks per group of the overlay (Store.overlay): 256 KiB, a sequential writer's usual request. */
const overlayGroupBlocks = 64;

/** The version of `block` that WRITE record `a` holds. */
function overlayEntry(a: Append, block: number): Entry {
  const h = a.header;
  const i = block - h.blockStart;
  return {
    seq: h.seq,
    kind: EntryKind.DATA,
    mask: i === 0 ? h.maskFirst : i === h.blockCount - 1 ? h.maskLast : FULL_MASK,
    segment: a.segment,
    offset: a.offset + Format.recordHeaderBytes + i * BS,
  };
}

/** Wait before applying again after an index transaction failed (e.g. the file system was full). */
const APPLY_RETRY_MS = 1000;

function sectorMask(fromByte: number, toByte: number): number {
  // Sectors of one block touched by bytes [fromByte, toByte) (block-relative).
  const first = Math.floor(fromByte / Format.sectorBytes);
  const last = Math.ceil(toByte / Format.sectorBytes);
  let m = 0;
  for (let s = first; s < last; s++) m |= 1 << s;
  return m;
}

export class Store {
  readonly dir: string;
  private log: WriteLog;
  private index: BlockIndex;
  private disks = new Map<string, DiskMeta>();
  private branches = new Map<number, BranchMeta>();
  private viewpointCache = new Map<number, number[]>();
  private seqNext = 1;
  private branchNext = 1;
  /** Live data bytes per segment, as committed in the index. */
  private live = new Map<number, number>();
  private applied: LogPosition;
  /**
   * branch → group of overlayGroupBlocks blocks → the WRITE records not yet committed to the
   * index that cover blocks of it, in ascending seq (a block's version follows from its record,
   * overlayEntry). An entry object, an array and a map entry per block written had cost the event
   * loop more, in allocation and garbage collection, than the rest of a sequential write's
   * bookkeeping; a 256 KiB write now touches one group.
   */
  private overlay = new Map<number, Map<number, Append[]>>();
  private overlayRanges = new Map<number, OverlayRange[]>();
  /**
   * branch → how many records changed what it reads, and disk → its allocated bytes as counted
   * at (branch, size, that count): counting is a scan of the disk's index on the event loop
   * (~10 ms per GiB written), so an unchanged disk is not scanned again.
   */
  private branchChanges = new Map<number, number>();
  private allocatedCounted = new Map<string, { key: string; bytes: number }>();
  private applyQueue: Append[] = [];
  /** Blocks the records in applyQueue cover (zero/trim records count one). */
  private applyQueueBlocks = 0;
  private applyTimer: NodeJS.Timeout | null = null;
  private applyImmediate = false;
  private applyDelayMs = APPLY_DELAY_MS;
  /** The thread that writes batches of writes into the index, once recovery is over. */
  private writer: IndexWriter | null = null;
  /** The batch the index writer is committing; nothing else changes the index's blocks meanwhile. */
  private applying: Promise<void> | null = null;
  /** @internal Batches the index writer committed (tests check the path is taken). */
  offThreadApplies = 0;
  private openVolumes = new Map<string, number>();
  private locks = new Map<string, Promise<void>>();
  /**
   * Branches to sweep → the blocks to look at: those with a version newer than this seq (0:
   * every block). A snapshot delete names only the blocks where a version could have died.
   */
  private sweepQueue = new Map<number, number>();
  private timers: NodeJS.Timeout[] = [];
  private closed = false;
  private maintenance: Promise<unknown> | null = null;
  private readers = new Map<number, number>();
  /** Requests on the store's volumes: `count` since `since`, `before` in the second before that. */
  private load = { since: performance.now(), count: 0, before: 0 };
  private quietRequestsPerSecond = QUIET_REQUESTS_PER_SECOND;
  /** The file system under the store was short of space when the running maintenance pass began. */
  private spaceLow = false;
  /** What the last open replayed: the log tail the index had not absorbed yet. */
  readonly recovery = { recordsReplayed: 0, tornBytesDropped: 0 };

  private constructor(dir: string, log: WriteLog, index: BlockIndex) {
    this.dir = dir;
    this.log = log;
    this.index = index;
    this.applied = { segment: 0, offset: 0 };
  }

  /** Opens (creating if needed) a store and recovers it: replays the log tail into the index. */
  static async open(opts: StoreOptions): Promise<Store> {
    fs.mkdirSync(opts.dir, { recursive: true });
    const tagFile = path.join(opts.dir, 'FORMAT');
    if (fs.existsSync(tagFile)) {
      const tag = fs.readFileSync(tagFile, 'utf8').trim();
      if (tag !== FORMAT_TAG) throw new EngineError(EngineErrorCode.CORRUPT, `Unsupported store format "${tag}" in ${opts.dir}`);
    } else {
      fs.writeFileSync(tagFile, FORMAT_TAG + '\n');
    }
    const log = WriteLog.open(path.join(opts.dir, 'log'), opts.segmentBytesMax ?? 256 * 1024 * 1024);
    const index = new BlockIndex(path.join(opts.dir, 'index'));
    const store = new Store(opts.dir, log, index);
    await store.recover();
    store.applyDelayMs = opts.applyDelayMs ?? APPLY_DELAY_MS;
    store.quietRequestsPerSecond = opts.quietRequestsPerSecond ?? QUIET_REQUESTS_PER_SECOND;
    store.writer = new IndexWriter(path.join(opts.dir, 'index'));
    log.onDurable = (appends) => store.enqueueApply(appends);
    const syncMs = opts.syncIntervalMs ?? 200;
    store.timers.push(setInterval(() => store.backgroundSync(), syncMs).unref());
    const maintMs = opts.maintenanceIntervalMs ?? 10_000;
    if (maintMs > 0) store.timers.push(setInterval(() => store.backgroundMaintenance(), maintMs).unref());
    return store;
  }

  // ---------------------------------------------------------------- recovery

  private async recover(): Promise<void> {
    const m = this.index.meta;
    for (const { key, value } of m.getRange({ start: 'branch/', end: 'branch0' })) this.branches.set(value.id, value as BranchMeta);
    for (const { key, value } of m.getRange({ start: 'disk/', end: 'disk0' })) this.disks.set((value as DiskMeta).name, value as DiskMeta);
    this.seqNext = m.get('seqNext') ?? 1;
    this.branchNext = m.get('branchNext') ?? 1;
    this.applied = m.get('applied') ?? { segment: 0, offset: 0 };
    for (const { key, value } of this.index.segments.getRange({})) this.live.set(key, value);
    this.invalidateViewpoints();
    // Replay every record after the applied position, segment by segment; each segment's valid
    // records end at its first torn one, which is cut off.
    for (const id of this.log.segmentIds()) {
      if (id < this.applied.segment) continue;
      const from = id === this.applied.segment ? this.applied.offset : 0;
      let batch: { header: RecordHeader; segment: number; offset: number; end: number }[] = [];
      const flush = () => {
        if (batch.length) this.applyRecords(batch);
        batch = [];
      };
      for await (const rec of this.log.scan(id, from, { payloads: false })) {
        this.recovery.recordsReplayed++;
        batch.push(rec);
        if (batch.length >= 1024) flush();
      }
      flush();
      this.recovery.tornBytesDropped += this.log.skippedBytes.get(id) ?? 0;
      const end = this.log.validEnd.get(id)!;
      if (end < this.log.segmentSize(id)) {
        this.recovery.tornBytesDropped += this.log.segmentSize(id) - end;
        this.log.truncate(id, Math.max(end, Format.segmentHeaderBytes));
      }
    }
    this.log.startNewSegment();
    // Segments left with no live data (e.g. after a crash mid-compaction) are dropped now, at
    // full speed: no request is waiting yet.
    await this.dropDeadSegments({ paced: false });
    for (const b of this.branches.keys()) this.queueSweep(b);
  }

  // ---------------------------------------------------------------- metadata helpers

  private queueSweep(branch: number, after = 0): void {
    this.sweepQueue.set(branch, Math.min(after, this.sweepQueue.get(branch) ?? Infinity));
  }

  private invalidateViewpoints(): void {
    this.viewpointCache.clear();
  }

  /**
   * Points in a branch's history that something can still read: snapshots on it, forks of
   * child branches, and Infinity when a disk's head is on it. Ascending.
   */
  private viewpoints(branch: number): number[] {
    let v = this.viewpointCache.get(branch);
    if (v) return v;
    v = [];
    for (const d of this.disks.values()) {
      if (d.branch === branch) v.push(Infinity);
      for (const s of d.snapshots) if (s.branch === branch) v.push(s.seq);
    }
    for (const b of this.branches.values()) if (b.parent === branch) v.push(b.forkSeq);
    v.sort((a, b) => a - b);
    this.viewpointCache.set(branch, v);
    return v;
  }

  /** Whether some viewpoint v of `branch` has lo ≤ v < hi (a version at lo superseded at hi is still read). */
  private seenBetween(branch: number, lo: number, hi: number): boolean {
    for (const v of this.viewpoints(branch)) if (v >= lo && v < hi) return true;
    return false;
  }

  private chain(branch: number, maxSeq: number): ChainLink[] {
    const links: ChainLink[] = [];
    let b: number | null = branch;
    let s = maxSeq;
    while (b !== null) {
      links.push({ branch: b, maxSeq: s });
      const meta = this.branches.get(b);
      assert.ok(meta, `branch ${b} exists`);
      if (meta.parent === null) break;
      s = meta.forkSeq;
      b = meta.parent;
    }
    return links;
  }

  private persistDisk(d: DiskMeta): void {
    this.index.meta.putSync(`disk/${d.name}`, d);
  }

  private persistBranch(b: BranchMeta): void {
    this.index.meta.putSync(`branch/${b.id}`, b);
  }

  /**
   * Starts a branch (forked at `parent`, or fresh) with disk `d` heading it — at the parent's
   * size, if it has one — durably in one transaction, and takes both into the in-memory state.
   */
  private headNewBranch(d: DiskMeta, parent: { branch: number; seq: number; sizeBytes?: number } | null): void {
    const branch: BranchMeta = { id: this.branchNext, parent: parent?.branch ?? null, forkSeq: parent?.seq ?? 0 };
    const before = { branch: d.branch, sizeBytes: d.sizeBytes };
    d.branch = branch.id;
    if (parent?.sizeBytes !== undefined) d.sizeBytes = parent.sizeBytes;
    try {
      this.index.transaction(() => {
        this.persistBranch(branch);
        this.persistDisk(d);
        this.index.meta.putSync('branchNext', branch.id + 1);
      });
    } catch (err) {
      // Nothing was persisted: the disk stays as it was.
      Object.assign(d, before);
      throw err;
    }
    this.branchNext = branch.id + 1;
    this.branches.set(branch.id, branch);
    this.disks.set(d.name, d);
    this.invalidateViewpoints();
  }

  private checkOpen(): void {
    if (this.closed) throw new EngineError(EngineErrorCode.CLOSED, 'The store is closed');
  }

  private disk(name: string): DiskMeta {
    const d = this.disks.get(name);
    if (!d) throw new EngineError(EngineErrorCode.NOT_FOUND, `No disk named "${name}"`);
    return d;
  }

  private snap(d: DiskMeta, name: string): SnapMeta {
    const s = d.snapshots.find((x) => x.name === name);
    if (!s) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${d.name}" has no snapshot named "${name}"`);
    return s;
  }

  private static checkName(kind: string, name: string): void {
    if (typeof name !== 'string' || !NAME_RE.test(name)) {
      throw new EngineError(EngineErrorCode.INVALID, `Invalid ${kind} name "${name}": use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
    }
  }

  private static checkSize(sizeBytes: number): void {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % Format.sectorBytes !== 0 || sizeBytes > diskBytesMax) {
      throw new EngineError(EngineErrorCode.INVALID, `Invalid size ${sizeBytes}: a disk size must be a positive multiple of 512 bytes, at most 1 PiB`);
    }
  }

  private info(d: DiskMeta): DiskInfo {
    return {
      name: d.name,
      sizeBytes: d.sizeBytes,
      allocatedBytes: this.allocatedBytes(d),
      snapshots: d.snapshots.map((s) => s.name),
      origin: d.origin,
      createdMs: d.createdMs,
    };
  }

  private allocatedBytes(d: DiskMeta): number {
    const key = `${d.branch}:${d.sizeBytes}:${this.branchChanges.get(d.branch) ?? 0}`;
    const counted = this.allocatedCounted.get(d.name);
    if (counted?.key === key) return counted.bytes;
    let n = 0;
    const blocks = Math.ceil(d.sizeBytes / BS);
    this.visible(this.chain(d.branch, Infinity), 0, blocks, (_b, e) => {
      if (e.kind === EntryKind.DATA) n += BS;
    });
    this.allocatedCounted.set(d.name, { key, bytes: n });
    return n;
  }

  // ---------------------------------------------------------------- public: disks

  listDisks(): DiskInfo[] {
    return [...this.disks.values()].sort((a, b) => a.name.localeCompare(b.name)).map((d) => this.info(d));
  }

  getDisk(name: string): DiskInfo {
    return this.info(this.disk(name));
  }

  async createDisk(name: string, sizeBytes: number): Promise<DiskInfo> {
    this.checkOpen();
    await this.applyIdle(); // see applyIdle: the transaction below then never waits on the loop
    Store.checkName('disk', name);
    Store.checkSize(sizeBytes);
    if (this.disks.has(name)) throw new EngineError(EngineErrorCode.EXISTS, `A disk named "${name}" exists already`);
    const d: DiskMeta = { name, branch: 0, sizeBytes, createdMs: Date.now(), origin: null, snapshots: [] };
    this.headNewBranch(d, null);
    return this.info(d);
  }

  async deleteDisk(name: string): Promise<void> {
    this.checkOpen();
    await this.applyIdle();
    const d = this.disk(name);
    const users = this.openVolumes.get(name) ?? 0;
    if (users > 0) throw new EngineError(EngineErrorCode.IN_USE, `Disk "${name}" is in use by ${users} open connection(s)`);
    this.index.transaction(() => this.index.meta.removeSync(`disk/${name}`));
    this.disks.delete(name);
    this.allocatedCounted.delete(name);
    this.invalidateViewpoints();
    this.queueSweep(d.branch);
    for (const s of d.snapshots) this.queueSweep(s.branch);
  }

  async resizeDisk(name: string, sizeBytes: number): Promise<DiskInfo> {
    this.checkOpen();
    const d = this.disk(name);
    Store.checkSize(sizeBytes);
    if (sizeBytes < d.sizeBytes) {
      // Shrinking deallocates the cut-off part, so growing again later reads zeroes there.
      await this.zeroRange(d, sizeBytes, d.sizeBytes - sizeBytes, RecordType.TRIM, true);
    }
    await this.applyIdle();
    d.sizeBytes = sizeBytes;
    this.index.transaction(() => this.persistDisk(d));
    return this.info(d);
  }

  // ---------------------------------------------------------------- public: snapshots

  listSnapshots(disk: string): SnapshotInfo[] {
    const d = this.disk(disk);
    return d.snapshots.map((s) => ({ name: s.name, disk: d.name, sizeBytes: s.sizeBytes, seq: s.seq, createdMs: s.createdMs }));
  }

  async createSnapshot(disk: string, snap: string): Promise<SnapshotInfo> {
    return (await this.createSnapshots([disk], snap))[0];
  }

  /**
   * Snapshots several disks at the same instant (a consistency group): every snapshot gets the
   * same seq, taken synchronously after all checks, so no write can land between them. All are
   * made durable by one log sync and persisted in one index transaction, or none is.
   */
  async createSnapshots(disks: readonly string[], snap: string): Promise<SnapshotInfo[]> {
    this.checkOpen();
    if (disks.length === 0) throw new EngineError(EngineErrorCode.INVALID, 'A snapshot needs at least one disk');
    const ds = disks.map((name) => this.disk(name));
    Store.checkName('snapshot', snap);
    const seen = new Set<string>();
    for (const d of ds) {
      if (seen.has(d.name)) throw new EngineError(EngineErrorCode.INVALID, `Disk "${d.name}" is named twice`);
      seen.add(d.name);
      if (d.snapshots.some((s) => s.name === snap)) throw new EngineError(EngineErrorCode.EXISTS, `Disk "${d.name}" has a snapshot named "${snap}" already`);
    }
    // The snapshot is a point in the log: every write with a lower seq is in it. It is made
    // durable with those writes, like a flush.
    const seq = this.seqNext - 1;
    const createdMs = Date.now();
    const made = ds.map((d) => ({ d, s: { name: snap, branch: d.branch, seq, sizeBytes: d.sizeBytes, createdMs } satisfies SnapMeta }));
    for (const { d, s } of made) d.snapshots.push(s);
    this.invalidateViewpoints();
    try {
      await this.log.sync();
      await this.applyIdle();
      this.index.transaction(() => {
        for (const { d } of made) this.persistDisk(d);
      });
    } catch (err) {
      for (const { d, s } of made) d.snapshots = d.snapshots.filter((x) => x !== s);
      this.invalidateViewpoints();
      throw err;
    }
    return made.map(({ d, s }) => ({ name: s.name, disk: d.name, sizeBytes: s.sizeBytes, seq: s.seq, createdMs: s.createdMs }));
  }

  async deleteSnapshot(disk: string, snap: string): Promise<void> {
    this.checkOpen();
    await this.applyIdle();
    const d = this.disk(disk);
    const s = this.snap(d, snap);
    const users = this.openVolumes.get(`${disk}@${snap}`) ?? 0;
    if (users > 0) throw new EngineError(EngineErrorCode.IN_USE, `Snapshot ${disk}@${snap} is in use by ${users} open connection(s)`);
    d.snapshots = d.snapshots.filter((x) => x !== s);
    this.index.transaction(() => this.persistDisk(d));
    this.invalidateViewpoints();
    // Clones forked from it keep their own viewpoint, so what they read stays. A version only
    // this snapshot read lies between the viewpoints left around it: with one above, the block
    // was written again after the snapshot; with none, it is newer than the one below.
    const views = this.viewpoints(s.branch);
    const above = views.some((v) => v > s.seq);
    this.queueSweep(s.branch, above ? s.seq : (views.filter((v) => v < s.seq).at(-1) ?? 0));
  }

  async revertDisk(disk: string, snap: string): Promise<DiskInfo> {
    this.checkOpen();
    await this.applyIdle();
    const d = this.disk(disk);
    const s = this.snap(d, snap);
    const old = d.branch;
    this.headNewBranch(d, s);
    this.queueSweep(old);
    return this.info(d);
  }

  async cloneDisk(disk: string, snap: string, newName: string): Promise<DiskInfo> {
    this.checkOpen();
    await this.applyIdle();
    const d = this.disk(disk);
    const s = this.snap(d, snap);
    Store.checkName('disk', newName);
    if (this.disks.has(newName)) throw new EngineError(EngineErrorCode.EXISTS, `A disk named "${newName}" exists already`);
    const c: DiskMeta = { name: newName, branch: 0, sizeBytes: s.sizeBytes, createdMs: Date.now(), origin: `${disk}@${snap}`, snapshots: [] };
    this.headNewBranch(c, s);
    return this.info(c);
  }

  // ---------------------------------------------------------------- public: volumes

  openVolume(disk: string, snap?: string | null): Volume {
    this.checkOpen();
    const d = this.disk(disk);
    if (snap != null) this.snap(d, snap);
    this.countUser(disk, 1);
    if (snap != null) this.countUser(`${disk}@${snap}`, 1);
    return new StoreVolume(this, d.name, snap ?? null);
  }

  private countUser(key: string, n: number): void {
    const v = (this.openVolumes.get(key) ?? 0) + n;
    if (v <= 0) this.openVolumes.delete(key);
    else this.openVolumes.set(key, v);
  }

  /** @internal */
  releaseVolume(disk: string, snap: string | null): void {
    this.countUser(disk, -1);
    if (snap !== null) this.countUser(`${disk}@${snap}`, -1);
  }

  /** Makes everything acknowledged so far durable. */
  async flush(): Promise<void> {
    this.checkOpen();
    await this.log.sync();
  }

  /** Space figures; durable records still waiting for the index are absorbed first, so they count. */
  async stats(): Promise<StoreStats> {
    if (!this.closed) {
      try {
        await this.applyQueued();
      } catch {
        // Queued again with a retry timer; the figures then leave those records out.
      }
    }
    let liveBytes = 0;
    for (const v of this.live.values()) liveBytes += v;
    return { logBytes: this.log.totalBytes(), liveBytes, segments: this.log.segmentIds().length };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const t of this.timers) clearInterval(t);
    if (this.maintenance) await this.maintenance.catch(() => {});
    await this.log.sync().catch(() => {});
    await this.applyIdle();
    try {
      this.applyNow();
    } catch {
      // The records stay in the log; the next open replays them into the index.
    }
    await this.writer?.close();
    this.log.close();
    await this.index.close();
  }

  // ---------------------------------------------------------------- I/O (used by StoreVolume)

  /** @internal Resolves what a volume reads: its disk's head, or a snapshot. */
  target(disk: string, snap: string | null): { d: DiskMeta; links: ChainLink[]; sizeBytes: number; readOnly: boolean } {
    this.checkOpen();
    const d = this.disk(disk);
    if (snap === null) return { d, links: this.chain(d.branch, Infinity), sizeBytes: d.sizeBytes, readOnly: false };
    const s = this.snap(d, snap);
    return { d, links: this.chain(s.branch, s.seq), sizeBytes: s.sizeBytes, readOnly: true };
  }

  /**
   * Calls visit(block, entry, branch) for each block in [blockStart, blockEnd) that has a
   * visible version along the chain, in block order. Blocks with none are holes.
   */
  private visible(links: ChainLink[], blockStart: number, blockEnd: number, visit: (block: number, e: Entry, branch: number) => void): void {
    const hasRanges = links.some((l) => this.overlayRanges.has(l.branch));
    if (links.length === 1 && !hasRanges) {
      this.visibleOn(links[0], blockStart, blockEnd, visit);
      return;
    }
    const found = new Map<number, { e: Entry; branch: number; level: number }>();
    links.forEach((link, level) => {
      this.visibleOn(link, blockStart, blockEnd, (block, e, branch) => {
        if (!found.has(block)) found.set(block, { e, branch, level });
      });
    });
    // Zero/trim ranges not yet in the index shadow what their branch and its ancestors hold.
    // Blocks holding nothing anywhere stay holes, as they will once the range is indexed.
    links.forEach((link, level) => {
      for (const r of this.overlayRanges.get(link.branch) ?? []) {
        if (r.seq > link.maxSeq) continue;
        for (const [block, f] of found) {
          if (block < r.blockStart || block >= r.blockEnd) continue;
          if (f.level > level || (f.level === level && f.e.seq < r.seq)) {
            found.set(block, { e: { seq: r.seq, kind: r.kind, mask: FULL_MASK, segment: 0, offset: 0 }, branch: link.branch, level });
          }
        }
      }
    });
    for (const block of [...found.keys()].sort((x, y) => x - y)) {
      const f = found.get(block)!;
      visit(block, f.e, f.branch);
    }
  }

  /** visible() for one link: index versions merged with not-yet-committed block versions. */
  private visibleOn(link: ChainLink, blockStart: number, blockEnd: number, visit: (block: number, e: Entry, branch: number) => void): void {
    const { branch, maxSeq } = link;
    const ob = this.overlay.get(branch);
    if (!ob?.size) {
      this.index.scanLatest(branch, blockStart, blockEnd, maxSeq, (f) => visit(f.block, f, branch));
      return;
    }
    // The overlay's newest visible version per block, in block order, merged with the index's
    // (also in block order) as they stream by: no map of every block of a wide range.
    const pending: { block: number; e: Entry }[] = [];
    // The newest record with seq <= maxSeq of each block of the group in range.
    const consider = (g: number, list: Append[]) => {
      const lo = Math.max(blockStart, g * overlayGroupBlocks);
      const hi = Math.min(blockEnd, (g + 1) * overlayGroupBlocks);
      const found: (Append | undefined)[] = new Array(hi - lo);
      let missing = hi - lo;
      for (let i = list.length - 1; i >= 0 && missing > 0; i--) {
        const h = list[i].header;
        if (h.seq > maxSeq) continue;
        for (let b = Math.max(lo, h.blockStart), end = Math.min(hi, h.blockStart + h.blockCount); b < end; b++) {
          if (found[b - lo] === undefined) {
            found[b - lo] = list[i];
            missing--;
          }
        }
      }
      for (let b = lo; b < hi; b++) if (found[b - lo] !== undefined) pending.push({ block: b, e: overlayEntry(found[b - lo]!, b) });
    };
    const gFirst = Math.floor(blockStart / overlayGroupBlocks);
    const gEnd = Math.ceil(blockEnd / overlayGroupBlocks);
    if (gEnd - gFirst < ob.size) {
      for (let g = gFirst; g < gEnd; g++) {
        const list = ob.get(g);
        if (list) consider(g, list);
      }
    } else {
      for (const [g, list] of ob) if (g >= gFirst && g < gEnd) consider(g, list);
      pending.sort((x, y) => x.block - y.block);
    }
    let next = 0;
    this.index.scanLatest(branch, blockStart, blockEnd, maxSeq, (f) => {
      while (next < pending.length && pending[next].block < f.block) {
        visit(pending[next].block, pending[next].e, branch);
        next++;
      }
      if (next < pending.length && pending[next].block === f.block) {
        const p = pending[next++];
        visit(f.block, p.e.seq > f.seq ? p.e : f, branch);
      } else visit(f.block, f, branch);
    });
    for (; next < pending.length; next++) visit(pending[next].block, pending[next].e, branch);
  }

  /** @internal Reads whole blocks [blockStart, blockEnd) of a chain into `out` (length = blocks × 4 KiB). */
  async readBlocks(links: ChainLink[], blockStart: number, blockEnd: number, out: Buffer): Promise<void> {
    const runs: { segment: number; offset: number; at: number; length: number }[] = [];
    let filled = 0; // bytes of `out` accounted for (holes zeroed up to here)
    const zeroTo = (at: number) => {
      if (at > filled) out.fill(0, filled, at);
    };
    const onBlock = (block: number, kind: number, segment: number, offset: number): void => {
      const at = (block - blockStart) * BS;
      zeroTo(at);
      filled = at + BS;
      if (kind !== EntryKind.DATA) {
        out.fill(0, at, at + BS);
        return;
      }
      const last = runs[runs.length - 1];
      if (last && last.segment === segment && last.offset + last.length === offset && last.at + last.length === at) last.length += BS;
      else runs.push({ segment, offset, at, length: BS });
    };
    // A disk's own blocks, all in the index: straight from the head cache where it answers (the
    // head; a snapshot with nothing newer in range), no object per block (a 1 GiB sequential read
    // made 262,144 of them, and the collections they cost).
    const [link] = links;
    const cached = links.length === 1 && !this.overlay.get(link.branch)?.size && !this.overlayRanges.has(link.branch);
    if (!cached || !this.index.forEachCached(link.branch, blockStart, blockEnd, link.maxSeq, onBlock)) {
      this.visible(links, blockStart, blockEnd, (block, e) => onBlock(block, e.kind, e.segment, e.offset));
    }
    zeroTo(out.length);
    // The reads are issued in this same turn as the lookup, so the compactor cannot remove a
    // segment between them; the reader count keeps it until they finish.
    for (const r of runs) this.readers.set(r.segment, (this.readers.get(r.segment) ?? 0) + 1);
    try {
      await Promise.all(runs.map((r) => this.log.readInto(r.segment, r.offset, out.subarray(r.at, r.at + r.length))));
    } finally {
      for (const r of runs) {
        const n = this.readers.get(r.segment)! - 1;
        if (n) this.readers.set(r.segment, n);
        else this.readers.delete(r.segment);
      }
    }
  }

  /** @internal Serialises read-modify-write of one block. */
  async withBlockLocks<T>(branch: number, blocks: number[], fn: () => Promise<T>): Promise<T> {
    const keys = blocks.map((b) => `${branch}:${b}`);
    const prior = keys.map((k) => this.locks.get(k)).filter((p): p is Promise<void> => !!p);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    for (const k of keys) this.locks.set(k, mine);
    try {
      if (prior.length) await Promise.all(prior);
      return await fn();
    } finally {
      for (const k of keys) if (this.locks.get(k) === mine) this.locks.delete(k);
      release();
    }
  }

  /** @internal Appends whole blocks of data to a disk's head; resolves when written (and durable with fua). */
  async appendData(d: DiskMeta, blockStart: number, payload: Buffer, maskFirst: number, maskLast: number, fua: boolean): Promise<void> {
    this.checkOpen();
    const blockCount = payload.length / BS;
    assert.ok(Number.isInteger(blockCount) && blockCount > 0);
    const per = Format.recordPayloadBytesMax / BS;
    const record = (i: number, n: number): Promise<void> => {
      const part = n === blockCount ? payload : payload.subarray(i * BS, (i + n) * BS);
      const header: RecordHeader = {
        type: RecordType.WRITE,
        seq: this.seqNext++,
        branch: d.branch,
        blockStart: blockStart + i,
        blockCount: n,
        maskFirst: i === 0 ? maskFirst : FULL_MASK,
        maskLast: i + n === blockCount ? maskLast : FULL_MASK,
        payloadBytes: part.length,
        payloadCrc: crc32(part),
      };
      return this.appendRecord(header, part);
    };
    // One record (every request the NBD server accepts) needs no array of promises to gather.
    if (blockCount <= per) await record(0, blockCount);
    else {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < blockCount; i += per) writes.push(record(i, Math.min(per, blockCount - i)));
      await Promise.all(writes);
    }
    if (fua) await this.log.sync();
  }

  /** @internal Appends a ZERO or TRIM record over whole blocks. */
  async appendZero(d: DiskMeta, blockStart: number, blockCount: number, type: typeof RecordType.ZERO | typeof RecordType.TRIM, fua: boolean): Promise<void> {
    this.checkOpen();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < blockCount; i += zeroBlocksPerRecordMax) {
      const n = Math.min(zeroBlocksPerRecordMax, blockCount - i);
      const header: RecordHeader = {
        type, seq: this.seqNext++, branch: d.branch, blockStart: blockStart + i, blockCount: n, maskFirst: FULL_MASK, maskLast: FULL_MASK, payloadBytes: 0, payloadCrc: 0,
      };
      writes.push(this.appendRecord(header, null));
    }
    await Promise.all(writes);
    if (fua) await this.log.sync();
  }

  /** Async so that an append refused at once (a segment that cannot be started) is a rejection too. */
  private async appendRecord(header: RecordHeader, payload: Buffer | null): Promise<void> {
    const { append, written } = this.log.append(header, payload);
    await written;
    this.addToOverlay(append);
    // Once readable: a count made before this is stale from now on.
    this.branchChanges.set(header.branch, (this.branchChanges.get(header.branch) ?? 0) + 1);
  }

  private addToOverlay(a: Append): void {
    const h = a.header;
    if (h.type === RecordType.WRITE) {
      let ob = this.overlay.get(h.branch);
      if (!ob) this.overlay.set(h.branch, (ob = new Map()));
      const gEnd = Math.ceil((h.blockStart + h.blockCount) / overlayGroupBlocks);
      for (let g = Math.floor(h.blockStart / overlayGroupBlocks); g < gEnd; g++) {
        const list = ob.get(g);
        if (list === undefined) ob.set(g, [a]);
        else {
          list.push(a);
          // Writes usually complete in seq order; only a late one needs sorting in.
          if (list[list.length - 2].header.seq > h.seq) list.sort((x, y) => x.header.seq - y.header.seq);
        }
      }
    } else if (h.type === RecordType.ZERO || h.type === RecordType.TRIM) {
      let rs = this.overlayRanges.get(h.branch);
      if (!rs) this.overlayRanges.set(h.branch, (rs = []));
      rs.push({ seq: h.seq, blockStart: h.blockStart, blockEnd: h.blockStart + h.blockCount, kind: h.type === RecordType.ZERO ? EntryKind.ZERO : EntryKind.HOLE });
    }
  }

  private removeFromOverlay(a: Append): void {
    const h = a.header;
    if (h.type === RecordType.WRITE) {
      const ob = this.overlay.get(h.branch);
      if (!ob) return;
      const gEnd = Math.ceil((h.blockStart + h.blockCount) / overlayGroupBlocks);
      for (let g = Math.floor(h.blockStart / overlayGroupBlocks); g < gEnd; g++) {
        const list = ob.get(g);
        if (list === undefined) continue;
        // Records leave in about the order they came: the one sought is usually first.
        const j = list[0].header.seq === h.seq ? 0 : list.findIndex((x) => x.header.seq === h.seq);
        if (j >= 0) list.splice(j, 1);
        if (!list.length) ob.delete(g);
      }
      if (!ob.size) this.overlay.delete(h.branch);
    } else if (h.type === RecordType.ZERO || h.type === RecordType.TRIM) {
      const rs = this.overlayRanges.get(h.branch);
      if (!rs) return;
      const j = rs.findIndex((r) => r.seq === h.seq);
      if (j >= 0) rs.splice(j, 1);
      if (!rs.length) this.overlayRanges.delete(h.branch);
    }
  }

  /** @internal Zeroes or deallocates a byte range of a disk's head. */
  async zeroRange(d: DiskMeta, offset: number, length: number, type: typeof RecordType.ZERO | typeof RecordType.TRIM, fua: boolean): Promise<void> {
    const end = offset + length;
    const firstFull = Math.ceil(offset / BS);
    const lastFull = Math.floor(end / BS);
    const work: Promise<void>[] = [];
    // Partial blocks at the edges are rewritten with zeroes in place (read-modify-write).
    const edge = async (block: number) => {
      const from = Math.max(offset, block * BS);
      const to = Math.min(end, (block + 1) * BS);
      await this.withBlockLocks(d.branch, [block], async () => {
        const buf = Buffer.allocUnsafe(BS);
        await this.readBlocks(this.chain(d.branch, Infinity), block, block + 1, buf);
        const rel = from - block * BS;
        if (buf.subarray(rel, rel + (to - from)).every((x) => x === 0)) return;
        buf.fill(0, rel, rel + (to - from));
        const m = sectorMask(rel, rel + (to - from));
        await this.appendData(d, block, buf, m, m, false);
      });
    };
    if (firstFull > lastFull) {
      work.push(edge(Math.floor(offset / BS)));
    } else {
      if (offset % BS) work.push(edge(Math.floor(offset / BS)));
      if (end % BS) work.push(edge(Math.floor(end / BS)));
      if (lastFull > firstFull) work.push(this.appendZero(d, firstFull, lastFull - firstFull, type, false));
    }
    await Promise.all(work);
    if (fua) await this.log.sync();
  }

  // ---------------------------------------------------------------- applying the log to the index

  private backgroundSync(): void {
    if (this.closed || !this.log.hasUnsynced) return;
    this.log.sync().catch(() => {
      // A failing sync surfaces to the next flush/FUA caller; nothing to do here.
    });
  }

  private enqueueApply(appends: Append[]): void {
    for (const a of appends) {
      this.applyQueue.push(a);
      this.applyQueueBlocks += a.header.type === RecordType.WRITE || a.header.type === RecordType.RELOCATE ? a.header.blockCount : 1;
    }
    this.scheduleApply();
  }

  /** Has the queued records applied soon: at once when a batch is full, else after applyDelayMs. */
  private scheduleApply(): void {
    if (this.applyQueueBlocks >= APPLY_BATCH_BLOCKS) {
      if (this.applyImmediate) return;
      this.applyImmediate = true;
      setImmediate(() => {
        this.applyImmediate = false;
        this.applyInBackground();
      });
    } else if (this.applyTimer === null && !this.closed) {
      this.applyTimer = setTimeout(this.applyInBackground, this.applyDelayMs);
      this.applyTimer.unref();
    }
  }

  /**
   * Moves the queued durable records into the index. Should the transaction fail (a full file
   * system), nothing was applied: the records stay queued, durable in the log and visible through
   * the overlay, and are tried again later; the error is rethrown.
   */
  private applyNow(): void {
    assert.ok(this.applying === null, 'no batch is in the index writer');
    if (this.applyTimer !== null) {
      clearTimeout(this.applyTimer);
      this.applyTimer = null;
    }
    if (!this.applyQueue.length) return;
    const batch = this.applyQueue;
    const blocks = this.applyQueueBlocks;
    this.applyQueue = [];
    this.applyQueueBlocks = 0;
    try {
      this.applyRecords(batch.map((a) => ({ header: a.header, segment: a.segment, offset: a.offset, end: a.end })));
    } catch (err) {
      this.applyQueue = batch.concat(this.applyQueue);
      this.applyQueueBlocks += blocks;
      if (this.applyTimer === null && !this.closed) {
        this.applyTimer = setTimeout(this.applyInBackground, APPLY_RETRY_MS);
        this.applyTimer.unref();
      }
      throw err;
    }
    for (const a of batch) this.removeFromOverlay(a);
  }

  /**
   * Applies every record queued now: through the index writer when it takes them (a large batch
   * applied here would hold the event loop for hundreds of milliseconds), else here.
   */
  private async applyQueued(): Promise<void> {
    await this.applyIdle();
    if (!this.applyOffThread()) this.applyNow();
    await this.applyIdle();
  }

  /**
   * Waits until no batch is in the index writer. A transaction on this thread goes right after
   * it, in the same turn (no batch starts before a timer or immediate runs): LMDB runs one write
   * transaction at a time, and one begun while the writer commits blocked the event loop, every
   * connection with it, until that commit ended (up to a few hundred ms under random writes).
   */
  private async applyIdle(): Promise<void> {
    while (this.applying) await this.applying;
  }

  /**
   * Applies the queued records from a timer: a batch of writes and relocations on the index
   * writer's thread, one holding zeroes or trims here. A failure is retried (see applyNow), never
   * thrown into the loop.
   */
  private readonly applyInBackground = (): void => {
    // A batch in the writer starts the next when it completes; close() applies what is left.
    if (this.applying || this.closed) return;
    try {
      if (!this.applyOffThread()) this.applyNow();
    } catch {
      // Queued again with a retry timer; the next flush, compaction or close tries too.
    }
  };

  /**
   * Plans the queued records into index changes and has the index writer commit them; false if
   * this batch is not for it (no writer, or records other than writes and relocations). Until the writer has
   * answered, the records stay in the overlay, so reads see them; then the in-memory state (head
   * cache, counters, applied position) takes the batch at once. Should the transaction fail, the
   * records are queued again, as with applyNow.
   */
  private applyOffThread(): boolean {
    const writer = this.writer;
    if (!writer?.usable || !this.applyQueue.length) return false;
    if (this.applyQueue.some((a) => a.header.type !== RecordType.WRITE && a.header.type !== RecordType.RELOCATE)) return false;
    const plan = new ApplyPlan();
    const delta = new Map<number, number>();
    const add = (seg: number, n: number) => delta.set(seg, (delta.get(seg) ?? 0) + n);
    let seqMax = this.seqNext - 1;
    for (const a of this.applyQueue) {
      const h = a.header;
      if (h.seq > seqMax) seqMax = h.seq;
      if (!this.branches.has(h.branch)) continue; // the branch died since
      if (h.type === RecordType.RELOCATE) this.planRelocate(plan, h, a.segment, a.offset, add);
      else if (!this.planWrite(plan, h, a.segment, a.offset, add)) return false;
    }
    if (this.applyTimer !== null) {
      clearTimeout(this.applyTimer);
      this.applyTimer = null;
    }
    const batch = this.applyQueue;
    const blocks = this.applyQueueBlocks;
    this.applyQueue = [];
    this.applyQueueBlocks = 0;
    const last = batch[batch.length - 1];
    const end = { segment: last.segment, offset: last.end };
    const applied = comparePositions(end, this.applied) > 0 ? end : this.applied;
    const counters: [number, number][] = [];
    for (const [seg, n] of delta) {
      const v = (this.live.get(seg) ?? 0) + n;
      assert.ok(v >= 0, `live bytes of segment ${seg} stay non-negative`);
      counters.push([seg, v]);
    }
    const ops = plan.ops();
    this.applying = writer.write(ops, applied, seqMax + 1, counters).then(
      () => {
        this.offThreadApplies++;
        this.index.cacheCommitted(ops);
        this.applied = applied;
        for (const [seg, v] of counters) this.live.set(seg, v);
        if (seqMax + 1 > this.seqNext) this.seqNext = seqMax + 1;
        for (const a of batch) this.removeFromOverlay(a);
      },
      () => {
        // Nothing was committed: the records go back to the front of the queue, and are tried
        // again later (through the writer, or here should it have failed).
        this.applyQueue = batch.concat(this.applyQueue);
        this.applyQueueBlocks += blocks;
        if (this.applyTimer === null && !this.closed) {
          this.applyTimer = setTimeout(this.applyInBackground, APPLY_RETRY_MS);
          this.applyTimer.unref();
        }
      },
    ).finally(() => {
      this.applying = null;
      // What queued meanwhile goes next (unless a failure set its retry timer).
      if (!this.closed && this.applyTimer === null && this.applyQueue.length) this.scheduleApply();
    });
    return true;
  }

  /**
   * Adds a RELOCATE record to the plan: each block whose version the record copied is still in
   * the index, and not dropped earlier in the batch, points at the copy. A version that is its
   * block's newest becomes the newest planned one, so that a later write in the batch that drops
   * it removes it from the index (see planWrite).
   */
  private planRelocate(plan: ApplyPlan, h: RecordHeader, segment: number, offset: number, add: (seg: number, n: number) => void): void {
    const planned = plan.branch(h.branch);
    const newestSeq = new Map<number, number>();
    this.index.scanLatest(h.branch, h.blockStart, h.blockStart + h.blockCount, Infinity, (f) => void newestSeq.set(f.block, f.seq));
    const dataOffset = offset + Format.recordHeaderBytes;
    for (let i = 0; i < h.blockCount; i++) {
      const block = h.blockStart + i;
      if (plan.removed(h.branch, block, h.seq)) continue; // died earlier in this batch
      const e = this.index.get(h.branch, block, h.seq);
      if (!e || e.kind !== EntryKind.DATA) continue; // died since the compactor copied it
      add(e.segment, -BS);
      const moved: Entry = { ...e, segment, offset: dataOffset + i * BS };
      add(segment, BS);
      const put: PlannedPut = { e: moved, cancelled: false, indexed: true };
      plan.puts.push({ branch: h.branch, block, put });
      const newer = planned.get(block);
      if ((newer === undefined || newer.e.seq <= h.seq) && newestSeq.get(block) === h.seq) planned.set(block, put);
    }
  }

  /**
   * Adds a WRITE record's versions to the plan: each block's new version, and the removal of the
   * version it supersedes unless a viewpoint still reads that one. A version planned earlier in
   * the batch and superseded within it is never written at all. False if the index holds a
   * version newer than the record (records come in seq order, so it cannot; should the index on
   * disk say otherwise, the batch goes through applyNow, which asks it exactly).
   */
  private planWrite(plan: ApplyPlan, h: RecordHeader, segment: number, offset: number, add: (seg: number, n: number) => void): boolean {
    const views = this.viewpoints(h.branch);
    // A version nothing can ever read (its branch lost its head since) is not indexed at all.
    if (!views.length || views[views.length - 1] < h.seq) return true;
    const end = h.blockStart + h.blockCount;
    const planned = plan.branch(h.branch);
    // The version each block had before this record: planned in this batch, or in the index.
    const prevs: Map<number, Entry> | null = this.newestBefore(h);
    if (prevs === null) return false;
    for (let b = h.blockStart; b < end; b++) {
      const p = planned.get(b);
      if (p !== undefined) prevs.set(b, p.e);
    }
    const dataOffset = offset + Format.recordHeaderBytes;
    for (let i = 0; i < h.blockCount; i++) {
      const block = h.blockStart + i;
      const e: Entry = { seq: h.seq, kind: EntryKind.DATA, mask: i === 0 ? h.maskFirst : i === h.blockCount - 1 ? h.maskLast : FULL_MASK, segment, offset: dataOffset + i * BS };
      const prev = prevs.get(block);
      const drop = prev !== undefined && !this.seenBetween(h.branch, prev.seq, h.seq);
      if (drop) e.mask |= prev.mask;
      const put: PlannedPut = { e, cancelled: false, indexed: false };
      plan.puts.push({ branch: h.branch, block, put });
      add(segment, BS);
      const before = planned.get(block);
      planned.set(block, put);
      if (!drop) continue;
      if (before !== undefined && before.e === prev) {
        before.cancelled = true;
        // A relocated version is in the index already: it goes, where a new one is never put.
        if (before.indexed) plan.remove(h.branch, block, prev.seq);
      } else plan.remove(h.branch, block, prev.seq);
      if (prev.kind === EntryKind.DATA) add(prev.segment, -BS);
    }
    return true;
  }

  /**
   * Applies records, in log order, to the index in one transaction that also records how far the
   * log has been applied — so each record is applied exactly once, live or on replay.
   */
  private applyRecords(recs: { header: RecordHeader; segment: number; offset: number; end: number }[]): void {
    const delta = new Map<number, number>();
    const add = (seg: number, n: number) => delta.set(seg, (delta.get(seg) ?? 0) + n);
    let seqMax = this.seqNext - 1;
    // In-memory state changes only once the transaction has committed.
    let applied = this.applied;
    this.index.transaction(() => {
      for (const r of recs) {
        const h = r.header;
        if (h.seq > seqMax) seqMax = h.seq;
        if (!this.branches.has(h.branch)) continue; // the branch died since
        if (h.type === RecordType.RELOCATE) this.applyRelocate(h, r.segment, r.offset, add);
        else this.applyVersions(h, r.segment, r.offset, add);
      }
      const last = recs[recs.length - 1];
      const pos = { segment: last.segment, offset: last.end };
      if (comparePositions(pos, applied) > 0) applied = pos;
      this.index.meta.putSync('applied', applied);
      this.index.meta.putSync('seqNext', seqMax + 1);
      for (const [seg, n] of delta) {
        const v = (this.live.get(seg) ?? 0) + n;
        assert.ok(v >= 0, `live bytes of segment ${seg} stay non-negative`);
        this.index.segments.putSync(seg, v);
      }
    });
    this.applied = applied;
    for (const [seg, n] of delta) this.live.set(seg, (this.live.get(seg) ?? 0) + n);
    if (seqMax + 1 > this.seqNext) this.seqNext = seqMax + 1;
  }

  /**
   * The newest indexed version of each block a record covers: records are applied in seq order,
   * so it is the one before the record, and the head cache has it without an LMDB cursor. Null
   * if the index holds a version as new as the record (it cannot, but the index is on disk).
   */
  private newestBefore(h: RecordHeader): Map<number, Found> | null {
    const prevs = new Map<number, Found>();
    let newer = false;
    this.index.scanLatest(h.branch, h.blockStart, h.blockStart + h.blockCount, Infinity, (f) => {
      if (f.seq >= h.seq) {
        newer = true;
        return false;
      }
      prevs.set(f.block, f);
    });
    return newer ? null : prevs;
  }

  private applyVersions(h: RecordHeader, segment: number, offset: number, add: (seg: number, n: number) => void): void {
    const views = this.viewpoints(h.branch);
    // A version nothing can ever read (its branch lost its head since) is not indexed at all.
    if (!views.length || views[views.length - 1] < h.seq) return;
    const kind: EntryKindValue = h.type === RecordType.WRITE ? EntryKind.DATA : h.type === RecordType.ZERO ? EntryKind.ZERO : EntryKind.HOLE;
    const end = h.blockStart + h.blockCount;
    // The version each block had before this record: superseded now, and dropped unless a
    // viewpoint still reads it. Should the index hold a newer one (see newestBefore), the exact
    // query finds it.
    let prevs = this.newestBefore(h);
    if (prevs === null) {
      const exact = (prevs = new Map());
      this.index.scanLatest(h.branch, h.blockStart, end, h.seq - 1, (f) => void exact.set(f.block, f));
    }
    const place = (block: number, e: Entry) => {
      const prev = prevs.get(block);
      const drop = prev !== undefined && !this.seenBetween(h.branch, prev.seq, h.seq);
      if (drop) e.mask |= prev.mask;
      // Put before remove: the head cache then moves on to the new version instead of dropping
      // the chunk because its newest version went away.
      this.index.put(h.branch, block, e);
      if (e.kind === EntryKind.DATA) add(e.segment, BS);
      if (drop) {
        this.index.remove(h.branch, block, prev.seq);
        if (prev.kind === EntryKind.DATA) add(prev.segment, -BS);
      }
    };
    if (kind === EntryKind.DATA) {
      const dataOffset = offset + Format.recordHeaderBytes;
      for (let i = 0; i < h.blockCount; i++) {
        const mask = i === 0 ? h.maskFirst : i === h.blockCount - 1 ? h.maskLast : FULL_MASK;
        place(h.blockStart + i, { seq: h.seq, kind, mask, segment, offset: dataOffset + i * BS });
      }
      return;
    }
    // Zeroes and trims only need a version where something is there to shadow.
    const blocks: number[] = [];
    this.visible(this.chain(h.branch, h.seq - 1), h.blockStart, end, (block, e) => {
      if (e.kind !== kind) blocks.push(block);
    });
    for (const block of blocks) place(block, { seq: h.seq, kind, mask: FULL_MASK, segment: 0, offset: 0 });
  }

  private applyRelocate(h: RecordHeader, segment: number, offset: number, add: (seg: number, n: number) => void): void {
    const dataOffset = offset + Format.recordHeaderBytes;
    for (let i = 0; i < h.blockCount; i++) {
      const block = h.blockStart + i;
      const e = this.index.get(h.branch, block, h.seq);
      if (!e || e.kind !== EntryKind.DATA) continue; // died since the compactor copied it
      add(e.segment, -BS);
      e.segment = segment;
      e.offset = dataOffset + i * BS;
      this.index.put(h.branch, block, e);
      add(segment, BS);
    }
  }

  // ---------------------------------------------------------------- sweeping and compaction

  private backgroundMaintenance(): void {
    if (this.closed || this.maintenance) return;
    this.maintenance = this.maintain({ compactBelow: 0.25, background: true }).catch(() => {}).finally(() => (this.maintenance = null));
  }

  /**
   * Runs a compaction pass now: sweeps versions no snapshot, clone or disk can read any more,
   * drops segments left without live data, and rewrites the live data of mostly-dead segments.
   */
  async compact(): Promise<CompactStats> {
    this.checkOpen();
    while (this.maintenance) await this.maintenance.catch(() => {});
    const p = this.maintain({ compactBelow: 0.5, background: false });
    this.maintenance = p.catch(() => {}).finally(() => (this.maintenance = null));
    return p;
  }

  /** @internal Counts one request on a volume of this store (see quiet). */
  noteRequest(): void {
    this.rollLoad().count++;
  }

  private rollLoad(): { since: number; count: number; before: number } {
    const load = this.load;
    const now = performance.now();
    if (now - load.since >= 1000) {
      load.before = now - load.since >= 2000 ? 0 : load.count;
      load.count = 0;
      load.since = now;
    }
    return load;
  }

  /** Fewer requests than quietRequestsPerSecond came in over the last one to two seconds. */
  private quiet(): boolean {
    const load = this.rollLoad();
    return load.count + load.before < this.quietRequestsPerSecond;
  }

  /**
   * The share of the event loop a background pass takes, asked after each slice: all of it while
   * the store is quiet or its file system short of space; when busy, none while dead bytes are
   * under half of the log, then more as they pile up, so that reclaim keeps pace with sustained
   * writes (at random 4 KiB writes, one 256 MiB segment takes about 0.6 s of the loop to scan).
   */
  private maintenanceDuty(): number {
    if (this.spaceLow || this.quiet()) return 1;
    let live = 0;
    for (const v of this.live.values()) live += v;
    const dead = 1 - live / Math.max(1, this.log.totalBytes());
    return dead < 0.5 ? 0 : dead < 0.75 ? 0.2 : dead < 0.875 ? 0.5 : 1;
  }

  /** Less than a tenth of the file system, or four segments, is free (false if it cannot tell). */
  private fileSystemShort(): boolean {
    try {
      const fsStats = fs.statfsSync(this.dir);
      const free = fsStats.bavail * fsStats.bsize;
      return free < Math.max((fsStats.blocks * fsStats.bsize) / 10, 4 * this.log.segmentBytesMax);
    } catch {
      return false;
    }
  }

  private async maintain(opts: { compactBelow: number; background: boolean }): Promise<CompactStats> {
    const stats: CompactStats = { segmentsRemoved: 0, bytesReclaimed: 0, bytesRewritten: 0 };
    await this.log.sync();
    await this.applyQueued();
    while (this.sweepQueue.size) {
      const [[branch, after]] = this.sweepQueue;
      this.sweepQueue.delete(branch);
      await this.sweep(branch, after);
    }
    if (opts.background) this.spaceLow = this.fileSystemShort();
    const pacer = new Pacer(opts.background ? () => this.maintenanceDuty() : 1);
    for (const id of this.log.segmentIds()) {
      if (this.closed || (opts.background && this.maintenanceDuty() === 0)) break;
      if (id === this.log.activeSegment) continue;
      const size = this.log.segmentSize(id);
      const live = this.live.get(id) ?? 0;
      if (live === 0 || live >= size * opts.compactBelow) continue;
      stats.bytesRewritten += await this.relocate(id, pacer);
    }
    await this.log.sync();
    await this.applyQueued();
    const dropped = await this.dropDeadSegments({ paced: true });
    stats.segmentsRemoved = dropped.count;
    stats.bytesReclaimed = dropped.bytes;
    return stats;
  }

  /**
   * Removes the versions of a branch that no viewpoint reads any more; a branch left with no
   * viewpoints at all goes entirely, and its fork stops holding its parent. Works in chunks.
   */
  private async sweep(branch: number, after = 0): Promise<void> {
    if (!this.branches.has(branch)) return;
    const runs: [number, number][] = [];
    if (after === 0) runs.push([0, blockIndexEnd]);
    else this.index.blocksChangedAfter(branch, 0, blockIndexEnd, after, (a, b) => void runs.push([a, b]));
    let run = 0;
    let from = runs[0]?.[0] ?? 0;
    while (run < runs.length) {
      const delta = new Map<number, number>();
      // The index writer's batch changes versions and counters this pass reads.
      await this.applyIdle();
      // Read anew each pass: a snapshot taken while this sweep yielded reads what it reads.
      const views = this.viewpoints(branch);
      this.index.transaction(() => {
        let count = 0;
        let block = -1;
        let newer: Found | null = null;
        const doomed = new Set<Found>();
        const merges: Found[] = [];
        scan: for (; run < runs.length; run++, from = runs[run]?.[0] ?? 0) {
          for (const v of this.index.versions(branch, from)) {
            if (v.block >= runs[run][1]) break;
            if (v.block !== block) {
              if (count >= 20_000) {
                from = v.block;
                break scan;
              }
              block = v.block;
              newer = null;
            }
            count++;
            const hi = newer ? newer.seq : Infinity;
            const read = views.some((x) => x >= v.seq && (x < hi || hi === Infinity));
            if (!read) {
              doomed.add(v);
              if (newer) {
                newer.mask |= v.mask;
                merges.push(newer);
              }
            } else newer = v;
          }
        }
        for (const v of doomed) {
          this.index.remove(branch, v.block, v.seq);
          if (v.kind === EntryKind.DATA) delta.set(v.segment, (delta.get(v.segment) ?? 0) - BS);
        }
        for (const m of merges) if (!doomed.has(m)) this.index.put(branch, m.block, m);
        for (const [seg, n] of delta) this.index.segments.putSync(seg, (this.live.get(seg) ?? 0) + n);
      });
      for (const [seg, n] of delta) this.live.set(seg, (this.live.get(seg) ?? 0) + n);
      if (run >= runs.length) break;
      await new Promise((r) => setImmediate(r));
    }
    if (!this.viewpoints(branch).length) {
      await this.applyIdle();
      // Nothing reads this branch: it is gone, and so is its hold on its parent.
      const meta = this.branches.get(branch)!;
      this.index.transaction(() => this.index.meta.removeSync(`branch/${branch}`));
      this.branches.delete(branch);
      this.invalidateViewpoints();
      this.overlay.delete(branch);
      this.overlayRanges.delete(branch);
      if (meta.parent !== null) await this.sweep(meta.parent);
    }
  }

  /**
   * Copies the live blocks of a sealed segment forward as RELOCATE records; returns bytes copied.
   * Most of a segment chosen for this is dead: a record's checksum is verified (and its bytes
   * copied) only when some block of it is still live. Paced, so that foreground requests keep
   * the loop; stops part-way when the pacer's share falls to none (a later pass finds the blocks
   * not copied yet still live here, and copies them then).
   */
  private async relocate(segment: number, pacer: Pacer): Promise<number> {
    let copied = 0;
    const writes: Promise<void>[] = [];
    for await (const rec of this.log.scan(segment, 0, { payloads: true, verify: false })) {
      const h = rec.header;
      if ((h.type !== RecordType.WRITE && h.type !== RecordType.RELOCATE) || !rec.payload) continue;
      if (!this.branches.has(h.branch)) continue;
      const dataOffset = rec.offset + Format.recordHeaderBytes;
      let verified = false;
      let runStart = -1;
      const flushRun = (endIdx: number) => {
        if (runStart < 0) return;
        if (!verified && crc32(rec.payload!) !== h.payloadCrc) {
          throw new EngineError(EngineErrorCode.CORRUPT, `Log segment ${segment}: record at ${rec.offset} fails its checksum; its live blocks stay where they are`);
        }
        verified = true;
        const payload = Buffer.from(rec.payload!.subarray(runStart * BS, endIdx * BS));
        const header: RecordHeader = {
          type: RecordType.RELOCATE, seq: h.seq, branch: h.branch, blockStart: h.blockStart + runStart, blockCount: endIdx - runStart,
          maskFirst: FULL_MASK, maskLast: FULL_MASK, payloadBytes: payload.length, payloadCrc: crc32(payload),
        };
        copied += payload.length;
        writes.push(this.log.append(header, payload).written);
        runStart = -1;
      };
      for (let i = 0; i < h.blockCount; i++) {
        const e = this.index.get(h.branch, h.blockStart + i, h.seq);
        const live = !!e && e.kind === EntryKind.DATA && e.segment === segment && e.offset === dataOffset + i * BS;
        if (live && runStart < 0) runStart = i;
        if (!live) flushRun(i);
      }
      flushRun(h.blockCount);
      if (writes.length > 64) await Promise.all(writes.splice(0));
      const pause = pacer.pause();
      if (pause && !(await pause)) break;
    }
    await Promise.all(writes);
    return copied;
  }

  /** Deletes sealed, fully applied segments that hold no live data; returns what was freed. */
  private async dropDeadSegments(opts: { paced: boolean }): Promise<{ count: number; bytes: number }> {
    const dead: number[] = [];
    let bytes = 0;
    for (const id of this.log.segmentIds()) {
      if (id === this.log.activeSegment || (this.live.get(id) ?? 0) > 0 || this.readers.has(id)) continue;
      // Records not yet applied must stay for replay; a segment with no records at all (a node
      // started and stopped before writing) has none.
      const empty = this.log.segmentSize(id) <= Format.segmentHeaderBytes;
      if (!empty && (id > this.applied.segment || (id === this.applied.segment && this.applied.offset < this.log.segmentSize(id)))) continue;
      if (this.log.hasPendingIn(id)) continue;
      bytes += this.log.segmentSize(id);
      dead.push(id);
    }
    if (!dead.length) return { count: 0, bytes: 0 };
    this.index.transaction(() => {
      for (const id of dead) this.index.segments.removeSync(id);
    });
    let failed: unknown = null;
    const removals = dead.map((id) => {
      this.live.delete(id);
      return this.log.removeSegment(id, opts).catch((err) => void (failed ??= ioError(err, 'removing a log segment')));
    });
    await Promise.all(removals);
    if (failed) throw failed;
    return { count: dead.length, bytes };
  }

  // ---------------------------------------------------------------- change tracking

  /** @internal Per block in range: sectors changed between a snapshot and a volume's view (0 = none). */
  changedMasks(from: ChainLink[], to: ChainLink[], blockStart: number, blockEnd: number): Map<number, number> {
    const out = new Map<number, number>();
    if (from[0].branch === to[0].branch && from.length === to.length) {
      // Same line of history: the versions newer than the snapshot are the changes, and their
      // masks say which sectors changed.
      const { branch } = to[0];
      const lo = from[0].maxSeq;
      const hi = to[0].maxSeq;
      const ob = this.overlay.get(branch);
      this.index.versionsAfter(branch, blockStart, blockEnd, lo, (v) => {
        if (v.seq <= hi) out.set(v.block, (out.get(v.block) ?? 0) | v.mask);
      });
      if (ob) {
        for (const [g, list] of ob) {
          const from = Math.max(blockStart, g * overlayGroupBlocks);
          const to = Math.min(blockEnd, (g + 1) * overlayGroupBlocks);
          for (const a of list) {
            const h = a.header;
            if (h.seq <= lo || h.seq > hi) continue;
            for (let b = Math.max(from, h.blockStart), end = Math.min(to, h.blockStart + h.blockCount); b < end; b++) {
              out.set(b, (out.get(b) ?? 0) | overlayEntry(a, b).mask);
            }
          }
        }
      }
      for (const r of this.overlayRanges.get(branch) ?? []) {
        if (r.seq <= lo || r.seq > hi) continue;
        // A range outside the one asked about changes nothing in it (and an empty one is no scan).
        const rangeStart = Math.max(r.blockStart, blockStart);
        const rangeEnd = Math.min(r.blockEnd, blockEnd);
        if (rangeStart >= rangeEnd) continue;
        this.visible(from, rangeStart, rangeEnd, (block, e) => {
          if (e.kind === EntryKind.DATA) out.set(block, FULL_MASK);
        });
      }
      return out;
    }
    // Different lines (after a revert, or a clone): compare what each side sees.
    const a = new Map<number, string>();
    this.visible(from, blockStart, blockEnd, (block, e, branch) => a.set(block, `${branch}:${e.seq}:${e.kind}`));
    const seen = new Set<number>();
    this.visible(to, blockStart, blockEnd, (block, e, branch) => {
      seen.add(block);
      if (a.get(block) !== `${branch}:${e.seq}:${e.kind}`) out.set(block, FULL_MASK);
    });
    for (const block of a.keys()) if (!seen.has(block)) out.set(block, FULL_MASK);
    return out;
  }

  /** @internal Runs of allocation state over whole blocks. */
  allocation(links: ChainLink[], blockStart: number, blockEnd: number): { block: number; state: 0 | 1 | 2 }[] {
    // state: 0 = data, 1 = zero (allocated), 2 = hole
    const out: { block: number; state: 0 | 1 | 2 }[] = [];
    this.visible(links, blockStart, blockEnd, (block, e) => {
      out.push({ block, state: e.kind === EntryKind.DATA ? 0 : e.kind === EntryKind.ZERO ? 1 : 2 });
    });
    return out;
  }
}

/** A handle on a disk's head or one of its snapshots. */
class StoreVolume implements Volume {
  readonly disk: string;
  readonly snapshot: string | null;
  readonly readOnly: boolean;
  readonly blockBytes = BS;
  private store: Store;
  private closed = false;

  constructor(store: Store, disk: string, snapshot: string | null) {
    this.store = store;
    this.disk = disk;
    this.snapshot = snapshot;
    this.readOnly = snapshot !== null;
  }

  get sizeBytes(): number {
    return this.store.target(this.disk, this.snapshot).sizeBytes;
  }

  private check(offset: number, length: number, write: boolean) {
    if (this.closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
    this.store.noteRequest();
    const t = this.store.target(this.disk, this.snapshot);
    if (write && t.readOnly) throw new EngineError(EngineErrorCode.READ_ONLY, `Snapshot ${this.disk}@${this.snapshot} is read-only`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new EngineError(EngineErrorCode.INVALID, `Invalid range offset=${offset} length=${length}`);
    }
    if (offset + length > t.sizeBytes) {
      throw new EngineError(EngineErrorCode.OUT_OF_RANGE, `Range ${offset}+${length} is past the end of the disk (${t.sizeBytes} bytes)`);
    }
    return t;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const t = this.check(offset, length, false);
    if (length === 0) return Buffer.alloc(0);
    const a = Math.floor(offset / BS);
    const e = Math.ceil((offset + length) / BS);
    const need = (e - a) * BS;
    const out = into !== undefined && into.length >= need ? into.subarray(0, need) : Buffer.allocUnsafe(need);
    await this.store.readBlocks(t.links, a, e, out);
    const rel = offset - a * BS;
    return rel === 0 && length === out.length ? out : out.subarray(rel, rel + length);
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    const t = this.check(offset, data.length, true);
    if (data.length === 0) {
      if (opts.fua) await this.store.flush();
      return;
    }
    const end = offset + data.length;
    const a = Math.floor(offset / BS);
    const e = Math.ceil(end / BS);
    if (offset % BS === 0 && end % BS === 0) {
      await this.store.appendData(t.d, a, data, FULL_MASK, FULL_MASK, !!opts.fua);
      return;
    }
    // Unaligned: merge with the current content of the edge blocks, one writer per block at a time.
    const edges = e - a === 1 ? [a] : [a, e - 1];
    const branch = t.d.branch;
    await this.store.withBlockLocks(branch, edges, async () => {
      const buf = Buffer.allocUnsafe((e - a) * BS);
      if (offset % BS) await this.store.readBlocks(t.links, a, a + 1, buf.subarray(0, BS));
      if (end % BS && (e - 1 !== a || offset % BS === 0)) await this.store.readBlocks(t.links, e - 1, e, buf.subarray((e - 1 - a) * BS));
      data.copy(buf, offset - a * BS);
      const firstTo = e - a === 1 ? end - a * BS : BS;
      const maskFirst = sectorMask(offset - a * BS, firstTo);
      const maskLast = e - a === 1 ? maskFirst : sectorMask(0, end - (e - 1) * BS);
      await this.store.appendData(t.d, a, buf, maskFirst, maskLast, !!opts.fua);
    });
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    const t = this.check(offset, length, true);
    if (length === 0) return;
    await this.store.zeroRange(t.d, offset, length, opts.mayTrim === false ? RecordType.ZERO : RecordType.TRIM, !!opts.fua);
  }

  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    const t = this.check(offset, length, true);
    if (length === 0) return;
    await this.store.zeroRange(t.d, offset, length, RecordType.TRIM, !!opts.fua);
  }

  async flush(): Promise<void> {
    if (this.closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
    this.store.noteRequest();
    await this.store.flush();
  }

  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    const t = this.check(offset, length, false);
    const out: AllocationExtent[] = [];
    if (length === 0) return out;
    const end = offset + length;
    const a = Math.floor(offset / BS);
    const e = Math.ceil(end / BS);
    const push = (from: number, to: number, hole: boolean, zero: boolean) => {
      from = Math.max(from, offset);
      to = Math.min(to, end);
      if (to <= from) return;
      const last = out[out.length - 1];
      if (last && last.hole === hole && last.zero === zero && last.offset + last.length === from) last.length += to - from;
      else out.push({ offset: from, length: to - from, hole, zero });
    };
    let at = a;
    for (const { block, state } of this.store.allocation(t.links, a, e)) {
      if (block > at) push(at * BS, block * BS, true, true);
      push(block * BS, (block + 1) * BS, state === 2, state !== 0);
      at = block + 1;
    }
    if (at < e) push(at * BS, e * BS, true, true);
    return out;
  }

  async changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    const t = this.check(offset, length, false);
    const from = this.store.target(this.disk, sinceSnapshot);
    const out: ChangeExtent[] = [];
    if (length === 0) return out;
    const end = offset + length;
    const a = Math.floor(offset / BS);
    const e = Math.ceil(end / BS);
    const masks = this.store.changedMasks(from.links, t.links, a, e);
    const push = (from: number, to: number, changed: boolean) => {
      from = Math.max(from, offset);
      to = Math.min(to, end);
      if (to <= from) return;
      const last = out[out.length - 1];
      if (last && last.changed === changed && last.offset + last.length === from) last.length += to - from;
      else out.push({ offset: from, length: to - from, changed });
    };
    let at = a * BS;
    for (const block of [...masks.keys()].sort((x, y) => x - y)) {
      const m = masks.get(block)!;
      if (!m) continue;
      for (let s = 0; s < SECTORS; s++) {
        if (!(m & (1 << s))) continue;
        const from = block * BS + s * Format.sectorBytes;
        if (from > at) push(at, from, false);
        push(from, from + Format.sectorBytes, true);
        at = from + Format.sectorBytes;
      }
    }
    if (at < e * BS) push(at, e * BS, false);
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.releaseVolume(this.disk, this.snapshot);
  }
}

/**
 * A version planned for the index: a new one, or (indexed) one already there that a relocation
 * moves. Cancelled when a later record of the batch drops it.
 */
interface PlannedPut {
  e: Entry;
  cancelled: boolean;
  indexed: boolean;
}

/**
 * The index changes of a batch of WRITE and RELOCATE records, for the index writer. A block
 * written twice in the batch gets one version, not a put and a remove.
 */
class ApplyPlan {
  puts: { branch: number; block: number; put: PlannedPut }[] = [];
  removes: IndexOp[] = [];
  /** branch → block → its newest planned version. */
  private newest = new Map<number, Map<number, PlannedPut>>();
  /** `branch:block:seq` of the removals, made once a relocation asks (see removed()). */
  private removedKeys: Set<string> | null = null;

  remove(branch: number, block: number, seq: number): void {
    this.removes.push({ branch, block, seq, put: null });
    this.removedKeys?.add(`${branch}:${block}:${seq}`);
  }

  /** Whether the batch removes this version (asked for relocations only). */
  removed(branch: number, block: number, seq: number): boolean {
    if (this.removedKeys === null) this.removedKeys = new Set(this.removes.map((r) => `${r.branch}:${r.block}:${r.seq}`));
    return this.removedKeys.has(`${branch}:${block}:${seq}`);
  }

  branch(branch: number): Map<number, PlannedPut> {
    let m = this.newest.get(branch);
    if (!m) this.newest.set(branch, (m = new Map()));
    return m;
  }

  /**
   * The changes: every put, then every remove, so that in the head cache a block's new version
   * goes in before its old one leaves, and the cache moves on to it instead of dropping the
   * chunk. (Sorting them into key order made LMDB's part faster, but that part now runs on the
   * writer's thread, and the sort cost the event loop more than it saved there.)
   */
  ops(): IndexOp[] {
    const ops: IndexOp[] = [];
    for (const p of this.puts) if (!p.put.cancelled) ops.push({ branch: p.branch, block: p.block, seq: p.put.e.seq, put: p.put.e });
    for (const r of this.removes) ops.push(r);
    return ops;
  }
}
