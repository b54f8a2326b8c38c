/**
 * The latency split (docs/transfer.md, "Acknowledgements and the latency split"): each
 * acknowledged frame's round trip is the receiver's hold time (application) plus the rest
 * (network transit). Kept as histograms for metrics, a sample of the whole transfer for its
 * report, and the current interval's figures for the connection choice.
 */
import type { HistogramSample } from '../observe/index.ts';

/** Bucket bounds of both histograms, seconds. */
export const LATENCY_BOUNDS_S = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;
const RESERVOIR = 4096;

/** Percentiles of one side of the split, ms. */
export interface LatencyPercentiles {
  p50: number;
  p90: number;
  p99: number;
  max: number;
  count: number;
}

/** One interval's figures, for the connection choice. */
export interface IntervalFigures {
  frames: number;
  transitP50Ms: number;
  holdP50Ms: number;
  /** Frames whose transit exceeded the stall threshold. */
  stalls: number;
}

class Side {
  readonly counts = new Float64Array(LATENCY_BOUNDS_S.length + 1);
  sum = 0;
  count = 0;
  max = 0;
  readonly reservoir: number[] = [];

  add(ms: number, rand: number): void {
    const s = ms / 1000;
    let i = 0;
    while (i < LATENCY_BOUNDS_S.length && s > LATENCY_BOUNDS_S[i]) i++;
    this.counts[i]++;
    this.sum += s;
    this.count++;
    if (ms > this.max) this.max = ms;
    // Algorithm R: every sample of the transfer equally likely to be kept.
    if (this.reservoir.length < RESERVOIR) this.reservoir.push(ms);
    else {
      const j = Math.floor(rand * this.count);
      if (j < RESERVOIR) this.reservoir[j] = ms;
    }
  }

  percentiles(): LatencyPercentiles {
    const sorted = [...this.reservoir].sort((a, b) => a - b);
    const at = (q: number) => (sorted.length === 0 ? 0 : round3(sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]));
    return { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: round3(this.max), count: this.count };
  }
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

function median(values: number[]): number {
  if (values.length === 0) return 0;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

/** Transit and hold time of a transfer's acknowledged frames. */
export class LatencySplit {
  readonly #transit = new Side();
  readonly #hold = new Side();
  #intervalTransit: number[] = [];
  #intervalHold: number[] = [];
  readonly #recentHold: number[] = [];
  readonly #recentTransit: number[] = [];

  /** Records one acknowledged frame. */
  add(transitMs: number, holdMs: number): void {
    this.#transit.add(transitMs, Math.random());
    this.#hold.add(holdMs, Math.random());
    this.#intervalTransit.push(transitMs);
    this.#intervalHold.push(holdMs);
    this.#recentHold.push(holdMs);
    this.#recentTransit.push(transitMs);
    if (this.#recentHold.length > 64) {
      this.#recentHold.shift();
      this.#recentTransit.shift();
    }
  }

  /** Medians of the last 64 frames, ms. */
  recent(): { transitP50Ms: number; holdP50Ms: number } {
    return { transitP50Ms: round3(median(this.#recentTransit)), holdP50Ms: round3(median(this.#recentHold)) };
  }

  /**
   * The figures since the last call, and a new interval begun. A stall is a frame whose transit
   * exceeds `stallMs(median transit of the interval)`.
   */
  takeInterval(stallMs: (transitP50Ms: number) => number): IntervalFigures {
    const transitP50Ms = median(this.#intervalTransit);
    const threshold = stallMs(transitP50Ms);
    let stalls = 0;
    for (const t of this.#intervalTransit) if (t > threshold) stalls++;
    const out = { frames: this.#intervalTransit.length, transitP50Ms, holdP50Ms: median(this.#intervalHold), stalls };
    this.#intervalTransit = [];
    this.#intervalHold = [];
    return out;
  }

  /** Percentiles over the whole transfer (a uniform sample of up to 4,096 frames). */
  summary(): { transitMs: LatencyPercentiles; holdMs: LatencyPercentiles } {
    return { transitMs: this.#transit.percentiles(), holdMs: this.#hold.percentiles() };
  }

  /** Both histograms as MetricsRegistry.histogram takes them (`labels` added to each). */
  histograms(labels: Record<string, string> = {}): { transit: HistogramSample; hold: HistogramSample } {
    const of = (s: Side): HistogramSample => ({ labels, bounds: LATENCY_BOUNDS_S, counts: s.counts, sum: s.sum, count: s.count });
    return { transit: of(this.#transit), hold: of(this.#hold) };
  }
}
