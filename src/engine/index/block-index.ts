/**
 * The versioned block index, kept in LMDB: one entry per retained version of each block, keyed
 * so that the versions of a block sort newest first. Also holds per-segment live-byte counters,
 * the log position applied so far, and (in the same environment) the store's metadata.
 */
import { open, type RootDatabase, type Database, type DatabaseOptions } from 'lmdb';
import assert from 'node:assert/strict';
import { EngineError, EngineErrorCode } from '../errors.ts';
import type { DriveHealth } from '../health.ts';
import type { IndexOp } from './writer.ts';
import type { LogPosition } from '../log/write-log.ts';
import { encodeKey, decodeKey, decodeValue, encodeValue, entryValueBytes, indexKeyBytes, type Entry } from '../format.ts';

/** A version of a block found in the index, with the branch it lives on. */
export interface Found extends Entry {
  branch: number;
  block: number;
}

const SEQ_TOP = 2 ** 48 - 1;
const segmentEndsOptions = { keyEncoding: 'uint32', encoding: 'msgpack' } as const;
/** One past the last block number a key can hold. */
export const blockIndexEnd = 2 ** 48 - 1;

/** Blocks per chunk of the head cache (16 MiB of disk). */
const CHUNK_BLOCKS = 4096;
/** Chunks kept in the head cache: about 18 bytes a block, so ~75 MiB covering 16 GiB of disk. */
const CHUNKS_MAX = 1024;
/** Longest range scanned through the cache (4 GiB of disk); longer ones go to LMDB. */
const CACHED_SCAN_BLOCKS_MAX = 256 * CHUNK_BLOCKS;

/**
 * The newest version of every block of a 4096-block chunk of one branch, as the index has it:
 * what a read of a disk's head needs, without an LMDB cursor per request. seq 0 = no version.
 * A chunk with no version at all holds no arrays (`slots` null), so scanning a sparse disk's
 * whole range costs little memory and no per-block work.
 */
interface Chunk {
  slots: Slots | null;
}

interface Slots {
  seq: Float64Array;
  segment: Uint32Array;
  offset: Uint32Array;
  kind: Uint8Array;
  mask: Uint8Array;
}

function newSlots(): Slots {
  return {
    seq: new Float64Array(CHUNK_BLOCKS),
    segment: new Uint32Array(CHUNK_BLOCKS),
    offset: new Uint32Array(CHUNK_BLOCKS),
    kind: new Uint8Array(CHUNK_BLOCKS),
    mask: new Uint8Array(CHUNK_BLOCKS),
  };
}

export class BlockIndex {
  readonly root: RootDatabase;
  readonly blocks: Database<Buffer, Buffer>;
  /**
   * The `meta` database: the index's checkpoint ('applied', 'seqNext', written in the same
   * transactions as the versions), and the engine's metadata ('disk/<name>', 'branch/<id>',
   * 'branchNext'), which goes through meta/lmdb.ts.
   */
  readonly meta: Database<any, string>;
  /** Segment id → live data bytes. */
  readonly segments: Database<number, number>;
  /**
   * Segment id → the offset just past the last of its records the index has absorbed: bytes the
   * log made durable before the index took them, so a segment file shorter than this was cut
   * (see open-check.ts). Null in a store made before it was kept, until keepSegmentEnds().
   */
  segmentEnds: Database<number, number> | null;

  /** Write-through cache of the newest versions: `${branch}:${chunk}` → chunk. */
  private chunks = new Map<string, Chunk>();
  /** The drive's state (the store's index; the writer thread's has none, the store judges its failures). */
  private readonly health: DriveHealth | null;

