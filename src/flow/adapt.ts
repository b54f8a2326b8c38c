/**
 * Adaptive concurrency (docs/flow.md): a counting limiter whose limit is tuned by hill climbing
 * on measured throughput, with a multiplicative decrease when errors or timeouts appear. The
 * backup data movers use it for range reads, uploads and worker tasks (docs/backup.md, "Data
 * movers").
 *
 * Why hill climbing and not plain AIMD: AIMD raises until a loss, but an I/O stage that is past
 * its best concurrency rarely loses anything, it only stops getting faster (a directory on one
 * disk, S3 behind a saturated link). Hill climbing compares the throughput of each step with the
 * one before it, so it stops at the knee of the curve and comes back down when a step does not pay.
 * Errors and timeouts still halve the limit at once, as AIMD would, because they say the
 * other side is overloaded now, before a throughput window could show it.
 */
import assert from 'node:assert/strict';

/** Options of an AdaptiveLimiter. */
export interface AdaptiveLimiterOptions {
  /** Lowest limit. At least 1. */
  min: number;
  /** Highest limit. */
  max: number;
  /** Limit to start at (clamped to [min, max]). Default min. */
  initial?: number;
  /** Shortest measuring window. Default 250 ms. */
  windowMs?: number;
  /**
   * Completions a window needs before it is judged, besides two per slot of the limit (so that a
   * window spans a few request latencies and a step's transition does not dominate it); a window
   * of 40 × windowMs is judged anyway. Default 4.
   */
  windowCompletionsMin?: number;
  /** Relative throughput change a step must make to count (up: a gain of this; down: a loss of less). Default 0.05. */
  gain?: number;
  /** Windows to hold a limit after a step was undone or an error backed it off. Default 4. */
  holdWindows?: number;
  /** Fraction of a window's completions that may fail or time out before the limit is halved. Default 0 (any). */
  errorFractionMax?: number;
  /** Clock in ms, for tests. Default performance.now. */
  now?: () => number;
}

/** What a limiter did, for `--json` stats and progress lines. */
export interface AdaptiveLimiterStats {
  /** The limit now, and the lowest and highest it has been. */
  limit: number;
  limitLow: number;
  limitHigh: number;
  /** The bounds it moves in. */
  min: number;
  max: number;
  /** Steps up kept, steps down (undone probes, errors), windows judged. */
  raised: number;
  lowered: number;
  windows: number;
  /** Completions reported as failed or timed out. */
  errors: number;
  /** Throughput of the last window judged, bytes per second. */
  bytesPerSecond: number;
}

/** A probe in progress: the limit it left and the throughput it must beat. */
interface Probe {
  from: number;
  baseline: number;
}

/**
 * A concurrency limit that adapts. Callers take a slot with acquire() or tryAcquire() before
 * starting an operation and give it back with release() (reporting the bytes moved and whether it
 * failed) or cancel() (nothing was done). Waiters are served in order.
 */
export class AdaptiveLimiter {
  readonly min: number;
  readonly max: number;
  private current: number;
  private used = 0;
  private readonly waiters: (() => void)[] = [];
  private readonly windowMs: number;
  private readonly windowCompletionsMin: number;
  private readonly gain: number;
  private readonly holdWindows: number;
  private readonly errorFractionMax: number;
  private readonly now: () => number;

  private windowStart: number;
  private windowBytes = 0;
  private windowCompletions = 0;
  private windowErrors = 0;
  /** Whether demand exceeded the limit during the window (a waiter, a refused tryAcquire, all slots used). */
  private windowSaturated = false;

  private probe: Probe | null = null;
  /** Direction of the next probe. */
  private direction: 1 | -1 = 1;
  /** Doubling steps until the first probe up fails (slow start), then steps of one. */
  private slowStart = true;
  private hold = 0;
  private readonly counters = { raised: 0, lowered: 0, windows: 0, errors: 0, bytesPerSecond: 0, limitLow: 0, limitHigh: 0 };

  constructor(options: AdaptiveLimiterOptions) {
    const { min, max } = options;
    assert.ok(Number.isSafeInteger(min) && min >= 1, `min ${min}`);
    assert.ok(Number.isSafeInteger(max) && max >= min, `max ${max}`);
    this.min = min;
    this.max = max;
    this.current = Math.min(max, Math.max(min, options.initial ?? min));
    this.windowMs = options.windowMs ?? 250;
    this.windowCompletionsMin = options.windowCompletionsMin ?? 4;
    this.gain = options.gain ?? 0.05;
    this.holdWindows = options.holdWindows ?? 4;
    this.errorFractionMax = options.errorFractionMax ?? 0;
    this.now = options.now ?? (() => performance.now());
    assert.ok(this.windowMs > 0 && this.gain > 0 && this.gain < 1 && this.holdWindows >= 0 && this.errorFractionMax >= 0);
    this.windowStart = this.now();
    this.counters.limitLow = this.counters.limitHigh = this.current;
  }

  /** The limit now. */
  get limit(): number {
    return this.current;
  }

  /** Slots taken now. */
  get inFlight(): number {
    return this.used;
  }

