/**
 * The end-to-end bandwidth estimate and the pacing it drives (docs/transfer.md, "Bandwidth
 * estimate and pacing"), after BBR: delivery-rate samples from acknowledgements summed over all
 * of a transfer's connections, a windowed maximum of them as the bottleneck bandwidth, a windowed
 * minimum of network transit as the round trip, and a pacing rate and in-flight window from the
 * two. Pure: the clock is passed in, so tests drive it with simulated links.
 */

/** BBR's startup gain, 2/ln 2: doubles the delivery rate every round. */
export const STARTUP_GAIN = 2.885;
/** Gains of the probe cycle, one a round. */
export const PROBE_GAINS = [1.25, 0.75, 1, 1, 1, 1, 1, 1] as const;
/** Rounds the bandwidth filter spans, and its shortest span in ms. */
const BW_ROUNDS = 10;
const BW_WINDOW_MS_MIN = 1_000;
/** Span of the min-RTT filter. */
const RTT_WINDOW_MS = 10_000;
/** Growth under which a startup round counts as "not growing", and how many such rounds end startup. */
const FULL_BW_GROWTH = 1.25;
const FULL_BW_ROUNDS = 3;

/** What a frame recorded as it was sent, handed back with its acknowledgement. */
export interface SendStamp {
  bytes: number;
  sentMs: number;
  /** Bytes delivered (acknowledged) when it was sent, and when that count last moved. */
  delivered: number;
  deliveredMs: number;
  /** Send time of the frame most recently acknowledged when this one was sent. */
  firstSentMs: number;
}

/** One of the estimator's phases. */
export type EstimatorState = 'startup' | 'drain' | 'probe';

/** Delivery rate, min RTT, pacing rate and window of one transfer. */
export class BandwidthEstimator {
  readonly #now: () => number;
  /** Bytes acknowledged in all, and when the count last moved. */
  #delivered = 0;
  #deliveredMs: number;
  #firstSentMs: number;
  /** Bytes sent and not acknowledged (nor given up as lost). */
  #inflight = 0;
  #round = 0;
  #nextRoundDelivered = 0;
  /** Rate samples of the bandwidth filter: [ms, round, bytes/s], oldest first. */
  #bwSamples: [number, number, number][] = [];
  /** Min-RTT filters, monotonic deques of [ms, rtt] with rtts increasing: network transit alone, and transit plus hold. */
  #rttSamples: [number, number][] = [];
  #fullRttSamples: [number, number][] = [];
  #state: EstimatorState = 'startup';
  #fullBw = 0;
  #fullBwRounds = 0;
  #cycle = 0;
  /** Smallest window, bytes (the sender: a few frames per active connection). */
  windowBytesMin: number;
  /** Cap on the pacing rate, bytes a second (Infinity: none). */
  rateMax: number;

  constructor(opts: { now?: () => number; windowBytesMin?: number; rateMax?: number } = {}) {
    this.#now = opts.now ?? (() => performance.now());
    this.#deliveredMs = this.#now();
    this.#firstSentMs = this.#deliveredMs;
    this.windowBytesMin = opts.windowBytesMin ?? 1024 * 1024;
    this.rateMax = opts.rateMax ?? Infinity;
  }

