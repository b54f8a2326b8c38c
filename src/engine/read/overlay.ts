/**
 * The overlay: records written to the log but not yet committed to the index, which readers
 * consult together with the index (docs/engine.md, Write path, step 3).
 */
import { Format, RecordType, EntryKind, type Entry, type EntryKindValue } from '../format.ts';
import type { Append } from '../log/write-log.ts';
import type { FeedRecord } from '../feed.ts';

/** A zero or trim range visible to readers before the index transaction holding it has committed. */
export interface OverlayRange {
  seq: number;
  blockStart: number;
  blockEnd: number;
  kind: EntryKindValue;
}

/** Blocks per group of the overlay: 256 KiB, a sequential writer's usual request. */
export const overlayGroupBlocks = 64;
const FULL_MASK = 0xff;

/** The version of `block` that WRITE record `a` holds. */
export function overlayEntry(a: Append, block: number): Entry {
  const h = a.header;
  const i = block - h.blockStart;
  return {
    seq: h.seq,
    kind: EntryKind.DATA,
    mask: i === 0 ? h.maskFirst : i === h.blockCount - 1 ? h.maskLast : FULL_MASK,
    segment: a.segment,
    offset: a.offset + Format.recordHeaderBytes + i * Format.blockBytes,
  };
}

/** Records readable but not yet in the index, per branch. */
export class Overlay {
  /**
   * branch → group of overlayGroupBlocks blocks → the WRITE records not yet committed to the
   * index that cover blocks of it, in ascending seq (a block's version follows from its record,
   * overlayEntry). An entry object, an array and a map entry per block written had cost the event
   * loop more, in allocation and garbage collection, than the rest of a sequential write's
   * bookkeeping; a 256 KiB write now touches one group.
   */
  readonly writes = new Map<number, Map<number, Append[]>>();
  /** branch → ZERO and TRIM records not yet committed to the index. */
  readonly ranges = new Map<number, OverlayRange[]>();
  /**
   * branch → records made readable on it so far: a count of a disk's allocated bytes made before
   * this moved is stale (see Changes.allocatedBytes).
   */
  private readonly appended = new Map<number, number>();

  /** Records made readable on `branch` so far. */
  appendedTo(branch: number): number {
    return this.appended.get(branch) ?? 0;
  }

  /** Takes in a record just written: readers see it from now on. */
  add(a: Append): void {
    const h = a.header;
    if (h.type === RecordType.WRITE) {
      let ob = this.writes.get(h.branch);
      if (!ob) this.writes.set(h.branch, (ob = new Map()));
      const gEnd = Math.ceil((h.blockStart + h.blockCount) / overlayGroupBlocks);
      for (let g = Math.floor(h.blockStart / overlayGroupBlocks); g < gEnd; g++) {
        const list = ob.get(g);
        if (list === undefined) ob.set(g, [a]);
        else {
          list.push(a);
          // Writes usually complete in seq order; only a late one needs sorting in.
          if (list[list.length - 2].header.seq > h.seq) list.sort((x, y) => x.header.seq - y.header.seq);
        }
      }
    } else if (h.type === RecordType.ZERO || h.type === RecordType.TRIM) {
      let rs = this.ranges.get(h.branch);
      if (!rs) this.ranges.set(h.branch, (rs = []));
      rs.push({ seq: h.seq, blockStart: h.blockStart, blockEnd: h.blockStart + h.blockCount, kind: h.type === RecordType.ZERO ? EntryKind.ZERO : EntryKind.HOLE });
    }
    this.appended.set(h.branch, this.appendedTo(h.branch) + 1);
  }

  /** Lets go of a record the index has committed. */
  remove(a: FeedRecord): void {
    const h = a.header;
    if (h.type === RecordType.WRITE) {
      const ob = this.writes.get(h.branch);
      if (!ob) return;
      const gEnd = Math.ceil((h.blockStart + h.blockCount) / overlayGroupBlocks);
      for (let g = Math.floor(h.blockStart / overlayGroupBlocks); g < gEnd; g++) {
        const list = ob.get(g);
        if (list === undefined) continue;
        // Records leave in about the order they came: the one sought is usually first.
        const j = list[0].header.seq === h.seq ? 0 : list.findIndex((x) => x.header.seq === h.seq);
        if (j >= 0) list.splice(j, 1);
        if (!list.length) ob.delete(g);
      }
      if (!ob.size) this.writes.delete(h.branch);
    } else if (h.type === RecordType.ZERO || h.type === RecordType.TRIM) {
      const rs = this.ranges.get(h.branch);
      if (!rs) return;
      const j = rs.findIndex((r) => r.seq === h.seq);
      if (j >= 0) rs.splice(j, 1);
      if (!rs.length) this.ranges.delete(h.branch);
    }
  }

  /** Forgets a branch that is gone: nothing will read its records. */
  dropBranch(branch: number): void {
    this.writes.delete(branch);
    this.ranges.delete(branch);
  }
}
