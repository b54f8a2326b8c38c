/**
 * Scrub (docs/engine.md, "Scrub"): reads the log records that hold live blocks, checks their
 * checksums, and reports the damaged blocks by disk and offset, with the snapshots and clones
 * that see them.
 *
 * Segments are read in order, each sequentially through a window of a descriptor of its own
 * (log/segment-reader.ts: O_DIRECT where the file system takes it, so that what is checked is
 * what the drive holds). A record counts when some block of it is still live (its index version
 * points at it); only those are verified. Blocks the index points at but no readable record holds (a damaged
 * header, a truncated or missing segment) are found by walking the index versions, which only a
 * segment that shows such a sign pays for: its live counter says more blocks than its records
 * hold, it is shorter than the log knows it, or it is gone.
 */
import assert from 'node:assert/strict';
import { crc32 } from '../native/index.ts';
import { Format, RecordType, EntryKind, decodeRecordHeader, type RecordHeader } from './format.ts';
import { EngineError, EngineErrorCode } from './errors.ts';
import type { LogPosition, WriteLog } from './log/write-log.ts';
import type { SegmentReader } from './log/segment-reader.ts';
import type { BlockIndex, Found } from './index/block-index.ts';
import type { ChainLink, History } from './history.ts';
import type { Reader } from './read/reader.ts';
import { Pacer, RateLimiter, SharedSlots } from '../flow/index.ts';

/** Why a block is damaged. */
export type DamageReason = 'checksum' | 'unreadable' | 'missing-segment' | 'truncated';

/** A run of damaged blocks as one disk sees them. */
export interface DamagedExtent {
  disk: string;
  /** Byte offset in the disk (a multiple of 4 KiB, the block size). */
  offset: number;
  /** Bytes: whole blocks, cut at the largest size among the views that see them. */
  length: number;
  /** Whether the disk's head reads these blocks. */
  head: boolean;
  /** Snapshots of the disk that read these blocks too, oldest first. */
  snapshots: string[];
  /** Log segment holding the damaged record. */
  segment: number;
  /** Offset of the record (or of the unreadable stretch) in the segment; null when no record could be placed (a missing segment, bytes cut off). */
  recordOffset: number | null;
  reason: DamageReason;
}

/** How far a scrub is. */
export interface ScrubProgress {
  /** Segments to read. */
  segments: number;
  segmentsDone: number;
  /** Bytes of those segments (the part the index covers). */
  bytesToRead: number;
  bytesRead: number;
}

