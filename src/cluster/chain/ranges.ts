/**
 * A set of byte ranges, kept sorted and merged: what live ops wrote on a replica that is copying
 * its data in (docs/cluster.md, "Copying beside live writes"). Binary search on add and query;
 * its size is bounded by the ops taken during one catch-up.
 */
export class RangeSet {
  /** Disjoint, non-touching [start, end) pairs, sorted by start. */
  #starts: number[] = [];
  #ends: number[] = [];

  /** Ranges held (after merging). */
  get size(): number {
    return this.#starts.length;
  }

  /** Adds [start, end). */
  add(start: number, end: number): void {
    if (end <= start) return;
    // First range whose end reaches start (touching merges too), and the first beyond end.
    let lo = this.#firstEndAtLeast(start);
    let hi = lo;
    while (hi < this.#starts.length && this.#starts[hi] <= end) hi++;
    if (hi > lo) {
      start = Math.min(start, this.#starts[lo]);
      end = Math.max(end, this.#ends[hi - 1]);
    }
    this.#starts.splice(lo, hi - lo, start);
    this.#ends.splice(lo, hi - lo, end);
  }

  /** The parts of [start, end) no range covers, in order. */
  gaps(start: number, end: number): Array<[number, number]> {
    const out: Array<[number, number]> = [];
    let at = start;
    for (let i = this.#firstEndAtLeast(start + 1); i < this.#starts.length && this.#starts[i] < end && at < end; i++) {
      if (this.#starts[i] > at) out.push([at, this.#starts[i]]);
      at = Math.max(at, this.#ends[i]);
    }
    if (at < end) out.push([at, end]);
    return out;
  }

  /** Index of the first range with end ≥ x. */
  #firstEndAtLeast(x: number): number {
    let lo = 0;
    let hi = this.#ends.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.#ends[mid] < x) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
