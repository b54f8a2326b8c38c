/**
 * Applying records to the index on the event loop's thread, in one transaction: recovery, close,
 * and batches the index writer does not take (zeroes, trims, or an index that disagrees).
 */
import assert from 'node:assert/strict';
import { Format, RecordType, EntryKind, type RecordHeader, type Entry, type EntryKindValue } from '../format.ts';
import { comparePositions, type LogPosition } from '../log/write-log.ts';
import type { Reader } from '../read/reader.ts';
import type { FeedRecord } from '../feed.ts';
import { newestBefore, type AddLive, type ApplyContext } from './plan.ts';

const BS = Format.blockBytes;
const FULL_MASK = 0xff;

/** A record to apply: its header and where it is in the log (a published or a replayed one). */
export type ApplyRecord = FeedRecord;

/** What a committed inline apply changed, for the caller to take into memory. */
export interface InlineResult {
  applied: LogPosition;
  delta: Map<number, number>;
  seqMax: number;
}

/**
 * Applies records, in log order, to the index in one transaction that also records how far the
 * log has been applied — so each record is applied exactly once, live or on replay. Nothing in
 * memory changes here: should the transaction fail, it throws with nothing applied.
 */
export function applyInline(ctx: ApplyContext & { reader: Reader }, recs: readonly ApplyRecord[], appliedBefore: LogPosition, seqMaxBefore: number): InlineResult {
  const delta = new Map<number, number>();
  const add: AddLive = (seg, n) => delta.set(seg, (delta.get(seg) ?? 0) + n);
  let seqMax = seqMaxBefore;
  let applied = appliedBefore;
  const { index } = ctx;
  index.transaction(() => {
    for (const r of recs) {
      const h = r.header;
      if (h.seq > seqMax) seqMax = h.seq;
      if (!ctx.history.branches.has(h.branch)) continue; // the branch died since
      if (h.type === RecordType.RELOCATE) applyRelocate(ctx, h, r.segment, r.offset, add);
      else applyVersions(ctx, h, r.segment, r.offset, add);
    }
    const last = recs[recs.length - 1];
    const pos = { segment: last.segment, offset: last.end };
    if (comparePositions(pos, applied) > 0) applied = pos;
    index.meta.putSync('applied', applied);
    index.meta.putSync('seqNext', seqMax + 1);
    for (const [seg, end] of segmentEnds(recs)) index.segmentEnds!.putSync(seg, end);
    for (const [seg, n] of delta) {
      const v = (ctx.live.get(seg) ?? 0) + n;
      assert.ok(v >= 0, `live bytes of segment ${seg} stay non-negative`);
      index.segments.putSync(seg, v);
    }
  });
  return { applied, delta, seqMax };
}

/**
 * Per segment, where the last of `recs` in it ends: bytes made durable before they were applied,
 * kept with the index (BlockIndex.segmentEnds) so that open can tell a segment that was cut.
 * Records are applied in log order, so the last one seen in a segment is its furthest.
 */
export function segmentEnds(recs: readonly ApplyRecord[]): Map<number, number> {
  const ends = new Map<number, number>();
  for (const r of recs) ends.set(r.segment, r.end);
  return ends;
}

function applyVersions(ctx: ApplyContext & { reader: Reader }, h: Readonly<RecordHeader>, segment: number, offset: number, add: AddLive): void {
  const { index, history } = ctx;
  const views = history.viewpoints(h.branch);
  // A version nothing can ever read (its branch lost its head since) is not indexed at all.
  if (!views.length || views[views.length - 1] < h.seq) return;
  const kind: EntryKindValue = h.type === RecordType.WRITE ? EntryKind.DATA : h.type === RecordType.ZERO ? EntryKind.ZERO : EntryKind.HOLE;
  const end = h.blockStart + h.blockCount;
  // The version each block had before this record: superseded now, and dropped unless a
  // viewpoint still reads it. Should the index hold a newer one (see newestBefore), the exact
  // query finds it.
  let prevs = newestBefore(index, h);
  if (prevs === null) {
    const exact = (prevs = new Map());
    index.scanLatest(h.branch, h.blockStart, end, h.seq - 1, (f) => void exact.set(f.block, f));
  }
  const place = (block: number, e: Entry) => {
    const prev = prevs.get(block);
    const drop = prev !== undefined && !history.seenBetween(h.branch, prev.seq, h.seq);
    if (drop) e.mask |= prev.mask;
    // Put before remove: the head cache then moves on to the new version instead of dropping
    // the chunk because its newest version went away.
    index.put(h.branch, block, e);
    if (e.kind === EntryKind.DATA) add(e.segment, BS);
    if (drop) {
      index.remove(h.branch, block, prev.seq);
      if (prev.kind === EntryKind.DATA) add(prev.segment, -BS);
    }
  };
  if (kind === EntryKind.DATA) {
    const dataOffset = offset + Format.recordHeaderBytes;
    for (let i = 0; i < h.blockCount; i++) {
      const mask = i === 0 ? h.maskFirst : i === h.blockCount - 1 ? h.maskLast : FULL_MASK;
      place(h.blockStart + i, { seq: h.seq, kind, mask, segment, offset: dataOffset + i * BS });
    }
    return;
  }
  // Zeroes and trims only need a version where something is there to shadow.
  const blocks: number[] = [];
  ctx.reader.visible(history.chain(h.branch, h.seq - 1), h.blockStart, end, (block, e) => {
    if (e.kind !== kind) blocks.push(block);
  });
  for (const block of blocks) place(block, { seq: h.seq, kind, mask: FULL_MASK, segment: 0, offset: 0 });
}

function applyRelocate(ctx: ApplyContext, h: Readonly<RecordHeader>, segment: number, offset: number, add: AddLive): void {
  const dataOffset = offset + Format.recordHeaderBytes;
  for (let i = 0; i < h.blockCount; i++) {
    const block = h.blockStart + i;
    const e = ctx.index.get(h.branch, block, h.seq);
    if (!e || e.kind !== EntryKind.DATA) continue; // died since the compactor copied it
    add(e.segment, -BS);
    e.segment = segment;
    e.offset = dataOffset + i * BS;
    ctx.index.put(h.branch, block, e);
    add(segment, BS);
  }
}
