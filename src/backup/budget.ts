/** A byte budget: callers wait for room before holding more bytes in flight. */
import assert from 'node:assert/strict';

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
