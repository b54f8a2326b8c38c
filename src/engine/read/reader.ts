/**
 * The read path: which version of each block a chain of branches sees (overlay first, then the
 * index), and reading those blocks from the log (docs/engine.md, Read path).
 */
import { crc32 } from '../../native/index.ts';
import { Format, EntryKind, RecordType, decodeRecordHeader, type Entry } from '../format.ts';
import { EngineError, EngineErrorCode } from '../errors.ts';
import type { Append, WriteLog } from '../log/write-log.ts';
import type { BlockIndex } from '../index/block-index.ts';
import type { ChainLink } from '../history.ts';
import { overlayEntry, overlayGroupBlocks, type Overlay } from './overlay.ts';

const BS = Format.blockBytes;
const FULL_MASK = 0xff;

/** Resolves blocks along a chain and reads them; counts readers per segment so none is removed under them. */
export class Reader {
  private readonly index: BlockIndex;
  private readonly overlay: Overlay;
  private readonly log: WriteLog;
  /** Segment → reads in flight from it. */
  private readonly readers = new Map<number, number>();

  constructor(opts: { index: BlockIndex; overlay: Overlay; log: WriteLog }) {
    this.index = opts.index;
    this.overlay = opts.overlay;
    this.log = opts.log;
  }

  /** Whether a read from `segment` is in flight (the compactor must not remove it). */
  reading(segment: number): boolean {
    return this.readers.has(segment);
  }

  /**
   * Calls visit(block, entry, branch) for each block in [blockStart, blockEnd) that has a
   * visible version along the chain, in block order. Blocks with none are holes.
   */
  visible(links: ChainLink[], blockStart: number, blockEnd: number, visit: (block: number, e: Entry, branch: number) => void): void {
    const ranges = this.overlay.ranges;
    const hasRanges = links.some((l) => ranges.has(l.branch));
    if (links.length === 1 && !hasRanges) {
      this.visibleOn(links[0], blockStart, blockEnd, visit);
      return;
    }
    const found = new Map<number, { e: Entry; branch: number; level: number }>();
    links.forEach((link, level) => {
      this.visibleOn(link, blockStart, blockEnd, (block, e, branch) => {
        if (!found.has(block)) found.set(block, { e, branch, level });
      });
    });
    // Zero/trim ranges not yet in the index shadow what their branch and its ancestors hold.
    // Blocks holding nothing anywhere stay holes, as they will once the range is indexed.
    links.forEach((link, level) => {
      for (const r of ranges.get(link.branch) ?? []) {
        if (r.seq > link.maxSeq) continue;
        for (const [block, f] of found) {
          if (block < r.blockStart || block >= r.blockEnd) continue;
          if (f.level > level || (f.level === level && f.e.seq < r.seq)) {
            found.set(block, { e: { seq: r.seq, kind: r.kind, mask: FULL_MASK, segment: 0, offset: 0 }, branch: link.branch, level });
          }
        }
      }
    });
    for (const block of [...found.keys()].sort((x, y) => x - y)) {
      const f = found.get(block)!;
      visit(block, f.e, f.branch);
    }
  }

  /** visible() for one link: index versions merged with not-yet-committed block versions. */
  private visibleOn(link: ChainLink, blockStart: number, blockEnd: number, visit: (block: number, e: Entry, branch: number) => void): void {
    const { branch, maxSeq } = link;
    const ob = this.overlay.writes.get(branch);
    if (!ob?.size) {
      this.index.scanLatest(branch, blockStart, blockEnd, maxSeq, (f) => visit(f.block, f, branch));
      return;
    }
    // The overlay's newest visible version per block, in block order, merged with the index's
    // (also in block order) as they stream by: no map of every block of a wide range.
    const pending: { block: number; e: Entry }[] = [];
    // The newest record with seq <= maxSeq of each block of the group in range.
    const consider = (g: number, list: Append[]) => {
      const lo = Math.max(blockStart, g * overlayGroupBlocks);
      const hi = Math.min(blockEnd, (g + 1) * overlayGroupBlocks);
      const found: (Append | undefined)[] = new Array(hi - lo);
      let missing = hi - lo;
      for (let i = list.length - 1; i >= 0 && missing > 0; i--) {
        const h = list[i].header;
        if (h.seq > maxSeq) continue;
        for (let b = Math.max(lo, h.blockStart), end = Math.min(hi, h.blockStart + h.blockCount); b < end; b++) {
          if (found[b - lo] === undefined) {
            found[b - lo] = list[i];
            missing--;
          }
        }
      }
      for (let b = lo; b < hi; b++) if (found[b - lo] !== undefined) pending.push({ block: b, e: overlayEntry(found[b - lo]!, b) });
    };
    const gFirst = Math.floor(blockStart / overlayGroupBlocks);
    const gEnd = Math.ceil(blockEnd / overlayGroupBlocks);
    if (gEnd - gFirst < ob.size) {
      for (let g = gFirst; g < gEnd; g++) {
        const list = ob.get(g);
        if (list) consider(g, list);
      }
    } else {
      for (const [g, list] of ob) if (g >= gFirst && g < gEnd) consider(g, list);
      pending.sort((x, y) => x.block - y.block);
    }
    let next = 0;
    this.index.scanLatest(branch, blockStart, blockEnd, maxSeq, (f) => {
      while (next < pending.length && pending[next].block < f.block) {
        visit(pending[next].block, pending[next].e, branch);
        next++;
      }
      if (next < pending.length && pending[next].block === f.block) {
        const p = pending[next++];
        visit(f.block, p.e.seq > f.seq ? p.e : f, branch);
      } else visit(f.block, f, branch);
    });
    for (; next < pending.length; next++) visit(pending[next].block, pending[next].e, branch);
  }

