/**
 * The durable-record feed: every log record, once durable, is published here in log order, and
 * subscribers take it: the index apply first, later replication and the continuous journal. A
 * subscriber that falls behind, or asks for records the log no longer holds, is told how to
 * catch up (docs/engine.md, The durable-record feed).
 */
import assert from 'node:assert/strict';
import { crc32 } from '../native/index.ts';
import { Format, RecordType, type RecordHeader } from './format.ts';
import { EngineError, EngineErrorCode } from './errors.ts';
import type { LogPosition, WriteLog } from './log/write-log.ts';

/**
 * A durable record: its header (type, seq, branch, block range, sector masks, payload size and
 * checksum) and where it is in the log. The payload is not held: `Feed.readPayload` reads it
 * from the log while the record is pinned (until the batch holding it is acknowledged).
 */
export interface FeedRecord {
  readonly header: Readonly<RecordHeader>;
  /** Log segment and byte offset of the record's header. */
  readonly segment: number;
  readonly offset: number;
  /** Offset just past the record. */
  readonly end: number;
}

/** Why a subscription ended, and how its subscriber catches up. */
export type FallBehind =
  /**
   * The records from `fromSeq` on are still in the log: subscribe again from there. `failed`:
   * onRecords threw or rejected, or reading the log did (`cause`).
   */
  | { resume: 'log'; fromSeq: number; reason: 'buffer-full' | 'failed'; cause?: unknown }
  /**
   * Records after `sinceSeq` may be gone (compacted away): catch up by changed blocks since a
   * snapshot taken at or before `sinceSeq` (Volume.changedSince), then subscribe from a new one.
   */
  | { resume: 'changed-blocks'; sinceSeq: number; reason: 'compacted' };

/** What a subscriber asks for and how it is told. */
export interface FeedSubscriber {
  /**
   * First seq wanted: WRITE, ZERO and TRIM records with a seq at or above it are delivered,
   * from the log first when they were published already.
   */
  fromSeq: number;
  /**
   * Also RELOCATE records (compaction's copies; same seq as the version they copy), published
   * from now on: for subscribers that track where data lives, which must keep up (return
   * nothing from onRecords). Default false.
   */
  relocations?: boolean;
  /**
   * Takes records in log order. Returning a promise holds later records back until it settles
   * (resolved: acknowledged); meanwhile they wait in a buffer of bounded size.
   */
  onRecords(batch: readonly FeedRecord[]): void | Promise<void>;
  /** The subscription has ended: it fell behind, failed, or asked for what is gone. Called once. */
  onFallBehind(info: FallBehind): void;
  /** Records waiting for a busy subscriber before it is cut off. Default feedLimits.bufferRecordsMax. */
  bufferRecordsMax?: number;
  /** Log bytes (headers and payloads) of those records. Default feedLimits.bufferBytesMax. */
  bufferBytesMax?: number;
}

/** A live subscription. */
export interface FeedSubscription {
  /** Highest seq acknowledged so far (fromSeq − 1 before the first). */
  readonly ackedSeq: number;
  /** Ends the subscription; no more calls follow. */
  close(): void;
}

/** Limits of the feed. */
export const feedLimits = {
  /** Records held for a busy subscriber by default. */
  bufferRecordsMax: 65536,
  /** Log bytes of those records by default (one segment). */
  bufferBytesMax: 256 * 1024 * 1024,
  /** Records per batch read from the log while catching up. */
  catchUpBatchRecords: 1024,
} as const;

const isChange = (h: Readonly<RecordHeader>) => h.type !== RecordType.RELOCATE;

interface Sub {
  spec: FeedSubscriber;
  recordsMax: number;
  bytesMax: number;
  /** Reading published records from the log; live ones wait in `buffer` meanwhile. */
  catchingUp: boolean;
  /** A batch handed over and not yet acknowledged. */
  inFlight: boolean;
  buffer: FeedRecord[];
  bufferBytes: number;
  ackedSeq: number;
  /** Segments from this one on must stay: records of them are to be delivered or read. */
  pinFrom: number | null;
  ended: boolean;
}

