/**
 * A volume: the byte-addressed handle on a disk's head or one of its snapshots that NBD, the API
 * and backups use. It validates each request once, at its boundary, and reaches the engine
 * through VolumeHost (docs/engine.md, Write path step 1).
 */
import { Format, RecordType } from './format.ts';
import { EngineError, EngineErrorCode } from './errors.ts';
import type { ChainLink, DiskMeta } from './history.ts';
import type { BlockState } from './read/changes.ts';
import { sectorMask, type ZeroType } from './write/appender.ts';
import type { Volume, AllocationExtent, ChangeExtent, WriteOptions, ZeroOptions } from './types.ts';

const BS = Format.blockBytes;
const SECTORS = BS / Format.sectorBytes;
const FULL_MASK = 0xff;

/** What a volume reads: its disk, the chain it sees, its size, whether it may write. */
export interface VolumeTarget {
  d: DiskMeta;
  links: ChainLink[];
  sizeBytes: number;
  readOnly: boolean;
}

/**
 * What a volume needs of its store. The store hands each volume one; these are not methods of
 * the public Store.
 */
export interface VolumeHost {
  /** Resolves what a volume reads now (a revert or resize changes it); ENGINE_CLOSED once closed. */
  target(disk: string, snap: string | null): VolumeTarget;
  /** Counts one request (background compaction yields to a busy store). */
  noteRequest(): void;
  /** Reads whole blocks of a chain of `disk` into `out` (a failure names the disk). */
  readBlocks(links: ChainLink[], blockStart: number, blockEnd: number, out: Buffer, disk: string): Promise<void>;
  /** Appends whole blocks to a disk's head. */
  appendData(d: DiskMeta, blockStart: number, payload: Buffer, maskFirst: number, maskLast: number, fua: boolean): Promise<void>;
  /** Zeroes or deallocates a byte range of a disk's head. */
  zeroRange(d: DiskMeta, offset: number, length: number, type: ZeroType, fua: boolean): Promise<void>;
  /** Serialises read-modify-write of blocks. */
  withBlockLocks<T>(branch: number, blocks: number[], fn: () => Promise<T>): Promise<T>;
  /** Per block: sectors changed between two views. */
  changedMasks(from: ChainLink[], to: ChainLink[], blockStart: number, blockEnd: number): Map<number, number>;
  /** Allocation state of the blocks in range that have a visible version. */
  allocation(links: ChainLink[], blockStart: number, blockEnd: number): { block: number; state: BlockState }[];
  /** Makes everything acknowledged so far durable. */
  flush(): Promise<void>;
  /** The volume is closed: its disk (and snapshot) may be deleted once no other volume has it. */
  release(disk: string, snap: string | null): void;
}

/** A handle on a disk's head or one of its snapshots. */
export class StoreVolume implements Volume {
  readonly disk: string;
  readonly snapshot: string | null;
  readonly readOnly: boolean;
  readonly blockBytes = BS;
  private readonly host: VolumeHost;
  private closed = false;

  /** A snapshot view is read-only, and so is every volume of a store opened read-only. */
  constructor(host: VolumeHost, disk: string, snapshot: string | null, opts: { storeReadOnly?: boolean } = {}) {
    this.host = host;
    this.disk = disk;
    this.snapshot = snapshot;
    this.readOnly = snapshot !== null || opts.storeReadOnly === true;
  }

  get sizeBytes(): number {
    return this.host.target(this.disk, this.snapshot).sizeBytes;
  }

  private check(offset: number, length: number, write: boolean) {
    if (this.closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
    this.host.noteRequest();
    const t = this.host.target(this.disk, this.snapshot);
    if (write && t.readOnly) {
      throw new EngineError(EngineErrorCode.READ_ONLY, this.snapshot !== null ? `Snapshot ${this.disk}@${this.snapshot} is read-only` : `Disk "${this.disk}" is read-only: its store is open read-only`);
    }
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
    await this.host.readBlocks(t.links, a, e, out, this.disk);
    const rel = offset - a * BS;
    return rel === 0 && length === out.length ? out : out.subarray(rel, rel + length);
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    const t = this.check(offset, data.length, true);
    if (data.length === 0) {
      if (opts.fua) await this.host.flush();
      return;
    }
    const end = offset + data.length;
    const a = Math.floor(offset / BS);
    const e = Math.ceil(end / BS);
    if (offset % BS === 0 && end % BS === 0) {
      await this.host.appendData(t.d, a, data, FULL_MASK, FULL_MASK, !!opts.fua);
      return;
    }
    // Unaligned: merge with the current content of the edge blocks, one writer per block at a time.
    const edges = e - a === 1 ? [a] : [a, e - 1];
    const branch = t.d.branch;
    await this.host.withBlockLocks(branch, edges, async () => {
      const buf = Buffer.allocUnsafe((e - a) * BS);
      if (offset % BS) await this.host.readBlocks(t.links, a, a + 1, buf.subarray(0, BS), this.disk);
      if (end % BS && (e - 1 !== a || offset % BS === 0)) await this.host.readBlocks(t.links, e - 1, e, buf.subarray((e - 1 - a) * BS), this.disk);
      data.copy(buf, offset - a * BS);
      const firstTo = e - a === 1 ? end - a * BS : BS;
      const maskFirst = sectorMask(offset - a * BS, firstTo);
      const maskLast = e - a === 1 ? maskFirst : sectorMask(0, end - (e - 1) * BS);
      await this.host.appendData(t.d, a, buf, maskFirst, maskLast, !!opts.fua);
    });
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    const t = this.check(offset, length, true);
    if (length === 0) return;
    await this.host.zeroRange(t.d, offset, length, opts.mayTrim === false ? RecordType.ZERO : RecordType.TRIM, !!opts.fua);
  }

  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    const t = this.check(offset, length, true);
    if (length === 0) return;
    await this.host.zeroRange(t.d, offset, length, RecordType.TRIM, !!opts.fua);
  }

  async flush(): Promise<void> {
    if (this.closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
    this.host.noteRequest();
    await this.host.flush();
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
    for (const { block, state } of this.host.allocation(t.links, a, e)) {
      if (block > at) push(at * BS, block * BS, true, true);
      push(block * BS, (block + 1) * BS, state === 2, state !== 0);
      at = block + 1;
    }
    if (at < e) push(at * BS, e * BS, true, true);
    return out;
  }

  async changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    const t = this.check(offset, length, false);
    const from = this.host.target(this.disk, sinceSnapshot);
    const out: ChangeExtent[] = [];
    if (length === 0) return out;
    const end = offset + length;
    const a = Math.floor(offset / BS);
    const e = Math.ceil(end / BS);
    const masks = this.host.changedMasks(from.links, t.links, a, e);
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
    this.host.release(this.disk, this.snapshot);
  }
}
