/**
 * When recurring work runs (docs/flow.md): a recurrence (every so long from an anchor, or a cron
 * expression) gives the due times; a Timetable runs each entry's work at its due times on a clock
 * it is given, so that tests drive it without waiting.
 *
 * The rules, the same for every entry:
 * - An entry remembers the time its last run started (`coveredMs`): every due time up to then is
 *   covered. Its next run is at its first due time after that.
 * - Two runs of one entry never overlap. Due times that pass while the entry cannot run (its
 *   previous run still runs, or the process was down: `coveredMs` kept from before) are not run
 *   one by one: together they are one run, started as soon as the entry can run.
 * - A run that fails is a run: its due times are covered; the next is the next due time.
 */
import { nextCronMs, type Cron } from './cron.ts';

/** How a schedule recurs. */
export type Recurrence = { kind: 'every'; everyMs: number; anchorMs: number } | { kind: 'cron'; cron: Cron };

/** The first due time of `r` strictly after `afterMs`. */
export function nextDueMs(r: Recurrence, afterMs: number): number {
  if (r.kind === 'cron') return nextCronMs(r.cron, afterMs);
  // Due at anchor + k × every, for every whole k.
  return r.anchorMs + (Math.floor((afterMs - r.anchorMs) / r.everyMs) + 1) * r.everyMs;
}

/**
 * The time and the timers a Timetable runs on. Its timers may fire early (a real clock's wait is
 * capped, so that a wall clock set forward is noticed within the cap): the Timetable checks the
 * time when one fires and waits again if it is not due yet.
 */
export interface ScheduleClock {
  /** Now, ms since the epoch. */
  now(): number;
  /** Calls `fn` once, in about `ms` of this clock's time (or earlier); the handle cancels it. */
  setTimer(fn: () => void, ms: number): unknown;
  clearTimer(handle: unknown): void;
}

/** The real clock: Date.now, and timers that do not keep the process alive, each at most `waitMsMax` (default a minute). */
export function systemClock(waitMsMax = 60_000): ScheduleClock {
  return {
    now: () => Date.now(),
    setTimer: (fn, ms) => setTimeout(fn, Math.min(Math.max(0, ms), waitMsMax)).unref(),
    clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
  };
}

/**
 * A clock `factor` times as fast as the real one from `sinceMs` on (a test's hook: a schedule of
 * an hour runs every second at 3600): now is `sinceMs + (Date.now() - sinceMs) × factor`, so it
 * goes on across a restart of the process as the real one does, only faster.
 */
export function fastClock(factor: number, sinceMs: number, waitMsMax = 60_000): ScheduleClock {
  if (!(factor >= 1) || !Number.isFinite(factor)) throw new RangeError(`A clock's speed must be at least 1, got ${factor}`);
  return {
    now: () => Math.floor(sinceMs + (Date.now() - sinceMs) * factor),
    setTimer: (fn, ms) => setTimeout(fn, Math.min(Math.max(0, ms) / factor, waitMsMax)).unref(),
    clearTimer: (h) => clearTimeout(h as NodeJS.Timeout),
  };
}

/** When a run is due and when it started, as the work hears it. */
export interface RunTimes {
  /** The due time that started it (the first of those it covers). */
  dueMs: number;
  /** When it started: every due time up to this one is covered by it. */
  startedMs: number;
}

interface Entry {
  recurrence: Recurrence;
  coveredMs: number;
  /** The next due time, while waiting for it; null while a run runs. */
  dueMs: number | null;
  timer: unknown;
  running: Promise<void> | null;
  removed: boolean;
}

/**
 * Runs each entry's work at its due times, one run of an entry at a time. `run` is the work; it
 * should settle on its own (a rejection counts as a finished run and goes to `onError`).
 */
export class Timetable {
  readonly #clock: ScheduleClock;
  readonly #run: (id: string, times: RunTimes) => Promise<void>;
  readonly #onError: (id: string, err: unknown) => void;
  readonly #entries = new Map<string, Entry>();
  #closed = false;

  constructor(opts: { clock: ScheduleClock; run: (id: string, times: RunTimes) => Promise<void>; onError?: (id: string, err: unknown) => void }) {
    this.#clock = opts.clock;
    this.#run = opts.run;
    this.#onError = opts.onError ?? (() => {});
  }

  /** Adds an entry whose due times up to `coveredMs` are covered (a new one: its creation time). */
  add(id: string, recurrence: Recurrence, coveredMs: number): void {
    if (this.#entries.has(id)) throw new RangeError(`Timetable entry ${id} exists already`);
    const e: Entry = { recurrence, coveredMs, dueMs: null, timer: null, running: null, removed: false };
    this.#entries.set(id, e);
    this.#arm(id, e);
  }

  /** Removes an entry: it runs no more. Resolves once a run of it under way has ended (at once if none). */
  remove(id: string): Promise<void> {
    const e = this.#entries.get(id);
    if (e === undefined) return Promise.resolve();
    e.removed = true;
    this.#entries.delete(id);
    if (e.timer !== null) this.#clock.clearTimer(e.timer);
    e.timer = null;
    return e.running ?? Promise.resolve();
  }

  /** The entry's next due time; while it runs, the first due time after the run's start. Null for no such entry. */
  nextMs(id: string): number | null {
    const e = this.#entries.get(id);
    if (e === undefined) return null;
    return e.dueMs ?? nextDueMs(e.recurrence, e.coveredMs);
  }

  /** Whether a run of the entry is under way. */
  running(id: string): boolean {
    return this.#entries.get(id)?.running != null;
  }

  /** Stops every timer (no run starts from now on) and waits for the runs under way. */
  async close(): Promise<void> {
    this.#closed = true;
    const runs: Promise<void>[] = [];
    for (const e of this.#entries.values()) {
      if (e.timer !== null) this.#clock.clearTimer(e.timer);
      e.timer = null;
      if (e.running !== null) runs.push(e.running);
    }
    await Promise.all(runs);
  }

  /** Waits for the next due time of the entry (or runs it at once if it has passed). */
  #arm(id: string, e: Entry): void {
    if (this.#closed || e.removed) return;
    const due = nextDueMs(e.recurrence, e.coveredMs);
    e.dueMs = due;
    const wait = due - this.#clock.now();
    if (wait <= 0) {
      this.#start(id, e, due);
      return;
    }
    e.timer = this.#clock.setTimer(() => {
      e.timer = null;
      // Early (a capped wait), or not at all if removed meanwhile.
      if (!e.removed) this.#arm(id, e);
    }, wait);
  }

  #start(id: string, e: Entry, dueMs: number): void {
    const startedMs = this.#clock.now();
    e.coveredMs = Math.max(e.coveredMs, startedMs);
    e.dueMs = null;
    // The work starts on a microtask, once the entry shows it running.
    const work = Promise.resolve().then(() => this.#run(id, { dueMs, startedMs }));
    e.running = work
      .catch((err) => this.#onError(id, err))
      .finally(() => {
        e.running = null;
        this.#arm(id, e);
      });
  }
}