/** Options of Store.scrub. */
export interface ScrubOptions {
  /** Disks whose data is checked (their heads, snapshots and what their clones' parents hold); all when left out. */
  disks?: string[];
  /** Bytes read a second at most; unlimited when left out. */
  rateBytesPerSecond?: number;
  /** Hears progress after each read of a segment (about every MiB). */
  onProgress?: (p: ScrubProgress) => void;
  /** Stops the scrub: it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What a scrub found. */
export interface ScrubReport {
  /** The disks whose data was checked. */
  disks: string[];
  /** Segments read. */
  segments: number;
  /** Segments compaction removed while the scrub ran (their live blocks had moved; the copies were checked when made). */
  segmentsSkipped: number;
  /** Records holding live blocks whose checksums were checked. */
  records: number;
  /** Bytes of those records. */
  bytesChecked: number;
  /** Bytes read from segment files. */
  bytesRead: number;
  durationMs: number;
  /** Damaged block versions that some disk or snapshot reads. */
  damagedBlocks: number;
  /** The disks that read some of them. */
  damagedDisks: string[];
  /** Extents they make, listed or not. */
  damagedExtents: number;
  /** Those blocks as each disk sees them, by disk and offset: the first DAMAGED_EXTENTS_MAX extents. */
  damaged: DamagedExtent[];
}

const BS = Format.blockBytes;
const HEADER = Format.recordHeaderBytes;
/** Bytes read from a segment at once. */
const WINDOW_BYTES = 1 << 20;
/** Direct I/O wants offsets and lengths in these units. */
const ALIGN = 4096;
/** Most damaged extents a report lists (a missing segment of 4 KiB records is 65,536 of them). */
export const DAMAGED_EXTENTS_MAX = 10_000;
/** Index versions walked in one turn of the event loop. */
const WALK_VERSIONS_PER_TURN = 20_000;

/** A damaged version of a block: where its data should be and why it cannot be trusted. */
interface Damaged {
  branch: number;
  block: number;
  seq: number;
  segment: number;
  /** Offset of the block's data in the segment. */
  offset: number;
  recordOffset: number | null;
  reason: DamageReason;
}

/** A stretch of a segment that holds no readable record. */
interface BadRange {
  start: number;
  end: number;
  reason: 'checksum' | 'unreadable';
}

/** A segment whose index versions are looked for: what points into it may be damaged. */
interface Suspect {
  missing: boolean;
  /** Bytes of the file as read (versions past it are cut off). */
  fileSize: number;
  bad: BadRange[];
  /** Versions from here on were not in the index when the segment was read: not judged. */
  end: number;
}

/** The drive failed a read of [start, end). */
class ReadFailed {
  readonly start: number;
  readonly end: number;
  readonly cause: unknown;
  constructor(start: number, end: number, cause: unknown) {
    this.start = start;
    this.end = end;
    this.cause = cause;
  }
}

/** The segment left the log while it was read (compaction removed it). */
class SegmentGone {}

/** A view a client reads: a disk's head (snap null) or one of its snapshots. */
interface Viewpoint {
  disk: string;
  snap: string | null;
  links: ChainLink[];
  sizeBytes: number;
}

/** What a scrub reaches of the store. */
export interface ScrubParts {
  log: WriteLog;
  index: BlockIndex;
  history: History;
  reader: Reader;
  live: Map<number, number>;
  /** The log position the index has absorbed (records past it are fresh: not checked). */
  applied: () => LogPosition;
  isClosed: () => boolean;
  /** Aborted when the store closes. */
  closing: AbortSignal;
}

/** Reads sequentially through one buffer, a window of the file at an aligned offset. */
class Window {
  /** The file's size as far as reads found it (smaller when a read came up short). */
  size: number;
  private start = 0;
  private length = 0;
  private readonly buf: Buffer;
  private readonly read: (buf: Buffer, pos: number) => Promise<number>;

  constructor(buf: Buffer, size: number, read: (buf: Buffer, pos: number) => Promise<number>) {
    assert.ok(buf.length % ALIGN === 0 && buf.length > ALIGN);
    this.buf = buf;
    this.size = size;
    this.read = read;
  }

  /** Bytes [pos, pos+n), valid until the next call; null past the end of the file. Throws ReadFailed. */
  at(pos: number, n: number): Promise<Buffer | null> {
    return this.span(pos, n, n);
  }

  /**
   * At least `min` bytes from `pos` (min ≤ the window less ALIGN), and as many more up to `max`
   * as the window holds: a view valid until the next call, or null if the file ends first. A
   * read, when needed, starts at `pos` rounded down to ALIGN. Throws ReadFailed.
   */
  async span(pos: number, min: number, max: number): Promise<Buffer | null> {
    assert.ok(min <= this.buf.length - ALIGN + 1 && min <= max);
    if (pos + min > this.size) return null;
    if (pos < this.start || pos + min > this.start + this.length) {
      const from = pos - (pos % ALIGN);
      this.start = from;
      this.length = 0;
      this.length = await this.read(this.buf, from);
      if (this.length < this.buf.length) this.size = Math.min(this.size, from + this.length);
      if (pos + min > from + this.length) return null;
    }
    return this.buf.subarray(pos - this.start, Math.min(pos + max, this.start + this.length) - this.start);
  }
}

/** One scrub: the state of a pass over the store. */
export class ScrubPass {
  private readonly p: ScrubParts;
  private readonly opts: ScrubOptions;
  /** Branches the disks asked read (null: all of them). */
  private readonly branches: Set<number> | null;
  private readonly disks: string[];
  private readonly pacer = new Pacer(1);
  private readonly rate: RateLimiter | null;
  /** Aborted by the caller or by the store's close. */
  private readonly stop: AbortSignal;
  private readonly damaged: Damaged[] = [];
  private readonly suspects = new Map<number, Suspect>();
  private readonly report: ScrubReport;
  private readonly progress: ScrubProgress = { segments: 0, segmentsDone: 0, bytesToRead: 0, bytesRead: 0 };
  private buf: Buffer | null = null;