/** Publishes durable records to subscribers; see the file comment. */
export class Feed {
  private readonly log: WriteLog;
  private readonly subs = new Set<Sub>();
  /** Position just past the last record published (or, at open, the recovered log's end). */
  private frontier: LogPosition = { segment: 0, offset: 0 };
  /** Highest seq published or recovered (at open: the seq before the next one handed out). */
  private lastSeq = 0;
  /** Segments from this one on were written by this process: their seqs are known from publishing. */
  private firstLiveSegment = Infinity;
  /** Segment → its first and last WRITE/ZERO/TRIM seq, where known (null: holds none). */
  private readonly firstSeqs = new Map<number, number | null>();
  private readonly lastSeqs = new Map<number, number | null>();

  constructor(log: WriteLog) {
    this.log = log;
  }

  /**
   * Recovery is over: `lastSeq` is the highest seq the recovered log may hold, and publishing
   * starts at the log's tail, in the new active segment.
   */
  start(lastSeq: number): void {
    this.lastSeq = lastSeq;
    this.frontier = this.log.tail();
    this.firstLiveSegment = this.log.activeSegment;
  }

  /** Records from the log, durable now, in log order. */
  publish(records: readonly FeedRecord[]): void {
    for (const r of records) {
      const h = r.header;
      if (!isChange(h)) continue;
      if (h.seq > this.lastSeq) this.lastSeq = h.seq;
      if (!this.firstSeqs.has(r.segment)) this.firstSeqs.set(r.segment, h.seq);
      this.lastSeqs.set(r.segment, h.seq);
    }
    const last = records[records.length - 1];
    if (last !== undefined) this.frontier = { segment: last.segment, offset: last.end };
    for (const sub of this.subs) this.offer(sub, records);
  }

  /**
   * Subscribes from `spec.fromSeq`: records published already are read from the log first (or,
   * should some be gone, the subscriber is told to catch up by changed blocks), then it follows
   * the live feed.
   */
  subscribe(spec: FeedSubscriber): FeedSubscription {
    assert.ok(Number.isSafeInteger(spec.fromSeq) && spec.fromSeq >= 1, 'fromSeq is a seq');
    const sub: Sub = {
      spec, recordsMax: spec.bufferRecordsMax ?? feedLimits.bufferRecordsMax, bytesMax: spec.bufferBytesMax ?? feedLimits.bufferBytesMax,
      catchingUp: spec.fromSeq <= this.lastSeq, inFlight: false, buffer: [], bufferBytes: 0, ackedSeq: spec.fromSeq - 1, pinFrom: null, ended: false,
    };
    this.subs.add(sub);
    if (sub.catchingUp) {
      sub.pinFrom = 0; // until the start is found
      const until = this.frontier;
      this.catchUp(sub, until).catch((err) => this.end(sub, { resume: 'log', fromSeq: sub.ackedSeq + 1, reason: 'failed', cause: err }));
    }
    return {
      get ackedSeq() {
        return sub.ackedSeq;
      },
      close: () => {
        sub.ended = true;
        this.subs.delete(sub);
      },
    };
  }

  /** Whether a subscriber still needs segment `id` (compaction keeps it). */
  pins(id: number): boolean {
    for (const sub of this.subs) if (sub.pinFrom !== null && sub.pinFrom <= id) return true;
    return false;
  }

  /** A WRITE or RELOCATE record's payload, read from the log and checked against its checksum. */
  async readPayload(rec: FeedRecord): Promise<Buffer> {
    const out = Buffer.allocUnsafe(rec.header.payloadBytes);
    if (!out.length) return out;
    if (!this.log.segmentIds().includes(rec.segment)) {
      throw new EngineError(EngineErrorCode.NOT_FOUND, `Record ${rec.header.seq} is no longer in the log (segment ${rec.segment} was compacted)`);
    }
    await this.log.readInto(rec.segment, rec.offset + Format.recordHeaderBytes, out);
    if (crc32(out) !== rec.header.payloadCrc) throw new EngineError(EngineErrorCode.CORRUPT, `Record ${rec.header.seq} in log segment ${rec.segment} fails its checksum`);
    return out;
  }

