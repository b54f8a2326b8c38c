/**
 * A Volume that answers no sooner than its disk's emulated device would (docs/latency.md). Every
 * volume a client gets, over NBD or the API's data routes, is one of these (inside MeteredVolume,
 * so the disk's I/O figures show the latency its clients see). The device is asked at each
 * request, so setting or removing a profile applies to open connections at once.
 *
 * A request is admitted to the device when it arrives, and runs on the store at the same time:
 * the reply goes when both are done. The node's own time overlaps the emulated one rather than
 * adding to it, so the client sees the profile's latency wherever the node is faster.
 */
import type { AllocationExtent, ChangeExtent, Volume, WriteOptions, ZeroOptions } from '../engine/index.ts';
import type { DelayQueue, LatencyDevice } from '../flow/index.ts';

/** Wraps `inner`; `device` names its disk's emulated device at each request (null: none). */
export class LatencyVolume implements Volume {
  readonly #inner: Volume;
  readonly #device: () => LatencyDevice | null;
  readonly #queue: DelayQueue;

  constructor(inner: Volume, opts: { device: () => LatencyDevice | null; queue: DelayQueue }) {
    this.#inner = inner;
    this.#device = opts.device;
    this.#queue = opts.queue;
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
    const d = this.#device();
    if (d === null) return this.#inner.read(offset, length, into);
    const endMs = d.admit(performance.now(), 'read', offset, length);
    const out = await this.#inner.read(offset, length, into);
    await this.#queue.until(endMs);
    return out;
  }

  async write(offset: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    const d = this.#device();
    if (d === null) return this.#inner.write(offset, data, opts);
    const endMs = d.admit(performance.now(), 'write', offset, data.length, opts?.fua === true);
    await this.#inner.write(offset, data, opts);
    await this.#queue.until(endMs);
  }

  async writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    const d = this.#device();
    if (d === null) return this.#inner.writeZeroes(offset, length, opts);
    // No payload crosses the bus: a write's service time without the transfer.
    const endMs = d.admit(performance.now(), 'write', offset, 0, opts?.fua === true);
    await this.#inner.writeZeroes(offset, length, opts);
    await this.#queue.until(endMs);
  }

  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    const d = this.#device();
    if (d === null) return this.#inner.trim(offset, length, opts);
    const endMs = d.admit(performance.now(), 'write', offset, 0, opts?.fua === true);
    await this.#inner.trim(offset, length, opts);
    await this.#queue.until(endMs);
  }

  async flush(): Promise<void> {
    const d = this.#device();
    if (d === null) return this.#inner.flush();
    const endMs = d.admit(performance.now(), 'flush', 0, 0);
    await this.#inner.flush();
    await this.#queue.until(endMs);
  }

  /** Metadata queries (block status, changed blocks) are not the device's I/O: not delayed. */
  blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    return this.#inner.blockStatus(offset, length);
  }

  changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    return this.#inner.changedSince(sinceSnapshot, offset, length);
  }

  close(): void {
    this.#inner.close();
  }
}
