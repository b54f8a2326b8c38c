/**
 * A Volume that counts its disk's I/O (docs/observability.md, "Disk I/O"): every volume a client
 * gets, over NBD or the API's data routes, is one of these, so the per-disk figures cover all
 * client I/O and nothing the node does itself (backups, compaction, a restore's copier).
 */
import type { AllocationExtent, ChangeExtent, Volume, WriteOptions, ZeroOptions } from '../engine/index.ts';
import { IoOpIndex, type IoStats } from '../observe/index.ts';

const READ = IoOpIndex.read;
const WRITE = IoOpIndex.write;
const TRIM = IoOpIndex.trim;
const ZERO = IoOpIndex.zero;
const FLUSH = IoOpIndex.flush;

/** Wraps `inner`, counting into `stats` (the stats of inner's disk); closing it releases both. */
export class MeteredVolume implements Volume {
  readonly #inner: Volume;
  readonly #stats: IoStats;
  #closed = false;

  constructor(inner: Volume, stats: IoStats) {
    this.#inner = inner;
    this.#stats = stats;
    stats.users++;
  }

  get disk(): string {
    return this.#inner.disk;
  }
  get snapshot(): string | null {
    return this.#inner.snapshot;
  }
  get readOnly(): boolean {
    return this.#inner.readOnly;
  }
  get sizeBytes(): number {
    return this.#inner.sizeBytes;
  }
  get blockBytes(): number {
    return this.#inner.blockBytes;
  }

  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const s = this.#stats;
    const t = s.begin();
    try {
      const out = await this.#inner.read(offset, length, into);
      s.end(READ, t, length, false);
      return out;
    } catch (err) {
      s.end(READ, t, 0, true);
      throw err;
    }
  }

  async write(offset: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    const s = this.#stats;
    const t = s.begin();
    try {
      await this.#inner.write(offset, data, opts);
      s.end(WRITE, t, data.length, false);
    } catch (err) {
      s.end(WRITE, t, 0, true);
      throw err;
    }
  }

  async writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    const s = this.#stats;
    const t = s.begin();
    try {
      await this.#inner.writeZeroes(offset, length, opts);
      s.end(ZERO, t, length, false);
    } catch (err) {
      s.end(ZERO, t, 0, true);
      throw err;
    }
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    const s = this.#stats;
    const t = s.begin();
    try {
      await this.#inner.trim(offset, length, opts);
      s.end(TRIM, t, length, false);
    } catch (err) {
      s.end(TRIM, t, 0, true);
      throw err;
    }
  }

  async flush(): Promise<void> {
    const s = this.#stats;
    const t = s.begin();
    try {
      await this.#inner.flush();
      s.end(FLUSH, t, 0, false);
    } catch (err) {
      s.end(FLUSH, t, 0, true);
      throw err;
    }
  }

  blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    return this.#inner.blockStatus(offset, length);
  }

  changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    return this.#inner.changedSince(sinceSnapshot, offset, length);
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#stats.users--;
    this.#inner.close();
  }
}
