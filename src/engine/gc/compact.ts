/**
 * Compaction: maintenance passes that sweep, copy the live blocks of mostly dead segments
 * forward and delete segments left without live data, paced against foreground requests
 * (docs/engine.md, Space reclaim).
 */
import { crc32 } from '../../native/index.ts';
import { Format, RecordType, EntryKind, type RecordHeader } from '../format.ts';
import { ioError, type WriteLog } from '../log/write-log.ts';
import type { BlockIndex } from '../index/block-index.ts';
import type { History } from '../history.ts';
import type { Reader } from '../read/reader.ts';
import type { Applier } from '../apply/applier.ts';
import type { Sweeper } from './sweep.ts';
import { EngineError, EngineErrorCode } from '../errors.ts';
import { Pacer } from '../../flow/index.ts';
import type { SpaceGuard } from '../space.ts';

const BS = Format.blockBytes;
const FULL_MASK = 0xff;
/** Requests a second on a store's volumes below which it is quiet (StoreOptions.quietRequestsPerSecond). */
export const quietRequestsPerSecondDefault = 200;

/** What one compaction pass did. */
export interface CompactStats {
  segmentsRemoved: number;
  bytesReclaimed: number;
  bytesRewritten: number;
}

/** Runs maintenance passes, one at a time, in the background or when asked. */
export class Compactor {
  private readonly log: WriteLog;
  private readonly index: BlockIndex;
  private readonly history: History;
  private readonly reader: Reader;
  private readonly applier: Applier;
  private readonly sweeper: Sweeper;
  private readonly live: Map<number, number>;
  private readonly space: SpaceGuard;
  private readonly isClosed: () => boolean;
  /** Whether a feed subscriber still needs a segment (see Feed.pins). */
  private readonly pinned: (segment: number) => boolean;
  /** The pass running, if any. */
  private running: Promise<unknown> | null = null;
  /** Requests on the store's volumes: `count` since `since`, `before` in the second before that. */
  private load = { since: performance.now(), count: 0, before: 0 };
  private quietRequestsPerSecond = quietRequestsPerSecondDefault;
  /** The file system under the store was short of space when the running pass began. */
  private spaceLow = false;
  /** Passes start on their own (soon) only when background maintenance is on. */
  private auto = false;
  /** A pass asked for by soon() while one was running; started when that one ends. */
  private again = false;
  /** When the last pass soon() scheduled started (soon starts at most one a second). */
  private soonAtMs = -Infinity;
  /** Set by soon(): the next pass seals a mostly dead active segment so that it can go. */
  private sealActive = false;
  /** Since open: passes finished, live bytes they copied, segment bytes they removed. */
  readonly totals = { runs: 0, rewrittenBytes: 0, reclaimedBytes: 0 };

  constructor(opts: {
    log: WriteLog; index: BlockIndex; history: History; reader: Reader; applier: Applier; sweeper: Sweeper;
    live: Map<number, number>; space: SpaceGuard; isClosed: () => boolean; pinned: (segment: number) => boolean;
  }) {
    this.log = opts.log;
    this.index = opts.index;
    this.history = opts.history;
    this.reader = opts.reader;
    this.applier = opts.applier;
    this.sweeper = opts.sweeper;
    this.live = opts.live;
    this.space = opts.space;
    this.isClosed = opts.isClosed;
    this.pinned = opts.pinned;
  }

  /** Sets the request rate below which the store counts as quiet. */
  setQuietRequestsPerSecond(n: number): void {
    this.quietRequestsPerSecond = n;
  }

  /** Lets passes start on their own: after deletes, and when a write is refused for space (soon). */
  startAuto(): void {
    this.auto = true;
  }

  /** Starts a paced background pass unless one is running. */
  background(): void {
    if (this.isClosed() || this.running) return;
    this.running = this.maintain({ compactBelow: 0.25, background: true })
      .catch(() => {})
      .finally(() => {
        this.running = null;
        if (this.again) {
          this.again = false;
          this.background();
        }
      });
  }

  /**
   * Space may be had now (a disk or snapshot deleted, a revert, a write refused for space): a
   * background pass starts at once, or when the running one ends, and seals a mostly dead active
   * segment. At most one a second; none while background maintenance is off.
   */
  soon(): void {
    if (!this.auto || this.isClosed()) return;
    this.sealActive = true;
    if (this.running) {
      this.again = true;
      return;
    }
    if (this.soonTimer !== null) return;
    const waitMs = Math.max(0, this.soonAtMs + 1000 - performance.now());
    this.soonTimer = setTimeout(() => {
      this.soonTimer = null;
      this.soonAtMs = performance.now();
      if (this.running) this.again = true;
      else this.background();
    }, waitMs);
    this.soonTimer.unref();
  }

