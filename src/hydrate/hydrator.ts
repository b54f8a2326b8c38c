/**
 * One disk being restored: the state of each chunk, deduplicated fetches, the copied log's
 * group commit, the background copier, and the Volume clients see (docs/backup.md, "Instant
 * restore").
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { EngineError, EngineErrorCode, type AllocationExtent, type ChangeExtent, type Volume, type WriteOptions, type ZeroOptions } from '../engine/index.ts';
import { HydrateError, HydrateErrorCode } from './errors.ts';
import type { CopiedLog } from './state.ts';
import type { ChunkSource } from './source.ts';

/** Chunk states. */
const MISSING = 0;
/** Written into the disk, not yet in the copied log: a client write must wait for the log. */
const COPIED = 1;
/** In the copied log (or zero in the restore point): done for good. */
const LOGGED = 2;

/** Limits of a hydrator. */
export interface HydratorLimits {
  /** Chunks one copier batch takes. Default 16. */
  batchChunksMax?: number;
  /** Copier batches in flight at once. Default 4. */
  fetchesMax?: number;
  /** Client fetches in flight at once; more wait. Default 64. */
  clientFetchesMax?: number;
  /** First retry delay of the copier after a failure; doubles up to retryDelayMsMax. Default 1 s. */
  retryDelayMs?: number;
  /** Default 60 s. */
  retryDelayMsMax?: number;
  /** The copier logs what it copied after this many chunks or this long. Defaults 64, 1 s. */
  logEveryChunks?: number;
  logEveryMs?: number;
  /** Bytes per second the copier fetches at most (client fetches are not limited). Default: no limit. */
  copyBytesPerSecondMax?: number | null;
}

/** What a hydrator reports. */
export interface HydratorProgress {
  chunks: number;
  chunksZero: number;
  /** Non-zero chunks copied (by the copier or for clients). */
  chunksCopied: number;
  chunksMissing: number;
  /** Bytes of chunks copied. */
  bytesCopied: number;
  /** Chunks fetched because a client needed them first. */
  chunksFetchedForClients: number;
  /** The copier is waiting to retry after this error, or null. */
  lastError: string | null;
}

const blockBytes = 4096;
const zeroBlock = Buffer.alloc(blockBytes);

/** A counting semaphore. */
class Slots {
  private used = 0;
  private readonly waiters: (() => void)[] = [];
  private readonly max: number;
  constructor(max: number) {
    this.max = max;
  }
  async take(): Promise<void> {
    if (this.used < this.max) {
      this.used++;
      return;
    }
    await new Promise<void>((resolve) => this.waiters.push(resolve));
  }
  give(): void {
    const next = this.waiters.shift();
    if (next !== undefined) next();
    else this.used--;
  }
}

/** The hydration of one disk from one restore point. */
export class Hydrator {
  readonly disk: string;
  private readonly source: ChunkSource;
  /** The copier's handle on the disk (and the one chunk copies are written through). */
  private readonly volume: Volume;
  private readonly log: CopiedLog;
  private readonly state: Uint8Array;
  private readonly inflight = new Map<number, Promise<void>>();
  private readonly chunkSize: number;
  private readonly limits: Required<HydratorLimits>;
  private readonly clientSlots: Slots;
  private readonly onLog: (msg: string) => void;
  private missing = 0;
  private zero = 0;
  private copied = 0;
  private bytesCopied = 0;
  private forClients = 0;
  private lastError: string | null = null;
  /** Chunks COPIED and waiting for the copied log. */
  private pendingLog: number[] = [];
  private persistQueued: Promise<void> | null = null;
  private persistChain: Promise<void> = Promise.resolve();
  private readonly stopper = new AbortController();
  private copier: Promise<void> | null = null;

