/**
 * Whether small I/O is done on the event loop's own thread. From the page cache it takes
 * microseconds, while the thread pool's hand-off and completion cost more and delay every request
 * waiting on it (fio at queue depth 16: 4k random reads 27k IOPS through the pool, 36–50k on the
 * loop; 4k random writes about a fifth more). One that takes longer than `slowMs` went to the disk
 * (a read not cached, a write held by writeback): I/O then goes to the pool for a pause, so the
 * loop never waits on the disk long. The pause starts at `pauseMinMs` and doubles, up to
 * `pauseMaxMs`, while the first I/O back on the loop is slow again; a fast one resets it.
 */

/** Options of a LoopIoGate. */
export interface LoopIoGateOptions {
  /** Largest I/O done on the loop; larger always goes to the pool. */
  bytesMax: number;
  /** An I/O on the loop slower than this went to the disk and starts a pause. */
  slowMs: number;
  /** First pause after a slow I/O. */
  pauseMinMs: number;
  /** Longest pause, reached by doubling while I/O back on the loop stays slow. */
  pauseMaxMs: number;
  /** Clock in ms, for tests. Default performance.now. */
  now?: () => number;
}

/** Decides, per I/O, between the loop's thread and the thread pool (see the file's comment). */
export class LoopIoGate {
  private pausedUntil = 0;
  private pauseMs: number;
  private readonly bytesMax: number;
  private readonly slowMs: number;
  private readonly pauseMinMs: number;
  private readonly pauseMaxMs: number;
  private readonly now: () => number;

  constructor(opts: LoopIoGateOptions) {
    this.bytesMax = opts.bytesMax;
    this.slowMs = opts.slowMs;
    this.pauseMinMs = this.pauseMs = opts.pauseMinMs;
    this.pauseMaxMs = opts.pauseMaxMs;
    this.now = opts.now ?? (() => performance.now());
  }

  /** Whether I/O of this size goes on the loop now. */
  allows(bytes: number): boolean {
    return bytes <= this.bytesMax && this.now() >= this.pausedUntil;
  }

  /** Runs `io` on the loop, timing it. */
  run<T>(io: () => T): T {
    const t0 = this.now();
    try {
      return io();
    } finally {
      const took = this.now() - t0;
      if (took > this.slowMs) {
        this.pausedUntil = t0 + took + this.pauseMs;
        this.pauseMs = Math.min(this.pauseMs * 2, this.pauseMaxMs);
      } else this.pauseMs = this.pauseMinMs;
    }
  }
}
