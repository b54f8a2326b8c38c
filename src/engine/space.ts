/**
 * The space guard: how full the file system under a store is, and whether a client write may
 * still take space (docs/engine.md, "Space, full drives and failing drives"). Client writes stop
 * at the full ratio, well before the file system is full, so that compaction, the index, recovery
 * and metadata always find room in the reserve.
 */
import fs from 'node:fs';
import { EngineError, EngineErrorCode } from './errors.ts';

const GiB = 1024 ** 3;

/** Settings of the space guard (StoreOptions.space). */
export interface SpaceOptions {
  /** Bytes of the file system kept for the store itself. Default: see defaultReserveBytes. */
  reserveBytes?: number;
  /** Share of the usable bytes (total − reserve) in use from which the state is `nearfull`. Default 0.85. */
  nearfullRatio?: number;
  /** Share of the usable bytes in use from which client writes are refused. Default 0.95. */
  fullRatio?: number;
}

/** How full a store's file system is. */
export type SpaceState = 'ok' | 'nearfull' | 'full';

/** The figures behind the state, as last read. */
export interface SpaceFigures {
  state: SpaceState;
  /** Size of the file system. */
  totalBytes: number;
  /** Bytes still free for an unprivileged writer, less what the store appended since the last reading. */
  freeBytes: number;
  /** Bytes kept for the store's own work. */
  reserveBytes: number;
  /** totalBytes − reserveBytes: what the node may use. */
  usableBytes: number;
  /** totalBytes − freeBytes, whoever's files they are. */
  usedBytes: number;
  /** usedBytes ÷ usableBytes (above 1 once the reserve is being used). */
  usedRatio: number;
  nearfullRatio: number;
  fullRatio: number;
}

/** What statfs says: the file system's size and the bytes an unprivileged writer may still use. */
export interface FsReading {
  totalBytes: number;
  freeBytes: number;
}

/**
 * The default reserve of a file system of `totalBytes`: the larger of 2 % and 1 GiB, but at most a
 * tenth (a 320 MiB file system keeps 32 MiB, 20 GiB keeps 1 GiB, 1 TiB keeps about 20 GiB).
 */
export function defaultReserveBytes(totalBytes: number): number {
  return Math.floor(Math.min(Math.max(totalBytes * 0.02, GiB), totalBytes / 10));
}

/** statfs of a directory. */
export function readFileSystem(dir: string): FsReading {
  const s = fs.statfsSync(dir);
  return { totalBytes: s.blocks * s.bsize, freeBytes: s.bavail * s.bsize };
}

/** Readings older than this are taken again before a decision. */
const READING_AGE_MS_MAX = 1000;
/** A trim or write-zeroes record's size: accepted while full, until free space is half the reserve. */
const ZERO_RECORD_BYTES = 64;

const MiB = 1024 * 1024;
const mib = (n: number): string => `${(n / MiB).toFixed(n < 10 * MiB ? 1 : 0)} MiB`;

/** Checks each client write against the state of the file system under a store. */
export class SpaceGuard {
  readonly nearfullRatio: number;
  readonly fullRatio: number;
  private readonly read: () => FsReading;
  private readonly reserveOption: number | undefined;
  /** Bytes the store appended since open, ever growing: what it appended since a reading counts as used. */
  private readonly appendedBytes: () => number;
  private reading: FsReading = { totalBytes: 0, freeBytes: 0 };
  private readAtMs = -Infinity;
  private appendedAtReading = 0;
  /** Called when a client write is refused (the store starts a maintenance pass: space may be had). */
  onRefused: () => void = () => {};

  constructor(opts: SpaceOptions & { read: () => FsReading; appendedBytes: () => number }) {
    this.read = opts.read;
    this.appendedBytes = opts.appendedBytes;
    this.nearfullRatio = opts.nearfullRatio ?? 0.85;
    this.fullRatio = opts.fullRatio ?? 0.95;
    this.reserveOption = opts.reserveBytes;
    const ratio = (r: number) => Number.isFinite(r) && r > 0 && r <= 1;
    if (!ratio(this.nearfullRatio) || !ratio(this.fullRatio) || this.nearfullRatio > this.fullRatio) {
      throw new EngineError(EngineErrorCode.INVALID, `Space ratios must satisfy 0 < nearfull (${this.nearfullRatio}) <= full (${this.fullRatio}) <= 1`);
    }
    if (opts.reserveBytes !== undefined && !(Number.isSafeInteger(opts.reserveBytes) && opts.reserveBytes >= 0)) {
      throw new EngineError(EngineErrorCode.INVALID, `The space reserve must be a whole number of bytes, not ${opts.reserveBytes}`);
    }
  }

