/**
 * What a disk may hold after a crash: every byte as of the last durable point (a flush, a FUA
 * write, a snapshot), or as some write since then left it, acknowledged or failed (a failed
 * request may have landed; an acknowledged one not made durable may be lost). Never anything
 * else: a byte no one wrote is corrupt data reported as good.
 */
import assert from 'node:assert/strict';

/** A write's fate as the caller saw it. */
export type Outcome = 'acked' | 'failed';

/** One disk's bytes: what reads return now, and what a crash may leave. */
export class CrashModel {
  /** What reads return while the store runs: the acknowledged writes. */
  current: Buffer;
  /** The bytes as of the last durable point. */
  #durable: Buffer;
  /** Writes since the last durable point, acknowledged or failed. */
  #since: { offset: number; data: Buffer }[] = [];

  constructor(sizeBytes: number, initial?: Buffer) {
    this.current = initial ? Buffer.from(initial) : Buffer.alloc(sizeBytes);
    this.#durable = Buffer.from(this.current);
  }

  /** A write of `data` at `offset` that was acknowledged, or failed. */
  write(offset: number, data: Buffer, outcome: Outcome): void {
    this.#since.push({ offset, data: Buffer.from(data) });
    if (outcome === 'acked') data.copy(this.current, offset);
  }

  /** A write-zeroes or trim. */
  zero(offset: number, length: number, outcome: Outcome): void {
    this.write(offset, Buffer.alloc(length), outcome);
  }

  /** A flush or a FUA write succeeded: every write acknowledged so far is durable. */
  durable(): void {
    this.#durable = Buffer.from(this.current);
    this.#since = [];
  }

  /** Whether a crash may have changed anything: writes since the last durable point. */
  get uncertain(): boolean {
    return this.#since.length > 0;
  }

  /** Reads while running must return the acknowledged bytes. */
  checkRunning(got: Buffer, what: string): void {
    const at = firstDifference(got, this.current);
    assert.ok(at < 0, `${what}: byte ${at} is ${got[at]}, the acknowledged writes left ${this.current[at]}`);
  }

  /**
   * After a crash (or a reopen after failed writes): each byte is as of the last durable point,
   * or as a write since left it. The model then takes what the disk holds as its new durable state.
   */
  checkAfterCrash(got: Buffer, what: string): void {
    const ok = new Uint8Array(got.length);
    for (let b = 0; b < got.length; b++) if (got[b] === this.#durable[b]) ok[b] = 1;
    for (const w of this.#since) {
      for (let i = 0; i < w.data.length; i++) if (got[w.offset + i] === w.data[i]) ok[w.offset + i] = 1;
    }
    const bad = ok.indexOf(0);
    assert.ok(bad < 0, `${what}: byte ${bad} is ${got[bad]}: neither ${this.#durable[bad]} (durable) nor what a later write put there`);
    this.current = Buffer.from(got);
    this.durable();
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length;
}