  /**
   * Opens the index in `path`. Read-only, LMDB writes nothing, and works on a read-only file
   * system (it then keeps no lock file; nobody can write there either).
   */
  constructor(path: string, opts: { readOnly?: boolean; health?: DriveHealth } = {}) {
    this.health = opts.health ?? null;
    const readOnly = opts.readOnly === true;
    this.root = open({ path, maxDbs: 8, mapSize: 2 ** 40, readOnly });
    try {
      // Read-only, a database that is not there opens as undefined (lmdb-js cannot create it).
      const blocks: Database<Buffer, Buffer> | undefined = this.root.openDB<Buffer, Buffer>('blocks', { keyEncoding: 'binary', encoding: 'binary' });
      const meta: Database<any, string> | undefined = this.root.openDB<any, string>('meta', { encoding: 'msgpack' });
      const segments: Database<number, number> | undefined = this.root.openDB<number, number>('segments', { keyEncoding: 'uint32', encoding: 'msgpack' });
      if (!blocks || !meta || !segments) throw new EngineError(EngineErrorCode.CORRUPT, `The block index in ${path} lacks its databases: not a store's index`);
      this.blocks = blocks;
      this.meta = meta;
      this.segments = segments;
      // Not created here: an open that finds the log damaged must leave the index as it was
      // (`create: false`, which lmdb-js takes but does not declare, opens it only if it is there).
      const ends: Database<number, number> | undefined = this.root.openDB<number, number>('segmentEnds', { ...segmentEndsOptions, create: false } as DatabaseOptions);
      this.segmentEnds = ends ?? null;
    } catch (err) {
      void this.root.close();
      throw err;
    }
  }


  /** Creates the segmentEnds database should the store have none yet (a store made before it was kept). */
  keepSegmentEnds(): void {
    this.segmentEnds ??= this.root.openDB<number, number>('segmentEnds', segmentEndsOptions);
  }

  /** How far the log is applied, and the next seq to hand out, as last committed. */
  checkpoint(): { applied: LogPosition; seqNext: number } {
    return { applied: this.meta.get('applied') ?? { segment: 0, offset: 0 }, seqNext: this.meta.get('seqNext') ?? 1 };
  }

  /**
   * Visits, for each block in [blockStart, blockEnd) that has one on `branch`, the newest version
   * with seq ≤ maxSeq, in block order. Returning false from `visit` stops the scan.
   */
  scanLatest(branch: number, blockStart: number, blockEnd: number, maxSeq: number, visit: (f: Found) => boolean | void): void {
    if (blockEnd <= blockStart) return;
    // Past a few GiB a range is scanned in LMDB, which skips what was never written in one
    // cursor pass instead of visiting (and filling) a cache chunk per 16 MiB of a sparse disk.
    if (maxSeq >= SEQ_TOP && blockEnd - blockStart <= CACHED_SCAN_BLOCKS_MAX) this.scanCached(branch, blockStart, blockEnd, visit);
    else this.scanIndex(branch, blockStart, blockEnd, maxSeq, visit);
  }

  private scanIndex(branch: number, blockStart: number, blockEnd: number, maxSeq: number, visit: (f: Found) => boolean | void): void {
    const start = encodeKey(branch, blockStart, SEQ_TOP);
    const end = encodeKey(branch, blockEnd, SEQ_TOP);
    let lastBlock = -1;
    // Hot path of every read: decode in place, one object per block found.
    for (const { key, value } of this.blocks.getRange({ start, end, snapshot: false })) {
      const block = key.readUIntBE(4, 6);
      if (block === lastBlock) continue;
      const seq = SEQ_TOP - key.readUIntBE(10, 6);
      if (seq > maxSeq) continue;
      lastBlock = block;
      const f: Found = { seq, kind: value[0] as Found['kind'], mask: value[1], segment: value.readUInt32LE(2), offset: value.readUInt32LE(6), branch, block };
      if (visit(f) === false) return;
    }
  }

