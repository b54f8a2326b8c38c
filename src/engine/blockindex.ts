/**
 * The versioned block index, kept in LMDB: one entry per retained version of each block, keyed
 * so that the versions of a block sort newest first. Also holds the store's metadata (disks,
 * snapshots, branches), per-segment live-byte counters and the log position applied so far.
 */
import { open, type RootDatabase, type Database } from 'lmdb';
import assert from 'node:assert/strict';
import { encodeKey, decodeKey, decodeValue, encodeValue, type Entry } from './format.ts';
import type { LogPosition } from './log.ts';

/** A version of a block found in the index, with the branch it lives on. */
export interface Found extends Entry {
  branch: number;
  block: number;
}

const SEQ_TOP = 2 ** 48 - 1;

export class BlockIndex {
  readonly root: RootDatabase;
  readonly blocks: Database<Buffer, Buffer>;
  /** Metadata: 'disk/<name>', 'branch/<id>', 'applied', 'seqNext', 'branchNext', 'format'. */
  readonly meta: Database<any, string>;
  /** Segment id → live data bytes. */
  readonly segments: Database<number, number>;

  constructor(path: string) {
    this.root = open({ path, maxDbs: 8, mapSize: 2 ** 40 });
    this.blocks = this.root.openDB<Buffer, Buffer>('blocks', { keyEncoding: 'binary', encoding: 'binary' });
    this.meta = this.root.openDB<any, string>('meta', { encoding: 'msgpack' });
    this.segments = this.root.openDB<number, number>('segments', { keyEncoding: 'uint32', encoding: 'msgpack' });
  }

  /** The newest version of `block` on `branch` with seq ≤ maxSeq, or null. */
  latest(branch: number, block: number, maxSeq: number): Found | null {
    const start = encodeKey(branch, block, Math.min(maxSeq, SEQ_TOP));
    const end = encodeKey(branch, block, 0);
    for (const { key, value } of this.blocks.getRange({ start, end, limit: 1, snapshot: false })) {
      const k = decodeKey(key);
      return { ...decodeValue(k.seq, value), branch, block };
    }
    // `end` is exclusive: check the seq-0 slot explicitly.
    const v = this.blocks.get(end);
    return v ? { ...decodeValue(0, v), branch, block } : null;
  }

  /**
   * Visits, for each block in [blockStart, blockEnd) that has one on `branch`, the newest version
   * with seq ≤ maxSeq, in block order. Returning false from `visit` stops the scan.
   */
  scanLatest(branch: number, blockStart: number, blockEnd: number, maxSeq: number, visit: (f: Found) => boolean | void): void {
    if (blockEnd <= blockStart) return;
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

  /** The version right after `seq` of a block (the one that superseded it), or null. */
  successor(branch: number, block: number, seq: number): Found | null {
    if (seq >= SEQ_TOP - 1) return null;
    // Keys of one block ascend as seq descends: walk backwards from just above `seq`.
    const start = encodeKey(branch, block, seq + 1);
    const end = encodeKey(branch, block, SEQ_TOP);
    for (const { key, value } of this.blocks.getRange({ start, end, reverse: true, limit: 1, snapshot: false })) {
      const k = decodeKey(key);
      return { ...decodeValue(k.seq, value), branch, block };
    }
    return null;
  }

  get(branch: number, block: number, seq: number): Entry | null {
    const v = this.blocks.get(encodeKey(branch, block, seq));
    return v ? decodeValue(seq, v) : null;
  }

  put(branch: number, block: number, e: Entry): void {
    this.blocks.putSync(encodeKey(branch, block, e.seq), encodeValue(e));
  }

  remove(branch: number, block: number, seq: number): void {
    this.blocks.removeSync(encodeKey(branch, block, seq));
  }

  applied(): LogPosition | null {
    return this.meta.get('applied') ?? null;
  }

  close(): Promise<void> {
    return this.root.close();
  }
}
