/**
 * The node's scrubs (docs/engine.md, "Scrub"; docs/observability.md): a pass over every disk in
 * the background, held to a byte rate, once an interval (a day by default), and the scrubs asked
 * for through the API (POST /api/v1/scrub), at full speed. The last finished pass over every disk
 * is kept in a small file of the data directory, so its time and result outlast a restart and the
 * next background pass keeps to the interval across restarts. Damage is logged, one warning per
 * damaged extent.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { ScrubRunner, ScrubStatus } from '../api/index.ts';
import type { ScrubProgress, ScrubReport, Store } from '../engine/index.ts';
import type { Logger } from '../observe/index.ts';
import { syncDir } from '../util/sync-dir.ts';
import type { ScrubTotals } from './metrics.ts';

/** Background scrub rate unless told: 4 MiB/s (a day's pass covers ~337 GiB). */
export const scrubRateBytesPerSecondDefault = 4 << 20;
/** Time between the starts of two background passes unless told. */
export const scrubIntervalMsDefault = 24 * 3600_000;
/** How long after the start a first background pass waits at most (foreground work settles first). */
const firstDelayMsMax = 5 * 60_000;
/** Damaged extents logged one by one per scrub; the rest are counted in the summary. */
const extentsLoggedMax = 100;

/** Options of NodeScrubs. */
export interface NodeScrubsOptions {
  store: Store;
  /** File holding the last finished pass over every disk. */
  stateFile: string;
  /** Whether a finished pass is written to it (not on a node serving read-only). Default true. */
  keepState?: boolean;
  /** Bytes a second the background pass reads; 0 turns it off. */
  rateBytesPerSecond: number;
  /** Time between the starts of two background passes. */
  intervalMs: number;
  /** Wait before the first background pass of this run (at most the interval). Default: the interval, at most 5 minutes. */
  firstDelayMs?: number;
  log: Logger;
  /** Counters the node's metrics read. */
  totals: ScrubTotals;
}

/** The last finished pass over every disk, as kept in the state file. */
interface LastPass {
  startedMs: number;
  finishedMs: number;
  damagedBlocks: number;
  damagedDisks: string[];
  bytesChecked: number;
}

/** The background scrub and the scrubs asked for, with what the last pass found. */
export class NodeScrubs implements ScrubRunner {
  private readonly store: Store;
  private readonly stateFile: string;
  private readonly keepState: boolean;
  private readonly rate: number;
  private readonly intervalMs: number;
  private readonly firstDelayMs: number;
  private readonly log: Logger;
  private readonly totals: ScrubTotals;
  private last: LastPass | null = null;
  /** When the newest pass over every disk began, finished or not. */
  private lastStartedMs: number | null = null;
  private lastError: string | null = null;
  /** Passes over every disk running now. */
  private wholeRunning = 0;
  private timer: NodeJS.Timeout | null = null;
  private nextStartMs: number | null = null;
  /** The background pass running, and how to stop it. */
  private background: { done: Promise<void>; stop: AbortController } | null = null;
  private closed = false;

  constructor(opts: NodeScrubsOptions) {
    this.store = opts.store;
    this.stateFile = opts.stateFile;
    this.keepState = opts.keepState ?? true;
    this.rate = opts.rateBytesPerSecond;
    this.intervalMs = opts.intervalMs;
    this.firstDelayMs = Math.min(opts.firstDelayMs ?? firstDelayMsMax, this.intervalMs);
    this.log = opts.log;
    this.totals = opts.totals;
  }

  /** Reads what the last pass found, and schedules the background pass (unless it is off). */
  async start(): Promise<void> {
    this.last = await this.readState();
    this.lastStartedMs = this.last?.startedMs ?? null;
    if (this.rate <= 0) return;
    const now = Date.now();
    this.schedule(Math.max(now + this.firstDelayMs, this.last === null ? 0 : this.last.startedMs + this.intervalMs));
  }

  status(): ScrubStatus {
    return {
      rateBytesPerSecond: this.rate,
      intervalMs: this.intervalMs,
      running: this.wholeRunning > 0,
      nextStartMs: this.background === null ? this.nextStartMs : null,
      lastStartedMs: this.lastStartedMs,
      lastFinishedMs: this.last?.finishedMs ?? null,
      damagedBlocks: this.last?.damagedBlocks ?? null,
      damagedDisks: [...(this.last?.damagedDisks ?? [])],
      bytesChecked: this.last?.bytesChecked ?? null,
      lastError: this.lastError,
    };
  }

  /** A scrub asked for (POST /scrub): at full speed unless a rate is asked; one of every disk counts as the last pass. */
  run(req: { disks?: string[]; rateBytesPerSecond?: number }, onProgress: (p: ScrubProgress) => void, signal: AbortSignal): Promise<ScrubReport> {
    return this.scrub({ disks: req.disks, rateBytesPerSecond: req.rateBytesPerSecond, onProgress, signal, background: false });
  }

