/**
 * The backup repository format, version 1 (docs/backup.md): names, sizes and limits as
 * constants, and the pure codecs of the binary parts (pack header entries, ids).
 * Everything here is part of the format: changing it means a new version.
 */
import assert from 'node:assert/strict';
import { BackupError, BackupErrorCode } from './errors.ts';

/** Format name and version in `tessera-repository`. */
export const repositoryFormat = {
  /** The `format` field of the plaintext marker file. */
  name: 'tessera-backup-repository',
  /** The one version this code reads and writes. */
  version: 1,
} as const;

/** Object paths (and path prefixes) of the layout. */
export const layout = {
  /** Plaintext JSON that says what this is: {format, version, id}. */
  marker: 'tessera-repository',
  /** Plaintext JSON key files, one per password. */
  keys: 'keys/',
  /** Encrypted repository parameters. */
  config: 'config',
  /** Pack files, under a two-hex-digit fan-out directory. */
  data: 'data/',
  /** Encrypted index files. */
  index: 'index/',
  /** Encrypted restore points. */
  snapshots: 'snapshots/',
  /** Encrypted markers of backups in progress. */
  writers: 'writers/',
  /** Encrypted prune marks. */
  prune: 'prune/',
  /** Encrypted records of restore points moved to an archive repository, named by their id. */
  archived: 'archived/',
} as const;

/** Path of a pack: `data/<pp>/<packid>`. */
export function packPath(packIdHex: string): string {
  return `${layout.data}${packIdHex.slice(0, 2)}/${packIdHex}`;
}

/** Bytes of every id (blob, pack, file): SHA-256 or HMAC-SHA-256 outputs. */
export const idBytes = 32;
/** An id as lowercase hex. */
export const idHexPattern = /^[0-9a-f]{64}$/;
/** The id of an all-zero chunk in a map: 32 zero bytes. */
export const zeroId = Buffer.alloc(idBytes);

/** Master key: encKey (AES-256-GCM) then idKey (HMAC-SHA-256). */
export const masterKeyBytes = 64;
/** AES-256-GCM nonce (random per seal). */
export const nonceBytes = 12;
/** AES-256-GCM tag. */
export const tagBytes = 16;
/** What seal() adds to a plaintext. */
export const sealOverheadBytes = nonceBytes + tagBytes;

/** Key derivation of key files; N·r·128 = 32 MiB of memory. */
export const scryptParams = { N: 32768, r: 8, p: 1 } as const;
/** Salt of a key file. */
export const saltBytes = 16;

/**
 * zstd level of blobs and encrypted files (frames say nothing of it: any level reads back).
 * Compression is most of a full backup's work. On a 2 GiB image of system files, against level 3:
 * level 2 took 20–26% less CPU for 3.7% more bytes, level 1 38% less for 9.7% more (still within
 * 1.1× of restic's repository, whose chunks are smaller). Level 1 is also what Proxmox Backup
 * Server compresses chunks with.
 */
export const zstdLevel = 1;
/** A compressed blob is kept only if it saves at least 1/this of the plaintext. */
export const compressionGainDivisor = 16;

/** Chunk sizes: a power of two in [min, max], fixed per repository. */
export const chunkSizeBytes = { default: 1 << 20, min: 64 << 10, max: 16 << 20 } as const;
/** Packs aim at this size (and a test repository may pick a smaller one, at least 64 KiB). */
export const packSizeTargetBytes = { default: 16 << 20, min: 64 << 10, max: 256 << 20 } as const;

/** Entries of a full map blob; a map entry is one id. */
export const mapEntriesPerBlob = 4096;

/** A backup writes an index file after this many packs (and one at the end). */
export const indexEveryPacks = 8;

/** Writer markers: rewritten this often; stale when not rewritten for staleMs. */
export const writerMarker = { refreshMs: 5 * 60_000, staleMs: 30 * 60_000 } as const;

/** Default grace period of prune marks. */
export const pruneGraceMsDefault = 60 * 60_000;

/** Kinds of blobs in pack headers and index entries. */
export const BlobType = {
  /** A chunk of an image. */
  DATA: 0,
  /** Repository metadata: an image map blob. */
  META: 1,
} as const;
/** One of the BlobType values. */
export type BlobTypeValue = (typeof BlobType)[keyof typeof BlobType];

/** Flags of a blob. */
export const BlobFlag = {
  /** The sealed payload is zstd-compressed plaintext. */
  COMPRESSED: 1,
} as const;

/** Bytes of one pack header entry: type u8, flags u8, storedLength u32, plainLength u32, id. */
export const headerEntryBytes = 1 + 1 + 4 + 4 + idBytes;
/** The u32 LE length of the sealed header that ends every pack. */
export const headerLengthBytes = 4;

/** One blob of a pack as its header describes it; offsets follow from the order. */
export interface PackEntry {
  type: BlobTypeValue;
  flags: number;
  /** Length of the sealed blob in the pack. */
  storedLength: number;
  /** Length of the plaintext (a chunk, a map blob). */
  plainLength: number;
  id: Buffer;
}

/** Encodes pack header entries (before sealing). */
export function encodePackEntries(entries: readonly PackEntry[]): Buffer {
  const out = Buffer.alloc(entries.length * headerEntryBytes);
  let at = 0;
  for (const e of entries) {
    assert.ok(e.type === BlobType.DATA || e.type === BlobType.META);
    assert.equal(e.id.length, idBytes);
    out.writeUInt8(e.type, at);
    out.writeUInt8(e.flags, at + 1);
    out.writeUInt32LE(e.storedLength, at + 2);
    out.writeUInt32LE(e.plainLength, at + 6);
    e.id.copy(out, at + 10);
    at += headerEntryBytes;
  }
  assert.equal(at, out.length);
  return out;
}

/** Decodes opened pack header entries; anything malformed is BACKUP_CORRUPT. */
export function decodePackEntries(bytes: Buffer, what: string): PackEntry[] {
  if (bytes.length % headerEntryBytes !== 0) {
    throw new BackupError(BackupErrorCode.CORRUPT, `Header of ${what} is ${bytes.length} bytes, not a multiple of ${headerEntryBytes}`);
  }
  const entries: PackEntry[] = [];
  for (let at = 0; at < bytes.length; at += headerEntryBytes) {
    const type = bytes.readUInt8(at);
    const flags = bytes.readUInt8(at + 1);
    if ((type !== BlobType.DATA && type !== BlobType.META) || (flags & ~BlobFlag.COMPRESSED) !== 0) {
      throw new BackupError(BackupErrorCode.CORRUPT, `Header of ${what} has a bad entry (type ${type}, flags ${flags})`);
    }
    entries.push({
      type,
      flags,
      storedLength: bytes.readUInt32LE(at + 2),
      plainLength: bytes.readUInt32LE(at + 6),
      id: Buffer.from(bytes.subarray(at + 10, at + 10 + idBytes)),
    });
  }
  return entries;
}

/** Checks that `text` is a 64-digit lowercase hex id. */
export function isHexId(text: string): boolean {
  return idHexPattern.test(text);
}
