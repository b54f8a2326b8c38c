/**
 * The history a store's disks stand on: disks and their snapshots, the branches of history they
 * read, and the seq and branch counters. Held in memory, persisted in the index's metadata; the
 * concepts (branch, viewpoint, chain) are in docs/engine.md.
 */
import assert from 'node:assert/strict';
import { EngineError, EngineErrorCode } from './errors.ts';
import { Format } from './format.ts';
import type { BlockIndex } from './index/block-index.ts';

/** A snapshot as stored: a point (branch, seq) of a disk's history. */
export interface SnapMeta {
  name: string;
  branch: number;
  seq: number;
  sizeBytes: number;
  createdMs: number;
}

/** A disk as stored: the branch its head is on, and its snapshots, oldest first. */
export interface DiskMeta {
  name: string;
  branch: number;
  sizeBytes: number;
  createdMs: number;
  origin: string | null;
  snapshots: SnapMeta[];
}

/** One line of history. */
export interface BranchMeta {
  id: number;
  /** Branch this one forked from, or null for a fresh disk. */
  parent: number | null;
  /** Seq on the parent the fork sees (inclusive). */
  forkSeq: number;
}

/** One step of a read path: a branch and the newest seq visible on it. */
export interface ChainLink {
  branch: number;
  maxSeq: number;
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Largest virtual disk: 1 PiB. */
export const diskBytesMax = 2 ** 50;

/** Throws ENGINE_INVALID unless `name` is a valid disk or snapshot name. */
export function checkName(kind: string, name: string): void {
  if (typeof name !== 'string' || !NAME_RE.test(name)) {
    throw new EngineError(EngineErrorCode.INVALID, `Invalid ${kind} name "${name}": use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
}

/** Throws ENGINE_INVALID unless `sizeBytes` is a valid disk size. */
export function checkSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0 || sizeBytes % Format.sectorBytes !== 0 || sizeBytes > diskBytesMax) {
    throw new EngineError(EngineErrorCode.INVALID, `Invalid size ${sizeBytes}: a disk size must be a positive multiple of 512 bytes, at most 1 PiB`);
  }
}

/** Disks, snapshots and branches in memory, each change persisted before it is taken in. */
export class History {
  readonly disks = new Map<string, DiskMeta>();
  readonly branches = new Map<number, BranchMeta>();
  /** The next seq to hand out: every record takes one; a snapshot stands at the one before. */
  seqNext = 1;
  private branchNext = 1;
  private viewpointCache = new Map<number, number[]>();
  private readonly index: BlockIndex;

  constructor(index: BlockIndex) {
    this.index = index;
  }

  /** Reads what the index's metadata holds (at open). */
  load(): void {
    const m = this.index.meta;
    for (const { value } of m.getRange({ start: 'branch/', end: 'branch0' })) this.branches.set(value.id, value as BranchMeta);
    for (const { value } of m.getRange({ start: 'disk/', end: 'disk0' })) this.disks.set((value as DiskMeta).name, value as DiskMeta);
    this.seqNext = m.get('seqNext') ?? 1;
    this.branchNext = m.get('branchNext') ?? 1;
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
   * size, if it has one — durably in one transaction, and takes both into memory.
   */
  headNewBranch(d: DiskMeta, parent: { branch: number; seq: number; sizeBytes?: number } | null): void {
    const branch: BranchMeta = { id: this.branchNext, parent: parent?.branch ?? null, forkSeq: parent?.seq ?? 0 };
    const before = { branch: d.branch, sizeBytes: d.sizeBytes };
    d.branch = branch.id;
    if (parent?.sizeBytes !== undefined) d.sizeBytes = parent.sizeBytes;
    try {
      this.index.transaction(() => {
        this.index.meta.putSync(`branch/${branch.id}`, branch);
        this.index.meta.putSync(`disk/${d.name}`, d);
        this.index.meta.putSync('branchNext', branch.id + 1);
      });
    } catch (err) {
      // Nothing was persisted: the disk stays as it was.
      Object.assign(d, before);
      throw err;
    }
    this.branchNext = branch.id + 1;
    this.branches.set(branch.id, branch);
    this.disks.set(d.name, d);
    this.invalidate();
  }

  /** Persists the disks (changed in memory by the caller) in one transaction. */
  persistDisks(ds: readonly DiskMeta[]): void {
    this.index.transaction(() => {
      for (const d of ds) this.index.meta.putSync(`disk/${d.name}`, d);
    });
  }

  /** Deletes a disk durably, then from memory. Its branches stay until swept. */
  removeDisk(name: string): void {
    this.index.transaction(() => this.index.meta.removeSync(`disk/${name}`));
    this.disks.delete(name);
    this.invalidate();
  }

  /** Deletes a branch nothing reads any more (its versions are swept already). */
  removeBranch(id: number): void {
    this.index.transaction(() => this.index.meta.removeSync(`branch/${id}`));
    this.branches.delete(id);
    this.invalidate();
  }
}