  /** The pass soon() has scheduled, if any. */
  private soonTimer: NodeJS.Timeout | null = null;

  /** Runs an unpaced pass now, once any running pass is over. */
  async compact(): Promise<CompactStats> {
    while (this.running) await this.running.catch(() => {});
    const p = this.maintain({ compactBelow: 0.5, background: false });
    this.running = p.catch(() => {}).finally(() => (this.running = null));
    return p;
  }

  /** Waits for the running pass to end (close). */
  async idle(): Promise<void> {
    if (this.soonTimer !== null && this.isClosed()) {
      clearTimeout(this.soonTimer);
      this.soonTimer = null;
    }
    while (this.running) await this.running.catch(() => {});
  }

  /** Counts one request on a volume of this store (see quiet). */
  noteRequest(): void {
    this.rollLoad().count++;
  }

  private rollLoad(): { since: number; count: number; before: number } {
    const load = this.load;
    const now = performance.now();
    if (now - load.since >= 1000) {
      load.before = now - load.since >= 2000 ? 0 : load.count;
      load.count = 0;
      load.since = now;
    }
    return load;
  }

  /** Fewer requests than quietRequestsPerSecond came in over the last one to two seconds. */
  private quiet(): boolean {
    const load = this.rollLoad();
    return load.count + load.before < this.quietRequestsPerSecond;
  }

  /**
   * The share of the event loop a background pass takes, asked after each slice: all of it while
   * the store is quiet or its file system short of space (not `ok`, or less than a tenth or four
   * segments free); when busy, none while dead bytes are
   * under half of the log, then more as they pile up, so that reclaim keeps pace with sustained
   * writes (at random 4 KiB writes, one 256 MiB segment takes about 0.6 s of the loop to scan).
   */
  private duty(): number {
    if (this.spaceLow || this.quiet()) return 1;
    let live = 0;
    for (const v of this.live.values()) live += v;
    const dead = 1 - live / Math.max(1, this.log.totalBytes());
    return dead < 0.5 ? 0 : dead < 0.75 ? 0.2 : dead < 0.875 ? 0.5 : 1;
  }

  /** The node is nearfull or full, or less than a tenth of the file system, or four segments, is free. */
  private fileSystemShort(): boolean {
    const f = this.space.figures();
    return f.state !== 'ok' || f.freeBytes < Math.max(f.totalBytes / 10, 4 * this.log.segmentBytesMax);
  }

  /**
   * One pass: sweep, delete dead segments, copy the live blocks of mostly dead ones forward and
   * delete those. Short of space (docs/engine.md, "Getting space back"), the segments with the
   * least live data go first, each only if its live bytes fit in the free space, and each is
   * deleted as soon as its blocks are copied and indexed: a pass never needs more than one
   * segment's live bytes of room, and frees more than it uses.
   */
  private async maintain(opts: { compactBelow: number; background: boolean }): Promise<CompactStats> {
    const stats: CompactStats = { segmentsRemoved: 0, bytesReclaimed: 0, bytesRewritten: 0 };
    const drop = async () => {
      await this.log.sync();
      await this.applier.applyQueued();
      const dropped = await this.dropDeadSegments({ paced: true });
      stats.segmentsRemoved += dropped.count;
      stats.bytesReclaimed += dropped.bytes;
      if (dropped.count > 0) this.space.refresh();
    };
    const sealActive = this.sealActive || !opts.background;
    this.sealActive = false;
    await this.log.sync();
    await this.applier.applyQueued();
    await this.sweeper.sweepQueued();
    const short = this.fileSystemShort();
    if (opts.background) this.spaceLow = short;
    // Segments left with nothing live go first: deleting them copies nothing.
    await drop();
    // A delete may leave the active segment mostly dead; sealed, it can go like any other.
    const activeSize = this.log.segmentSize(this.log.activeSegment);
    const activeLive = this.live.get(this.log.activeSegment) ?? 0;
    const activeDead = activeSize - Format.segmentHeaderBytes - activeLive;
    // Only with an eighth of a segment dead in it: sealing at every snapshot delete would leave
    // the log in small segments.
    if ((sealActive || short) && activeDead >= this.log.segmentBytesMax / 8 && activeLive < activeSize * Math.max(opts.compactBelow, 0.5)) {
      this.log.startNewSegment();
      await drop();
    }
    const pacer = new Pacer(opts.background ? () => this.duty() : 1);
    // Short of space, copying any segment that is a tenth dead frees more than it takes.
    const below = short ? Math.max(opts.compactBelow, 0.9) : opts.compactBelow;
    const candidates = this.log.segmentIds().filter((id) => {
      const live = this.live.get(id) ?? 0;
      return id !== this.log.activeSegment && live > 0 && live < this.log.segmentSize(id) * below;
    });
    if (short) candidates.sort((a, b) => (this.live.get(a) ?? 0) - (this.live.get(b) ?? 0));
    for (const id of candidates) {
      if (this.isClosed() || (opts.background && this.duty() === 0)) break;
      const live = this.live.get(id) ?? 0;
      if (live === 0) continue; // dropped by an earlier step of this pass
      if (short && live + (1 << 20) > this.space.figures().freeBytes) continue;
      stats.bytesRewritten += await this.relocate(id, pacer);
      if (short) await drop();
    }
    await drop();
    this.totals.runs++;
    this.totals.rewrittenBytes += stats.bytesRewritten;
    this.totals.reclaimedBytes += stats.bytesReclaimed;
    return stats;
  }