  /** Takes a slot if one is free and nobody waits; a refusal counts as demand above the limit. */
  tryAcquire(): boolean {
    if (this.waiters.length > 0 || this.used >= this.current) {
      this.windowSaturated = true;
      return false;
    }
    this.take();
    return true;
  }

  /** Waits for a slot. */
  async acquire(): Promise<void> {
    if (this.tryAcquire()) return;
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Gives a slot back after an operation: `bytes` it moved, `ok: false` if it failed or timed out. */
  release(outcome: { bytes: number; ok?: boolean }): void {
    assert.ok(this.used > 0, 'release without acquire');
    this.used--;
    this.windowBytes += outcome.bytes;
    this.windowCompletions++;
    if (outcome.ok === false) {
      this.windowErrors++;
      this.counters.errors++;
    }
    this.maybeJudge();
    this.wake();
  }

  /** Gives a slot back unused (the caller found nothing to do with it). */
  cancel(): void {
    assert.ok(this.used > 0, 'cancel without acquire');
    this.used--;
    this.wake();
  }

  /** What the limiter did so far. */
  stats(): AdaptiveLimiterStats {
    const c = this.counters;
    return { limit: this.current, limitLow: c.limitLow, limitHigh: c.limitHigh, min: this.min, max: this.max, raised: c.raised, lowered: c.lowered, windows: c.windows, errors: c.errors, bytesPerSecond: Math.round(c.bytesPerSecond) };
  }

  private take(): void {
    // An idle stretch before the first operation of a window is no throughput measured.
    if (this.used === 0 && this.windowCompletions === 0) this.windowStart = this.now();
    this.used++;
    if (this.used >= this.current) this.windowSaturated = true;
  }

  private wake(): void {
    while (this.waiters.length > 0 && this.used < this.current) {
      this.take();
      this.waiters.shift()!();
    }
  }

  private setLimit(limit: number): void {
    const next = Math.min(this.max, Math.max(this.min, limit));
    if (next > this.current) this.counters.raised++;
    else if (next < this.current) this.counters.lowered++;
    this.current = next;
    this.counters.limitLow = Math.min(this.counters.limitLow, next);
    this.counters.limitHigh = Math.max(this.counters.limitHigh, next);
  }

  private maybeJudge(): void {
    const elapsed = this.now() - this.windowStart;
    if (elapsed < this.windowMs) return;
    if (this.windowCompletions < Math.max(this.windowCompletionsMin, 2 * this.current) && elapsed < 40 * this.windowMs) return;
    const throughput = (this.windowBytes * 1000) / elapsed;
    const failed = this.windowErrors > this.errorFractionMax * this.windowCompletions;
    const saturated = this.windowSaturated || this.waiters.length > 0;
    this.windowStart = this.now();
    this.windowBytes = 0;
    this.windowCompletions = 0;
    this.windowErrors = 0;
    this.windowSaturated = this.used >= this.current;
    this.counters.windows++;
    this.counters.bytesPerSecond = throughput;
    this.judge(throughput, saturated, failed);
  }

  /** One step of the climb, after a window measured `throughput`. */
  private judge(throughput: number, saturated: boolean, failed: boolean): void {
    if (failed) {
      // The other side is overloaded: back off at once, as AIMD's multiplicative decrease.
      this.probe = null;
      this.slowStart = false;
      this.direction = 1;
      this.hold = this.holdWindows;
      this.setLimit(Math.floor(this.current / 2));
      return;
    }
    const p = this.probe;
    if (p !== null) {
      this.probe = null;
      if (this.current > p.from) {
        if (throughput >= p.baseline * (1 + this.gain)) {
          // The step paid: keep climbing while demand exceeds the limit.
          if (saturated && this.current < this.max) this.startProbe(1, throughput);
          return;
        }
        this.setLimit(p.from);
        this.slowStart = false;
        this.direction = -1;
        this.hold = this.holdWindows;
        return;
      }
      if (throughput >= p.baseline * (1 - this.gain)) {
        // As fast with fewer: keep going down (the baseline stays the best seen, so small losses do not add up).
        if (this.current > this.min) this.startProbe(-1, Math.max(p.baseline, throughput));
        else {
          this.direction = 1;
          this.hold = this.holdWindows;
        }
        return;
      }
      this.setLimit(p.from);
      this.direction = 1;
      this.hold = this.holdWindows;
      return;
    }
    if (this.hold > 0) {
      this.hold--;
      return;
    }
    // A window in which demand stayed below the limit says nothing about concurrency.
    if (!saturated) return;
    if (this.direction === 1 && this.current >= this.max) this.direction = -1;
    else if (this.direction === -1 && this.current <= this.min) this.direction = 1;
    if (this.current === this.min && this.current === this.max) return;
    this.startProbe(this.direction, throughput);
  }

  private startProbe(direction: 1 | -1, baseline: number): void {
    const from = this.current;
    // Steps of about 1/8 of the limit: a step of one at a high limit would change throughput by
    // less than the noise a window measures.
    const step = direction === 1 && this.slowStart ? from : Math.ceil(from / 8);
    this.setLimit(from + direction * step);
    if (this.current === from) return;
    this.probe = { from, baseline };
    this.direction = direction;
    this.wake();
  }
}