  /**
   * scanLatest from the cache, without an object per block: `visit(block, kind, segment, offset)`
   * for each block in range with a version on `branch` with seq ≤ maxSeq. For the head (maxSeq
   * ∞) the chunks are loaded as needed; for an earlier point only chunks already cached serve,
   * and only where no block in range has a newer version (a snapshot of a disk not written
   * since, as a backup reads it). Returns false, visiting nothing, where the cache cannot answer
   * (a range longer than the cache covers, or the conditions above): the caller then scans.
   */
  forEachCached(branch: number, blockStart: number, blockEnd: number, maxSeq: number, visit: (block: number, kind: number, segment: number, offset: number) => void): boolean {
    if (blockEnd - blockStart > CACHED_SCAN_BLOCKS_MAX) return false;
    const cFirst = Math.floor(blockStart / CHUNK_BLOCKS);
    const cEnd = Math.ceil(blockEnd / CHUNK_BLOCKS);
    if (maxSeq < SEQ_TOP) {
      for (let c = cFirst; c < cEnd; c++) {
        const chunk = this.chunks.get(`${branch}:${c}`);
        if (chunk === undefined) return false;
        if (chunk.slots === null) continue;
        const base = c * CHUNK_BLOCKS;
        const seqs = chunk.slots.seq;
        for (let i = Math.max(blockStart, base) - base, to = Math.min(blockEnd, base + CHUNK_BLOCKS) - base; i < to; i++) if (seqs[i] > maxSeq) return false;
      }
    }
    for (let c = cFirst; c < cEnd; c++) {
      const slots = this.chunk(branch, c).slots;
      if (slots === null) continue;
      const base = c * CHUNK_BLOCKS;
      const from = Math.max(blockStart, base) - base;
      const to = Math.min(blockEnd, base + CHUNK_BLOCKS) - base;
      for (let i = from; i < to; i++) if (slots.seq[i] !== 0) visit(base + i, slots.kind[i], slots.segment[i], slots.offset[i]);
    }
    return true;
  }

  private scanCached(branch: number, blockStart: number, blockEnd: number, visit: (f: Found) => boolean | void): void {
    for (let c = Math.floor(blockStart / CHUNK_BLOCKS); c * CHUNK_BLOCKS < blockEnd; c++) {
      const slots = this.chunk(branch, c).slots;
      if (slots === null) continue;
      const base = c * CHUNK_BLOCKS;
      const from = Math.max(blockStart, base) - base;
      const to = Math.min(blockEnd, base + CHUNK_BLOCKS) - base;
      for (let i = from; i < to; i++) {
        const seq = slots.seq[i];
        if (seq === 0) continue;
        const f: Found = { seq, kind: slots.kind[i] as Found['kind'], mask: slots.mask[i], segment: slots.segment[i], offset: slots.offset[i], branch, block: base + i };
        if (visit(f) === false) return;
      }
    }
  }

  private chunk(branch: number, c: number): Chunk {
    const key = `${branch}:${c}`;
    let chunk = this.chunks.get(key);
    if (chunk) return chunk;
    const ch: Chunk = { slots: null };
    const base = c * CHUNK_BLOCKS;
    this.scanIndex(branch, base, base + CHUNK_BLOCKS, SEQ_TOP, (f) => setSlot(ch, f.block - base, f));
    if (this.chunks.size >= CHUNKS_MAX) this.chunks.delete(this.chunks.keys().next().value!);
    this.chunks.set(key, ch);
    return ch;
  }

  /**
   * Runs fn in one write transaction. Should it throw, the transaction is rolled back, and so is
   * the cache (dropped whole, to be refilled from what was committed). A transaction the drive
   * failed (not for a full file system) puts the store in the failing state; while failing, no
   * transaction is begun (ENGINE_IO).
   */
  transaction(fn: () => void): void {
    this.health?.check();
    try {
      this.root.transactionSync(fn);
    } catch (err) {
      this.chunks.clear();
      const e = indexError(err);
      if (e instanceof EngineError && e.code === EngineErrorCode.IO) throw this.health?.fail(err, 'updating the block index') ?? e;
      throw e;
    }
  }

