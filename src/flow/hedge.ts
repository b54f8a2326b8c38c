/**
 * Hedged requests (docs/flow.md; a restore's range reads use them, docs/backup.md, "Data
 * movers"): a request still running past a deadline taken from the measured latencies is issued
 * again; the first result wins and the other is discarded. One slow disk, one slow S3 connection
 * or one overloaded server node then costs one request's worth of duplicated work instead of
 * holding up everything queued behind it.
 */
import assert from 'node:assert/strict';

/** Options of a Hedger. */
export interface HedgerOptions {
  /** The deadline is this many times the `quantile` of recent latencies. Default 3. */
  factor?: number;
  /** Quantile of recent latencies the deadline is based on. Default 0.9. */
  quantile?: number;
  /** Shortest deadline. Default 100 ms (a local disk's or a busy machine's hiccup is not worth a second read). */
  deadlineMsMin?: number;
  /** Longest deadline. Default 30 s. */
  deadlineMsMax?: number;
  /** Latencies needed before any request is hedged. Default 8. */
  samplesMin?: number;
  /** Latencies remembered (the newest). Default 64. */
  samplesMax?: number;
  /** Hedges racing their first request at once. Default 2. */
  extraMax?: number;
  /** Requests that lost a race and still run (their result will be discarded) before hedging stops. Default 8. */
  abandonedMax?: number;
  /** Clock in ms. Default performance.now. */
  now?: () => number;
}

/** What a Hedger did, for `--json` stats. */
export interface HedgerStats {
  /** Requests run, requests that passed their deadline, second requests issued, and won. */
  requests: number;
  timedOut: number;
  hedged: number;
  hedgesWon: number;
  /** Deadlines passed without a second request (extraMax or abandonedMax reached, or no budget for it). */
  hedgesSkipped: number;
  /** Requests that lost a race and have not finished yet. */
  abandoned: number;
  /** The deadline now, ms (null until samplesMin latencies are known). */
  deadlineMs: number | null;
}

/** The outcome of one run(). */
export interface HedgedResult<T> {
  value: T;
  /** Whether the request passed its deadline (a timeout, for the concurrency limiter). */
  timedOut: boolean;
}

/**
 * Runs requests with hedging. `attempt` must be safe to run twice (a read). A second request
 * needs `extra()` to say yes (and give a function to release what it took): that is how a
 * caller keeps the bytes of a duplicate within its in-flight budget.
 */
export class Hedger {
  private readonly factor: number;
  private readonly quantile: number;
  private readonly deadlineMsMin: number;
  private readonly deadlineMsMax: number;
  private readonly samplesMin: number;
  private readonly samplesMax: number;
  private readonly extraMax: number;
  private readonly abandonedMax: number;
  private readonly now: () => number;
  private readonly samples: number[] = [];
  private sampleNext = 0;
  private racing = 0;
  private abandoned = 0;
  private readonly counters = { requests: 0, timedOut: 0, hedged: 0, hedgesWon: 0, hedgesSkipped: 0 };

  constructor(options: HedgerOptions = {}) {
    this.factor = options.factor ?? 3;
    this.quantile = options.quantile ?? 0.9;
    this.deadlineMsMin = options.deadlineMsMin ?? 100;
    this.deadlineMsMax = options.deadlineMsMax ?? 30_000;
    this.samplesMin = options.samplesMin ?? 8;
    this.samplesMax = options.samplesMax ?? 64;
    this.extraMax = options.extraMax ?? 2;
    this.abandonedMax = options.abandonedMax ?? 8;
    this.now = options.now ?? (() => performance.now());
    assert.ok(this.factor >= 1 && this.quantile > 0 && this.quantile <= 1 && this.samplesMin >= 1 && this.samplesMax >= this.samplesMin && this.extraMax >= 0);
  }

  /** The deadline a request started now gets, or null while too few latencies are known. */
  deadlineMs(): number | null {
    if (this.samples.length < this.samplesMin) return null;
    const sorted = [...this.samples].sort((a, b) => a - b);
    const q = sorted[Math.min(sorted.length - 1, Math.floor(this.quantile * sorted.length))];
    return Math.min(this.deadlineMsMax, Math.max(this.deadlineMsMin, this.factor * q));
  }

  /** What the hedger did so far. */
  stats(): HedgerStats {
    return { ...this.counters, abandoned: this.abandoned, deadlineMs: this.deadlineMs() };
  }

  private record(ms: number): void {
    if (this.samples.length < this.samplesMax) this.samples.push(ms);
    else this.samples[this.sampleNext] = ms;
    this.sampleNext = (this.sampleNext + 1) % this.samplesMax;
  }

  /** Runs `attempt`, and a second one if the first passes its deadline; the first result wins. */
  run<T>(attempt: () => Promise<T>, extra: () => (() => void) | null): Promise<HedgedResult<T>> {
    this.counters.requests++;
    const deadline = this.deadlineMs();
    return new Promise<HedgedResult<T>>((resolve, reject) => {
      let settled = false;
      let timedOut = false;
      let hedged = false;
      let running = 0;
      /** Whether a request of this run counts in `abandoned` now. */
      let abandoning = false;
      let firstError: unknown = null;
      let timer: ReturnType<typeof setTimeout> | null = null;
      // What the second request took: given back once neither request runs any more, so the
      // loser's bytes stay counted until they have arrived.
      let release: (() => void) | null = null;
      /** Decides the race; `othersRunning`: requests of this run still going (losers). */
      const settle = (othersRunning: number) => {
        settled = true;
        if (timer !== null) clearTimeout(timer);
        if (!hedged) return;
        this.racing--;
        if (othersRunning > 0) {
          abandoning = true;
          this.abandoned++;
        }
      };
      const finish = () => {
        running--;
        if (running > 0) return;
        if (abandoning) {
          abandoning = false;
          this.abandoned--;
        }
        if (release !== null) {
          release();
          release = null;
        }
      };
      const start = (isHedge: boolean) => {
        running++;
        const began = this.now();
        attempt().then(
          (value) => {
            // A loser's latency is measured too: the distribution is what the backend does.
            this.record(this.now() - began);
            const won = !settled;
            if (won) settle(running - 1);
            finish();
            if (!won) return;
            if (isHedge) this.counters.hedgesWon++;
            resolve({ value, timedOut });
          },
          (err) => {
            firstError ??= err;
            // One failing attempt lets the other one still win; both failing fails the request.
            const lost = !settled && running === 1;
            if (lost) settle(0);
            finish();
            if (lost) reject(firstError);
          },
        );
      };
      const began = this.now();
      start(false);
      // The deadline is looked at again when it passes: early requests start before any latency
      // is known, and a request that found no room for a hedge tries again later.
      const onDeadline = () => {
        timer = null;
        if (settled) return;
        const d = this.deadlineMs();
        const waited = this.now() - began;
        if (d === null || waited < d) {
          timer = setTimeout(onDeadline, d === null ? this.deadlineMsMin : d - waited);
          return;
        }
        if (!timedOut) this.counters.timedOut++;
        timedOut = true;
        release = this.racing < this.extraMax && this.abandoned < this.abandonedMax ? extra() : null;
        if (release === null) {
          this.counters.hedgesSkipped++;
          timer = setTimeout(onDeadline, d);
          return;
        }
        hedged = true;
        this.racing++;
        this.counters.hedged++;
        start(true);
      };
      timer = setTimeout(onDeadline, deadline ?? this.deadlineMsMin);
    });
  }
}