  /** Hands live records to a subscriber, or buffers them while it is busy or catching up. */
  private offer(sub: Sub, records: readonly FeedRecord[]): void {
    const wanted = this.filter(sub, records);
    if (!wanted.length) return;
    if (!sub.catchingUp && !sub.inFlight && !sub.buffer.length) {
      this.hand(sub, wanted);
      return;
    }
    for (const r of wanted) {
      sub.buffer.push(r);
      sub.bufferBytes += Format.recordHeaderBytes + r.header.payloadBytes;
    }
    sub.pinFrom ??= sub.buffer[0].segment;
    if (sub.buffer.length > sub.recordsMax || sub.bufferBytes > sub.bytesMax) {
      this.end(sub, { resume: 'log', fromSeq: sub.ackedSeq + 1, reason: 'buffer-full' });
    }
  }

  /** The records a subscriber takes: the same array when it takes them all. */
  private filter(sub: Sub, records: readonly FeedRecord[]): readonly FeedRecord[] {
    const { fromSeq, relocations } = sub.spec;
    const takes = (r: FeedRecord) => (isChange(r.header) ? r.header.seq >= fromSeq : !!relocations);
    let all = true;
    for (const r of records) {
      if (!takes(r)) {
        all = false;
        break;
      }
    }
    return all ? records : records.filter(takes);
  }

  /** Calls the subscriber; a promise it returns holds the next batch back until it settles. */
  private hand(sub: Sub, batch: readonly FeedRecord[]): Promise<void> | void {
    let r: void | Promise<void>;
    try {
      r = sub.spec.onRecords(batch);
    } catch (err) {
      this.end(sub, { resume: 'log', fromSeq: sub.ackedSeq + 1, reason: 'failed', cause: err });
      return;
    }
    if (!(r instanceof Promise)) {
      this.ack(sub, batch);
      return;
    }
    sub.inFlight = true;
    if (!sub.catchingUp) sub.pinFrom ??= batch[0].segment;
    return r.then(
      () => {
        sub.inFlight = false;
        if (sub.ended) return;
        this.ack(sub, batch);
        if (!sub.catchingUp) this.drain(sub);
      },
      (err) => {
        sub.inFlight = false;
        this.end(sub, { resume: 'log', fromSeq: sub.ackedSeq + 1, reason: 'failed', cause: err });
      },
    );
  }

  private ack(sub: Sub, batch: readonly FeedRecord[]): void {
    for (let i = batch.length - 1; i >= 0; i--) {
      if (isChange(batch[i].header)) {
        sub.ackedSeq = Math.max(sub.ackedSeq, batch[i].header.seq);
        break;
      }
    }
  }

  /** Hands over what waited in the buffer, or unpins once nothing waits. */
  private drain(sub: Sub): void {
    if (!sub.buffer.length) {
      sub.pinFrom = null;
      return;
    }
    const batch = sub.buffer;
    sub.buffer = [];
    sub.bufferBytes = 0;
    sub.pinFrom = batch[0].segment;
    this.hand(sub, batch);
    if (!sub.inFlight && !sub.ended && !sub.buffer.length) sub.pinFrom = null;
  }

  private end(sub: Sub, info: FallBehind): void {
    if (sub.ended) return;
    sub.ended = true;
    sub.buffer = [];
    sub.pinFrom = null;
    this.subs.delete(sub);
    sub.spec.onFallBehind(info);
  }

