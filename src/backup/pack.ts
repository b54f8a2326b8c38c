/**
 * Pack files (docs/backup.md, "Blobs and packs"): the writer that groups sealed blobs into packs
 * and uploads them with bounded concurrency, and the reader of a pack's header.
 */
import assert from 'node:assert/strict';
import { createHash, type Hash } from 'node:crypto';
import type { Backend, ObjectWriter } from '../objstore/index.ts';
import { openSealed, type Keys, type SealedBlob } from './crypto.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { decodePackEntries, headerEntryBytes, headerLengthBytes, layout, packPath, sealOverheadBytes, type BlobTypeValue, type PackEntry } from './format.ts';
import type { WorkerPool } from './pool.ts';
import { AdaptiveLimiter } from '../flow/index.ts';

/** One blob of a pack as an index file lists it: [type, flags, offset, storedLength, plainLength, id]. */
export type IndexBlob = [type: BlobTypeValue, flags: number, offset: number, storedLength: number, plainLength: number, id: Buffer];

/** A pack as an index file lists it. */
export interface IndexedPack {
  id: Buffer;
  size: number;
  blobs: IndexBlob[];
}

/** Index entries of a pack from its header entries (offsets follow from the order). */
export function indexBlobsOf(entries: readonly PackEntry[]): IndexBlob[] {
  let offset = 0;
  return entries.map((e) => {
    const b: IndexBlob = [e.type, e.flags, offset, e.storedLength, e.plainLength, e.id];
    offset += e.storedLength;
    return b;
  });
}

/**
 * The header entries of a pack of `packSize` bytes, from `tail`, its last tail.length bytes.
 * Returns the header length needed if `tail` is too short to hold it.
 */
export function parsePackTail(keys: Keys, tail: Buffer, packSize: number, packIdHex: string): PackEntry[];
export function parsePackTail(keys: Keys, tail: Buffer, packSize: number, packIdHex: string, allowShort: true): PackEntry[] | number;
export function parsePackTail(keys: Keys, tail: Buffer, packSize: number, packIdHex: string, allowShort = false): PackEntry[] | number {
  const what = `Header of pack ${packIdHex}`;
  if (tail.length < headerLengthBytes) throw new BackupError(BackupErrorCode.CORRUPT, `Pack ${packIdHex} is too short for a header`);
  const headerLength = tail.readUInt32LE(tail.length - headerLengthBytes);
  if (headerLength > packSize - headerLengthBytes || headerLength < sealOverheadBytes || (headerLength - sealOverheadBytes) % headerEntryBytes !== 0) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} claims a length of ${headerLength} bytes`);
  }
  if (headerLength + headerLengthBytes > tail.length) {
    if (allowShort) return headerLength + headerLengthBytes;
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} is cut`);
  }
  const sealed = tail.subarray(tail.length - headerLengthBytes - headerLength, tail.length - headerLengthBytes);
  const entries = decodePackEntries(openSealed(keys.encKey, sealed, what), `pack ${packIdHex}`);
  const blobBytes = entries.reduce((n, e) => n + e.storedLength, 0);
  if (blobBytes + headerLength + headerLengthBytes !== packSize) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} does not account for the pack's ${packSize} bytes`);
  }
  return entries;
}

/** Reads the header of a stored pack with one range read (two if the header is large). */
export async function readPackHeader(backend: Backend, keys: Keys, packIdHex: string, packSize: number): Promise<PackEntry[]> {
  const path = packPath(packIdHex);
  const first = Math.min(packSize, 64 * 1024);
  const tail = await backend.get(path, { offset: packSize - first, length: first });
  const r = parsePackTail(keys, tail, packSize, packIdHex, true);
  if (typeof r !== 'number') return r;
  return parsePackTail(keys, await backend.get(path, { offset: packSize - r, length: r }), packSize, packIdHex);
}

/** Limits of a PackWriter. */
export interface PackWriterOptions {
  /** A pack is closed once its blobs reach this many bytes. */
  packSizeTargetBytes: number;
  /** Most packs being built or uploaded at once; add() waits when this many are. */
  uploadsMax: number;
  /** Fewest packs the adaptive limit goes down to. Default 1. */
  uploadsMin?: number;
  /** Where the adaptive limit starts. Default 2 (within the bounds). */
  uploadsInitial?: number;
}

/** Where a PackWriter's packs go. */
export interface PackWriterContext {
  backend: Backend;
  pool: WorkerPool;
  type: BlobTypeValue;
  onUploaded: (pack: IndexedPack) => Promise<void>;
}

/**
 * Collects sealed blobs of one type into packs (hashed and handed to the backend as they come,
 * so that a directory has them written by the time the pack is full; each header sealed on a
 * worker) and uploads them.
 * `onUploaded` runs (serially, in completion order) after each pack is stored. How many packs
 * are built or uploaded at once adapts to the upload throughput (an AdaptiveLimiter between
 * uploadsMin and uploadsMax): S3 over a long path wants many, a local disk few.
 */