  /**
   * `logged`: chunks the copied log lists. `volume` is an open handle on the disk, owned by the
   * hydrator from now on (closed by stop()).
   */
  constructor(f: { disk: string; source: ChunkSource; volume: Volume; log: CopiedLog; logged: readonly number[]; limits?: HydratorLimits; onLog?: (msg: string) => void }) {
    this.disk = f.disk;
    this.source = f.source;
    this.volume = f.volume;
    this.log = f.log;
    this.chunkSize = f.source.snapshot.chunkSizeBytes;
    this.limits = {
      batchChunksMax: 16,
      fetchesMax: 4,
      clientFetchesMax: 64,
      retryDelayMs: 1000,
      retryDelayMsMax: 60_000,
      logEveryChunks: 64,
      logEveryMs: 1000,
      copyBytesPerSecondMax: null,
      ...f.limits,
    };
    this.clientSlots = new Slots(this.limits.clientFetchesMax);
    this.onLog = f.onLog ?? (() => {});
    this.state = new Uint8Array(f.source.chunkCount);
    for (let c = 0; c < this.state.length; c++) {
      if (f.source.isZero(c)) {
        this.state[c] = LOGGED;
        this.zero++;
      }
    }
    for (const c of f.logged) {
      if (this.state[c] === MISSING) {
        this.state[c] = LOGGED;
        this.copied++;
        this.bytesCopied += f.source.chunkBytes(c);
      }
    }
    this.missing = this.state.length - this.zero - this.copied;
  }

  /** Whether every chunk is copied. */
  get done(): boolean {
    return this.missing === 0;
  }

  progress(): HydratorProgress {
    return {
      chunks: this.state.length,
      chunksZero: this.zero,
      chunksCopied: this.copied,
      chunksMissing: this.missing,
      bytesCopied: this.bytesCopied,
      chunksFetchedForClients: this.forClients,
      lastError: this.lastError,
    };
  }

  /** Chunks [first, last] that bytes [offset, offset + length) touch, clamped to the image. */
  private chunksOf(offset: number, length: number): number[] {
    if (length <= 0 || this.state.length === 0) return [];
    const first = Math.min(Math.floor(offset / this.chunkSize), this.state.length - 1);
    const last = Math.min(Math.floor((offset + length - 1) / this.chunkSize), this.state.length - 1);
    const out: number[] = [];
    for (let c = first; c <= last; c++) out.push(c);
    return out;
  }

  /** Writes a fetched chunk into the disk: only its non-zero blocks (a missing chunk reads as zeroes or as an earlier copy of itself). */
  private async writeChunk(c: number, plain: Buffer): Promise<void> {
    if (this.state[c] !== MISSING) return; // another fetch of the same blob filled it
    const base = c * this.chunkSize;
    let runStart = -1;
    const writes: Promise<void>[] = [];
    const blocks = Math.ceil(plain.length / blockBytes);
    for (let b = 0; b <= blocks; b++) {
      const nonZero = b < blocks && !plain.subarray(b * blockBytes, Math.min((b + 1) * blockBytes, plain.length)).equals(zeroBlock.subarray(0, Math.min(blockBytes, plain.length - b * blockBytes)));
      if (nonZero && runStart < 0) runStart = b;
      if (!nonZero && runStart >= 0) {
        const from = runStart * blockBytes;
        const to = Math.min(b * blockBytes, plain.length);
        writes.push(this.volume.write(base + from, plain.subarray(from, to)));
        runStart = -1;
      }
    }
    await Promise.all(writes);
    assert.equal(this.state[c], MISSING, 'a chunk was copied twice at once');
    this.state[c] = COPIED;
    this.missing--;
    this.copied++;
    this.bytesCopied += plain.length;
    this.pendingLog.push(c);
  }

  /**
   * Starts one fetch of `chunks` (MISSING, none in flight) and registers it for each of them,
   * so later needs of those chunks wait for it rather than fetch again.
   */
  private startFetch(chunks: number[]): Promise<void> {
    const p = this.source.fetch(chunks, (c, plain) => this.writeChunk(c, plain));
    const settled = p.finally(() => {
      for (const c of chunks) if (this.inflight.get(c) === settled) this.inflight.delete(c);
    });
    for (const c of chunks) this.inflight.set(c, settled);
    settled.catch(() => {}); // waiters see the error; an unwatched failure must not crash the node
    return settled;
  }