  /** Delivers the records from fromSeq up to `until` from the log, then what the live feed buffered. */
  private async catchUp(sub: Sub, until: LogPosition): Promise<void> {
    const { fromSeq } = sub.spec;
    const start = await this.locate(fromSeq);
    if (sub.ended) return;
    if (start === 'lost') {
      this.end(sub, { resume: 'changed-blocks', sinceSeq: fromSeq - 1, reason: 'compacted' });
      return;
    }
    for (const id of this.log.segmentIds()) {
      if (start === null || id < start || id > until.segment) continue;
      sub.pinFrom = id;
      let batch: FeedRecord[] = [];
      const end = id === until.segment ? until.offset : undefined;
      for await (const rec of this.log.scan(id, 0, { payloads: false, end })) {
        if (!isChange(rec.header) || rec.header.seq < fromSeq) continue;
        batch.push({ header: rec.header, segment: rec.segment, offset: rec.offset, end: rec.end });
        if (batch.length >= feedLimits.catchUpBatchRecords) {
          await this.hand(sub, batch);
          if (sub.ended) return;
          batch = [];
        }
      }
      if (batch.length) await this.hand(sub, batch);
      if (sub.ended) return;
    }
    sub.catchingUp = false;
    sub.pinFrom = null;
    this.drain(sub);
  }

  /**
   * The segment a catch-up from `fromSeq` starts in (null: no record to read), or 'lost' when
   * records at or after it may have been compacted away. Change records lie in the log in seq
   * order; a segment missing from the numbering was deleted, and held the seqs between its
   * present neighbours' (exclusive): when those are not consecutive, some may have been lost. A
   * seq never made durable (a failed append, a crash) leaves such a gap too, so the answer errs
   * towards 'lost', never the other way.
   */
  private async locate(fromSeq: number): Promise<number | null | 'lost'> {
    const ids = this.log.segmentIds();
    const withChanges: { id: number; first: number }[] = [];
    for (const id of ids) {
      const first = await this.firstSeq(id);
      if (first !== null) withChanges.push({ id, first });
    }
    const present = new Set(ids);
    const missingBetween = (lo: number, hi: number) => {
      for (let id = lo + 1; id < hi; id++) if (!present.has(id)) return true;
      return false;
    };
    // Each gap in the numbering: what its deleted segments may have held, (after, before).
    const mayBeLost = (after: number, before: number) => after + 1 < before && before - 1 >= fromSeq;
    const activeId = ids[ids.length - 1] ?? 0;
    if (!withChanges.length) return missingBetween(0, activeId + 1) && mayBeLost(0, this.lastSeq + 1) ? 'lost' : null;
    if (missingBetween(0, withChanges[0].id) && mayBeLost(0, withChanges[0].first)) return 'lost';
    for (let i = 0; i < withChanges.length; i++) {
      const c = withChanges[i];
      const next = withChanges[i + 1];
      const before = next ? next.first : this.lastSeq + 1;
      if (!missingBetween(c.id, next ? next.id : activeId + 1) || before - 1 < fromSeq) continue;
      if (mayBeLost(await this.lastSeqOf(c.id), before)) return 'lost';
    }
    let start = withChanges[0].id;
    for (const c of withChanges) if (c.first <= fromSeq) start = c.id;
    return start;
  }

  /** The first WRITE/ZERO/TRIM seq in a segment, or null if it holds none. */
  private async firstSeq(id: number): Promise<number | null> {
    if (id >= this.firstLiveSegment) return this.firstSeqs.get(id) ?? null;
    if (!this.firstSeqs.has(id)) {
      let first: number | null = null;
      for await (const rec of this.log.scan(id, 0, { payloads: false })) {
        if (isChange(rec.header)) {
          first = rec.header.seq;
          break;
        }
      }
      this.firstSeqs.set(id, first);
    }
    return this.firstSeqs.get(id)!;
  }

  /** The last WRITE/ZERO/TRIM seq in a segment holding some (a full read for a segment of an earlier run). */
  private async lastSeqOf(id: number): Promise<number> {
    if (id < this.firstLiveSegment && !this.lastSeqs.has(id)) {
      let last: number | null = null;
      for await (const rec of this.log.scan(id, 0, { payloads: false })) if (isChange(rec.header)) last = rec.header.seq;
      this.lastSeqs.set(id, last);
    }
    const last = this.lastSeqs.get(id);
    assert.ok(last != null, `segment ${id} holds change records`);
    return last;
  }
}
