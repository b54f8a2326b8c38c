/**
 * A clock the test moves (ScheduleClock of src/flow/timetable.ts): timers fire in time order as
 * the test advances it, with the promises they start given their turn in between, so that hours
 * of schedules pass in milliseconds.
 */
import type { ScheduleClock } from '../../src/flow/index.ts';

/** Lets the promises and timers-of-zero started so far run (a few turns of the event loop). */
export async function settle(turns = 20): Promise<void> {
  for (let i = 0; i < turns; i++) await new Promise((resolve) => setImmediate(resolve));
}

export class FakeClock implements ScheduleClock {
  #now: number;
  #timers = new Map<number, { atMs: number; fn: () => void }>();
  #nextId = 1;
  /** Longest wait a timer gets (as a real clock caps them); Infinity for none. */
  readonly waitMsMax: number;

  constructor(nowMs: number, opts: { waitMsMax?: number } = {}) {
    this.#now = nowMs;
    this.waitMsMax = opts.waitMsMax ?? Infinity;
  }

  now(): number {
    return this.#now;
  }

  setTimer(fn: () => void, ms: number): unknown {
    const id = this.#nextId++;
    this.#timers.set(id, { atMs: this.#now + Math.min(Math.max(0, ms), this.waitMsMax), fn });
    return id;
  }

  clearTimer(handle: unknown): void {
    this.#timers.delete(handle as number);
  }

  /** Timers waiting. */
  get pending(): number {
    return this.#timers.size;
  }

  /**
   * Moves the clock `ms` on, firing the timers due on the way in order and settling after each;
   * with `idle`, also waiting (in real time, up to 60 s) after each until it holds: work that
   * does real I/O (a snapshot, a backup) ends before the clock moves on.
   */
  async advance(ms: number, opts: { idle?: () => boolean } = {}): Promise<void> {
    const end = this.#now + ms;
    const settled = async (): Promise<void> => {
      await settle();
      if (opts.idle === undefined) return;
      const deadline = Date.now() + 60_000;
      while (!opts.idle()) {
        if (Date.now() > deadline) throw new Error('FakeClock.advance: the work did not become idle within 60 s');
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    };
    await settled();
    for (;;) {
      let first: [number, { atMs: number; fn: () => void }] | null = null;
      for (const t of this.#timers) if (t[1].atMs <= end && (first === null || t[1].atMs < first[1].atMs)) first = t;
      if (first === null) break;
      this.#timers.delete(first[0]);
      this.#now = Math.max(this.#now, first[1].atMs);
      first[1].fn();
      await settled();
    }
    this.#now = end;
    await settled();
  }

  /** Sets the clock to `ms` (forward or back) without firing anything: a process started later, a clock stepped. */
  set(ms: number): void {
    this.#now = ms;
  }
}