  /** Reads the file system again now. */
  refresh(): void {
    this.reading = this.read();
    this.readAtMs = performance.now();
    this.appendedAtReading = this.appendedBytes();
  }

  private fresh(): void {
    if (performance.now() - this.readAtMs > READING_AGE_MS_MAX) this.refresh();
  }

  /** The reserve of the file system as last read. */
  private reserve(): number {
    const total = this.reading.totalBytes;
    return Math.min(this.reserveOption ?? defaultReserveBytes(total), total);
  }

  /** Free bytes as last read, less what the store appended since (the page cache may hold it unallocated). */
  private free(): number {
    return Math.max(0, this.reading.freeBytes - (this.appendedBytes() - this.appendedAtReading));
  }

  /** The figures now (reading the file system again if the last reading is over a second old). */
  figures(): SpaceFigures {
    this.fresh();
    return this.figuresOf(this.free());
  }

  private figuresOf(free: number): SpaceFigures {
    const total = this.reading.totalBytes;
    const reserve = this.reserve();
    const usable = total - reserve;
    const used = total - free;
    const usedRatio = usable > 0 ? used / usable : used > 0 ? Infinity : 0;
    const state: SpaceState = usedRatio >= this.fullRatio ? 'full' : usedRatio >= this.nearfullRatio ? 'nearfull' : 'ok';
    return { state, totalBytes: total, freeBytes: free, reserveBytes: reserve, usableBytes: usable, usedBytes: used, usedRatio, nearfullRatio: this.nearfullRatio, fullRatio: this.fullRatio };
  }

  /**
   * Null if `ok` says the figures allow a write of `bytes`, else the figures that refuse it. A
   * reading that refuses is taken again first (space may have been freed since), as is one over a
   * second old.
   */
  private fits(bytes: number, ok: (f: SpaceFigures, bytes: number) => boolean): SpaceFigures | null {
    this.fresh();
    let f = this.figuresOf(this.free());
    if (ok(f, bytes)) return null;
    this.refresh();
    f = this.figuresOf(this.free());
    return ok(f, bytes) ? null : f;
  }

  /**
   * Refuses (ENGINE_NO_SPACE) a client write of `bytes` while the node is full, or when it would
   * take free space below the reserve.
   */
  admitData(bytes: number): void {
    const refused = this.fits(bytes, (f, n) => f.state !== 'full' && f.freeBytes - n >= f.reserveBytes);
    if (refused) {
      this.onRefused();
      throw new EngineError(EngineErrorCode.NO_SPACE, `The node is full: ${mib(refused.usedBytes)} of ${mib(refused.usableBytes)} usable used (${Math.round(refused.usedRatio * 100)}%, writes stop at ${Math.round(refused.fullRatio * 100)}%); free space by deleting disks or snapshots, trimming, or growing the file system`);
    }
  }

  /** Refuses a trim or write-zeroes only once free space is down to half the reserve. */
  admitZero(): void {
    const refused = this.fits(ZERO_RECORD_BYTES, (f, n) => f.freeBytes - n >= f.reserveBytes / 2);
    if (refused) {
      this.onRefused();
      throw new EngineError(EngineErrorCode.NO_SPACE, `The node is full: ${mib(refused.freeBytes)} free, half its reserve of ${mib(refused.reserveBytes)}`);
    }
  }

  /**
   * The largest log segment that compaction can always copy inside the reserve: a quarter of
   * it, in whole 4 KiB blocks, at least 1 MiB.
   */
  segmentBytesMax(): number {
    this.fresh();
    return Math.max(MiB, Math.floor(this.reserve() / 4 / 4096) * 4096);
  }

  /** Null when at least the reserve is free; else why the store cannot start writing there. */
  belowReserve(): string | null {
    this.refresh();
    const f = this.figuresOf(this.reading.freeBytes);
    if (f.freeBytes >= f.reserveBytes) return null;
    return `the file system has ${mib(f.freeBytes)} free of ${mib(f.totalBytes)}; a node needs its reserve of ${mib(f.reserveBytes)} free to start (for compaction, the index and recovery)`;
  }
}