  /** Records a frame of `bytes` sent now. */
  onSend(bytes: number): SendStamp {
    const now = this.#now();
    if (this.#inflight === 0) {
      // Nothing in flight: the delivery clock restarts, so a pause does not dilute the next sample.
      this.#deliveredMs = now;
      this.#firstSentMs = now;
    }
    this.#inflight += bytes;
    return { bytes, sentMs: now, delivered: this.#delivered, deliveredMs: this.#deliveredMs, firstSentMs: this.#firstSentMs };
  }

  /** Records the acknowledgement of a frame: `transitMs` its network share of the round trip, `holdMs` the receiver's. */
  onAck(stamp: SendStamp, transitMs: number, holdMs = 0): void {
    const now = this.#now();
    this.#inflight = Math.max(0, this.#inflight - stamp.bytes);
    this.#delivered += stamp.bytes;
    this.#deliveredMs = now;
    this.#firstSentMs = stamp.sentMs;
    if (stamp.delivered >= this.#nextRoundDelivered) {
      this.#nextRoundDelivered = this.#delivered;
      this.#round++;
      this.#onRoundStart();
    }
    const intervalMs = Math.max(stamp.sentMs - stamp.firstSentMs, now - stamp.deliveredMs);
    if (intervalMs > 0.01) {
      const rate = ((this.#delivered - stamp.delivered) * 1000) / intervalMs;
      this.#bwSamples.push([now, this.#round, rate]);
    }
    windowMin(this.#rttSamples, now, Math.max(0.001, transitMs));
    windowMin(this.#fullRttSamples, now, Math.max(0.001, transitMs + holdMs));
    const bwSamples = this.#bwSamples;
    while (bwSamples.length > 1 && bwSamples[0][1] < this.#round - BW_ROUNDS && bwSamples[0][0] < now - BW_WINDOW_MS_MIN) bwSamples.shift();
    if (this.#state === 'drain' && this.#inflight <= this.bdpBytes) this.#state = 'probe';
  }

  /** Frames sent that will never be acknowledged (their connection was lost). */
  onLost(bytes: number): void {
    this.#inflight = Math.max(0, this.#inflight - bytes);
  }

  #onRoundStart(): void {
    if (this.#state === 'startup') {
      const bw = this.bandwidth;
      if (bw >= this.#fullBw * FULL_BW_GROWTH) {
        this.#fullBw = bw;
        this.#fullBwRounds = 0;
      } else if (++this.#fullBwRounds >= FULL_BW_ROUNDS) this.#state = 'drain';
    } else if (this.#state === 'probe') this.#cycle = (this.#cycle + 1) % PROBE_GAINS.length;
  }

  /** The bottleneck bandwidth, bytes a second (0 before any sample). */
  get bandwidth(): number {
    let max = 0;
    for (const s of this.#bwSamples) if (s[2] > max) max = s[2];
    return max;
  }

  /** The smallest network round trip of the last 10 s, ms (0 before any sample). */
  get minRttMs(): number {
    return this.#rttSamples.length === 0 ? 0 : this.#rttSamples[0][1];
  }

  /**
   * Bandwidth × the smallest whole round trip (network and receiver), bytes. The smallest, not
   * the median: frames queued at a slow receiver wait longer, and a window grown by that wait
   * would queue more.
   */
  get bdpBytes(): number {
    const full = this.#fullRttSamples.length === 0 ? 0 : this.#fullRttSamples[0][1];
    return (this.bandwidth * full) / 1000;
  }

  get state(): EstimatorState {
    return this.#state;
  }

  get round(): number {
    return this.#round;
  }

  get inflightBytes(): number {
    return this.#inflight;
  }

  get deliveredBytes(): number {
    return this.#delivered;
  }

  /** The gain on the estimate now. */
  get pacingGain(): number {
    if (this.#state === 'startup') return STARTUP_GAIN;
    if (this.#state === 'drain') return 1 / STARTUP_GAIN;
    return PROBE_GAINS[this.#cycle];
  }

  /** Bytes a second to pace at (Infinity before any sample: the window alone holds the sender). */
  get pacingRate(): number {
    const bw = this.bandwidth;
    const rate = bw > 0 ? bw * this.pacingGain : Infinity;
    return Math.min(rate, this.rateMax);
  }

  /** Bytes that may be in flight: twice the BDP (startup: its gain), at least windowBytesMin. */
  get windowBytes(): number {
    const gain = this.#state === 'startup' ? STARTUP_GAIN : 2;
    return Math.max(this.windowBytesMin, gain * this.bdpBytes);
  }
}

/** Adds a sample to a windowed-minimum deque (oldest first, values increasing). */
function windowMin(deque: [number, number][], now: number, value: number): void {
  while (deque.length > 0 && deque[deque.length - 1][1] >= value) deque.pop();
  deque.push([now, value]);
  while (deque.length > 1 && deque[0][0] < now - RTT_WINDOW_MS) deque.shift();
}

/**
 * A pacing clock: a send of b bytes at r bytes a second moves the next send time on by b / r.
 * A clock that fell behind the present by more than `slackBytes`' worth is pulled up, so a pause
 * earns no burst.
 */
export class PacingClock {
  #nextMs = -Infinity;

  /** ms to wait before the next send (0: now). */
  delayMs(now: number): number {
    return Math.max(0, this.#nextMs - now);
  }

  /** Records a send of `bytes` at `rate` bytes a second. */
  spend(bytes: number, rate: number, now: number, slackBytes: number): void {
    if (!Number.isFinite(rate) || rate <= 0) {
      this.#nextMs = now;
      return;
    }
    const slackMs = (slackBytes * 1000) / rate;
    this.#nextMs = Math.max(this.#nextMs, now - slackMs) + (bytes * 1000) / rate;
  }
}
