/**
 * On-disk format of the write log, declared in one place. See docs/engine.md.
 *
 * A segment file is a 64-byte segment header followed by records. A record is a 64-byte header
 * (checksummed on its own, so it can be trusted before its payload is read) followed by its
 * payload (whole 4 KiB blocks for WRITE, nothing for ZERO/TRIM).
 */
import { crc32 } from '../native/index.ts';
import assert from 'node:assert/strict';

export const Format = {
  /** Bytes in one index block: the unit of versioning and of read-modify-write. */
  blockBytes: 4096,
  /** Bytes in one sector: the granularity of sub-block change tracking (8 sectors a block). */
  sectorBytes: 512,
  /** Segment header size. */
  segmentHeaderBytes: 64,
  /** Magic at offset 0 of a segment file: "TSSEGMNT". */
  segmentMagic: 0x5453_5345_474d_4e54n,
  /** Format version written in segment headers. */
  segmentVersion: 1,
  /** Record header size. */
  recordHeaderBytes: 64,
  /** Magic at offset 0 of a record header: "TREC". */
  recordMagic: 0x5452_4543,
  /** Largest payload of one record (blocks are split into several records beyond this). */
  recordPayloadBytesMax: 32 * 1024 * 1024,
} as const;

/** Record types. */
export const RecordType = {
  /** Whole blocks of data; payload = blockCount * blockBytes. */
  WRITE: 1,
  /** Blocks read as zeroes and stay allocated (NBD write-zeroes with NO_HOLE). No payload. */
  ZERO: 2,
  /** Blocks deallocated: read as zeroes, reported as holes. No payload. */
  TRIM: 3,
  /** Live blocks copied forward by the compactor: same branch and seq as the original. */
  RELOCATE: 4,
} as const;
export type RecordTypeValue = (typeof RecordType)[keyof typeof RecordType];

/** A decoded record header. */
export interface RecordHeader {
  type: RecordTypeValue;
  /** Version stamp: global, strictly increasing across all disks (RELOCATE keeps the original). */
  seq: number;
  /** Branch (a line of history of one disk) the blocks belong to. */
  branch: number;
  /** First block number. */
  blockStart: number;
  blockCount: number;
  /** Sectors of the first block the client actually wrote (bit i = sector i); 0xff if whole. */
  maskFirst: number;
  /** Sectors of the last block the client actually wrote. */
  maskLast: number;
  /** Payload length in bytes. */
  payloadBytes: number;
  /** CRC-32 of the payload. */
  payloadCrc: number;
}

/*
 * Record header layout (little endian):
 *   0 u32 magic          4 u8 type      5 u8 maskFirst   6 u8 maskLast   7 u8 reserved (0)
 *   8 u64 seq           16 u32 branch  20 u32 blockCount
 *  24 u64 blockStart    32 u32 payloadBytes  36 u32 payloadCrc
 *  40..59 reserved (0)  60 u32 headerCrc (CRC-32 of bytes 0..59)
 */

/** Encodes a record header into a new 64-byte buffer. */
export function encodeRecordHeader(h: RecordHeader): Buffer {
  assert.ok(Number.isSafeInteger(h.seq) && h.seq >= 0);
  assert.ok(h.blockCount > 0 && h.payloadBytes <= Format.recordPayloadBytesMax);
  // One per write request: from Node's shared pool rather than an allocation of its own, and
  // the 64-bit fields as two 32-bit halves rather than through BigInt.
  const b = Buffer.allocUnsafe(Format.recordHeaderBytes);
  b.writeUInt32LE(Format.recordMagic, 0);
  b.writeUInt8(h.type, 4);
  b.writeUInt8(h.maskFirst, 5);
  b.writeUInt8(h.maskLast, 6);
  b.writeUInt8(0, 7);
  writeUInt64LE(b, h.seq, 8);
  b.writeUInt32LE(h.branch, 16);
  b.writeUInt32LE(h.blockCount, 20);
  writeUInt64LE(b, h.blockStart, 24);
  b.writeUInt32LE(h.payloadBytes, 32);
  b.writeUInt32LE(h.payloadCrc, 36);
  b.fill(0, 40, 60);
  b.writeUInt32LE(crc32(b.subarray(0, 60)), 60);
  return b;
}

/** Writes a safe integer as an unsigned 64-bit little-endian value. */
function writeUInt64LE(b: Buffer, n: number, at: number): void {
  b.writeUInt32LE(n % 2 ** 32, at);
  b.writeUInt32LE(Math.floor(n / 2 ** 32), at + 4);
}

