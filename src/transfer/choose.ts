/**
 * Connection choice (docs/transfer.md, "Connection choice"): how many of a transfer's primed
 * connections carry chunks, decided once an interval from that interval's measurements. Fewer
 * when the receiver is slow or the link loses packets, more while it is clean; a step that did
 * not pay is undone and the count held. Pure: the sender feeds it figures, tests feed it cases.
 */

/** What one interval measured. */
export interface ChoiceInput {
  /** Median network transit and receiver hold time of the interval's frames, ms. */
  transitP50Ms: number;
  holdP50Ms: number;
  /** Frames acknowledged in the interval, and how many of them stalled (transit past the threshold). */
  frames: number;
  stalls: number;
  /** Delivery rate over the interval, bytes a second. */
  rateBytesPerSecond: number;
}

/** A decision: the count, and why it changed (null: it did not). */
export interface Choice {
  active: number;
  reason: string | null;
}

/** Share of stalled frames above which the link counts as lossy. */
export const STALL_SHARE_MAX = 0.05;
/** Hold time the receiver may take before it counts as slow, ms, besides exceeding twice the transit. */
export const HOLD_SLOW_MS = 5;
/** Frames an interval needs to be judged. */
const FRAMES_MIN = 8;
/** Intervals a count is held after a step was undone. */
const HOLD_INTERVALS = 4;

/**
 * The stall threshold: twice the interval's median transit plus max(2 × min RTT, 10 ms). A lost
 * segment delays its frame by at least one more round trip (a retransmission timeout: 200 ms or
 * more), above what queueing or a busy sender adds to every frame alike.
 */
export function stallThresholdMs(minRttMs: number, transitP50Ms: number): number {
  return 2 * transitP50Ms + Math.max(2 * minRttMs, 10);
}

/** Chooses the active connections among `max`, starting at `max`. */
export class ConnectionChooser {
  readonly max: number;
  #active: number;
  #holdFor = 0;
  /** The last step taken and the rate before it, to undo a step that did not pay. */
  #last: { step: 1 | -1; rateBefore: number } | null = null;
  /** Lowest and highest count reached. */
  low: number;
  high: number;

  constructor(max: number, initial = max) {
    this.max = max;
    this.#active = Math.min(max, Math.max(1, initial));
    this.low = this.high = this.#active;
  }

  get active(): number {
    return this.#active;
  }

  /** Decides after an interval. */
  decide(m: ChoiceInput): Choice {
    if (m.frames < FRAMES_MIN) return { active: this.#active, reason: null };
    const last = this.#last;
    this.#last = null;
    if (last !== null) {
      const worse = last.step === -1 && m.rateBytesPerSecond < 0.9 * last.rateBefore;
      const noGain = last.step === 1 && m.rateBytesPerSecond < 1.05 * last.rateBefore;
      if (worse || noGain) {
        this.#holdFor = HOLD_INTERVALS;
        return this.#set(this.#active - last.step, worse ? 'the step down cost delivery rate: undone' : 'the step up gained nothing: undone', null);
      }
    }
    const slowReceiver = m.holdP50Ms > 2 * m.transitP50Ms && m.holdP50Ms > HOLD_SLOW_MS;
    const lossy = m.stalls / m.frames > STALL_SHARE_MAX;
    if (slowReceiver || lossy) {
      if (this.#active <= 1) return { active: 1, reason: null };
      const why = slowReceiver
        ? `the receiver is slow (hold ${m.holdP50Ms.toFixed(1)} ms, transit ${m.transitP50Ms.toFixed(1)} ms)`
        : `the link stalls (${m.stalls} of ${m.frames} frames)`;
      return this.#set(this.#active - 1, why, { step: -1, rateBefore: m.rateBytesPerSecond });
    }
    if (this.#holdFor > 0) {
      this.#holdFor--;
      return { active: this.#active, reason: null };
    }
    if (this.#active < this.max) return this.#set(this.#active + 1, 'the link is clean and the receiver keeps up', { step: 1, rateBefore: m.rateBytesPerSecond });
    return { active: this.#active, reason: null };
  }

  #set(active: number, reason: string, last: { step: 1 | -1; rateBefore: number } | null): Choice {
    this.#active = Math.min(this.max, Math.max(1, active));
    this.#last = last;
    this.low = Math.min(this.low, this.#active);
    this.high = Math.max(this.high, this.#active);
    return { active: this.#active, reason };
  }
}
