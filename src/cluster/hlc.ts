/**
 * The hybrid logical clock (docs/cluster.md, "Time: the hybrid logical clock"). A timestamp is
 * `(wall ms, logical)` in one unsigned 64-bit value, `wall << 16 | logical`, so timestamps
 * compare as integers. In JSON it is the decimal string of that integer (`formatHlc`), which
 * round-trips exactly where a JSON number would not (2^53).
 *
 * The clock never hands out a value at or below one it handed out before, in this process or an
 * earlier one: it persists an upper bound of the wall part (`DIR/cluster/hlc`) before using
 * values up to it, a window at a time, and opens above the bound it finds. So neither kill -9 nor
 * a system clock set back makes it repeat itself.
 */
import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { open, unlink } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ClusterError, ClusterErrorCode } from './errors.ts';

/** Bits of the logical counter, below the wall milliseconds. */
export const HLC_LOGICAL_BITS = 16;
/** The largest logical counter; one more carries into the wall part (the clock runs 1 ms ahead). */
export const HLC_LOGICAL_MAX = (1 << HLC_LOGICAL_BITS) - 1;
/** The largest wall part: 48 bits of ms, past the year 10000. */
export const HLC_WALL_MS_MAX = 2 ** (64 - HLC_LOGICAL_BITS) - 1;
/** How far ahead of use the bound is persisted, by default. */
export const HLC_WINDOW_MS_DEFAULT = 10_000;
/** How far ahead of our clock a received timestamp may be, by default, before it is refused. */
export const HLC_MAX_AHEAD_MS_DEFAULT = 3_600_000;

const U64_MAX = (1n << 64n) - 1n;

/** A timestamp as its 64-bit value. */
export type HlcTimestamp = bigint;

/** The timestamp of `(wallMs, logical)`. */
export function encodeHlc(wallMs: number, logical: number): HlcTimestamp {
  return (BigInt(wallMs) << BigInt(HLC_LOGICAL_BITS)) | BigInt(logical);
}

/** The wall part of a timestamp, in ms since the epoch. */
export function hlcWallMs(ts: HlcTimestamp): number {
  return Number(ts >> BigInt(HLC_LOGICAL_BITS));
}

/** The logical part of a timestamp. */
export function hlcLogical(ts: HlcTimestamp): number {
  return Number(ts & BigInt(HLC_LOGICAL_MAX));
}

/** The JSON form of a timestamp: its decimal integer. */
export function formatHlc(ts: HlcTimestamp): string {
  return ts.toString();
}

/** Reads formatHlc's form back; CLUSTER_INVALID unless it is a decimal integer of 64 bits. */
export function parseHlc(text: string): HlcTimestamp {
  if (!/^(0|[1-9][0-9]{0,19})$/.test(text) || BigInt(text) > U64_MAX) {
    throw new ClusterError(ClusterErrorCode.INVALID, `not a clock value (a decimal integer below 2^64): ${JSON.stringify(text.slice(0, 40))}`);
  }
  return BigInt(text);
}

/** Where the clock keeps its upper bound. */
export interface HlcBoundStore {
  /** The bound persisted last (wall ms), or null when there is none yet. */
  load(): number | null;
  /** Persists `boundMs` durably before it returns. */
  saveSync(boundMs: number): void;
  /**
   * Persists `boundMs` durably without blocking. Must never leave a lower bound in place of a
   * higher one saved by saveSync meanwhile.
   */
  save(boundMs: number): Promise<void>;
}

/**
 * The bound in a file (`DIR/cluster/hlc`): the decimal wall ms and a newline, replaced
 * atomically (a temporary file fsynced, renamed over it, the directory fsynced).
 */