  /**
   * Makes sure `chunks` are no longer MISSING: waits for fetches in flight, fetches the rest in
   * one go. Rejects with the repository's error if one is still missing.
   */
  private async ensure(chunks: number[]): Promise<void> {
    const mine = chunks.filter((c) => this.state[c] === MISSING && !this.inflight.has(c));
    const waits = new Set<Promise<void>>();
    for (const c of chunks) {
      const p = this.inflight.get(c);
      if (p !== undefined) waits.add(p);
    }
    if (mine.length > 0) {
      await this.clientSlots.take();
      try {
        // Taking a slot may have waited: only what is still missing and unclaimed is ours.
        const still = mine.filter((c) => this.state[c] === MISSING && !this.inflight.has(c));
        for (const c of mine) {
          const p = this.inflight.get(c);
          if (p !== undefined) waits.add(p);
        }
        if (still.length > 0) {
          this.forClients += still.length;
          waits.add(this.startFetch(still));
        }
        let error: unknown = null;
        for (const w of waits) await w.catch((err) => (error ??= err));
        if (chunks.some((c) => this.state[c] === MISSING)) throw error ?? missingChunks();
      } finally {
        this.clientSlots.give();
      }
      return;
    }
    let error: unknown = null;
    for (const w of waits) await w.catch((err) => (error ??= err));
    if (chunks.some((c) => this.state[c] === MISSING)) throw error ?? missingChunks();
  }

  /**
   * Logs every chunk COPIED so far: flushes the store (the copies become durable), appends them
   * to the copied log and syncs it. Calls while one runs share the next run.
   */
  private persist(): Promise<void> {
    if (this.persistQueued !== null) return this.persistQueued;
    const p = this.persistChain.then(async () => {
      this.persistQueued = null;
      const chunks = this.pendingLog;
      if (chunks.length === 0) return;
      this.pendingLog = [];
      try {
        await this.volume.flush();
        await this.log.append(chunks);
      } catch (err) {
        this.pendingLog.unshift(...chunks);
        throw err;
      }
      for (const c of chunks) this.state[c] = LOGGED;
    });
    this.persistQueued = p;
    this.persistChain = p.catch(() => {});
    return p;
  }

  /** Before a read of [offset, offset + length): fetches the missing chunks it touches. */
  async beforeRead(offset: number, length: number): Promise<void> {
    const chunks = this.chunksOf(offset, length).filter((c) => this.state[c] === MISSING);
    if (chunks.length > 0) await this.ensure(chunks);
  }

  /** Before a write, write-zeroes or trim: fetches the missing chunks it touches and logs them. */
  async beforeWrite(offset: number, length: number): Promise<void> {
    const chunks = this.chunksOf(offset, length).filter((c) => this.state[c] !== LOGGED);
    if (chunks.length === 0) return;
    await this.ensure(chunks.filter((c) => this.state[c] === MISSING));
    // ensure() leaves no chunk MISSING; each persist logs every COPIED chunk or fails.
    assert.ok(!chunks.some((c) => this.state[c] === MISSING), 'a write would land on a chunk not yet copied');
    while (chunks.some((c) => this.state[c] === COPIED)) await this.persist();
  }

  /** The allocation map with missing chunks shown as data, so that hole-skipping clients still read them. */
  overlayStatus(extents: AllocationExtent[], offset: number, length: number): AllocationExtent[] {
    const missing = this.chunksOf(offset, length).filter((c) => this.state[c] === MISSING);
    if (missing.length === 0) return extents;
    const out: AllocationExtent[] = [];
    const push = (from: number, to: number, hole: boolean, zero: boolean): void => {
      if (to <= from) return;
      const last = out.at(-1);
      if (last !== undefined && last.hole === hole && last.zero === zero && last.offset + last.length === from) last.length += to - from;
      else out.push({ offset: from, length: to - from, hole, zero });
    };
    let m = 0;
    for (const e of extents) {
      let at = e.offset;
      const end = e.offset + e.length;
      while (at < end) {
        while (m < missing.length && (missing[m] + 1) * this.chunkSize <= at) m++;
        const cFrom = m < missing.length ? missing[m] * this.chunkSize : Infinity;
        const cTo = m < missing.length ? (missing[m] + 1) * this.chunkSize : Infinity;
        if (at < cFrom) {
          const to = Math.min(end, cFrom);
          push(at, to, e.hole, e.zero);
          at = to;
        } else {
          const to = Math.min(end, cTo);
          push(at, to, false, false);
          at = to;
        }
      }
    }
    return out;
  }

