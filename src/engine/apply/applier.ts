/**
 * The index apply: durable records queue here and are moved into the index in batches, through
 * the index writer thread where it takes them, else on this thread (docs/engine.md, Write path
 * step 5 and The index writer).
 */
import assert from 'node:assert/strict';
import { RecordType } from '../format.ts';
import { comparePositions, type LogPosition } from '../log/write-log.ts';
import type { FeedRecord } from '../feed.ts';
import { IndexWriter } from '../index/writer.ts';
import { indexError } from '../index/block-index.ts';
import { EngineError, EngineErrorCode } from '../errors.ts';
import type { DriveHealth } from '../health.ts';
import type { Overlay } from '../read/overlay.ts';
import type { Reader } from '../read/reader.ts';
import { planBatch, type ApplyContext } from './plan.ts';
import { applyInline, segmentEnds, type ApplyRecord } from './inline.ts';

/**
 * Blocks of durable records gathered before the index absorbs them. One transaction rewrites
 * each index page it touches once, so at random 4 KiB writes a few large transactions cost about
 * half as much per write as many small ones.
 */
const APPLY_BATCH_BLOCKS = 65536;
/** Longest a durable record waits in the overlay for a batch to fill (StoreOptions.applyDelayMs). */
export const applyDelayMsDefault = 1000;
/**
 * Wait before applying again after an index transaction failed for a full file system. One the
 * drive failed is not tried again (docs/engine.md, "A failing drive").
 */
const APPLY_RETRY_MS = 1000;

/** Queues durable records and applies them to the index; owns the log position applied so far. */
export class Applier {
  /** The log position applied so far, as committed in the index. */
  applied: LogPosition = { segment: 0, offset: 0 };
  /** Batches the index writer committed (tests check the path is taken). */
  offThreadApplies = 0;
  /** Since open: records taken and records applied (their difference is the apply lag), bytes taken. */
  readonly totals = { records: 0, appliedRecords: 0, bytes: 0 };
  private readonly ctx: ApplyContext & { reader: Reader };
  private readonly overlay: Overlay;
  private readonly health: DriveHealth;
  private queue: FeedRecord[] = [];
  /** Blocks the records in the queue cover (zero/trim records count one). */
  private queueBlocks = 0;
  private timer: NodeJS.Timeout | null = null;
  private immediate = false;
  private delayMs = applyDelayMsDefault;
  /** The thread that writes batches of writes into the index, once recovery is over. */
  private writer: IndexWriter | null = null;
  /** The batch the index writer is committing; nothing else changes the index's blocks meanwhile. */
  private applying: Promise<void> | null = null;
  private stopped = false;

  constructor(opts: ApplyContext & { reader: Reader; overlay: Overlay; health: DriveHealth }) {
    this.ctx = { index: opts.index, history: opts.history, live: opts.live, reader: opts.reader };
    this.overlay = opts.overlay;
    this.health = opts.health;
  }

  /** Recovery is over: batches of writes go to the index writer thread from now on. */
  start(opts: { indexPath: string; delayMs: number }): void {
    this.delayMs = opts.delayMs;
    this.writer = new IndexWriter(opts.indexPath);
  }

  /** Takes durable records, in log order, and has them applied soon (the apply's feed subscription). */
  enqueue(appends: readonly FeedRecord[]): void {
    for (const a of appends) {
      this.totals.records++;
      this.totals.bytes += a.end - a.offset;
      this.queue.push(a);
      this.queueBlocks += a.header.type === RecordType.WRITE || a.header.type === RecordType.RELOCATE ? a.header.blockCount : 1;
    }
    this.schedule();
  }

  /** Has the queued records applied soon: at once when a batch is full, else after delayMs. */
  private schedule(): void {
    if (this.queueBlocks >= APPLY_BATCH_BLOCKS) {
      if (this.immediate) return;
      this.immediate = true;
      setImmediate(() => {
        this.immediate = false;
        this.applyInBackground();
      });
    } else if (this.timer === null && !this.stopped) {
      this.timer = setTimeout(this.applyInBackground, this.delayMs);
      this.timer.unref();
    }
  }

  private retryLater(): void {
    if (this.timer === null && !this.stopped) {
      this.timer = setTimeout(this.applyInBackground, APPLY_RETRY_MS);
      this.timer.unref();
    }
  }