export function fileBoundStore(path: string): HlcBoundStore {
  // The highest bound renamed into place: an asynchronous save whose rename would come after a
  // higher synchronous one's is dropped, so the file never goes backwards.
  let renamedMs = -1;
  const syncDirSync = () => {
    const fd = openSync(dirname(path), 'r');
    try {
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
  };
  return {
    load() {
      let text: string;
      try {
        text = readFileSync(path, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
        throw err;
      }
      if (!/^[0-9]{1,16}\n$/.test(text) || Number(text) > HLC_WALL_MS_MAX) {
        // Written atomically, so this is not a torn write: refuse rather than guess a bound.
        throw new ClusterError(ClusterErrorCode.INVALID, `${path} is damaged: expected a decimal ms and a newline, found ${JSON.stringify(text.slice(0, 40))}`);
      }
      renamedMs = Number(text);
      return renamedMs;
    },
    saveSync(boundMs) {
      const tmp = `${path}.tmp-sync`;
      const fd = openSync(tmp, 'w');
      try {
        writeSync(fd, `${boundMs}\n`);
        fsyncSync(fd);
      } finally {
        closeSync(fd);
      }
      renameSync(tmp, path);
      renamedMs = Math.max(renamedMs, boundMs);
      syncDirSync();
    },
    async save(boundMs) {
      const tmp = `${path}.tmp-async`;
      const fh = await open(tmp, 'w');
      try {
        await fh.writeFile(`${boundMs}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      if (renamedMs >= boundMs) {
        await unlink(tmp).catch(() => {});
        return;
      }
      // Checked and renamed in one turn of the event loop: no saveSync can come in between.
      renameSync(tmp, path);
      renamedMs = boundMs;
      const dir = await open(dirname(path), 'r');
      try {
        await dir.sync();
      } finally {
        await dir.close();
      }
    },
  };
}

/** Options of Hlc.open(). */
export interface HlcOptions {
  /** Where the bound is persisted: fileBoundStore(DIR/cluster/hlc) in a node. */
  readonly store: HlcBoundStore;
  /** The system clock in ms; Date.now by default (tests give their own). */
  readonly wallMs?: () => number;
  /** How far ahead of use the bound is persisted. */
  readonly windowMs?: number;
  /** A received timestamp further ahead of our clock than this is refused (CLUSTER_CLOCK_SKEW). */
  readonly maxAheadMs?: number;
}

/**
 * A hybrid logical clock. now() and update() are synchronous: they block on a file write only
 * when the clock reaches its persisted bound before the write ahead of it (started half a
 * window early, in the background) is done, so normally never; at most once a window.
 */
export class Hlc {
  readonly #store: HlcBoundStore;
  readonly #wallMs: () => number;
  readonly #windowMs: number;
  readonly #maxAheadMs: number;
  /** The last value handed out, as its two parts. */
  #wall: number;
  #logical: number;
  /** Every value handed out has its wall part at or below this, and it is on disk. */
  #boundMs: number;
  #saving: Promise<void> | null = null;

  private constructor(options: HlcOptions, lastBoundMs: number | null) {
    this.#store = options.store;
    this.#wallMs = options.wallMs ?? Date.now;
    this.#windowMs = options.windowMs ?? HLC_WINDOW_MS_DEFAULT;
    this.#maxAheadMs = options.maxAheadMs ?? HLC_MAX_AHEAD_MS_DEFAULT;
    // Above anything an earlier process may have handed out: the next value is past its bound.
    this.#wall = lastBoundMs ?? 0;
    this.#logical = lastBoundMs === null ? 0 : HLC_LOGICAL_MAX;
    this.#boundMs = lastBoundMs ?? -1;
  }

  /** Opens the clock above the bound `store` holds and persists a new bound one window ahead. */
  static open(options: HlcOptions): Hlc {
    const clock = new Hlc(options, options.store.load());
    const start = Math.max(clock.#physicalMs(), clock.#wall + 1);
    clock.#store.saveSync(start + clock.#windowMs);
    clock.#boundMs = start + clock.#windowMs;
    return clock;
  }

  /** A timestamp above every one this clock handed out or received. */
  now(): HlcTimestamp {
    const wall = this.#physicalMs();
    if (wall > this.#wall) return this.#advance(wall, 0);
    return this.#advance(this.#wall, this.#logical + 1);
  }

  /**
   * Merges a timestamp received from a peer and returns a timestamp above it and above every
   * one this clock handed out. A timestamp more than maxAheadMs ahead of our clock is refused
   * (CLUSTER_CLOCK_SKEW), not clamped: taking it would drag every later stamp of this node that
   * far into the future, and clamping would break the promise of being above what was received.
   */
  update(remote: HlcTimestamp): HlcTimestamp {
    if (remote < 0n || remote > U64_MAX) {
      throw new ClusterError(ClusterErrorCode.INVALID, `not a clock value (an unsigned 64-bit integer): ${remote}`);
    }
    const remoteWall = hlcWallMs(remote);
    const remoteLogical = hlcLogical(remote);
    const wall = this.#physicalMs();
    const ours = Math.max(wall, this.#wall);
    if (remoteWall > ours + this.#maxAheadMs) {
      throw new ClusterError(
        ClusterErrorCode.CLOCK_SKEW,
        `a peer's clock is ${remoteWall - ours} ms ahead of ours (at most ${this.#maxAheadMs} ms accepted)`,
      );
    }
    const top = Math.max(wall, this.#wall, remoteWall);
    let logical: number;
    if (top === this.#wall && top === remoteWall) logical = Math.max(this.#logical, remoteLogical) + 1;
    else if (top === this.#wall) logical = this.#logical + 1;
    else if (top === remoteWall) logical = remoteLogical + 1;
    else logical = 0;
    return this.#advance(top, logical);
  }

  /** The last timestamp handed out (for a record that shows the clock, not for stamping). */
  last(): HlcTimestamp {
    return encodeHlc(this.#wall, this.#logical);
  }

  /** Resolves once the background write of the bound, if any, is done (for shutdown and tests). */
  async idle(): Promise<void> {
    while (this.#saving) await this.#saving;
  }

  #physicalMs(): number {
    const ms = Math.floor(this.#wallMs());
    if (!(ms >= 0 && ms <= HLC_WALL_MS_MAX)) throw new Error(`the system clock reads ${ms} ms, outside 0..2^48`);
    return ms;
  }

  /** Hands out `(wall, logical)`, carrying logical overflow into the wall part, after the bound allows it. */
  #advance(wall: number, logical: number): HlcTimestamp {
    if (logical > HLC_LOGICAL_MAX) {
      wall += 1;
      logical = 0;
    }
    if (wall > this.#boundMs) {
      // Past the bound: durable before the value exists, whatever that costs now.
      const boundMs = wall + this.#windowMs;
      this.#store.saveSync(boundMs);
      this.#boundMs = boundMs;
    } else if (wall > this.#boundMs - this.#windowMs / 2 && this.#saving === null) {
      this.#saveAhead(wall + this.#windowMs);
    }
    this.#wall = wall;
    this.#logical = logical;
    return encodeHlc(wall, logical);
  }

  #saveAhead(boundMs: number): void {
    this.#saving = this.#store.save(boundMs).then(
      () => {
        this.#boundMs = Math.max(this.#boundMs, boundMs);
        this.#saving = null;
      },
      // Not fatal here: if the disk is failing, the synchronous write at the bound meets the
      // same error and throws it to the caller that needs the value.
      () => {
        this.#saving = null;
      },
    );
  }
}
