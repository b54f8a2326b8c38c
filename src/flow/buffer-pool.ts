/**
 * Reusable buffers for reads. A fresh Buffer per read costs more than the copy into it: every
 * large allocation is external memory that V8 answers with a garbage collection, and at a GB/s
 * of reads that collector took a third of the NBD server's CPU. Buffers come back once their
 * bytes are used (an NBD reply: once the socket has taken them). With `shared`, they are shared
 * memory that worker threads read where it lies (a restore's range reads), not moved to them.
 */
import assert from 'node:assert/strict';

/** Smallest buffer handed out; smaller requests get one of this size. */
const CLASS_BYTES_MIN = 4096;

/** Buffers in size classes of powers of two, holding at most `pooledBytesMax` bytes idle. */
export class BufferPool {
  readonly #free = new Map<number, Buffer[]>();
  readonly #pooledBytesMax: number;
  readonly #shared: boolean;
  #pooledBytes = 0;

  /** `pooledBytesMax`: idle bytes kept for reuse; `shared`: hand out SharedArrayBuffer memory. */
  constructor(opts: { pooledBytesMax: number; shared?: boolean }) {
    this.#pooledBytesMax = opts.pooledBytesMax;
    this.#shared = opts.shared ?? false;
  }

  /** A buffer of at least `length` bytes (its contents are stale); give it back when done. */
  take(length: number): Buffer {
    const size = classOf(length);
    const buf = this.#free.get(size)?.pop();
    if (buf === undefined) return this.#shared ? Buffer.from(new SharedArrayBuffer(size)) : Buffer.allocUnsafeSlow(size);
    this.#pooledBytes -= size;
    return buf;
  }

  /** Returns a buffer from take(); kept for reuse unless the pool is full. */
  give(buf: Buffer): void {
    const size = buf.length;
    assert.equal(size, classOf(size), 'only buffers from take() come back');
    if (this.#pooledBytes + size > this.#pooledBytesMax) return;
    let list = this.#free.get(size);
    if (list === undefined) this.#free.set(size, (list = []));
    list.push(buf);
    this.#pooledBytes += size;
  }

  /** Bytes held idle, for tests. */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }
}

function classOf(length: number): number {
  return Math.max(CLASS_BYTES_MIN, 2 ** Math.ceil(Math.log2(length)));
}