  /**
   * Reads whole blocks [blockStart, blockEnd) of a chain of `disk` into `out` (length = blocks ×
   * 4 KiB). A part the drive fails to read is ENGINE_IO naming the disk and the byte offset.
   */
  async readBlocks(links: ChainLink[], blockStart: number, blockEnd: number, out: Buffer, disk: string): Promise<void> {
    const runs: Run[] = [];
    let filled = 0; // bytes of `out` accounted for (holes zeroed up to here)
    const zeroTo = (at: number) => {
      if (at > filled) out.fill(0, filled, at);
    };
    const onBlock = (block: number, kind: number, segment: number, offset: number): void => {
      const at = (block - blockStart) * BS;
      zeroTo(at);
      filled = at + BS;
      if (kind !== EntryKind.DATA) {
        out.fill(0, at, at + BS);
        return;
      }
      const last = runs[runs.length - 1];
      if (last && last.segment === segment && last.offset + last.length === offset && last.at + last.length === at) last.length += BS;
      else runs.push({ segment, offset, at, length: BS });
    };
    // A disk's own blocks, all in the index: straight from the head cache where it answers (the
    // head; a snapshot with nothing newer in range), no object per block (a 1 GiB sequential read
    // made 262,144 of them, and the collections they cost).
    const [link] = links;
    const cached = links.length === 1 && !this.overlay.writes.get(link.branch)?.size && !this.overlay.ranges.has(link.branch);
    if (!cached || !this.index.forEachCached(link.branch, blockStart, blockEnd, link.maxSeq, onBlock)) {
      this.visible(links, blockStart, blockEnd, (block, e) => onBlock(block, e.kind, e.segment, e.offset));
    }
    zeroTo(out.length);
    // The reads are issued in this same turn as the lookup, so the compactor cannot remove a
    // segment between them; the reader count keeps it until they finish.
    for (const r of runs) this.readers.set(r.segment, (this.readers.get(r.segment) ?? 0) + 1);
    try {
      // One run (a small read) is awaited as it is: no array of promises to gather.
      if (runs.length === 1) await this.readRun(runs[0], out, disk, blockStart);
      else if (runs.length > 1) await Promise.all(runs.map((r) => this.readRun(r, out, disk, blockStart)));
    } finally {
      for (const r of runs) {
        const n = this.readers.get(r.segment)! - 1;
        if (n) this.readers.set(r.segment, n);
        else this.readers.delete(r.segment);
      }
    }
  }

  /**
   * Reads one run into its part of `out`; a failure becomes the ENGINE_IO of the read. A run that
   * is a record's whole payload (a write read back at its own size) is checked against the
   * record's checksum: its header, the 64 bytes before it, is read too and must name the run's
   * first block and length.
   */
  private async readRun(r: Run, out: Buffer, disk: string, blockStart: number): Promise<void> {
    const data = out.subarray(r.at, r.at + r.length);
    const block = blockStart + r.at / BS;
    let header: ReturnType<typeof decodeRecordHeader> = null;
    try {
      if (r.offset >= Format.segmentHeaderBytes + Format.recordHeaderBytes) {
        // The 64 bytes before the run come in the same system call: the record's header, if the
        // run starts a record.
        const head = Buffer.allocUnsafe(Format.recordHeaderBytes);
        await this.log.readWithHeader(r.segment, r.offset, head, data);
        header = decodeRecordHeader(head);
      } else await this.log.readInto(r.segment, r.offset, data);
    } catch (err) {
      throw err instanceof EngineError ? readFailed(err, disk, block * BS) : err;
    }
    if (header === null || header.payloadBytes !== r.length || header.blockStart !== block) return;
    if (header.type !== RecordType.WRITE && header.type !== RecordType.RELOCATE) return;
    this.verifiedRuns++;
    if (crc32(data) !== header.payloadCrc) {
      throw new EngineError(EngineErrorCode.IO, `Read of disk "${disk}" failed at byte ${block * BS}: ${r.length} bytes at ${r.offset} in log segment ${r.segment} fail their record's checksum (tessera scrub lists what is damaged)`, { readFault: { disk, offset: block * BS, checksum: true } });
    }
  }

  /** Runs read whose record's checksum was checked (tests see that the check is made). */
  verifiedRuns = 0;
}

/** Blocks of a read that lie back to back in one segment: one read of the log. */
interface Run {
  segment: number;
  /** Offset in the segment. */
  offset: number;
  /** Offset in the output buffer. */
  at: number;
  length: number;
}

/** The ENGINE_IO of a read of `disk` that failed at byte `offset` (the reason in `err`'s message). */
function readFailed(err: unknown, disk: string, offset: number): EngineError {
  const why = err instanceof Error ? err.message : String(err);
  return new EngineError(EngineErrorCode.IO, `Read of disk "${disk}" failed at byte ${offset}: ${why}`, { cause: err, readFault: { disk, offset, checksum: false } });
}