  /** Visits every version on `branch` of blocks in [blockStart, ∞), block order, newest first. */
  *versions(branch: number, blockStart: number): Generator<Found> {
    const start = encodeKey(branch, blockStart, SEQ_TOP);
    const end = Buffer.alloc(4);
    end.writeUInt32BE(branch + 1, 0);
    for (const { key, value } of this.blocks.getRange({ start, end, snapshot: false })) {
      const k = decodeKey(key);
      assert.equal(k.branch, branch);
      yield { ...decodeValue(k.seq, value), branch, block: k.block };
    }
  }


  /**
   * Calls `visitRun` with the runs of blocks in [blockStart, blockEnd) that have a version on
   * `branch` with seq above `after`, in block order: what changed on a line of history since a
   * snapshot. A block's newest version (from the head cache) tells whether it has one, and a
   * cursor seek finds the next chunk holding anything, so a sparse disk costs one seek per
   * written chunk, not one visit per 16 MiB.
   */
  blocksChangedAfter(branch: number, blockStart: number, blockEnd: number, after: number, visitRun: (start: number, end: number) => void): void {
    let at = blockStart;
    while (at < blockEnd) {
      const first = this.firstBlock(branch, at, blockEnd);
      if (first < 0) return;
      const c = Math.floor(first / CHUNK_BLOCKS);
      const base = c * CHUNK_BLOCKS;
      const slots = this.chunk(branch, c).slots;
      const to = Math.min(blockEnd, base + CHUNK_BLOCKS);
      at = to;
      if (slots === null) continue;
      for (let i = first - base; i < to - base; i++) {
        if (slots.seq[i] <= after) continue;
        let j = i + 1;
        while (j < to - base && slots.seq[j] > after) j++;
        visitRun(base + i, base + j);
        i = j;
      }
    }
  }

  /**
   * Visits every version on `branch` with seq above `after` of blocks in [blockStart, blockEnd),
   * in block order, newest first (see blocksChangedAfter).
   */
  versionsAfter(branch: number, blockStart: number, blockEnd: number, after: number, visit: (f: Found) => void): void {
    this.blocksChangedAfter(branch, blockStart, blockEnd, after, (a, b) => this.scanVersions(branch, a, b, after, visit));
  }

  /** The first block in [blockStart, blockEnd) with any version on `branch`, or -1. */
  private firstBlock(branch: number, blockStart: number, blockEnd: number): number {
    const start = encodeKey(branch, blockStart, SEQ_TOP);
    const end = encodeKey(branch, blockEnd, SEQ_TOP);
    for (const key of this.blocks.getKeys({ start, end, limit: 1, snapshot: false })) return key.readUIntBE(4, 6);
    return -1;
  }

  /** Visits the versions with seq above `after` of blocks in [blockStart, blockEnd) from LMDB. */
  private scanVersions(branch: number, blockStart: number, blockEnd: number, after: number, visit: (f: Found) => void): void {
    const start = encodeKey(branch, blockStart, SEQ_TOP);
    const end = encodeKey(branch, blockEnd, SEQ_TOP);
    for (const { key, value } of this.blocks.getRange({ start, end, snapshot: false })) {
      const seq = SEQ_TOP - key.readUIntBE(10, 6);
      if (seq <= after) continue;
      visit({ ...decodeValue(seq, value), branch, block: key.readUIntBE(4, 6) });
    }
  }

  get(branch: number, block: number, seq: number): Entry | null {
    const v = this.blocks.get(encodeKey(branch, block, seq, this.scratchKey));
    return v ? decodeValue(seq, v) : null;
  }

  // lmdb-js copies a key, and in a synchronous transaction a value, before put/remove/get return:
  // one buffer of each serves every call.
  private readonly scratchKey = Buffer.alloc(indexKeyBytes);
  private readonly scratchValue = Buffer.alloc(entryValueBytes);

  put(branch: number, block: number, e: Entry): void {
    this.blocks.putSync(encodeKey(branch, block, e.seq, this.scratchKey), encodeValue(e, this.scratchValue));
    const chunk = this.chunks.get(`${branch}:${Math.floor(block / CHUNK_BLOCKS)}`);
    if (chunk) setSlot(chunk, block % CHUNK_BLOCKS, e);
  }

