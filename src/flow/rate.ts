/**
 * Holds background work to a rate (bytes a second, or any unit): a token bucket that fills at the
 * rate up to `burst`, and that a large take may overdraw. The caller waits out the debt before
 * going on, so the average over any stretch longer than the burst stays at the rate, whatever
 * the sizes taken. A pause in the work (the caller waited for something else) earns at most
 * `burst`, not a catch-up at full speed.
 */
import { setTimeout as sleep } from 'node:timers/promises';

/** Shortest wait worth a timer: below it the caller goes on and the debt is carried. */
const WAIT_MS_MIN = 1;

/** A token bucket: `take(n)` says how long to wait so that takes average `perSecond`. */
export class RateLimiter {
  /** Units a second. */
  readonly perSecond: number;
  private readonly burst: number;
  private readonly now: () => number;
  /** Units in the bucket (negative: owed) at `at`. */
  private tokens: number;
  private at: number;
  /** Times take() asked the caller to wait, since made (tests check that a rate was applied). */
  waits = 0;

  /**
   * `perSecond` > 0; `burst`: the most a pause earns, default a quarter second's worth. `now`
   * (ms) is for tests; default performance.now.
   */
  constructor(opts: { perSecond: number; burst?: number; now?: () => number }) {
    if (!(opts.perSecond > 0) || !Number.isFinite(opts.perSecond)) throw new RangeError(`A rate must be a positive number, got ${opts.perSecond}`);
    this.perSecond = opts.perSecond;
    this.burst = opts.burst ?? opts.perSecond / 4;
    this.now = opts.now ?? (() => performance.now());
    this.at = this.now();
    this.tokens = this.burst;
  }

  /** Takes `n` units; returns the ms to wait before going on (0: at once). */
  take(n: number): number {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.at) * this.perSecond) / 1000);
    this.at = now;
    this.tokens -= n;
    if (this.tokens >= 0) return 0;
    const ms = (-this.tokens * 1000) / this.perSecond;
    if (ms < WAIT_MS_MIN) return 0;
    this.waits++;
    return ms;
  }

  /** Takes `n` units and waits as long as take() says; rejects with the signal's reason if it aborts. */
  async wait(n: number, signal?: AbortSignal): Promise<void> {
    const ms = this.take(n);
    if (ms > 0) await sleep(ms, undefined, { signal });
  }
}
