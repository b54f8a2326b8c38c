/**
 * The history a store's disks stand on: disks and their snapshots, the branches of history they
 * read, and the seq and branch counters. Held in memory, persisted in the index's metadata; the
 * concepts (branch, viewpoint, chain) are in docs/engine.md. Changes go through the MetaStore
 * first and are taken into memory once it has them.
 */
import assert from 'node:assert/strict';
import { EngineError, EngineErrorCode } from './errors.ts';
import type { BranchMeta, DiskMeta, MetaStore, SnapMeta } from './meta/meta-store.ts';

export type { BranchMeta, DiskMeta, SnapMeta } from './meta/meta-store.ts';
export { checkName, checkSize } from './meta/meta-store.ts';

/** One step of a read path: a branch and the newest seq visible on it. */
export interface ChainLink {
  branch: number;
  maxSeq: number;
}

/** Disks, snapshots and branches in memory, each change persisted before it is taken in. */
export class History {
  readonly disks = new Map<string, DiskMeta>();
  readonly branches = new Map<number, BranchMeta>();
  /** The next seq to hand out: every record takes one; a snapshot stands at the one before. */
  seqNext = 1;
  private branchNext = 1;
  private viewpointCache = new Map<number, number[]>();
  private readonly meta: MetaStore;

  constructor(meta: MetaStore) {
    this.meta = meta;
  }

  /** Reads what the metadata store holds (at open). */
  async load(): Promise<void> {
    const m = await this.meta.load();
    for (const b of m.branches) this.branches.set(b.id, b);
    for (const d of m.disks) this.disks.set(d.name, d);
    this.branchNext = m.branchNext;
    this.invalidate();
  }

  /** Forgets the viewpoints worked out so far: a disk, snapshot or branch changed. */
  invalidate(): void {
    this.viewpointCache.clear();
  }

  /**
   * Points in a branch's history that something can still read: snapshots on it, forks of
   * child branches, and Infinity when a disk's head is on it. Ascending.
   */
  viewpoints(branch: number): number[] {
    let v = this.viewpointCache.get(branch);
    if (v) return v;
    v = [];
    for (const d of this.disks.values()) {
      if (d.branch === branch) v.push(Infinity);
      for (const s of d.snapshots) if (s.branch === branch) v.push(s.seq);
    }
    for (const b of this.branches.values()) if (b.parent === branch) v.push(b.forkSeq);
    v.sort((a, b) => a - b);
    this.viewpointCache.set(branch, v);
    return v;
  }

  /** Whether some viewpoint v of `branch` has lo ≤ v < hi (a version at lo superseded at hi is still read). */
  seenBetween(branch: number, lo: number, hi: number): boolean {
    for (const v of this.viewpoints(branch)) if (v >= lo && v < hi) return true;
    return false;
  }

  /** The read path of (branch, maxSeq): the branch, then its parent at the fork, and so on up. */
  chain(branch: number, maxSeq: number): ChainLink[] {
    const links: ChainLink[] = [];
    let b: number | null = branch;
    let s = maxSeq;
    while (b !== null) {
      links.push({ branch: b, maxSeq: s });
      const meta = this.branches.get(b);
      assert.ok(meta, `branch ${b} exists`);
      if (meta.parent === null) break;
      s = meta.forkSeq;
      b = meta.parent;
    }
    return links;
  }

  /** The disk named so, or ENGINE_NOT_FOUND. */
  disk(name: string): DiskMeta {
    const d = this.disks.get(name);
    if (!d) throw new EngineError(EngineErrorCode.NOT_FOUND, `No disk named "${name}"`);
    return d;
  }

  /** The snapshot of `d` named so, or ENGINE_NOT_FOUND. */
  snap(d: DiskMeta, name: string): SnapMeta {
    const s = d.snapshots.find((x) => x.name === name);
    if (!s) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${d.name}" has no snapshot named "${name}"`);
    return s;
  }

  /**
   * Starts a branch (forked at `parent`, or fresh) with disk `d` heading it — at the parent's
   * size, if it has one — durably in one commit, then takes both into memory at once (until
   * then, readers see the disk as it was).
   */
  async headNewBranch(d: DiskMeta, parent: { branch: number; seq: number; sizeBytes?: number } | null): Promise<void> {
    const branch: BranchMeta = { id: this.branchNext, parent: parent?.branch ?? null, forkSeq: parent?.seq ?? 0 };
    const sizeBytes = parent?.sizeBytes ?? d.sizeBytes;
    // The same fields in the same order as the disk in memory: the stored bytes stay the format's.
    const next: DiskMeta = { ...d, branch: branch.id, sizeBytes };
    await this.meta.commit([{ op: 'putBranch', branch }, { op: 'putDisk', disk: next }, { op: 'setBranchNext', value: branch.id + 1 }]);
    d.branch = branch.id;
    d.sizeBytes = sizeBytes;
    this.branchNext = branch.id + 1;
    this.branches.set(branch.id, branch);
    this.disks.set(d.name, d);
    this.invalidate();
  }

  /** Persists the disks (changed in memory by the caller) in one commit. */
  async persistDisks(ds: readonly DiskMeta[]): Promise<void> {
    await this.meta.commit(ds.map((disk) => ({ op: 'putDisk', disk })));
  }

  /** Deletes a disk durably, then from memory. Its branches stay until swept. */
  async removeDisk(name: string): Promise<void> {
    await this.meta.commit([{ op: 'deleteDisk', name }]);
    this.disks.delete(name);
    this.invalidate();
  }

  /** Deletes a branch nothing reads any more (its versions are swept already). */
  async removeBranch(id: number): Promise<void> {
    await this.meta.commit([{ op: 'deleteBranch', id }]);
    this.branches.delete(id);
    this.invalidate();
  }
}
