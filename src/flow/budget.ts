/**
 * A byte budget: callers wait for room before holding more bytes in flight, so that a pipeline
 * of reads, workers and writes holds at most a set amount of memory however fast each stage is.
 */
import assert from 'node:assert/strict';

/** At most `bytesMax` bytes held at once; waiters are served in order. */
export class ByteBudget {
  readonly bytesMax: number;
  private used = 0;
  private readonly waiters: { bytes: number; resolve: () => void }[] = [];

  constructor(bytesMax: number) {
    assert.ok(Number.isSafeInteger(bytesMax) && bytesMax > 0);
    this.bytesMax = bytesMax;
  }

  /** Bytes held now. */
  get inUse(): number {
    return this.used;
  }

  /** Waits until `bytes` fit (a request larger than the budget waits for it to be empty). */
  async acquire(bytes: number): Promise<void> {
    if (this.waiters.length === 0 && this.fits(bytes)) {
      this.used += bytes;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push({ bytes, resolve }));
  }

  /** Takes `bytes` if they fit now and nobody waits; never waits. */
  tryAcquire(bytes: number): boolean {
    if (this.waiters.length > 0 || !this.fits(bytes)) return false;
    this.used += bytes;
    return true;
  }

  /** Gives `bytes` back and lets the waiters that now fit go on, in order. */
  release(bytes: number): void {
    this.used -= bytes;
    assert.ok(this.used >= 0, 'released more bytes than acquired');
    while (this.waiters.length > 0 && this.fits(this.waiters[0].bytes)) {
      const w = this.waiters.shift()!;
      this.used += w.bytes;
      w.resolve();
    }
  }

  private fits(bytes: number): boolean {
    return this.used === 0 || this.used + bytes <= this.bytesMax;
  }
}
