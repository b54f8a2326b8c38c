/**
 * An in-memory engine double for NBD tests: disks with byte-exact contents, allocation tracked per
 * 512-byte sector, snapshots, and changed-since by write sequence. Hooks let tests delay or fail
 * operations. It honours the Volume contract of src/engine/types.ts, checks included.
 */
import { EngineError, EngineErrorCode } from '../../src/engine/index.ts';
import type { AllocationExtent, ChangeExtent, Volume, WriteOptions, ZeroOptions } from '../../src/engine/index.ts';
import type { ExportProvider } from '../../src/nbd/index.ts';

const SECTOR = 512;

interface Snapshot {
  data: Buffer;
  allocated: Uint8Array;
  seq: number;
}

/** A disk of the memory store. */
export class MemoryDisk {
  readonly name: string;
  data: Buffer;
  /** 1 per sector holding written data, 0 for a hole. */
  allocated: Uint8Array;
  /** Sequence number of the last write touching each sector. */
  writtenSeq: Float64Array;
  snapshots = new Map<string, Snapshot>();

  constructor(name: string, sizeBytes: number) {
    this.name = name;
    this.data = Buffer.alloc(sizeBytes);
    this.allocated = new Uint8Array(Math.ceil(sizeBytes / SECTOR));
    this.writtenSeq = new Float64Array(Math.ceil(sizeBytes / SECTOR));
  }
}

/** Hooks around every volume operation: delay it, fail it, observe it. */
export type Hook = (op: string, offset: number, length: number) => Promise<void> | void;

/** An in-memory store with an ExportProvider face. */
export class MemoryStore implements ExportProvider {
  readonly disks = new Map<string, MemoryDisk>();
  seq = 0;
  openVolumes = 0;
  flushes = 0;
  hook: Hook | null = null;
  blockBytes = 4096;
  /** Every write and zero that asked for FUA, as [op, offset, length]. */
  fuaLog: [string, number, number][] = [];

  createDisk(name: string, sizeBytes: number): MemoryDisk {
    const disk = new MemoryDisk(name, sizeBytes);
    this.disks.set(name, disk);
    return disk;
  }

  /** Resizes a disk: growing reads zeroes past the old end, as does what a shrink cut off. */
  resize(diskName: string, sizeBytes: number): void {
    const disk = this.#disk(diskName);
    const sectors = Math.ceil(sizeBytes / SECTOR);
    const keep = Math.min(sizeBytes, disk.data.length);
    const data = Buffer.alloc(sizeBytes);
    disk.data.copy(data, 0, 0, keep);
    const allocated = new Uint8Array(sectors);
    allocated.set(disk.allocated.subarray(0, Math.min(sectors, disk.allocated.length)));
    const writtenSeq = new Float64Array(sectors);
    writtenSeq.set(disk.writtenSeq.subarray(0, Math.min(sectors, disk.writtenSeq.length)));
    // Sectors past the old end may have held data a shrink cut off: changed, to be safe.
    writtenSeq.fill(++this.seq, Math.min(sectors, disk.writtenSeq.length));
    disk.data = data;
    disk.allocated = allocated;
    disk.writtenSeq = writtenSeq;
  }

  snapshot(diskName: string, snap: string): void {
    const disk = this.#disk(diskName);
    disk.snapshots.set(snap, { data: Buffer.from(disk.data), allocated: disk.allocated.slice(), seq: ++this.seq });
  }

  listExports(): string[] {
    return [...this.disks.keys()];
  }

  listSnapshots(exportName: string): string[] {
    return [...this.#disk(exportName.split('@')[0]).snapshots.keys()];
  }

  openExport(name: string): Volume {
    const [diskName, snap] = name.split('@') as [string, string | undefined];
    const disk = this.#disk(diskName);
    if (snap !== undefined && !disk.snapshots.has(snap)) throw new EngineError(EngineErrorCode.NOT_FOUND, `No snapshot ${name}`);
    this.openVolumes++;
    return new MemoryVolume(this, disk, snap ?? null);
  }

  #disk(name: string): MemoryDisk {
    const disk = this.disks.get(name);
    if (!disk) throw new EngineError(EngineErrorCode.NOT_FOUND, `No disk ${name}`);
    return disk;
  }
}

class MemoryVolume implements Volume {
  readonly disk: string;
  readonly snapshot: string | null;
  readonly readOnly: boolean;
  readonly #store: MemoryStore;
  readonly #disk: MemoryDisk;
  #closed = false;