  /** Stops the background pass and its timer; scrubs asked for stop with the store. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const bg = this.background;
    if (bg !== null) {
      bg.stop.abort();
      await bg.done;
    }
  }

  private schedule(atMs: number): void {
    if (this.closed || this.rate <= 0) return;
    if (this.timer !== null) clearTimeout(this.timer);
    this.nextStartMs = atMs;
    this.timer = setTimeout(() => this.startBackground(), Math.max(0, atMs - Date.now()));
    this.timer.unref();
  }

  private startBackground(): void {
    this.timer = null;
    if (this.closed || this.background !== null) return;
    const stop = new AbortController();
    const startedMs = Date.now();
    const done = this.scrub({ signal: stop.signal, background: true }).then(
      () => this.schedule(Math.max(startedMs + this.intervalMs, Date.now())),
      () => this.schedule(Date.now() + (stop.signal.aborted ? this.intervalMs : this.firstDelayMs)),
    ).finally(() => {
      this.background = null;
    });
    this.background = { done, stop };
  }

  /** One scrub, counted, logged, and kept as the last pass when it covered every disk. */
  private async scrub(opts: { disks?: string[]; rateBytesPerSecond?: number; onProgress?: (p: ScrubProgress) => void; signal: AbortSignal; background: boolean }): Promise<ScrubReport> {
    const whole = opts.disks === undefined;
    const startedMs = Date.now();
    const what = opts.background ? 'background scrub' : whole ? 'scrub of every disk' : `scrub of ${opts.disks!.join(', ')}`;
    let read = 0;
    this.totals.running++;
    if (whole) {
      this.wholeRunning++;
      this.lastStartedMs = startedMs;
    }
    if (opts.background) this.log.info(`${what} started`, { rateBytesPerSecond: this.rate });
    try {
      const report = await this.store.scrub({
        disks: opts.disks,
        rateBytesPerSecond: opts.background ? this.rate : opts.rateBytesPerSecond,
        signal: opts.signal,
        onProgress: (p) => {
          this.totals.readBytes += p.bytesRead - read;
          read = p.bytesRead;
          opts.onProgress?.(p);
        },
      });
      this.totals.runsSucceeded++;
      this.totals.checkedBytes += report.bytesChecked;
      this.logReport(what, report);
      if (whole) {
        this.last = { startedMs, finishedMs: Date.now(), damagedBlocks: report.damagedBlocks, damagedDisks: [...report.damagedDisks], bytesChecked: report.bytesChecked };
        this.lastError = null;
        await this.writeState(this.last);
        // A pass asked for counts as the interval's: the background one waits a whole interval from it.
        if (!opts.background && this.background === null) this.schedule(Math.max(startedMs + this.intervalMs, this.nextStartMs ?? 0));
      }
      return report;
    } catch (err) {
      // Stopped by the node's close, or by the client that asked going away: not a failure of the data.
      const stopped = opts.signal.aborted || this.closed;
      if (!stopped) {
        this.totals.runsFailed++;
        const message = (err as Error)?.message ?? String(err);
        if (whole) this.lastError = message;
        this.log.warn(`${what} failed: ${message}`, { err });
      }
      throw err;
    } finally {
      this.totals.running--;
      if (whole) this.wholeRunning--;
    }
  }

  /** Logs what a scrub found: a warning per damaged extent (the first so many) and a summary. */
  private logReport(what: string, r: ScrubReport): void {
    const seconds = (r.durationMs / 1000).toFixed(1);
    if (r.damagedBlocks === 0) {
      this.log.info(`${what} finished: clean; ${r.records} records, ${r.bytesChecked} bytes checked in ${seconds} s`, { segments: r.segments, bytesRead: r.bytesRead });
      return;
    }
    for (const e of r.damaged.slice(0, extentsLoggedMax)) {
      const seen = [...(e.head ? ['head'] : []), ...e.snapshots.map((s) => `@${s}`)].join(', ');
      this.log.warn(`damaged data on disk ${e.disk} at ${e.offset}+${e.length} (${e.reason}), read by ${seen}`, {
        disk: e.disk, offset: e.offset, length: e.length, head: e.head, snapshots: e.snapshots, segment: e.segment, recordOffset: e.recordOffset, reason: e.reason,
      });
    }
    const disks = r.damagedDisks;
    const more = r.damagedExtents > extentsLoggedMax ? ` (${r.damagedExtents - extentsLoggedMax} more extents not logged one by one)` : '';
    this.log.warn(`${what} finished: ${r.damagedBlocks} damaged blocks on disks ${disks.join(', ')}${more}`, { damagedBlocks: r.damagedBlocks, disks, extents: r.damagedExtents });
  }

  private async readState(): Promise<LastPass | null> {
    let text: string;
    try {
      text = await readFile(this.stateFile, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn(`cannot read ${this.stateFile}: ${(err as Error).message}; the last scrub is forgotten`);
      return null;
    }
    try {
      const s = JSON.parse(text) as LastPass;
      const ok = [s.startedMs, s.finishedMs, s.damagedBlocks, s.bytesChecked].every((n) => Number.isSafeInteger(n)) && Array.isArray(s.damagedDisks) && s.damagedDisks.every((d) => typeof d === 'string');
      if (ok) return { startedMs: s.startedMs, finishedMs: s.finishedMs, damagedBlocks: s.damagedBlocks, damagedDisks: s.damagedDisks, bytesChecked: s.bytesChecked };
    } catch {
      // reported below
    }
    this.log.warn(`${this.stateFile} is damaged; the last scrub is forgotten`);
    return null;
  }

  /** Keeps the last pass: written aside, renamed over, made durable. A failure is logged, not fatal. */
  private async writeState(last: LastPass): Promise<void> {
    if (!this.keepState) return;
    const tmp = `${this.stateFile}.tmp`;
    try {
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(JSON.stringify(last) + '\n');
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, this.stateFile);
      await syncDir(dirname(this.stateFile));
    } catch (err) {
      this.log.warn(`cannot keep the last scrub in ${this.stateFile}: ${(err as Error).message}`);
    }
  }
}