export class PackWriter {
  /** The open pack's bytes so far (null until its first blob). */
  private out: ObjectWriter | null = null;
  private entries: PackEntry[] = [];
  private bytes = 0;
  /**
   * SHA-256 of the open pack's blobs so far. Hashed here as blobs are added (one blob at a time,
   * ~0.2 ms each) rather than on a worker when the pack closes: that moved every sealed blob to a
   * worker and back, and each transferred buffer is new external memory that V8 collects for.
   */
  private hash: Hash = createHash('sha256');
  private readonly uploads = new Set<Promise<void>>();
  private error: unknown = null;
  private chain: Promise<void> = Promise.resolve();

  private readonly ctx: PackWriterContext;
  private readonly options: PackWriterOptions;
  /** Upload slots. */
  readonly limiter: AdaptiveLimiter;

  constructor(ctx: PackWriterContext, options: PackWriterOptions) {
    assert.ok(options.uploadsMax >= 1);
    this.ctx = ctx;
    this.options = options;
    const min = Math.min(options.uploadsMin ?? 1, options.uploadsMax);
    this.limiter = new AdaptiveLimiter({ min, max: options.uploadsMax, initial: options.uploadsInitial ?? 2, windowCompletionsMin: 2 });
  }

  /**
   * Adds a sealed blob (moved: the caller must not touch it again). Waits while the open pack is
   * full and every upload slot is taken, so at most one open pack and uploadsMax uploads are held.
   */
  async add(id: Buffer, blob: SealedBlob): Promise<void> {
    while (this.bytes >= this.options.packSizeTargetBytes) {
      if (this.error !== null) throw this.error;
      await this.uploadOpenPack(true);
    }
    if (this.error !== null) throw this.error;
    this.out ??= this.ctx.backend.writeObject(layout.data.slice(0, -1));
    this.out.write(blob.sealed);
    this.hash.update(blob.sealed);
    this.entries.push({ type: this.ctx.type, flags: blob.flags, storedLength: blob.sealed.length, plainLength: blob.plainLength, id });
    this.bytes += blob.sealed.length;
    if (this.bytes >= this.options.packSizeTargetBytes && this.limiter.tryAcquire()) this.startUpload();
  }

  /**
   * Waits for an upload slot and uploads the open pack with it, unless another adder did
   * meanwhile (`full`: only if the open pack is still full).
   */
  private async uploadOpenPack(full: boolean): Promise<void> {
    await this.limiter.acquire();
    const ready = full ? this.bytes >= this.options.packSizeTargetBytes : this.entries.length > 0;
    if (ready && this.error === null) this.startUpload();
    else this.limiter.cancel();
  }

  /**
   * Uploads the open pack (if any blob is in it) and waits for every upload; after a failed
   * upload, drops the open pack and throws.
   */
  async flush(): Promise<void> {
    while (this.entries.length > 0 && this.error === null) await this.uploadOpenPack(false);
    while (this.uploads.size > 0) await Promise.all(this.uploads);
    await this.chain;
    if (this.error !== null) {
      // An upload failed: the open pack is not stored (nor its temporary file left behind).
      await this.out?.abort();
      this.out = null;
      this.entries = [];
      this.bytes = 0;
      throw this.error;
    }
  }

  /** Starts uploading the open pack with an upload slot the caller holds. */
  private startUpload(): void {
    assert.ok(this.entries.length > 0);
    const out = this.out!;
    const entries = this.entries;
    this.out = null;
    this.entries = [];
    const bytes = this.bytes;
    this.bytes = 0;
    const hash = this.hash;
    this.hash = createHash('sha256');
    const upload = this.upload(out, entries, hash).then(
      () => this.limiter.release({ bytes }),
      (err) => {
        this.error ??= err;
        this.limiter.release({ bytes, ok: false });
      },
    );
    this.uploads.add(upload);
    void upload.finally(() => this.uploads.delete(upload));
  }

  private async upload(out: ObjectWriter, entries: PackEntry[], hash: Hash): Promise<void> {
    // The pack: its blobs (written already), then the sealed header and its length (sealed on a worker).
    let trailer: Buffer;
    try {
      trailer = await this.ctx.pool.packTrailer(entries);
    } catch (err) {
      await out.abort();
      throw err;
    }
    const id = hash.update(trailer).digest();
    const idHex = id.toString('hex');
    out.write(trailer);
    const bytes = out.bytes;
    await out.commit(packPath(idHex));
    const indexed: IndexedPack = { id, size: bytes, blobs: indexBlobsOf(entries) };
    const next = this.chain.then(() => this.ctx.onUploaded(indexed));
    this.chain = next.catch(() => {});
    await next;
  }
}