  /**
   * Copies the live blocks of a sealed segment forward as RELOCATE records; returns bytes copied.
   * Most of a segment chosen for this is dead: a record's checksum is verified (and its bytes
   * copied) only when some block of it is still live. Paced, so that foreground requests keep
   * the loop; stops part-way when the pacer's share falls to none (a later pass finds the blocks
   * not copied yet still live here, and copies them then).
   */
  private async relocate(segment: number, pacer: Pacer): Promise<number> {
    let copied = 0;
    const writes: Promise<void>[] = [];
    for await (const rec of this.log.scan(segment, 0, { payloads: true, verify: false })) {
      const h = rec.header;
      if ((h.type !== RecordType.WRITE && h.type !== RecordType.RELOCATE) || !rec.payload) continue;
      if (!this.history.branches.has(h.branch)) continue;
      const dataOffset = rec.offset + Format.recordHeaderBytes;
      let verified = false;
      let runStart = -1;
      const flushRun = (endIdx: number) => {
        if (runStart < 0) return;
        if (!verified && crc32(rec.payload!) !== h.payloadCrc) {
          throw new EngineError(EngineErrorCode.CORRUPT, `Log segment ${segment}: record at ${rec.offset} fails its checksum; its live blocks stay where they are`);
        }
        verified = true;
        const payload = Buffer.from(rec.payload!.subarray(runStart * BS, endIdx * BS));
        const header: RecordHeader = {
          type: RecordType.RELOCATE, seq: h.seq, branch: h.branch, blockStart: h.blockStart + runStart, blockCount: endIdx - runStart,
          maskFirst: FULL_MASK, maskLast: FULL_MASK, payloadBytes: payload.length, payloadCrc: crc32(payload),
        };
        copied += payload.length;
        writes.push(this.log.append(header, payload).written);
        runStart = -1;
      };
      for (let i = 0; i < h.blockCount; i++) {
        const e = this.index.get(h.branch, h.blockStart + i, h.seq);
        const live = !!e && e.kind === EntryKind.DATA && e.segment === segment && e.offset === dataOffset + i * BS;
        if (live && runStart < 0) runStart = i;
        if (!live) flushRun(i);
      }
      flushRun(h.blockCount);
      if (writes.length > 64) await Promise.all(writes.splice(0));
      const pause = pacer.pause();
      if (pause && !(await pause)) break;
    }
    await Promise.all(writes);
    return copied;
  }

  /** Deletes sealed, fully applied segments that hold no live data; returns what was freed. */
  async dropDeadSegments(opts: { paced: boolean }): Promise<{ count: number; bytes: number }> {
    const dead: number[] = [];
    let bytes = 0;
    const applied = this.applier.applied;
    for (const id of this.log.segmentIds()) {
      if (id === this.log.activeSegment || (this.live.get(id) ?? 0) > 0 || this.reader.reading(id)) continue;
      // Records not yet applied must stay for replay; a segment with no records at all (a node
      // started and stopped before writing) has none.
      const empty = this.log.segmentSize(id) <= Format.segmentHeaderBytes;
      if (!empty && (id > applied.segment || (id === applied.segment && applied.offset < this.log.segmentSize(id)))) continue;
      if (this.log.hasPendingIn(id) || this.pinned(id)) continue;
      bytes += this.log.segmentSize(id);
      dead.push(id);
    }
    if (!dead.length) return { count: 0, bytes: 0 };
    this.index.transaction(() => {
      for (const id of dead) {
        this.index.segments.removeSync(id);
        this.index.segmentEnds!.removeSync(id);
      }
    });
    let failed: unknown = null;
    const removals = dead.map((id) => {
      this.live.delete(id);
      return this.log.removeSegment(id, opts).catch((err) => void (failed ??= ioError(err, 'removing a log segment')));
    });
    await Promise.all(removals);
    if (failed) throw failed;
    return { count: dead.length, bytes };
  }
}
