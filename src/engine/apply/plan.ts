/**
 * Planning a batch of WRITE and RELOCATE records into index changes on the event loop, for the
 * index writer thread to commit (docs/engine.md, The index writer).
 */
import assert from 'node:assert/strict';
import { Format, RecordType, EntryKind, type RecordHeader, type Entry } from '../format.ts';
import type { FeedRecord } from '../feed.ts';
import type { BlockIndex, Found } from '../index/block-index.ts';
import type { IndexOp } from '../index/writer.ts';
import type { History } from '../history.ts';

const BS = Format.blockBytes;
const FULL_MASK = 0xff;

/** What applying records reads: the index, the history's viewpoints, the committed live counters. */
export interface ApplyContext {
  index: BlockIndex;
  history: History;
  /** Live data bytes per segment, as committed in the index. */
  live: Map<number, number>;
}

/** Adds `n` bytes to the live count of segment `seg` (negative: bytes that died). */
export type AddLive = (seg: number, n: number) => void;

/**
 * A version planned for the index: a new one, or (indexed) one already there that a relocation
 * moves. Cancelled when a later record of the batch drops it.
 */
interface PlannedPut {
  e: Entry;
  cancelled: boolean;
  indexed: boolean;
}

/**
 * The index changes of a batch of WRITE and RELOCATE records, for the index writer. A block
 * written twice in the batch gets one version, not a put and a remove.
 */
class ApplyPlan {
  puts: { branch: number; block: number; put: PlannedPut }[] = [];
  removes: IndexOp[] = [];
  /** branch → block → its newest planned version. */
  private newest = new Map<number, Map<number, PlannedPut>>();
  /** `branch:block:seq` of the removals, made once a relocation asks (see removed()). */
  private removedKeys: Set<string> | null = null;

  remove(branch: number, block: number, seq: number): void {
    this.removes.push({ branch, block, seq, put: null });
    this.removedKeys?.add(`${branch}:${block}:${seq}`);
  }

  /** Whether the batch removes this version (asked for relocations only). */
  removed(branch: number, block: number, seq: number): boolean {
    if (this.removedKeys === null) this.removedKeys = new Set(this.removes.map((r) => `${r.branch}:${r.block}:${r.seq}`));
    return this.removedKeys.has(`${branch}:${block}:${seq}`);
  }

  branch(branch: number): Map<number, PlannedPut> {
    let m = this.newest.get(branch);
    if (!m) this.newest.set(branch, (m = new Map()));
    return m;
  }

  /**
   * The changes: every put, then every remove, so that in the head cache a block's new version
   * goes in before its old one leaves, and the cache moves on to it instead of dropping the
   * chunk. (Sorting them into key order made LMDB's part faster, but that part now runs on the
   * writer's thread, and the sort cost the event loop more than it saved there.)
   */
  ops(): IndexOp[] {
    const ops: IndexOp[] = [];
    for (const p of this.puts) if (!p.put.cancelled) ops.push({ branch: p.branch, block: p.block, seq: p.put.e.seq, put: p.put.e });
    for (const r of this.removes) ops.push(r);
    return ops;
  }
}

/** A planned batch: its index changes, the segments' live bytes after it, the highest seq in it. */
export interface PlannedBatch {
  ops: IndexOp[];
  counters: [number, number][];
  seqMax: number;
}

/**
 * Plans a batch of WRITE and RELOCATE records into index changes, or returns null when the
 * batch must be applied on this thread instead (the index holds a version newer than a record,
 * see planWrite).
 */
export function planBatch(ctx: ApplyContext, batch: readonly FeedRecord[], seqMaxBefore: number): PlannedBatch | null {
  const plan = new ApplyPlan();
  const delta = new Map<number, number>();
  const add: AddLive = (seg, n) => delta.set(seg, (delta.get(seg) ?? 0) + n);
  let seqMax = seqMaxBefore;
  for (const a of batch) {
    const h = a.header;
    if (h.seq > seqMax) seqMax = h.seq;
    if (!ctx.history.branches.has(h.branch)) continue; // the branch died since
    if (h.type === RecordType.RELOCATE) planRelocate(ctx, plan, h, a.segment, a.offset, add);
    else if (!planWrite(ctx, plan, h, a.segment, a.offset, add)) return null;
  }
  const counters: [number, number][] = [];
  for (const [seg, n] of delta) {
    const v = (ctx.live.get(seg) ?? 0) + n;
    assert.ok(v >= 0, `live bytes of segment ${seg} stay non-negative`);
    counters.push([seg, v]);
  }
  return { ops: plan.ops(), counters, seqMax };
}

