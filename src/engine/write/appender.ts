/**
 * The write path's engine side: a volume's writes, zeroes and trims become log records of the
 * disk's head branch, readable through the overlay once written (docs/engine.md, Write path).
 */
import assert from 'node:assert/strict';
import { crc32 } from '../../native/index.ts';
import { Format, RecordType, type RecordHeader } from '../format.ts';
import type { WriteLog } from '../log/write-log.ts';
import type { DiskMeta, History } from '../history.ts';
import type { Overlay } from '../read/overlay.ts';
import type { Reader } from '../read/reader.ts';
import type { SpaceGuard } from '../space.ts';

const BS = Format.blockBytes;
const FULL_MASK = 0xff;
/** A ZERO/TRIM record's block count is a u32: longer ranges take several records. */
const zeroBlocksPerRecordMax = 2 ** 31;

/** A zeroing record's type. */
export type ZeroType = typeof RecordType.ZERO | typeof RecordType.TRIM;

/** Sectors of one block touched by bytes [fromByte, toByte) (block-relative), as a mask. */
export function sectorMask(fromByte: number, toByte: number): number {
  const first = Math.floor(fromByte / Format.sectorBytes);
  const last = Math.ceil(toByte / Format.sectorBytes);
  let m = 0;
  for (let s = first; s < last; s++) m |= 1 << s;
  return m;
}

/** Appends a disk head's records to the log and makes them readable. */
export class Appender {
  private readonly log: WriteLog;
  private readonly history: History;
  private readonly overlay: Overlay;
  private readonly reader: Reader;
  /** Throws what refuses a write: a closed store, a failing drive. */
  private readonly checkWritable: () => void;
  /** Refuses client writes once the node is full (docs/engine.md, "The reserve and the thresholds"). */
  private readonly space: SpaceGuard;
  /** `branch:block` → the read-modify-write holding that block. */
  private readonly locks = new Map<string, Promise<void>>();

  constructor(opts: { log: WriteLog; history: History; overlay: Overlay; reader: Reader; checkWritable: () => void; space: SpaceGuard }) {
    this.log = opts.log;
    this.history = opts.history;
    this.overlay = opts.overlay;
    this.reader = opts.reader;
    this.checkWritable = opts.checkWritable;
    this.space = opts.space;
  }

  /** Serialises read-modify-write of blocks: `fn` runs once every earlier holder of them is done. */
  async withBlockLocks<T>(branch: number, blocks: number[], fn: () => Promise<T>): Promise<T> {
    const keys = blocks.map((b) => `${branch}:${b}`);
    const prior = keys.map((k) => this.locks.get(k)).filter((p): p is Promise<void> => !!p);
    let release!: () => void;
    const mine = new Promise<void>((r) => (release = r));
    for (const k of keys) this.locks.set(k, mine);
    try {
      if (prior.length) await Promise.all(prior);
      return await fn();
    } finally {
      for (const k of keys) if (this.locks.get(k) === mine) this.locks.delete(k);
      release();
    }
  }

  /**
   * Appends whole blocks of data to a disk's head; resolves when written (and durable with fua).
   * `zeroing`: the edge of a trim or write-zeroes, admitted as they are while the node is full.
   */
  async appendData(d: DiskMeta, blockStart: number, payload: Buffer, maskFirst: number, maskLast: number, fua: boolean, zeroing = false): Promise<void> {
    this.checkWritable();
    const blockCount = payload.length / BS;
    assert.ok(Number.isInteger(blockCount) && blockCount > 0);
    if (zeroing) this.space.admitZero();
    else this.space.admitData(payload.length + Format.recordHeaderBytes * Math.ceil(payload.length / Format.recordPayloadBytesMax));
    const per = Format.recordPayloadBytesMax / BS;
    const record = (i: number, n: number): Promise<void> => {
      const part = n === blockCount ? payload : payload.subarray(i * BS, (i + n) * BS);
      const header: RecordHeader = {
        type: RecordType.WRITE,
        seq: this.history.seqNext++,
        branch: d.branch,
        blockStart: blockStart + i,
        blockCount: n,
        maskFirst: i === 0 ? maskFirst : FULL_MASK,
        maskLast: i + n === blockCount ? maskLast : FULL_MASK,
        payloadBytes: part.length,
        payloadCrc: crc32(part),
      };
      return this.appendRecord(header, part);
    };
    // One record (every request the NBD server accepts) needs no array of promises to gather.
    if (blockCount <= per) await record(0, blockCount);
    else {
      const writes: Promise<void>[] = [];
      for (let i = 0; i < blockCount; i += per) writes.push(record(i, Math.min(per, blockCount - i)));
      await allDone(writes);
    }
    if (fua) await this.log.sync();
  }

