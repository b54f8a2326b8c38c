/**
 * Page-aligned memory shared with worker threads, cut into equal slots. Workers write results
 * straight into slots and the main thread writes from them (a restore's workers open blobs into
 * them), so the bytes neither cross threads as transferred ArrayBuffers nor land in fresh memory:
 * a transferred buffer counted as new external memory, V8 ran a full GC about every 20 of them,
 * and each buffer's pages were faulted in anew (a restore of 1.4 GiB grew to 1.6 GB resident
 * before V8 collected any). A writer with O_DIRECT writes a slot as it is (isDirectAligned),
 * without copying it first.
 */

/** The one WebAssembly API used here (the DOM library that types it is not in this project). */
declare const WebAssembly: { Memory: new (d: { initial: number; maximum: number; shared: true }) => { buffer: SharedArrayBuffer } };

/** Bytes of WebAssembly memory per page (its memory starts page-aligned). */
const wasmPageBytes = 65536;
/** Alignment that direct I/O needs of buffer addresses, offsets and lengths. */
export const directAlignBytes = 4096;
/** Shared memories made here: their first byte is page-aligned. */
const alignedMemories = new WeakSet<SharedArrayBuffer>();

/** Whether `buf` is a view into aligned shared memory that starts and ends on a 4 KiB boundary. */
export function isDirectAligned(buf: Uint8Array): boolean {
  return (
    buf.buffer instanceof SharedArrayBuffer &&
    alignedMemories.has(buf.buffer) &&
    buf.byteOffset % directAlignBytes === 0 &&
    buf.byteLength % directAlignBytes === 0
  );
}

/**
 * `count` slots of `slotBytes` (rounded up to 4 KiB) in one page-aligned shared memory.
 * `misalignBytes` (a test hook) shifts every slot off alignment, so direct writes of it fail.
 */
export class SharedSlots {
  /** The one shared memory every slot lies in (what a worker is given). */
  readonly memory: SharedArrayBuffer;
  /** Bytes of one slot: the size asked for, rounded up to 4 KiB. */
  readonly slotBytes: number;
  /** Number of slots. */
  readonly count: number;
  private readonly free: number[] = [];
  private readonly waiting: { n: number; resolve: (slots: number[]) => void }[] = [];

  private readonly baseBytes: number;

  constructor(slotBytes: number, count: number, misalignBytes = 0) {
    if (!Number.isSafeInteger(slotBytes) || slotBytes <= 0 || !Number.isSafeInteger(count) || count <= 0) throw new RangeError(`Bad slots: ${count} of ${slotBytes} bytes`);
    this.slotBytes = Math.ceil(slotBytes / directAlignBytes) * directAlignBytes;
    this.count = count;
    this.baseBytes = misalignBytes;
    const pages = Math.ceil((this.slotBytes * count + misalignBytes) / wasmPageBytes);
    this.memory = new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true }).buffer;
    alignedMemories.add(this.memory);
    for (let i = count - 1; i >= 0; i--) this.free.push(i);
  }

  /** Byte offset of slot `i` in `memory`. */
  offsetOf(i: number): number {
    return this.baseBytes + i * this.slotBytes;
  }

  /** A Buffer over the first `length` bytes of slot `i`. */
  view(i: number, length: number): Buffer {
    if (length > this.slotBytes) throw new RangeError(`${length} bytes do not fit a slot of ${this.slotBytes}`);
    return Buffer.from(this.memory, this.offsetOf(i), length);
  }

  /** Waits for `n` free slots (at most `count`); waiters are served in order. */
  take(n: number): Promise<number[]> {
    if (!Number.isSafeInteger(n) || n < 1 || n > this.count) throw new RangeError(`Cannot take ${n} of ${this.count} slots`);
    if (this.waiting.length === 0 && this.free.length >= n) return Promise.resolve(this.free.splice(this.free.length - n, n));
    return new Promise((resolve) => this.waiting.push({ n, resolve }));
  }

  /** Gives slots back. */
  give(slots: readonly number[]): void {
    this.free.push(...slots);
    while (this.waiting.length > 0 && this.free.length >= this.waiting[0].n) {
      const w = this.waiting.shift()!;
      w.resolve(this.free.splice(this.free.length - w.n, w.n));
    }
  }
}