  /** Checks the options at once (ENGINE_NOT_FOUND for an unknown disk, ENGINE_INVALID for a bad rate). */
  constructor(parts: ScrubParts, opts: ScrubOptions) {
    this.p = parts;
    this.opts = opts;
    const { history } = parts;
    if (opts.disks !== undefined && opts.disks.length === 0) throw new EngineError(EngineErrorCode.INVALID, 'A scrub of some disks names at least one');
    const rate = opts.rateBytesPerSecond;
    if (rate !== undefined && !(Number.isSafeInteger(rate) && rate > 0)) throw new EngineError(EngineErrorCode.INVALID, `A scrub's rate is a positive whole number of bytes a second, not ${rate}`);
    this.rate = rate === undefined ? null : new RateLimiter({ perSecond: rate });
    const names = opts.disks === undefined ? [...history.disks.keys()] : [...new Set(opts.disks)];
    for (const name of names) history.disk(name);
    this.disks = names.sort((a, b) => a.localeCompare(b));
    this.branches = opts.disks === undefined ? null : new Set(this.viewpoints().flatMap((v) => v.links.map((l) => l.branch)));
    this.stop = opts.signal === undefined ? parts.closing : AbortSignal.any([opts.signal, parts.closing]);
    this.report = { disks: this.disks, segments: 0, segmentsSkipped: 0, records: 0, bytesChecked: 0, bytesRead: 0, durationMs: 0, damagedBlocks: 0, damagedDisks: [], damagedExtents: 0, damaged: [] };
  }

  async run(): Promise<ScrubReport> {
    const started = performance.now();
    const { log, live } = this.p;
    const applied = this.p.applied();
    // Records past the applied position are not in the index yet (fresh): not looked at.
    const ids = (await this.segmentsToRead()).filter((id) => id <= applied.segment);
    const bound = (id: number) => (id === applied.segment ? applied.offset : Infinity);
    this.progress.segments = ids.length;
    for (const id of ids) this.progress.bytesToRead += Math.min(log.segmentSize(id), bound(id));
    for (const id of ids) {
      this.check();
      if (log.segmentSize(id) === 0) {
        // Not in the log: missing, unless compaction removed it meanwhile (its blocks moved).
        if ((live.get(id) ?? 0) > 0) this.suspects.set(id, { missing: true, fileSize: 0, bad: [], end: Infinity });
        else this.report.segmentsSkipped++;
      } else {
        await this.scanSegment(id, bound(id), id < applied.segment);
      }
      this.progress.segmentsDone++;
      this.opts.onProgress?.({ ...this.progress });
    }
    if (this.suspects.size > 0) await this.lookBack();
    this.attribute();
    this.report.durationMs = Math.round(performance.now() - started);
    return this.report;
  }

  /** The heads and snapshots of the disks asked, as they are now (a disk deleted meanwhile has none). */
  private viewpoints(): Viewpoint[] {
    const { history } = this.p;
    const out: Viewpoint[] = [];
    for (const name of this.disks) {
      const d = history.disks.get(name);
      if (d === undefined) continue;
      out.push({ disk: d.name, snap: null, links: history.chain(d.branch, Infinity), sizeBytes: d.sizeBytes });
      for (const s of d.snapshots) out.push({ disk: d.name, snap: s.name, links: history.chain(s.branch, s.seq), sizeBytes: s.sizeBytes });
    }
    return out;
  }

  /** Stops if the caller aborted or the store closed. */
  private check(): void {
    if (this.p.isClosed()) throw new EngineError(EngineErrorCode.CLOSED, 'The store is closed');
    this.opts.signal?.throwIfAborted();
  }

  /** Leaves the loop to others between slices of work. */
  private async pace(): Promise<void> {
    const pause = this.pacer.pause();
    if (pause) await pause;
    this.check();
  }

  /** Whether records of `branch` are checked. */
  private asked(branch: number): boolean {
    return this.branches === null || this.branches.has(branch);
  }

  /**
   * Segments holding live data of the disks asked, ascending: for all disks, those the live
   * counters name; for some, those their branches' index versions point into.
   */
  private async segmentsToRead(): Promise<number[]> {
    const ids = new Set<number>();
    if (this.branches === null) {
      for (const [id, n] of this.p.live) if (n > 0) ids.add(id);
    } else {
      await this.walk(this.branches, (v) => {
        if (v.kind === EntryKind.DATA) ids.add(v.segment);
      });
    }
    return [...ids].sort((a, b) => a - b);
  }