/** Decodes a record header; returns null when magic or checksum do not match (torn or garbage). */
export function decodeRecordHeader(b: Buffer): RecordHeader | null {
  if (b.length !== Format.recordHeaderBytes) return null;
  if (b.readUInt32LE(0) !== Format.recordMagic) return null;
  if (b.readUInt32LE(60) !== crc32(b.subarray(0, 60))) return null;
  const type = b.readUInt8(4);
  if (type < RecordType.WRITE || type > RecordType.RELOCATE) return null;
  const h: RecordHeader = {
    type: type as RecordTypeValue,
    maskFirst: b.readUInt8(5),
    maskLast: b.readUInt8(6),
    seq: Number(b.readBigUInt64LE(8)),
    branch: b.readUInt32LE(16),
    blockCount: b.readUInt32LE(20),
    blockStart: Number(b.readBigUInt64LE(24)),
    payloadBytes: b.readUInt32LE(32),
    payloadCrc: b.readUInt32LE(36),
  };
  const hasPayload = h.type === RecordType.WRITE || h.type === RecordType.RELOCATE;
  if (h.blockCount === 0 || h.payloadBytes > Format.recordPayloadBytesMax) return null;
  if (hasPayload !== (h.payloadBytes > 0)) return null;
  if (hasPayload && h.payloadBytes !== h.blockCount * Format.blockBytes) return null;
  return h;
}

/*
 * Segment header layout (little endian): 0 u64 magic, 8 u16 version, 10 u16 reserved,
 * 12 u32 segment id, 16 u64 created ms, 24..59 reserved, 60 u32 CRC-32 of bytes 0..59.
 */

/** Encodes a segment header. */
export function encodeSegmentHeader(id: number, createdMs: number): Buffer {
  const b = Buffer.alloc(Format.segmentHeaderBytes);
  b.writeBigUInt64LE(Format.segmentMagic, 0);
  b.writeUInt16LE(Format.segmentVersion, 8);
  b.writeUInt32LE(id, 12);
  b.writeBigUInt64LE(BigInt(createdMs), 16);
  b.writeUInt32LE(crc32(b.subarray(0, 60)), 60);
  return b;
}

/** Decodes a segment header; returns its id, or null if it is not a valid version-1 header. */
export function decodeSegmentHeader(b: Buffer): { id: number; version: number } | null {
  if (b.length !== Format.segmentHeaderBytes) return null;
  if (b.readBigUInt64LE(0) !== Format.segmentMagic) return null;
  if (b.readUInt32LE(60) !== crc32(b.subarray(0, 60))) return null;
  const version = b.readUInt16LE(8);
  if (version !== Format.segmentVersion) return null;
  return { id: b.readUInt32LE(12), version };
}

/*
 * Index entry: key = branch u32 BE | block u48 BE | (2^48-1 - seq) u48 BE, so that for one
 * block the newest version sorts first. Value = kind u8 | mask u8 | segment u32 LE | offset u32 LE.
 */

/** What an index entry says a block holds. */
export const EntryKind = {
  /** Data stored in the log at (segment, offset). */
  DATA: 1,
  /** Zeroes, allocated (write-zeroes with NO_HOLE). */
  ZERO: 2,
  /** Deallocated (trim, or write-zeroes allowed to punch a hole). */
  HOLE: 3,
} as const;
export type EntryKindValue = (typeof EntryKind)[keyof typeof EntryKind];

/** One version of one block. */
export interface Entry {
  seq: number;
  kind: EntryKindValue;
  /** Sectors that changed in this version relative to the version before it. */
  mask: number;
  segment: number;
  offset: number;
}

const SEQ_MAX = 2 ** 48 - 1;
export const indexKeyBytes = 16;

/** Encodes an index key. */
export function encodeKey(branch: number, block: number, seq: number, into?: Buffer): Buffer {
  const k = into ?? Buffer.allocUnsafe(indexKeyBytes);
  k.writeUInt32BE(branch, 0);
  k.writeUIntBE(block, 4, 6);
  k.writeUIntBE(SEQ_MAX - seq, 10, 6);
  return k;
}

/** Decodes an index key. */
export function decodeKey(k: Buffer): { branch: number; block: number; seq: number } {
  assert.equal(k.length, indexKeyBytes);
  return { branch: k.readUInt32BE(0), block: k.readUIntBE(4, 6), seq: SEQ_MAX - k.readUIntBE(10, 6) };
}

export const entryValueBytes = 10;

/** Encodes an index value. */
export function encodeValue(e: Entry, into?: Buffer): Buffer {
  const v = into ?? Buffer.allocUnsafe(entryValueBytes);
  v.writeUInt8(e.kind, 0);
  v.writeUInt8(e.mask, 1);
  v.writeUInt32LE(e.segment, 2);
  v.writeUInt32LE(e.offset, 6);
  return v;
}

/** Decodes an index value for a key's seq. */
export function decodeValue(seq: number, v: Buffer): Entry {
  assert.equal(v.length, entryValueBytes);
  return { seq, kind: v.readUInt8(0) as EntryKindValue, mask: v.readUInt8(1), segment: v.readUInt32LE(2), offset: v.readUInt32LE(6) };
}
