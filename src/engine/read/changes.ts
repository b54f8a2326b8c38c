/**
 * Changed-block tracking, allocation maps and a disk's allocated bytes: questions about which
 * blocks hold what, answered from the index and the overlay (docs/engine.md, Changed-block
 * tracking).
 */
import { Format, EntryKind } from '../format.ts';
import type { BlockIndex } from '../index/block-index.ts';
import type { ChainLink, DiskMeta, History } from '../history.ts';
import { overlayEntry, overlayGroupBlocks, type Overlay } from './overlay.ts';
import type { Reader } from './reader.ts';

const BS = Format.blockBytes;
const FULL_MASK = 0xff;

/** Allocation state of a block: 0 = data, 1 = zero (allocated), 2 = hole. */
export type BlockState = 0 | 1 | 2;

/** Answers what changed and what is allocated. */
export class Changes {
  private readonly index: BlockIndex;
  private readonly overlay: Overlay;
  private readonly reader: Reader;
  private readonly history: History;
  /**
   * disk → its allocated bytes as counted at (branch, size, records appended to the branch):
   * counting is a scan of the disk's index on the event loop (~10 ms per GiB written), so an
   * unchanged disk is not scanned again.
   */
  private readonly allocatedCounted = new Map<string, { key: string; bytes: number }>();

  constructor(opts: { index: BlockIndex; overlay: Overlay; reader: Reader; history: History }) {
    this.index = opts.index;
    this.overlay = opts.overlay;
    this.reader = opts.reader;
    this.history = opts.history;
  }

  /** Per block in range: sectors changed between a snapshot and a volume's view (0 = none). */
  changedMasks(from: ChainLink[], to: ChainLink[], blockStart: number, blockEnd: number): Map<number, number> {
    const out = new Map<number, number>();
    if (from[0].branch === to[0].branch && from.length === to.length) {
      // Same line of history: the versions newer than the snapshot are the changes, and their
      // masks say which sectors changed.
      const { branch } = to[0];
      const lo = from[0].maxSeq;
      const hi = to[0].maxSeq;
      const ob = this.overlay.writes.get(branch);
      this.index.versionsAfter(branch, blockStart, blockEnd, lo, (v) => {
        if (v.seq <= hi) out.set(v.block, (out.get(v.block) ?? 0) | v.mask);
      });
      if (ob) {
        for (const [g, list] of ob) {
          const from = Math.max(blockStart, g * overlayGroupBlocks);
          const to = Math.min(blockEnd, (g + 1) * overlayGroupBlocks);
          for (const a of list) {
            const h = a.header;
            if (h.seq <= lo || h.seq > hi) continue;
            for (let b = Math.max(from, h.blockStart), end = Math.min(to, h.blockStart + h.blockCount); b < end; b++) {
              out.set(b, (out.get(b) ?? 0) | overlayEntry(a, b).mask);
            }
          }
        }
      }
      for (const r of this.overlay.ranges.get(branch) ?? []) {
        if (r.seq <= lo || r.seq > hi) continue;
        // A range outside the one asked about changes nothing in it (and an empty one is no scan).
        const rangeStart = Math.max(r.blockStart, blockStart);
        const rangeEnd = Math.min(r.blockEnd, blockEnd);
        if (rangeStart >= rangeEnd) continue;
        this.reader.visible(from, rangeStart, rangeEnd, (block, e) => {
          if (e.kind === EntryKind.DATA) out.set(block, FULL_MASK);
        });
      }
      return out;
    }
    // Different lines (after a revert, or a clone): compare what each side sees.
    const a = new Map<number, string>();
    this.reader.visible(from, blockStart, blockEnd, (block, e, branch) => a.set(block, `${branch}:${e.seq}:${e.kind}`));
    const seen = new Set<number>();
    this.reader.visible(to, blockStart, blockEnd, (block, e, branch) => {
      seen.add(block);
      if (a.get(block) !== `${branch}:${e.seq}:${e.kind}`) out.set(block, FULL_MASK);
    });
    for (const block of a.keys()) if (!seen.has(block)) out.set(block, FULL_MASK);
    return out;
  }

  /** The allocation state of each block in range that has a visible version, in block order. */
  allocation(links: ChainLink[], blockStart: number, blockEnd: number): { block: number; state: BlockState }[] {
    const out: { block: number; state: BlockState }[] = [];
    this.reader.visible(links, blockStart, blockEnd, (block, e) => {
      out.push({ block, state: e.kind === EntryKind.DATA ? 0 : e.kind === EntryKind.ZERO ? 1 : 2 });
    });
    return out;
  }

  /** Bytes of the blocks whose visible version on a disk's head holds data. */
  allocatedBytes(d: DiskMeta): number {
    const key = `${d.branch}:${d.sizeBytes}:${this.overlay.appendedTo(d.branch)}`;
    const counted = this.allocatedCounted.get(d.name);
    if (counted?.key === key) return counted.bytes;
    let n = 0;
    const blocks = Math.ceil(d.sizeBytes / BS);
    this.reader.visible(this.history.chain(d.branch, Infinity), 0, blocks, (_b, e) => {
      if (e.kind === EntryKind.DATA) n += BS;
    });
    this.allocatedCounted.set(d.name, { key, bytes: n });
    return n;
  }

  /** Forgets a deleted disk's count (a new disk may take its name). */
  forget(disk: string): void {
    this.allocatedCounted.delete(disk);
  }
}