  /**
   * Starts the background copier. Once every chunk is copied and logged, the hydrator closes its
   * volume, log and source, then runs `onDone`.
   */
  start(onDone: () => Promise<void>): void {
    assert.equal(this.copier, null);
    this.copier = this.runCopier()
      .then(async () => {
        // A client write's persist may still be appending to the log (its chunks already left
        // pendingLog): let it finish before the log is closed under it.
        await this.persistChain;
        if (this.stopper.signal.aborted || this.missing > 0 || this.pendingLog.length > 0) return;
        await this.release();
        await onDone();
      })
      .catch((err) => this.onLog(`hydrate: ${this.disk}: copier stopped: ${(err as Error).stack ?? String(err)}`));
  }

  private async runCopier(): Promise<void> {
    const running = new Set<Promise<void>>();
    let cursor = 0;
    let delay = this.limits.retryDelayMs;
    let failedAt = -1;
    let lastLogMs = Date.now();
    const signal = this.stopper.signal;
    const rate = this.limits.copyBytesPerSecondMax;
    const rateStartMs = Date.now();
    let bytesStarted = 0;
    while (!signal.aborted && this.missing > 0) {
      if (failedAt >= 0) {
        // Let the batches in flight settle, then wait before trying again.
        await Promise.allSettled(running);
        await sleep(delay, undefined, { signal }).catch(() => {});
        delay = Math.min(delay * 2, this.limits.retryDelayMsMax);
        failedAt = -1;
        cursor = 0;
        continue;
      }
      const batch: number[] = [];
      let scanned = 0;
      while (batch.length < this.limits.batchChunksMax && scanned < this.state.length) {
        if (cursor >= this.state.length) cursor = 0;
        if (this.state[cursor] === MISSING && !this.inflight.has(cursor)) batch.push(cursor);
        else if (batch.length > 0) break; // batches are runs of neighbours: one or a few range reads
        cursor++;
        scanned++;
      }
      if (batch.length === 0) {
        // Every missing chunk is being fetched (for a client or a batch): wait for one to settle.
        const any = [...running, ...this.inflight.values()];
        if (any.length === 0) break;
        await Promise.race(any).catch(() => {});
        continue;
      }
      if (rate !== null) {
        // Start a batch only when the bytes started so far fit the rate.
        const aheadMs = (bytesStarted / rate) * 1000 - (Date.now() - rateStartMs);
        if (aheadMs > 0) await sleep(aheadMs, undefined, { signal }).catch(() => {});
        if (signal.aborted) break;
        const fresh = batch.filter((c) => this.state[c] === MISSING && !this.inflight.has(c));
        if (fresh.length < batch.length) continue; // a client took some meanwhile: plan again
        bytesStarted += batch.reduce((n, c) => n + this.source.chunkBytes(c), 0);
      }
      const job = this.startFetch(batch).then(
        () => {
          delay = this.limits.retryDelayMs;
          this.lastError = null;
        },
        (err: unknown) => {
          const msg = (err as Error)?.message ?? String(err);
          if (this.lastError !== msg) this.onLog(`hydrate: ${this.disk}: fetch failed, retrying in ${delay} ms: ${msg}`);
          this.lastError = msg;
          failedAt = batch[0];
        },
      );
      running.add(job);
      void job.finally(() => running.delete(job));
      while (running.size >= this.limits.fetchesMax) await Promise.race(running);
      if (this.pendingLog.length >= this.limits.logEveryChunks || Date.now() - lastLogMs >= this.limits.logEveryMs) {
        lastLogMs = Date.now();
        await this.persist().catch((err) => {
          this.lastError = (err as Error).message;
          failedAt = 0;
        });
      }
    }
    await Promise.allSettled(running);
    if (signal.aborted) return;
    while (this.pendingLog.length > 0) {
      try {
        await this.persist();
      } catch (err) {
        this.lastError = (err as Error).message;
        await sleep(delay, undefined, { signal }).catch(() => {});
        if (signal.aborted) return;
      }
    }
  }