/**
 * Adds a RELOCATE record to the plan: each block whose version the record copied is still in
 * the index, and not dropped earlier in the batch, points at the copy. A version that is its
 * block's newest becomes the newest planned one, so that a later write in the batch that drops
 * it removes it from the index (see planWrite).
 */
function planRelocate(ctx: ApplyContext, plan: ApplyPlan, h: Readonly<RecordHeader>, segment: number, offset: number, add: AddLive): void {
  const planned = plan.branch(h.branch);
  const newestSeq = new Map<number, number>();
  ctx.index.scanLatest(h.branch, h.blockStart, h.blockStart + h.blockCount, Infinity, (f) => void newestSeq.set(f.block, f.seq));
  const dataOffset = offset + Format.recordHeaderBytes;
  for (let i = 0; i < h.blockCount; i++) {
    const block = h.blockStart + i;
    if (plan.removed(h.branch, block, h.seq)) continue; // died earlier in this batch
    const e = ctx.index.get(h.branch, block, h.seq);
    if (!e || e.kind !== EntryKind.DATA) continue; // died since the compactor copied it
    add(e.segment, -BS);
    const moved: Entry = { ...e, segment, offset: dataOffset + i * BS };
    add(segment, BS);
    const put: PlannedPut = { e: moved, cancelled: false, indexed: true };
    plan.puts.push({ branch: h.branch, block, put });
    const newer = planned.get(block);
    if ((newer === undefined || newer.e.seq <= h.seq) && newestSeq.get(block) === h.seq) planned.set(block, put);
  }
}

/**
 * Adds a WRITE record's versions to the plan: each block's new version, and the removal of the
 * version it supersedes unless a viewpoint still reads that one. A version planned earlier in
 * the batch and superseded within it is never written at all. False if the index holds a
 * version newer than the record (records come in seq order, so it cannot; should the index on
 * disk say otherwise, the batch is applied on this thread, which asks it exactly).
 */
function planWrite(ctx: ApplyContext, plan: ApplyPlan, h: Readonly<RecordHeader>, segment: number, offset: number, add: AddLive): boolean {
  const views = ctx.history.viewpoints(h.branch);
  // A version nothing can ever read (its branch lost its head since) is not indexed at all.
  if (!views.length || views[views.length - 1] < h.seq) return true;
  const end = h.blockStart + h.blockCount;
  const planned = plan.branch(h.branch);
  // The version each block had before this record: planned in this batch, or in the index.
  const prevs: Map<number, Entry> | null = newestBefore(ctx.index, h);
  if (prevs === null) return false;
  for (let b = h.blockStart; b < end; b++) {
    const p = planned.get(b);
    if (p !== undefined) prevs.set(b, p.e);
  }
  const dataOffset = offset + Format.recordHeaderBytes;
  for (let i = 0; i < h.blockCount; i++) {
    const block = h.blockStart + i;
    const e: Entry = { seq: h.seq, kind: EntryKind.DATA, mask: i === 0 ? h.maskFirst : i === h.blockCount - 1 ? h.maskLast : FULL_MASK, segment, offset: dataOffset + i * BS };
    const prev = prevs.get(block);
    const drop = prev !== undefined && !ctx.history.seenBetween(h.branch, prev.seq, h.seq);
    if (drop) e.mask |= prev.mask;
    const put: PlannedPut = { e, cancelled: false, indexed: false };
    plan.puts.push({ branch: h.branch, block, put });
    add(segment, BS);
    const before = planned.get(block);
    planned.set(block, put);
    if (!drop) continue;
    if (before !== undefined && before.e === prev) {
      before.cancelled = true;
      // A relocated version is in the index already: it goes, where a new one is never put.
      if (before.indexed) plan.remove(h.branch, block, prev.seq);
    } else plan.remove(h.branch, block, prev.seq);
    if (prev.kind === EntryKind.DATA) add(prev.segment, -BS);
  }
  return true;
}

/**
 * The newest indexed version of each block a record covers: records are applied in seq order,
 * so it is the one before the record, and the head cache has it without an LMDB cursor. Null
 * if the index holds a version as new as the record (it cannot, but the index is on disk).
 */
export function newestBefore(index: BlockIndex, h: Readonly<RecordHeader>): Map<number, Found> | null {
  const prevs = new Map<number, Found>();
  let newer = false;
  index.scanLatest(h.branch, h.blockStart, h.blockStart + h.blockCount, Infinity, (f) => {
    if (f.seq >= h.seq) {
      newer = true;
      return false;
    }
    prevs.set(f.block, f);
  });
  return newer ? null : prevs;
}