  remove(branch: number, block: number, seq: number): void {
    this.blocks.removeSync(encodeKey(branch, block, seq, this.scratchKey));
    const key = `${branch}:${Math.floor(block / CHUNK_BLOCKS)}`;
    const chunk = this.chunks.get(key);
    // Removing the newest version exposes an older one: refill that chunk when next read.
    if (chunk?.slots && chunk.slots.seq[block % CHUNK_BLOCKS] === seq) this.chunks.delete(key);
  }


  /**
   * Takes into the head cache what another thread committed: the index writer's batch, whose
   * puts come before its removes (a block's new version goes in before the old one leaves).
   */
  cacheCommitted(ops: readonly IndexOp[]): void {
    for (const op of ops) {
      const key = `${op.branch}:${Math.floor(op.block / CHUNK_BLOCKS)}`;
      const chunk = this.chunks.get(key);
      if (!chunk) continue;
      if (op.put) setSlot(chunk, op.block % CHUNK_BLOCKS, op.put);
      else if (chunk.slots && chunk.slots.seq[op.block % CHUNK_BLOCKS] === op.seq) this.chunks.delete(key);
    }
  }

  close(): Promise<void> {
    return this.root.close();
  }
}

/** Records `e` as slot `i`'s version unless the slot already holds a newer one. */
function setSlot(chunk: Chunk, i: number, e: Entry): void {
  const slots = (chunk.slots ??= newSlots());
  if (e.seq < slots.seq[i]) return; // an older version: the newest stays
  slots.seq[i] = e.seq;
  slots.segment[i] = e.segment;
  slots.offset[i] = e.offset;
  slots.kind[i] = e.kind;
  slots.mask[i] = e.mask;
}

/** LMDB's own error codes (lmdb-js reports them, and errnos, as a number `code`). */
const Mdb = {
  /** The environment's map size is reached: a limit, not the drive. */
  MAP_FULL: -30792,
  /** A page of the index is not what LMDB wrote. */
  CORRUPTED: -30796,
  PAGE_NOTFOUND: -30797,
  /** Writing a meta page failed, or the environment had a fatal error: the drive. */
  PANIC: -30795,
} as const;

/**
 * A failed index transaction as the engine reports it: a full file system is ENGINE_NO_SPACE,
 * damaged pages ENGINE_CORRUPT, an error of the system (lmdb-js gives the errno as a positive
 * number) or LMDB's panic ENGINE_IO, the drive's failure. Anything else (an EngineError or a bug
 * of the transaction's own code, LMDB's other codes: limits and misuse) is passed on as it is.
 */
export function indexError(err: unknown): unknown {
  if (err instanceof EngineError) return err;
  const e = err as { code?: unknown; message?: unknown; syscall?: unknown } | null;
  // lmdb-js reports the errno as a number (28 is ENOSPC, 122 EDQUOT on Linux) with the C library's message.
  const full = e?.code === 28 || e?.code === 122 || e?.code === Mdb.MAP_FULL || e?.code === 'ENOSPC' || e?.code === 'EDQUOT' || (typeof e?.message === 'string' && /No space left/.test(e.message));
  if (full) return new EngineError(EngineErrorCode.NO_SPACE, 'No space left while updating the block index', { cause: err });
  if (e?.code === Mdb.CORRUPTED || e?.code === Mdb.PAGE_NOTFOUND) return new EngineError(EngineErrorCode.CORRUPT, `The block index is damaged: ${String(e.message)}`, { cause: err });
  const drive = (typeof e?.code === 'number' && e.code > 0) || e?.code === Mdb.PANIC || typeof e?.syscall === 'string';
  if (drive) return new EngineError(EngineErrorCode.IO, `I/O error while updating the block index: ${String(e?.message)}`, { cause: err });
  return err;
}