  /** Appends ZERO or TRIM records over whole blocks. */
  async appendZero(d: DiskMeta, blockStart: number, blockCount: number, type: ZeroType, fua: boolean): Promise<void> {
    this.checkWritable();
    this.space.admitZero();
    const writes: Promise<void>[] = [];
    for (let i = 0; i < blockCount; i += zeroBlocksPerRecordMax) {
      const n = Math.min(zeroBlocksPerRecordMax, blockCount - i);
      const header: RecordHeader = {
        type, seq: this.history.seqNext++, branch: d.branch, blockStart: blockStart + i, blockCount: n, maskFirst: FULL_MASK, maskLast: FULL_MASK, payloadBytes: 0, payloadCrc: 0,
      };
      writes.push(this.appendRecord(header, null));
    }
    await allDone(writes);
    if (fua) await this.log.sync();
  }

  /** Async so that an append refused at once (a segment that cannot be started) is a rejection too. */
  private async appendRecord(header: RecordHeader, payload: Buffer | null): Promise<void> {
    const { append, written } = this.log.append(header, payload);
    await written;
    this.overlay.add(append);
  }

  /** Zeroes or deallocates a byte range of a disk's head. */
  async zeroRange(d: DiskMeta, offset: number, length: number, type: ZeroType, fua: boolean): Promise<void> {
    this.checkWritable();
    const end = offset + length;
    const firstFull = Math.ceil(offset / BS);
    const lastFull = Math.floor(end / BS);
    const work: Promise<void>[] = [];
    // Partial blocks at the edges are rewritten with zeroes in place (read-modify-write).
    const edge = async (block: number) => {
      const from = Math.max(offset, block * BS);
      const to = Math.min(end, (block + 1) * BS);
      await this.withBlockLocks(d.branch, [block], async () => {
        const buf = Buffer.allocUnsafe(BS);
        await this.reader.readBlocks(this.history.chain(d.branch, Infinity), block, block + 1, buf, d.name);
        const rel = from - block * BS;
        if (buf.subarray(rel, rel + (to - from)).every((x) => x === 0)) return;
        buf.fill(0, rel, rel + (to - from));
        const m = sectorMask(rel, rel + (to - from));
        await this.appendData(d, block, buf, m, m, false, true);
      });
    };
    if (firstFull > lastFull) {
      work.push(edge(Math.floor(offset / BS)));
    } else {
      if (offset % BS) work.push(edge(Math.floor(offset / BS)));
      if (end % BS) work.push(edge(Math.floor(end / BS)));
      if (lastFull > firstFull) work.push(this.appendZero(d, firstFull, lastFull - firstFull, type, false));
    }
    await allDone(work);
    if (fua) await this.log.sync();
  }
}

/**
 * Waits for every part of a request, then fails with the first part's error if one failed. A
 * request reported failed must not go on changing the disk: a part still running (the edge of a
 * write-zeroes reading its block) would land after the client's next write and undo it.
 */
async function allDone(parts: Promise<void>[]): Promise<void> {
  let failure: { err: unknown } | null = null;
  await Promise.all(parts.map((p) => p.catch((err: unknown) => void (failure ??= { err }))));
  if (failure !== null) throw (failure as { err: unknown }).err;
}
