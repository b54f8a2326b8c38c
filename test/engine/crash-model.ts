/**
 * What a disk may hold after a crash: every byte as of the last durable point (a flush, a FUA
 * write, a snapshot), or as some write since then left it (an acknowledged one not made durable
 * may be lost), or as a failed write left it (a failed request may have landed: the part of a
 * batch a full drive took, the records a failing drive wrote before it failed). Never anything
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
  /** Acknowledged writes since the last durable point. */
  #since: { offset: number; data: Buffer }[] = [];
  /** Failed writes since the last crash: they may turn up then, whatever was made durable since. */
  #failed: { offset: number; data: Buffer }[] = [];

  constructor(sizeBytes: number, initial?: Buffer) {
    this.current = initial ? Buffer.from(initial) : Buffer.alloc(sizeBytes);
    this.#durable = Buffer.from(this.current);
  }

  /** A write of `data` at `offset` that was acknowledged, or failed. */
  write(offset: number, data: Buffer, outcome: Outcome): void {
    if (outcome === 'failed') this.#failed.push({ offset, data: Buffer.from(data) });
    else {
      this.#since.push({ offset, data: Buffer.from(data) });
      data.copy(this.current, offset);
    }
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

  /** Reads while running must return the acknowledged bytes. */
  checkRunning(got: Buffer, what: string): void {
    const at = firstDifference(got, this.current);
    assert.ok(at < 0, `${what}: byte ${at} is ${got[at]}, the acknowledged writes left ${this.current[at]}`);
  }

  /**
   * While running, after a request of several records failed (a write-zeroes: its edges and its
   * middle): each byte is as acknowledged, or as the failed requests left it. The model takes
   * what the disk holds as what reads return from now on.
   */
  settle(got: Buffer, what: string): void {
    this.#check(got, this.current, [this.#failed], `${what}: byte %b is %v: neither %c (acknowledged) nor what a failed request put there`);
    this.current = Buffer.from(got);
  }

  /**
   * After a crash (or a reopen after failed writes): each byte is as of the last durable point,
   * or as a write since left it. The model then takes what the disk holds as its new durable state.
   */
  checkAfterCrash(got: Buffer, what: string): void {
    this.#check(got, this.#durable, [this.#since, this.#failed], `${what}: byte %b is %v: neither %c (durable) nor what a later or failed write put there`);
    this.current = Buffer.from(got);
    this.#failed = [];
    this.durable();
  }

  /** Asserts each byte of `got` is `base`'s or one of the writes'; `%b`, `%v`, `%c` in `message` name the byte, its value and base's. */
  #check(got: Buffer, base: Buffer, writes: { offset: number; data: Buffer }[][], message: string): void {
    const ok = new Uint8Array(got.length);
    for (let b = 0; b < got.length; b++) if (got[b] === base[b]) ok[b] = 1;
    for (const list of writes) {
      for (const w of list) for (let i = 0; i < w.data.length; i++) if (got[w.offset + i] === w.data[i]) ok[w.offset + i] = 1;
    }
    const bad = ok.indexOf(0);
    assert.ok(bad < 0, message.replace('%b', String(bad)).replace('%v', String(got[bad])).replace('%c', String(base[bad])));
  }
}

function firstDifference(a: Buffer, b: Buffer): number {
  if (a.equals(b)) return -1;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return a.length;
}
