/**
 * The engine's metadata store: disks, their snapshots, branches and the branch counter go
 * through this one interface, so that a cluster-wide store (etcd) can sit beside the embedded
 * one. Public methods validate names, sizes and structure and keep the key layout; backends
 * implement `_get/_put/_delete/_list/_batch` over plain keys and values (as src/backup/backend.ts
 * does for object storage). test/engine/meta-conformance.ts runs against every backend.
 *
 * The block index's own state (versions, applied log position, next seq, segment counters) is
 * not metadata: it stays in the index's transactions (docs/engine.md, The metadata store).
 */
import { EngineError, EngineErrorCode } from '../errors.ts';
import { Format } from '../format.ts';

/** A snapshot as stored: a point (branch, seq) of a disk's history. */
export interface SnapMeta {
  name: string;
  branch: number;
  seq: number;
  sizeBytes: number;
  createdMs: number;
  /**
   * The hybrid logical clock's value when it was taken (docs/cluster.md, "Time"), as its decimal
   * integer; absent for a snapshot taken without one (before stamps existed, or on a store
   * without a clock).
   */
  hlc?: string;
}

/** A disk as stored: the branch its head is on, and its snapshots, oldest first. */
export interface DiskMeta {
  name: string;
  branch: number;
  sizeBytes: number;
  createdMs: number;
  /** `DISK@SNAP` it was cloned from, or null. */
  origin: string | null;
  snapshots: SnapMeta[];
}

/** One line of history. */
export interface BranchMeta {
  id: number;
  /** Branch this one forked from, or null for a fresh disk. */
  parent: number | null;
  /** Seq on the parent the fork sees (inclusive); 0 for a fresh disk. */
  forkSeq: number;
}

/** One change of an atomic commit. */
export type MetaOp =
  | { op: 'putDisk'; disk: DiskMeta }
  | { op: 'deleteDisk'; name: string }
  | { op: 'putBranch'; branch: BranchMeta }
  | { op: 'deleteBranch'; id: number }
  | { op: 'setBranchNext'; value: number };

/** Everything the engine keeps here, as read at open. */
export interface MetaContents {
  disks: DiskMeta[];
  branches: BranchMeta[];
  /** The id the next branch gets (1 in a new store). */
  branchNext: number;
}

/** A raw change for a backend's `_batch`: a value to put under `key`, or (undefined) its deletion. */
export interface RawOp {
  key: string;
  value: unknown;
}

/** Largest virtual disk: 1 PiB. */
export const diskBytesMax = 2 ** 50;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Most operations in one commit (a group snapshot writes one disk each). */
export const metaOpsPerCommitMax = 4096;

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

/** Keys: the store format's (docs/engine.md, LMDB databases, `meta`). */
const diskKey = (name: string) => `disk/${name}`;
const branchKey = (id: number) => `branch/${id}`;
const BRANCH_NEXT = 'branchNext';

const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 1;
const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isTime = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0;
/** A clock value as stored: the decimal integer of an unsigned 64-bit value. */
const isHlc = (v: unknown): v is string => typeof v === 'string' && /^(0|[1-9][0-9]{0,19})$/.test(v) && BigInt(v) < 2n ** 64n;

/** Why `d` is not a valid disk record, or null. */
function diskFault(d: DiskMeta): string | null {
  if (typeof d !== 'object' || d === null) return 'not an object';
  try {
    checkName('disk', d.name);
    checkSize(d.sizeBytes);
  } catch (err) {
    return (err as Error).message;
  }
  if (!isId(d.branch)) return `branch ${d.branch} is not a branch id`;
  if (!isTime(d.createdMs)) return `createdMs ${d.createdMs} is not a time`;
  if (d.origin !== null && (typeof d.origin !== 'string' || !/^[^@]+@[^@]+$/.test(d.origin))) return `origin ${d.origin} is not DISK@SNAP`;
  if (!Array.isArray(d.snapshots)) return 'snapshots is not a list';
  const names = new Set<string>();
  for (const s of d.snapshots) {
    if (typeof s !== 'object' || s === null) return 'a snapshot is not an object';
    try {
      checkName('snapshot', s.name);
      checkSize(s.sizeBytes);
    } catch (err) {
      return (err as Error).message;
    }
    if (names.has(s.name)) return `snapshot "${s.name}" is there twice`;
    names.add(s.name);
    if (!isId(s.branch)) return `snapshot "${s.name}": branch ${s.branch} is not a branch id`;
    if (!isSeq(s.seq)) return `snapshot "${s.name}": seq ${s.seq} is not a seq`;
    if (!isTime(s.createdMs)) return `snapshot "${s.name}": createdMs ${s.createdMs} is not a time`;
    if (s.hlc !== undefined && !isHlc(s.hlc)) return `snapshot "${s.name}": hlc ${JSON.stringify(s.hlc)} is not a clock value`;
  }
  return null;
}

