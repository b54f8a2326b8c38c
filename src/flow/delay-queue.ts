/**
 * Waits until deadlines in `performance.now()` ms, many at once, with one timer (docs/latency.md,
 * "Precision"). Deadlines sit in a binary heap. Node's `setTimeout` wakes in whole milliseconds,
 * often a millisecond late, so a timer is armed only for deadlines further off than SPIN_MS, and
 * set to wake SPIN_MS early; from there the event loop is checked at every turn with
 * `setImmediate` (I/O callbacks run between the checks, so nothing waits on them) and every
 * deadline passed is released at once, in deadline order.
 */
import assert from 'node:assert/strict';

/** Below this much time to the first deadline, checks run at each turn of the loop rather than by timer. */
export const SPIN_MS = 1.5;

/** Deadlines this close are taken as passed: a check costs about this much. */
const EARLY_MS = 0.005;

/**
 * Most waits at once. Each is a client request in flight, which the servers bound long before
 * this (NBD: 1024 connections × 64 requests; the API: 64), so more is a bug, asserted.
 */
export const DELAY_WAITS_MAX = 1 << 20;

interface Waiter {
  atMs: number;
  resolve: () => void;
}

/** One queue of deadlines and its timer. */
export class DelayQueue {
  readonly #heap: Waiter[] = [];
  #timer: NodeJS.Timeout | null = null;
  #timerAtMs = Infinity;
  #immediate: NodeJS.Immediate | null = null;

  /** Waits in the queue now. */
  get size(): number {
    return this.#heap.length;
  }

  /** Resolves once `performance.now()` reaches `atMs` (at once if it has). */
  until(atMs: number): Promise<void> {
    assert(Number.isFinite(atMs), `a deadline must be a finite time: ${atMs}`);
    if (atMs - performance.now() <= EARLY_MS) return Promise.resolve();
    assert(this.#heap.length < DELAY_WAITS_MAX, `more than ${DELAY_WAITS_MAX} delayed requests at once`);
    return new Promise<void>((resolve) => {
      this.#push({ atMs, resolve });
      this.#arm();
    });
  }

  /** Releases every waiter now (a node closing should not hold its clients' last replies). */
  releaseAll(): void {
    if (this.#timer !== null) clearTimeout(this.#timer);
    if (this.#immediate !== null) clearImmediate(this.#immediate);
    this.#timer = null;
    this.#timerAtMs = Infinity;
    this.#immediate = null;
    const all = this.#heap.splice(0);
    for (const w of all) w.resolve();
  }

  #arm(): void {
    const first = this.#heap[0];
    if (first === undefined || this.#immediate !== null) return;
    const waitMs = first.atMs - performance.now();
    if (waitMs <= SPIN_MS) {
      if (this.#timer !== null) {
        clearTimeout(this.#timer);
        this.#timer = null;
        this.#timerAtMs = Infinity;
      }
      this.#immediate = setImmediate(this.#check);
      return;
    }
    const wakeMs = first.atMs - SPIN_MS;
    if (this.#timer !== null && this.#timerAtMs <= wakeMs) return;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timerAtMs = wakeMs;
    this.#timer = setTimeout(this.#wake, Math.max(0, Math.floor(waitMs - SPIN_MS)));
  }

  readonly #wake = (): void => {
    this.#timer = null;
    this.#timerAtMs = Infinity;
    this.#check();
  };

  readonly #check = (): void => {
    this.#immediate = null;
    const now = performance.now() + EARLY_MS;
    while (this.#heap.length > 0 && this.#heap[0]!.atMs <= now) this.#pop().resolve();
    this.#arm();
  };

  #push(w: Waiter): void {
    const h = this.#heap;
    let i = h.push(w) - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (h[parent]!.atMs <= w.atMs) break;
      h[i] = h[parent]!;
      i = parent;
    }
    h[i] = w;
  }

  #pop(): Waiter {
    const h = this.#heap;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= h.length) break;
        const r = l + 1;
        const c = r < h.length && h[r]!.atMs < h[l]!.atMs ? r : l;
        if (h[c]!.atMs >= last.atMs) break;
        h[i] = h[c]!;
        i = c;
      }
      h[i] = last;
    }
    return top;
  }
}