  private clearTimer(): void {
    if (this.timer !== null) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /**
   * Applies records to the index on this thread, in one transaction with the applied position,
   * then takes the result into memory (applied position, live counters, next seq). Recovery
   * replays the log tail through here.
   */
  applyRecords(recs: readonly ApplyRecord[]): void {
    const { history, live } = this.ctx;
    const r = applyInline(this.ctx, recs, this.applied, history.seqNext - 1);
    this.applied = r.applied;
    for (const [seg, n] of r.delta) live.set(seg, (live.get(seg) ?? 0) + n);
    if (r.seqMax + 1 > history.seqNext) history.seqNext = r.seqMax + 1;
  }

  /**
   * Moves the queued durable records into the index on this thread. Should the transaction fail
   * (a full file system), nothing was applied: the records stay queued, durable in the log and
   * visible through the overlay, and are tried again later; the error is rethrown. While the
   * drive is failing nothing is applied: the records stay in the overlay, and in the log for the
   * next open to replay.
   */
  applyNow(): void {
    assert.ok(this.applying === null, 'no batch is in the index writer');
    this.clearTimer();
    if (!this.queue.length || this.health.failing) return;
    const batch = this.queue;
    const blocks = this.queueBlocks;
    this.queue = [];
    this.queueBlocks = 0;
    try {
      this.applyRecords(batch);
    } catch (err) {
      this.queue = batch.concat(this.queue);
      this.queueBlocks += blocks;
      if (!this.health.failing) this.retryLater();
      throw err;
    }
    this.totals.appliedRecords += batch.length;
    for (const a of batch) this.overlay.remove(a);
  }

  /**
   * Applies every record queued now: through the index writer when it takes them (a large batch
   * applied here would hold the event loop for hundreds of milliseconds), else here.
   */
  async applyQueued(): Promise<void> {
    await this.idle();
    if (!this.applyOffThread()) this.applyNow();
    await this.idle();
  }

  /**
   * Waits until no batch is in the index writer. A transaction on this thread goes right after
   * it, in the same turn (no batch starts before a timer or immediate runs): LMDB runs one write
   * transaction at a time, and one begun while the writer commits blocked the event loop, every
   * connection with it, until that commit ended (up to a few hundred ms under random writes).
   */
  async idle(): Promise<void> {
    while (this.applying) await this.applying;
  }

  /**
   * Applies the queued records from a timer: a batch of writes and relocations on the index
   * writer's thread, one holding zeroes or trims here. A failure is retried (see applyNow), never
   * thrown into the loop.
   */
  private readonly applyInBackground = (): void => {
    // A batch in the writer starts the next when it completes; close() applies what is left.
    if (this.applying || this.stopped || this.health.failing) return;
    try {
      if (!this.applyOffThread()) this.applyNow();
    } catch {
      // Queued again with a retry timer; the next flush, compaction or close tries too.
    }
  };

  /**
   * Plans the queued records into index changes and has the index writer commit them; false if
   * this batch is not for it (no writer, or records other than writes and relocations). Until the
   * writer has answered, the records stay in the overlay, so reads see them; then the in-memory
   * state (head cache, counters, applied position) takes the batch at once. Should the
   * transaction fail, the records are queued again, as with applyNow.
   */
  private applyOffThread(): boolean {
    const writer = this.writer;
    if (!writer?.usable || !this.queue.length || this.health.failing) return false;
    if (this.queue.some((a) => a.header.type !== RecordType.WRITE && a.header.type !== RecordType.RELOCATE)) return false;
    const { history, live, index } = this.ctx;
    const planned = planBatch(this.ctx, this.queue, history.seqNext - 1);
    if (planned === null) return false;
    const { ops, counters, seqMax } = planned;
    this.clearTimer();
    const batch = this.queue;
    const blocks = this.queueBlocks;
    this.queue = [];
    this.queueBlocks = 0;
    const last = batch[batch.length - 1];
    const end = { segment: last.segment, offset: last.end };
    const applied = comparePositions(end, this.applied) > 0 ? end : this.applied;
    this.applying = writer.write(ops, applied, seqMax + 1, counters, [...segmentEnds(batch)]).then(
      () => {
        this.offThreadApplies++;
        this.totals.appliedRecords += batch.length;
        index.cacheCommitted(ops);
        this.applied = applied;
        for (const [seg, v] of counters) live.set(seg, v);
        if (seqMax + 1 > history.seqNext) history.seqNext = seqMax + 1;
        for (const a of batch) this.overlay.remove(a);
      },
      (err) => {
        // Nothing was committed: the records go back to the front of the queue, and are tried
        // again later (through the writer, or here should it have failed), unless the drive
        // failed the transaction.
        this.queue = batch.concat(this.queue);
        this.queueBlocks += blocks;
        const e = indexError(err);
        if (e instanceof EngineError && e.code === EngineErrorCode.IO) this.health.fail(err, 'updating the block index');
        else this.retryLater();
      },
    ).finally(() => {
      this.applying = null;
      // What queued meanwhile goes next (unless a failure set its retry timer).
      if (!this.stopped && !this.health.failing && this.timer === null && this.queue.length) this.schedule();
    });
    return true;
  }

  /** Stops applying from timers (the store is closing); applyNow still works. */
  stop(): void {
    this.stopped = true;
  }

  /** Stops the index writer thread once it has finished what it was sent. */
  async close(): Promise<void> {
    await this.writer?.close();
  }
}