  /**
   * Stops the copier, waits for fetches in flight, logs what was copied, closes the volume, log
   * and source. Not to be called from `onDone` (it waits for the copier, which runs `onDone`).
   */
  async stop(): Promise<void> {
    this.stopper.abort();
    await this.copier;
    await Promise.allSettled([...this.inflight.values()]);
    await this.persist().catch((err) => this.onLog(`hydrate: ${this.disk}: cannot log the last copies (they will be fetched again): ${(err as Error).message}`));
    await this.release();
  }

  private released = false;

  /** Closes the copier's volume, the copied log and the source, once. */
  private async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.volume.close();
    await this.log.close();
    await this.source.close();
  }

  /** A client's Volume over `inner` (an open handle on the disk, which it owns). */
  wrap(inner: Volume): Volume {
    return new HydratingVolume(this, inner);
  }
}

/** The Volume an NBD client gets while its disk is restored: every call first makes its chunks present. */
/**
 * The failure of a read whose chunks are still missing after every fetch for them settled
 * without an error of its own (e.g. the restore was stopped): a typed error, so a client gets
 * an EIO reply rather than the node taking it for a bug.
 */
function missingChunks(): HydrateError {
  return new HydrateError(HydrateErrorCode.CLOSED, 'The chunks this request needs were not copied in: the instant restore stopped');
}

class HydratingVolume implements Volume {
  private readonly h: Hydrator;
  private readonly inner: Volume;
  constructor(h: Hydrator, inner: Volume) {
    this.h = h;
    this.inner = inner;
  }
  get disk(): string {
    return this.inner.disk;
  }
  get snapshot(): string | null {
    return this.inner.snapshot;
  }
  get readOnly(): boolean {
    return this.inner.readOnly;
  }
  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }
  get blockBytes(): number {
    return this.inner.blockBytes;
  }
  private closed = false;
  /**
   * Whether the hydrator should make the range present first. A range the inner volume refuses
   * is passed straight to it, so its error is the one the client gets; a closed volume is
   * refused here, before a chunk is fetched for it.
   */
  private valid(offset: number, length: number): boolean {
    if (this.closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
    return Number.isSafeInteger(offset) && Number.isSafeInteger(length) && offset >= 0 && length >= 0 && offset + length <= this.inner.sizeBytes;
  }
  async read(offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (this.valid(offset, length)) await this.h.beforeRead(offset, length);
    return this.inner.read(offset, length, into);
  }
  async write(offset: number, data: Buffer, opts?: WriteOptions): Promise<void> {
    if (this.valid(offset, data.length)) await this.h.beforeWrite(offset, data.length);
    return this.inner.write(offset, data, opts);
  }
  async writeZeroes(offset: number, length: number, opts?: ZeroOptions): Promise<void> {
    if (this.valid(offset, length)) await this.h.beforeWrite(offset, length);
    return this.inner.writeZeroes(offset, length, opts);
  }
  async trim(offset: number, length: number, opts?: WriteOptions): Promise<void> {
    if (this.valid(offset, length)) await this.h.beforeWrite(offset, length);
    return this.inner.trim(offset, length, opts);
  }
  flush(): Promise<void> {
    return this.inner.flush();
  }
  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    const extents = await this.inner.blockStatus(offset, length);
    return this.h.overlayStatus(extents, offset, length);
  }
  changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    return this.inner.changedSince(sinceSnapshot, offset, length);
  }
  close(): void {
    this.closed = true;
    this.inner.close();
  }
}
