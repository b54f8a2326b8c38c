/**
 * A restore's writes into a new file, with O_DIRECT where the file system takes it. Copying a
 * restore into the page cache cost more CPU than opening its blobs: on the VMs this was measured
 * on, page cache writes moved 0.3–1.3 GB/s of one core's system time, where direct writes of the
 * same chunks moved 1.4 GB/s and left the page cache to the machine's other work. But the device
 * takes direct writes only so fast (400–900 MB/s there, from one hour to the next), and each
 * holds a thread of libuv's pool: `directWritesMax` bounds those in flight, and past
 * `directQueueMax` writes waiting for them the page cache takes a write instead.
 *
 * O_DIRECT wants the buffer, the file offset and the length aligned (4 KiB covers 512-byte and
 * 4 KiB sectors). Node's Buffers have no alignment to ask for, but a WebAssembly.Memory is page
 * aligned (shared-slots.ts): a restore's plaintexts, opened by the workers into slots of one, are
 * written as they are; chunks from other buffers are copied into slots of one first. Writes that
 * are not aligned (a short last chunk) go through the page cache, and so does everything once the
 * file system refuses a direct write (EINVAL): the restore never depends on O_DIRECT.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { writeAll } from '../util/write-all.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import type { RestoreSink } from './sink.ts';
import { directAlignBytes, isDirectAligned, SharedSlots } from '../flow/index.ts';

/** Chunks from other buffers being written directly at once (each copied into a slot first). */
const directSlots = 8;

/** How a FileSink wrote, for progress reports and tests. */
export interface FileSinkStats {
  bytesDirect: number;
  bytesBuffered: number;
  /** Whether direct writes were refused (or never possible) and the page cache took over. */
  directRefused: boolean;
  /** Whether finish() synced the file (its data, size and the device's cache) before closing it. */
  synced: boolean;
}

/** Options of FileSink.create. */
export interface FileSinkOptions {
  /** Whether to try O_DIRECT at all. Default true. */
  direct?: boolean;
  /**
   * Direct writes in flight at most (each holds a thread of libuv's pool of 4, which the reads
   * of a restore need too); a write beyond them waits for one of them. Default Infinity.
   */
  directWritesMax?: number;
  /**
   * Writes waiting for a direct write at most; a write beyond them goes through the page cache
   * instead of waiting for the device. Default Infinity: every aligned write is direct.
   */
  directQueueMax?: number;
  /** Test hook: offsets the slots from page alignment, so direct writes are refused (EINVAL). */
  misalignBytes?: number;
}

/** A new file that a restore writes into; `finish()` closes it, made durable first if asked. */
export class FileSink implements RestoreSink {
  readonly stats: FileSinkStats = { bytesDirect: 0, bytesBuffered: 0, directRefused: false, synced: false };
  private readonly fh: FileHandle;
  private direct: FileHandle | null;
  private readonly slots: SharedSlots | null;
  private readonly directWritesMax: number;
  private readonly directQueueMax: number;
  private directInFlight = 0;
  /** Writes waiting for a place among the direct writes in flight (enterDirect). */
  private readonly directWaiting: (() => void)[] = [];

  private constructor(fh: FileHandle, direct: FileHandle | null, slots: SharedSlots | null, directWritesMax: number, directQueueMax: number) {
    this.fh = fh;
    this.direct = direct;
    this.slots = slots;
    this.directWritesMax = directWritesMax;
    this.directQueueMax = directQueueMax;
    this.stats.directRefused = direct === null;
  }

  /** Creates `path` (which must not exist) with `sizeBytes` of holes, for chunks of `chunkBytes`. */
  static async create(path: string, sizeBytes: number, chunkBytes: number, options: FileSinkOptions = {}): Promise<FileSink> {
    const directWritesMax = options.directWritesMax ?? Infinity;
    const directQueueMax = options.directQueueMax ?? Infinity;
    if (!(directWritesMax >= 1)) throw new RangeError(`directWritesMax must be at least 1, not ${directWritesMax}`);
    if (!(directQueueMax >= 0)) throw new RangeError(`directQueueMax must be at least 0, not ${directQueueMax}`);
    let fh: FileHandle;
    try {
      fh = await open(path, 'wx');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST') throw new BackupError(BackupErrorCode.EXISTS, `${path} exists already; restore writes a new file`, { cause: err });
      throw new BackupError(BackupErrorCode.STORAGE, `Cannot create ${path}: ${code ?? (err as Error).message}`, { cause: err });
    }
    let direct: FileHandle | null = null;
    try {
      await fh.truncate(sizeBytes);
      if (options.direct ?? true) direct = await open(path, constants.O_WRONLY | constants.O_DIRECT).catch(() => null);
    } catch (err) {
      await fh.close();
      throw err;
    }
    const slots = direct === null ? null : new SharedSlots(chunkBytes, directSlots, options.misalignBytes ?? 0);
    return new FileSink(fh, direct, slots, directWritesMax, directQueueMax);
  }

  async write(data: Buffer, offset: number): Promise<void> {
    const aligned = offset % directAlignBytes === 0 && data.length % directAlignBytes === 0;
    // Beyond directWritesMax direct writes in flight and directQueueMax waiting for one, the
    // page cache takes the write instead.
    if (this.direct !== null && aligned && (await this.enterDirect())) {
      try {
        // A slot of aligned shared memory (a restore's plaintexts) is written as it is.
        if (isDirectAligned(data) && (await this.writeDirect(data, offset))) return;
        if (data.length <= this.slots!.slotBytes) {
          const [slot] = await this.slots!.take(1);
          try {
            const view = this.slots!.view(slot, data.length);
            data.copy(view);
            if (await this.writeDirect(view, offset)) return;
          } finally {
            this.slots!.give([slot]);
          }
        }
      } finally {
        this.leaveDirect();
      }
    }
    await writeAll(this.fh, data, offset);
    this.stats.bytesBuffered += data.length;
  }

  /** Takes a place among the direct writes in flight, waiting in the queue if it has room; false if not. */
  private async enterDirect(): Promise<boolean> {
    if (this.directInFlight < this.directWritesMax) {
      this.directInFlight++;
      return true;
    }
    if (this.directWaiting.length >= this.directQueueMax) return false;
    await new Promise<void>((resolve) => this.directWaiting.push(resolve));
    return true; // the place of the write that left (leaveDirect)
  }

  private leaveDirect(): void {
    const next = this.directWaiting.shift();
    if (next !== undefined) next();
    else this.directInFlight--;
  }

  /** One direct write; false once direct writes are refused (the caller writes through the cache). */
  private async writeDirect(data: Buffer, offset: number): Promise<boolean> {
    const direct = this.direct;
    if (direct === null) return false;
    try {
      await writeAll(direct, data, offset);
      this.stats.bytesDirect += data.length;
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
      if (this.direct === direct) {
        this.direct = null;
        this.stats.directRefused = true;
        await direct.close().catch(() => {});
      }
      return false;
    }
  }

  /**
   * Closes the file; with `sync`, first makes it durable (fsync: its data and size, and the
   * device's write cache). Without, the direct writes are on the device already and the kernel
   * writes the rest back within seconds, as after cp, restic or borg: the file survives the
   * process being killed, not a crash of the machine in those seconds.
   */
  async finish(options: { sync: boolean }): Promise<void> {
    if (options.sync) {
      await this.fh.sync();
      this.stats.synced = true;
    }
    await this.close();
  }

  /** Closes the file without syncing (after a failed restore). */
  async close(): Promise<void> {
    const direct = this.direct;
    this.direct = null;
    await direct?.close().catch(() => {});
    await this.fh.close();
  }
}