  /** Visits every index version of the branches, a turn of the loop per so many. */
  private async walk(branches: Iterable<number>, visit: (v: Found) => void): Promise<void> {
    for (const branch of [...branches]) {
      let from = 0;
      for (;;) {
        this.check();
        let n = 0;
        let last = -1;
        let resume = -1;
        for (const v of this.p.index.versions(branch, from)) {
          // A block's versions are visited in one turn: a chunk ends between blocks.
          if (n >= WALK_VERSIONS_PER_TURN && v.block !== last) {
            resume = v.block;
            break;
          }
          n++;
          last = v.block;
          visit(v);
        }
        if (resume < 0) break;
        from = resume;
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
  }

  /** A window buffer: page-aligned for direct I/O, one per scrub. */
  private window(): Buffer {
    return (this.buf ??= new SharedSlots(WINDOW_BYTES, 1).view(0, WINDOW_BYTES));
  }

  /**
   * Reads a segment's records up to `end` and checks those holding live blocks. `counted`: the
   * index has absorbed all of the segment, so its live counter says how many blocks its records
   * must hold.
   */
  private async scanSegment(id: number, end: number, counted: boolean): Promise<void> {
    const { log, live } = this.p;
    const storeSize = log.segmentSize(id);
    let file: SegmentReader;
    try {
      file = log.segmentReader(id);
    } catch (err) {
      // Gone from the directory (the log still reads it through its own descriptor, until the
      // next open), or not readable at all.
      const code = (err as NodeJS.ErrnoException).code;
      if (log.segmentSize(id) > 0) {
        const bad: BadRange[] = code === 'ENOENT' ? [] : [{ start: 0, end: Infinity, reason: 'unreadable' }];
        this.suspects.set(id, { missing: code === 'ENOENT', fileSize: Infinity, bad, end });
      }
      return;
    }
    const damaged: Damaged[] = [];
    const bad: BadRange[] = [];
    let found = 0;
    try {
      const read = async (buf: Buffer, pos: number): Promise<number> => {
        let n: number;
        try {
          n = await file.read(buf, pos);
        } catch (err) {
          throw new ReadFailed(pos, pos + buf.length, err);
        }
        // Removed meanwhile (perhaps shrunk before it was unlinked): what was read means nothing.
        if (log.segmentSize(id) === 0) throw new SegmentGone();
        this.progress.bytesRead += n;
        this.report.bytesRead += n;
        this.opts.onProgress?.({ ...this.progress });
        if (this.rate !== null) {
          try {
            await this.rate.wait(n, this.stop);
          } catch (err) {
            this.check();
            throw err;
          }
        }
        return n;
      };
      const win = new Window(this.window(), file.size(), read);
      const last = Math.min(win.size, end);
      let pos: number = Format.segmentHeaderBytes;
      // After a read the drive failed, the scan goes on in the middle of some record: what lies
      // up to the next header found is part of the unreadable stretch, not a damaged header.
      let resumed = false;
      while (pos < last && pos < win.size) {
        await this.pace();
        let head: Buffer | null;
        try {
          head = await win.at(pos, HEADER);
        } catch (err) {
          if (!(err instanceof ReadFailed)) throw err;
          bad.push({ start: err.start, end: err.end, reason: 'unreadable' });
          pos = err.end;
          resumed = true;
          continue;
        }
        if (head === null) break; // less than a header left: a torn tail, or cut off (judged below)
        const h = decodeRecordHeader(head);
        if (h === null) {
          const next = await this.nextHeader(win, pos + 1, last, bad);
          bad.push({ start: pos, end: next < 0 ? Infinity : next, reason: resumed ? 'unreadable' : 'checksum' });
          if (next < 0) break;
          pos = next;
          continue;
        }
        resumed = false;
        const recordEnd = pos + HEADER + h.payloadBytes;
        if (recordEnd > win.size) {
          // The file ends inside this record.
          found += await this.record(id, pos, h, win, damaged, 'truncated');
          break;
        }
        found += await this.record(id, pos, h, win, damaged, null);
        pos = recordEnd;
      }
      // A sealed segment's live counter says how many blocks its records hold; one that is
      // shorter than the log knows it, or than the index took records from, lost some. (The
      // segment still written grows meanwhile.)
      const shrunk = counted && win.size < Math.max(storeSize, this.p.index.segmentEnds?.get(id) ?? 0);
      const lost = counted && (live.get(id) ?? 0) > found * BS;
      if (shrunk || lost || (bad.length > 0 && !counted)) this.suspects.set(id, { missing: false, fileSize: win.size, bad, end });
      this.damaged.push(...damaged);
      this.report.segments++;
    } catch (err) {
      if (!(err instanceof SegmentGone)) throw err;
      this.suspects.delete(id);
      this.report.segmentsSkipped++;
    } finally {
      file.close();
    }
  }

  /**
   * Looks at the record at `pos`: which of its blocks are live, and, when some are and its branch
   * is asked, whether its payload passes its checksum (`forced`: it cannot, for that reason).
   * Returns the live blocks it holds.
   */
  private async record(id: number, pos: number, h: RecordHeader, win: Window, damaged: Damaged[], forced: DamageReason | null): Promise<number> {
    if (h.type !== RecordType.WRITE && h.type !== RecordType.RELOCATE) return 0;
    if (!this.p.history.branches.has(h.branch)) return 0;
    const dataAt = pos + HEADER;
    const liveBlocks: number[] = [];
    for (let i = 0; i < h.blockCount; i++) {
      const e = this.p.index.get(h.branch, h.blockStart + i, h.seq);
      if (e !== null && e.kind === EntryKind.DATA && e.segment === id && e.offset === dataAt + i * BS) liveBlocks.push(i);
    }
    if (liveBlocks.length === 0 || !this.asked(h.branch)) return liveBlocks.length;
    let verdict = forced;
    if (verdict === null) {
      verdict = await this.verify(win, dataAt, h.payloadBytes, h.payloadCrc);
      this.report.records++;
      this.report.bytesChecked += HEADER + h.payloadBytes;
    }
    if (verdict !== null) {
      for (const i of liveBlocks) damaged.push({ branch: h.branch, block: h.blockStart + i, seq: h.seq, segment: id, offset: dataAt + i * BS, recordOffset: pos, reason: verdict });
    }
    return liveBlocks.length;
  }

  /** Checks a payload against its CRC: null when it passes, else why not. */
  private async verify(win: Window, from: number, bytes: number, expected: number): Promise<DamageReason | null> {
    let crc = 0;
    for (let at = from; at < from + bytes; ) {
      let piece: Buffer | null;
      try {
        piece = await win.span(at, 1, from + bytes - at);
      } catch (err) {
        if (err instanceof ReadFailed) return 'unreadable';
        throw err;
      }
      if (piece === null) return 'truncated';
      crc = crc32(piece, crc);
      at += piece.length;
      if (at < from + bytes) await this.pace();
    }
    return crc === expected ? null : 'checksum';
  }

  /**
   * The offset of the next record header that passes its checksum in [from, end), or -1. Reads
   * the drive failed are noted as unreadable and stepped over.
   */
  private async nextHeader(win: Window, from: number, end: number, bad: BadRange[]): Promise<number> {
    const magic = Buffer.alloc(4);
    magic.writeUInt32LE(Format.recordMagic, 0);
    for (let at = from; at + HEADER <= Math.min(end, win.size); ) {
      let piece: Buffer | null;
      try {
        piece = await win.span(at, HEADER, Math.min(end, win.size) - at);
      } catch (err) {
        if (!(err instanceof ReadFailed)) throw err;
        bad.push({ start: err.start, end: err.end, reason: 'unreadable' });
        at = err.end;
        continue;
      }
      if (piece === null) return -1;
      for (let i = piece.indexOf(magic); i >= 0 && i + HEADER <= piece.length; i = piece.indexOf(magic, i + 1)) {
        if (decodeRecordHeader(piece.subarray(i, i + HEADER)) !== null) return at + i;
      }
      // A header starting in the last bytes of this piece is whole in the next.
      at += piece.length - HEADER + 1;
      await this.pace();
    }
    return -1;
  }

  /**
   * Finds the index versions that point where no readable record is: into a missing segment,
   * past a segment's end, into a stretch with no valid record. Walks the versions of the
   * branches asked; only a suspect segment brings this about.
   */
  private async lookBack(): Promise<void> {
    const known = new Set(this.damaged.map((d) => `${d.branch}:${d.block}:${d.seq}`));
    const branches = this.branches ?? new Set(this.p.history.branches.keys());
    await this.walk(branches, (v) => {
      if (v.kind !== EntryKind.DATA) return;
      const s = this.suspects.get(v.segment);
      if (s === undefined || v.offset >= s.end || known.has(`${v.branch}:${v.block}:${v.seq}`)) return;
      let reason: DamageReason;
      let recordOffset: number | null = null;
      if (s.missing) reason = 'missing-segment';
      else if (v.offset + BS > s.fileSize) reason = 'truncated';
      else {
        // Unreadable stretches come first: a read that failed says more than a header that did not decode.
        const r = s.bad.find((x) => x.reason === 'unreadable' && v.offset < x.end && v.offset + BS > x.start) ?? s.bad.find((x) => v.offset < x.end && v.offset + BS > x.start);
        if (r === undefined) return;
        reason = r.reason;
        recordOffset = r.reason === 'checksum' ? r.start : null;
      }
      this.damaged.push({ branch: v.branch, block: v.block, seq: v.seq, segment: v.segment, offset: v.offset, recordOffset, reason });
    });
  }

  /**
   * Which disks and snapshots read each damaged version (a version of a parent branch may be
   * read by clones), as extents per disk: runs of blocks of one record seen by the same views.
   */
  private attribute(): void {
    const groups = new Map<string, { d: Damaged; offsets: Map<number, number> }>();
    for (const d of this.damaged) {
      const key = `${d.branch}:${d.seq}:${d.segment}:${d.recordOffset}:${d.reason}`;
      let g = groups.get(key);
      if (g === undefined) groups.set(key, (g = { d, offsets: new Map() }));
      g.offsets.set(d.block, d.offset);
    }
    const extents: DamagedExtent[] = [];
    const viewpoints = this.viewpoints();
    let blocksSeen = 0;
    for (const { d, offsets } of groups.values()) {
      const blocks = [...offsets.keys()].sort((a, b) => a - b);
      const seenBy = new Map<number, Viewpoint[]>();
      for (const vp of viewpoints) {
        const link = vp.links.find((l) => l.branch === d.branch);
        if (link === undefined || link.maxSeq < d.seq) continue;
        this.p.reader.visible(vp.links, blocks[0], blocks[blocks.length - 1] + 1, (block, e, branch) => {
          if (branch !== d.branch || e.seq !== d.seq || e.kind !== EntryKind.DATA || e.segment !== d.segment || e.offset !== offsets.get(block)) return;
          let views = seenBy.get(block);
          if (views === undefined) seenBy.set(block, (views = []));
          views.push(vp);
        });
      }
      blocksSeen += seenBy.size;
      // Per disk, runs of neighbouring blocks seen by the same views.
      const byDisk = new Map<string, { block: number; views: Viewpoint[] }[]>();
      for (const block of blocks) {
        for (const vp of seenBy.get(block) ?? []) {
          let list = byDisk.get(vp.disk);
          if (list === undefined) byDisk.set(vp.disk, (list = []));
          const lastEntry = list[list.length - 1];
          if (lastEntry?.block === block) lastEntry.views.push(vp);
          else list.push({ block, views: [vp] });
        }
      }
      for (const [disk, list] of byDisk) {
        let run: { start: number; end: number; head: boolean; snaps: string[]; sizeBytes: number } | null = null;
        const flush = () => {
          if (run === null) return;
          const offset = run.start * BS;
          const length = Math.max(0, Math.min(run.end * BS, run.sizeBytes) - offset);
          extents.push({ disk, offset, length, head: run.head, snapshots: run.snaps, segment: d.segment, recordOffset: d.recordOffset, reason: d.reason });
          run = null;
        };
        for (const { block, views } of list) {
          const head = views.some((v) => v.snap === null);
          const snaps = views.filter((v) => v.snap !== null).map((v) => v.snap!);
          const sizeBytes = Math.max(...views.map((v) => v.sizeBytes));
          if (run !== null && run.end === block && run.head === head && run.snaps.join('/') === snaps.join('/')) {
            run.end++;
            run.sizeBytes = Math.max(run.sizeBytes, sizeBytes);
          } else {
            flush();
            run = { start: block, end: block + 1, head, snaps, sizeBytes };
          }
        }
        flush();
      }
    }
    extents.sort((a, b) => a.disk.localeCompare(b.disk) || a.offset - b.offset || a.segment - b.segment);
    this.report.damaged = extents.slice(0, DAMAGED_EXTENTS_MAX);
    this.report.damagedExtents = extents.length;
    this.report.damagedDisks = [...new Set(extents.map((e) => e.disk))];
    this.report.damagedBlocks = blocksSeen;
  }
}
