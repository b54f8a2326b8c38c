/**
 * What a store holds, as the format fixture's manifest records it (test/fixtures/store-v1.json):
 * every disk and snapshot with its size and a digest of its bytes, each head's allocation map and
 * its changes since each of its snapshots, and what opening the store replayed.
 */
import { createHash } from 'node:crypto';
import type { Store, Volume } from '../../src/engine/index.ts';

/** Bytes read at a time while digesting (a 5 GiB sparse disk reads in 1280 steps). */
const readBytes = 4 * 1024 * 1024;
const blockBytes = 4096;
const zeroBlock = Buffer.alloc(blockBytes);

/**
 * A digest of a disk's bytes that does not cost a pass of SHA-256 over gigabytes of holes: the
 * SHA-256 of, for every 4 KiB block that is not all zeroes in order, its block number (u64 big
 * endian) then its bytes. Equal digests and sizes mean equal bytes.
 */
export class BlockDigest {
  readonly #hash = createHash('sha256');
  /** Adds block number `block` holding `bytes` (at most 4 KiB; a short last block is as it is). */
  add(block: number, bytes: Buffer): void {
    if (bytes.equals(zeroBlock.subarray(0, bytes.length))) return;
    const n = Buffer.alloc(8);
    n.writeBigUInt64BE(BigInt(block));
    this.#hash.update(n);
    this.#hash.update(bytes);
  }
  hex(): string {
    return this.#hash.digest('hex');
  }
}

/** Reads a whole volume and digests it. */
export async function digestVolume(v: Volume): Promise<string> {
  const d = new BlockDigest();
  // One buffer read into again and again: a fresh 4 MiB per read cost ~8 ms of page faults,
  // 10 s per 5 GiB disk on the test machine.
  const into = Buffer.alloc(readBytes);
  for (let at = 0; at < v.sizeBytes; at += readBytes) {
    const buf = await v.read(at, Math.min(readBytes, v.sizeBytes - at), into);
    for (let b = 0; b * blockBytes < buf.length; b++) d.add(at / blockBytes + b, buf.subarray(b * blockBytes, (b + 1) * blockBytes));
  }
  return d.hex();
}

/** One disk as the manifest records it. */
export interface DiskContents {
  name: string;
  sizeBytes: number;
  allocatedBytes: number;
  origin: string | null;
  createdMs: number;
  snapshots: string[];
  digest: string;
  /** The head's allocation map: [offset, length, hole, zero] runs. */
  allocation: [number, number, boolean, boolean][];
  /** Per snapshot of the disk: the [offset, length] runs changed since it. */
  changedSince: Record<string, [number, number][]>;
}

/** One snapshot as the manifest records it. */
export interface SnapshotContents {
  disk: string;
  name: string;
  sizeBytes: number;
  seq: number;
  createdMs: number;
  digest: string;
}

/** The whole of a store. */
export interface StoreContents {
  recovery: { recordsReplayed: number; tornBytesDropped: number };
  disks: DiskContents[];
  snapshots: SnapshotContents[];
}

/** Reads everything a store holds through its public API. */
export async function storeContents(store: Store): Promise<StoreContents> {
  const disks: DiskContents[] = [];
  const snapshots: SnapshotContents[] = [];
  for (const info of store.listDisks()) {
    const v = store.openVolume(info.name);
    try {
      const changedSince: Record<string, [number, number][]> = {};
      for (const s of info.snapshots) {
        changedSince[s] = (await v.changedSince(s, 0, info.sizeBytes)).filter((e) => e.changed).map((e) => [e.offset, e.length]);
      }
      disks.push({
        name: info.name,
        sizeBytes: info.sizeBytes,
        allocatedBytes: info.allocatedBytes,
        origin: info.origin,
        createdMs: info.createdMs,
        snapshots: info.snapshots,
        digest: await digestVolume(v),
        allocation: (await v.blockStatus(0, info.sizeBytes)).map((e) => [e.offset, e.length, e.hole, e.zero]),
        changedSince,
      });
    } finally {
      v.close();
    }
    for (const s of store.listSnapshots(info.name)) {
      const sv = store.openVolume(info.name, s.name);
      try {
        snapshots.push({ disk: s.disk, name: s.name, sizeBytes: s.sizeBytes, seq: s.seq, createdMs: s.createdMs, digest: await digestVolume(sv) });
      } finally {
        sv.close();
      }
    }
  }
  return { recovery: { ...store.recovery }, disks, snapshots };
}
