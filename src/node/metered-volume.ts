/**
 * A Volume that counts its disk's I/O (docs/observability.md, "Disk I/O"): every volume a client
 * gets, over NBD or the API's data routes, is one of these, so the per-disk figures cover all
 * client I/O and nothing the node does itself (backups, compaction, a restore's copier). A read
 * the drive failed (for a read, or a write's read of the blocks it merges with) is counted too,
 * and handed on to be logged with where it failed.
 */
import { EngineError, type AllocationExtent, type ChangeExtent, type ReadFault, type Volume, type WriteOptions, type ZeroOptions } from '../engine/index.ts';
import { IoOpIndex, type IoStats, type Logger } from '../observe/index.ts';

const READ = IoOpIndex.read;
const WRITE = IoOpIndex.write;
const TRIM = IoOpIndex.trim;
const ZERO = IoOpIndex.zero;
const FLUSH = IoOpIndex.flush;

/** Hears a read the drive failed: its disk and offset, and the error the client got. */
export type ReadFaultListener = (fault: ReadFault, err: EngineError) => void;

/** Wraps `inner`, counting into `stats` (the stats of inner's disk); closing it releases both. */
export class MeteredVolume implements Volume {
  readonly #inner: Volume;
  readonly #stats: IoStats;
  readonly #onReadFault: ReadFaultListener | null;
  #closed = false;

  constructor(inner: Volume, stats: IoStats, onReadFault: ReadFaultListener | null = null) {
    this.#inner = inner;
    this.#stats = stats;
    this.#onReadFault = onReadFault;
    stats.users++;
  }

  /** Counts a failure that is a read the drive failed, and hands it on. */
  #failed(err: unknown): void {
    if (!(err instanceof EngineError) || err.readFault === null) return;
    if (err.readFault.checksum) this.#stats.checksumErrors++;
    else this.#stats.readErrors++;
    this.#onReadFault?.(err.readFault, err);
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
      this.#failed(err);
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
      this.#failed(err);
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
      this.#failed(err);
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
      this.#failed(err);
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

/** Reads the drive failed are logged one by one up to this many a minute (each one is counted). */
const READ_FAULTS_LOGGED_PER_MINUTE_MAX = 100;

/**
 * Logs the reads the drive failed at `error`, with their disk and offset: one by one up to
 * READ_FAULTS_LOGGED_PER_MINUTE_MAX a minute, then, with the next after that minute, how many
 * were not (a dying drive fails every read; the metric counts them all).
 */
export class ReadFaultLog {
  readonly #log: Logger;
  #minuteStartMs = 0;
  #logged = 0;
  #unlogged = 0;

  constructor(log: Logger) {
    this.#log = log;
  }

  readonly onFault: ReadFaultListener = (fault, err) => {
    const now = Date.now();
    if (now - this.#minuteStartMs >= 60_000) {
      if (this.#unlogged > 0) this.#log.error(`${this.#unlogged} more reads failed in the minute from ${new Date(this.#minuteStartMs).toISOString()} (not logged one by one)`);
      this.#minuteStartMs = now;
      this.#logged = 0;
      this.#unlogged = 0;
    }
    if (this.#logged++ < READ_FAULTS_LOGGED_PER_MINUTE_MAX) this.#log.error(err.message, { disk: fault.disk, offset: fault.offset, checksum: fault.checksum });
    else this.#unlogged++;
  };
}
