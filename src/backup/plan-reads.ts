/**
 * Range-read planning, written once for the restore (restore.ts) and the instant restore's chunk
 * fetches (hydrate/source.ts): the blobs needed from one pack are grouped into as few range reads
 * as the limits allow, reading through small gaps rather than asking the backend twice.
 */
import assert from 'node:assert/strict';

/** Where a blob is stored in its pack: the part of BlobLocation planning needs. */
export interface StoredRange {
  location: { offset: number; storedLength: number };
}

/** Limits of one range read. */
export interface RangeReadLimits {
  /** Largest gap between two needed blobs that one read covers (bytes read and thrown away). */
  gapBytesMax: number;
  /** Largest read; a blob larger than this is read by itself. */
  readBytesMax: number;
  /** Most blobs in one read (each opens into a plaintext held until the read is done). */
  blobsMax: number;
}

/** One range read of a pack and the blobs in it, in pack order. */
export interface RangeRead<B extends StoredRange> {
  packIdHex: string;
  offset: number;
  length: number;
  blobs: B[];
}

/**
 * Groups `blobs` (all in pack `packIdHex`) into range reads within `limits`, in pack order. Every
 * blob is in exactly one read, which covers all of its stored bytes. Overlapping blobs (only a
 * damaged index has them) are read together; opening them then finds the damage.
 */
export function planRangeReads<B extends StoredRange>(packIdHex: string, blobs: readonly B[], limits: RangeReadLimits): RangeRead<B>[] {
  assert.ok(limits.gapBytesMax >= 0 && limits.readBytesMax > 0 && limits.blobsMax >= 1, 'range read limits are positive');
  const sorted = [...blobs].sort((a, b) => a.location.offset - b.location.offset);
  const reads: RangeRead<B>[] = [];
  let cur: RangeRead<B> | null = null;
  for (const b of sorted) {
    const start = b.location.offset;
    const end = start + b.location.storedLength;
    if (
      cur !== null &&
      start - (cur.offset + cur.length) <= limits.gapBytesMax &&
      end - cur.offset <= limits.readBytesMax &&
      cur.blobs.length < limits.blobsMax
    ) {
      cur.length = Math.max(cur.length, end - cur.offset);
      cur.blobs.push(b);
    } else {
      cur = { packIdHex, offset: start, length: end - start, blobs: [b] };
      reads.push(cur);
    }
  }
  return reads;
}