/** Why `b` is not a valid branch record, or null. */
function branchFault(b: BranchMeta): string | null {
  if (typeof b !== 'object' || b === null) return 'not an object';
  if (!isId(b.id)) return `id ${b.id} is not a branch id`;
  if (b.parent !== null && (!isId(b.parent) || b.parent === b.id)) return `parent ${b.parent} is not another branch's id`;
  if (!isSeq(b.forkSeq)) return `forkSeq ${b.forkSeq} is not a seq`;
  if (b.parent === null && b.forkSeq !== 0) return `a branch without parent forks at ${b.forkSeq}, not 0`;
  return null;
}

function invalid(what: string, fault: string): EngineError {
  return new EngineError(EngineErrorCode.INVALID, `Invalid ${what}: ${fault}`);
}

function corrupt(key: string, fault: string): EngineError {
  return new EngineError(EngineErrorCode.CORRUPT, `Stored metadata "${key}" is damaged: ${fault}`);
}

/**
 * The metadata store's public face. Values given to it are stored as given (the same objects:
 * the embedded backend's encoding keeps their field order, so the bytes stay the format's).
 */
export abstract class MetaStore {
  /** Everything stored, checked: damaged records are ENGINE_CORRUPT. */
  async load(): Promise<MetaContents> {
    const disks: DiskMeta[] = [];
    for (const { key, value } of await this._list('disk/')) {
      const d = value as DiskMeta;
      const fault = diskFault(d) ?? (key === diskKey(d.name) ? null : `it names disk "${d.name}"`);
      if (fault) throw corrupt(key, fault);
      disks.push(d);
    }
    const branches: BranchMeta[] = [];
    for (const { key, value } of await this._list('branch/')) {
      const b = value as BranchMeta;
      const fault = branchFault(b) ?? (key === branchKey(b.id) ? null : `it names branch ${b.id}`);
      if (fault) throw corrupt(key, fault);
      branches.push(b);
    }
    const next = await this._get(BRANCH_NEXT);
    if (next !== undefined && !isId(next)) throw corrupt(BRANCH_NEXT, `${next} is not a branch id`);
    return { disks, branches, branchNext: (next as number | undefined) ?? 1 };
  }

  /** One disk's record, or null. */
  async getDisk(name: string): Promise<DiskMeta | null> {
    checkName('disk', name);
    const d = (await this._get(diskKey(name))) as DiskMeta | undefined;
    if (d === undefined) return null;
    const fault = diskFault(d);
    if (fault) throw corrupt(diskKey(name), fault);
    return d;
  }

  /**
   * Makes every change, or (should one be invalid, or the backend fail) none. The backend's
   * work starts synchronously, in the caller's turn: the embedded one commits before this
   * returns, so no other transaction on its environment comes between (see Applier.idle).
   */
  commit(ops: readonly MetaOp[]): Promise<void> {
    let raw: RawOp[];
    try {
      raw = this.validate(ops);
    } catch (err) {
      return Promise.reject(err);
    }
    if (raw.length === 1) return raw[0].value === undefined ? this._delete(raw[0].key) : this._put(raw[0].key, raw[0].value);
    return this._batch(raw);
  }

  private validate(ops: readonly MetaOp[]): RawOp[] {
    if (!Array.isArray(ops) || ops.length === 0) throw invalid('metadata commit', 'no operation');
    if (ops.length > metaOpsPerCommitMax) throw invalid('metadata commit', `${ops.length} operations, at most ${metaOpsPerCommitMax}`);
    const raw: RawOp[] = [];
    const keys = new Set<string>();
    for (const o of ops) {
      let r: RawOp;
      switch (o?.op) {
        case 'putDisk': {
          const fault = diskFault(o.disk);
          if (fault) throw invalid('disk record', fault);
          r = { key: diskKey(o.disk.name), value: o.disk };
          break;
        }
        case 'deleteDisk':
          checkName('disk', o.name);
          r = { key: diskKey(o.name), value: undefined };
          break;
        case 'putBranch': {
          const fault = branchFault(o.branch);
          if (fault) throw invalid('branch record', fault);
          r = { key: branchKey(o.branch.id), value: o.branch };
          break;
        }
        case 'deleteBranch':
          if (!isId(o.id)) throw invalid('branch id', String(o.id));
          r = { key: branchKey(o.id), value: undefined };
          break;
        case 'setBranchNext':
          if (!isId(o.value)) throw invalid('branch counter', String(o.value));
          r = { key: BRANCH_NEXT, value: o.value };
          break;
        default:
          throw invalid('metadata operation', JSON.stringify(o));
      }
      if (keys.has(r.key)) throw invalid('metadata commit', `"${r.key}" is changed twice`);
      keys.add(r.key);
      raw.push(r);
    }
    return raw;
  }

  /** The value under `key`, or undefined. */
  protected abstract _get(key: string): Promise<unknown>;
  /** Stores `value` under `key`. */
  protected abstract _put(key: string, value: unknown): Promise<void>;
  /** Removes `key` (no error if absent). */
  protected abstract _delete(key: string): Promise<void>;
  /** Every key starting with `prefix`, in key order, with its value. */
  protected abstract _list(prefix: string): Promise<{ key: string; value: unknown }[]>;
  /** Makes all changes (undefined value: delete) atomically, or none. */
  protected abstract _batch(ops: RawOp[]): Promise<void>;
}