  constructor(store: MemoryStore, disk: MemoryDisk, snapshot: string | null) {
    this.#store = store;
    this.#disk = disk;
    this.disk = disk.name;
    this.snapshot = snapshot;
    this.readOnly = snapshot !== null;
  }

  get sizeBytes(): number {
    return this.#view().data.length;
  }

  get blockBytes(): number {
    return this.#store.blockBytes;
  }

  #view(): { data: Buffer; allocated: Uint8Array } {
    return this.snapshot === null ? this.#disk : this.#disk.snapshots.get(this.snapshot)!;
  }

  async #enter(op: string, offset: number, length: number, writes: boolean): Promise<void> {
    if (this.#closed) throw new EngineError(EngineErrorCode.CLOSED, 'Volume is closed');
    if (writes && this.readOnly) throw new EngineError(EngineErrorCode.READ_ONLY, 'Snapshot is read-only');
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new EngineError(EngineErrorCode.INVALID, `Bad range ${offset}+${length}`);
    }
    if (offset + length > this.sizeBytes) throw new EngineError(EngineErrorCode.OUT_OF_RANGE, `Range ${offset}+${length} past the end`);
    await this.#store.hook?.(op, offset, length);
  }

  #mark(offset: number, length: number, allocated: boolean | null): void {
    const seq = ++this.#store.seq;
    const disk = this.#disk;
    for (let s = Math.floor(offset / SECTOR); s * SECTOR < offset + length; s++) {
      disk.writtenSeq[s] = seq;
      if (allocated === true) disk.allocated[s] = 1;
      // Deallocate only sectors wholly inside the range, like a real thin store would.
      if (allocated === false && s * SECTOR >= offset && (s + 1) * SECTOR <= offset + length) disk.allocated[s] = 0;
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    await this.#enter('read', offset, length, false);
    return Buffer.from(this.#view().data.subarray(offset, offset + length));
  }

  async write(offset: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    await this.#enter('write', offset, data.length, true);
    data.copy(this.#disk.data, offset);
    this.#mark(offset, data.length, true);
    if (opts?.fua) this.#store.fuaLog.push(['write', offset, data.length]);
  }

  async writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    await this.#enter('zero', offset, length, true);
    this.#disk.data.fill(0, offset, offset + length);
    this.#mark(offset, length, opts?.mayTrim ? false : true);
    if (opts?.fua) this.#store.fuaLog.push([opts.mayTrim ? 'zero' : 'zero-nohole', offset, length]);
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    await this.#enter('trim', offset, length, true);
    this.#disk.data.fill(0, offset, offset + length);
    this.#mark(offset, length, false);
    if (opts?.fua) this.#store.fuaLog.push(['trim', offset, length]);
  }

  async flush(): Promise<void> {
    await this.#enter('flush', 0, 0, false);
    this.#store.flushes++;
  }

  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    await this.#enter('status', offset, length, false);
    const allocated = this.#view().allocated;
    return runs(offset, length, (s) => allocated[s]).map((r) => ({
      offset: r.offset,
      length: r.length,
      hole: r.value === 0,
      zero: r.value === 0,
    }));
  }

  async changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    await this.#enter('changed', offset, length, false);
    const snap = this.#disk.snapshots.get(sinceSnapshot);
    if (!snap) throw new EngineError(EngineErrorCode.NOT_FOUND, `No snapshot ${sinceSnapshot}`);
    const limitSeq = this.snapshot === null ? Infinity : this.#disk.snapshots.get(this.snapshot)!.seq;
    const seqs = this.#disk.writtenSeq;
    return runs(offset, length, (s) => (seqs[s] > snap.seq && seqs[s] < limitSeq ? 1 : 0)).map((r) => ({
      offset: r.offset,
      length: r.length,
      changed: r.value === 1,
    }));
  }

  close(): void {
    // Idempotent, as the Volume contract says: a second close releases nothing twice.
    if (this.#closed) return;
    this.#closed = true;
    this.#store.openVolumes--;
  }
}

/** Runs of equal per-sector value over [offset, offset+length), cut to the range. */
function runs(offset: number, length: number, valueOf: (sector: number) => number): { offset: number; length: number; value: number }[] {
  const out: { offset: number; length: number; value: number }[] = [];
  const end = offset + length;
  let at = offset;
  while (at < end) {
    const sector = Math.floor(at / SECTOR);
    const value = valueOf(sector);
    const next = Math.min(end, (sector + 1) * SECTOR);
    const last = out[out.length - 1];
    if (last && last.value === value) last.length += next - at;
    else out.push({ offset: at, length: next - at, value });
    at = next;
  }
  return out;
}
