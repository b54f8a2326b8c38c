/**
 * Sweeping: removing the versions no viewpoint reads any more, and branches nothing reads at all
 * (docs/engine.md, Space reclaim).
 */
import { Format, EntryKind } from '../format.ts';
import { blockIndexEnd, type BlockIndex, type Found } from '../index/block-index.ts';
import type { History } from '../history.ts';
import type { Overlay } from '../read/overlay.ts';
import type { Applier } from '../apply/applier.ts';

const BS = Format.blockBytes;
/** Versions looked at per sweep transaction; the loop is left to requests between two. */
const SWEEP_VERSIONS_PER_TRANSACTION = 20_000;

/** Queues branches to sweep and sweeps them. */
export class Sweeper {
  private readonly index: BlockIndex;
  private readonly history: History;
  private readonly overlay: Overlay;
  private readonly applier: Applier;
  private readonly live: Map<number, number>;
  /**
   * Branches to sweep → the blocks to look at: those with a version newer than this seq (0:
   * every block). A snapshot delete names only the blocks where a version could have died.
   */
  private readonly queue = new Map<number, number>();

  constructor(opts: { index: BlockIndex; history: History; overlay: Overlay; applier: Applier; live: Map<number, number> }) {
    this.index = opts.index;
    this.history = opts.history;
    this.overlay = opts.overlay;
    this.applier = opts.applier;
    this.live = opts.live;
  }

  /** Has `branch` swept at the next maintenance pass: the blocks with a version newer than `after` (0: all). */
  enqueue(branch: number, after = 0): void {
    this.queue.set(branch, Math.min(after, this.queue.get(branch) ?? Infinity));
  }

  /** Sweeps every branch queued, including those queued meanwhile. */
  async sweepQueued(): Promise<void> {
    while (this.queue.size) {
      const [[branch, after]] = this.queue;
      this.queue.delete(branch);
      await this.sweep(branch, after);
    }
  }

  /**
   * Removes the versions of a branch that no viewpoint reads any more; a branch left with no
   * viewpoints at all goes entirely, and its fork stops holding its parent. Works in chunks.
   */
  private async sweep(branch: number, after = 0): Promise<void> {
    if (!this.history.branches.has(branch)) return;
    const runs: [number, number][] = [];
    if (after === 0) runs.push([0, blockIndexEnd]);
    else this.index.blocksChangedAfter(branch, 0, blockIndexEnd, after, (a, b) => void runs.push([a, b]));
    let run = 0;
    let from = runs[0]?.[0] ?? 0;
    while (run < runs.length) {
      const delta = new Map<number, number>();
      // The index writer's batch changes versions and counters this pass reads.
      await this.applier.idle();
      // Read anew each pass: a snapshot taken while this sweep yielded reads what it reads.
      const views = this.history.viewpoints(branch);
      this.index.transaction(() => {
        let count = 0;
        let block = -1;
        let newer: Found | null = null;
        const doomed = new Set<Found>();
        const merges: Found[] = [];
        scan: for (; run < runs.length; run++, from = runs[run]?.[0] ?? 0) {
          for (const v of this.index.versions(branch, from)) {
            if (v.block >= runs[run][1]) break;
            if (v.block !== block) {
              if (count >= SWEEP_VERSIONS_PER_TRANSACTION) {
                from = v.block;
                break scan;
              }
              block = v.block;
              newer = null;
            }
            count++;
            const hi = newer ? newer.seq : Infinity;
            const read = views.some((x) => x >= v.seq && (x < hi || hi === Infinity));
            if (!read) {
              doomed.add(v);
              if (newer) {
                newer.mask |= v.mask;
                merges.push(newer);
              }
            } else newer = v;
          }
        }
        for (const v of doomed) {
          this.index.remove(branch, v.block, v.seq);
          if (v.kind === EntryKind.DATA) delta.set(v.segment, (delta.get(v.segment) ?? 0) - BS);
        }
        for (const m of merges) if (!doomed.has(m)) this.index.put(branch, m.block, m);
        for (const [seg, n] of delta) this.index.segments.putSync(seg, (this.live.get(seg) ?? 0) + n);
      });
      for (const [seg, n] of delta) this.live.set(seg, (this.live.get(seg) ?? 0) + n);
      if (run >= runs.length) break;
      await new Promise((r) => setImmediate(r));
    }
    if (!this.history.viewpoints(branch).length) {
      await this.applier.idle();
      // Nothing reads this branch: it is gone, and so is its hold on its parent.
      const meta = this.history.branches.get(branch)!;
      await this.history.removeBranch(branch);
      this.overlay.dropBranch(branch);
      if (meta.parent !== null) await this.sweep(meta.parent);
    }
  }
}
