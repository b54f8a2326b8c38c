/**
 * Writing a restore point (docs/backup.md): chunks are read by the caller, hashed on workers,
 * looked up in the index cache, and only new ones compressed, sealed, packed and uploaded, all
 * pipelined under a byte budget. Map blobs are built as their 4096 chunks complete.
 */
import assert from 'node:assert/strict';
import { open, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { fileSource } from '../fsread/index.ts';
import { native } from '../native/index.ts';
import { ByteBudget, SharedSlots, type AdaptiveLimiterStats } from '../flow/index.ts';
import { buildCatalog } from './catalog.ts';
import type { IndexCache } from './cache.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { BlobType, idBytes, indexEveryPacks, layout, mapEntriesPerBlob, zeroId } from './format.ts';
import { PackWriter, indexBlobsOf, readPackHeader, type IndexedPack } from './pack.ts';
import type { WorkerPool } from './pool.ts';
import { tenantPattern, type ArchivedFrom, type PruneMark, type Repository, type Snapshot, type SnapshotStats } from './repository.ts';

/** Limits of a backup. */
export interface WriterLimits {
  /** Chunk bytes read but not yet packed. Default 64 MiB. */
  inFlightBytesMax?: number;
  /**
   * Most packs being built or uploaded at once, per kind (data, meta): the adaptive limit moves
   * from 1 to this, starting at 2, and stays below the backend's requestsMax. Default 8.
   */
  uploadsMax?: number;
}

/** Progress of a backup, for a progress line. */
export interface BackupProgress {
  sizeBytes: number;
  bytesScanned: number;
  bytesStored: number;
  chunksNew: number;
  chunksReused: number;
  chunksZero: number;
}

/** What a finished backup made. */
export interface BackupResult {
  id: string;
  snapshot: Snapshot;
}

/** Chunks the guess of likelyNew() looks back on, and how many of them must have been new. */
const recentBits = 16;
const recentMask = (1 << recentBits) - 1;
const likelyNewMin = 12;

function isAllZero(buf: Buffer, zeroes: Buffer): boolean {
  return buf.equals(zeroes.length === buf.length ? zeroes : zeroes.subarray(0, buf.length));
}

/**
 * One restore point being written. Feed every chunk index exactly once with putChunk() (after
 * allocChunk()), putZero() or putKnown(), then finish(). The repository's writer marker must be held by the
 * caller from before the cache was synced until after finish() or abort().
 */
export class BackupWriter {
  readonly sizeBytes: number;
  readonly chunkSizeBytes: number;
  readonly chunkCount: number;
  private readonly repo: Repository;
  private readonly cache: IndexCache;
  private readonly pool: WorkerPool;
  private readonly budget: ByteBudget;
  private readonly zeroes: Buffer;
  /**
   * Chunk buffers: slots of memory shared with the workers, which hash and seal chunks where they
   * lie (a chunk moved to a worker and back as a transferred buffer counted twice as new external
   * memory, and V8 ran full collections for it). allocChunk hands out views of slots.
   */
  private readonly slots: SharedSlots;
  /** The slot of each chunk buffer handed out and not yet given back. */
  private readonly slotOf = new Map<Buffer, number>();
  private readonly data: PackWriter;
  private readonly meta: PackWriter;
  private readonly started: number;

  /** Packs (hex) holding blobs this backup reused. */
  private readonly reusedPacks = new Set<string>();
  /** Blob ids (hex) decided to be uploaded by this backup and not yet in the cache. */
  private readonly ownBlobs = new Set<string>();
  /** Whether each of the last recentBits chunks hashed was new, a bit each (newest lowest); starts all new. */
  private recentNew = recentMask;
  /** Packs uploaded but not yet listed by an index file. */
  private unindexed: IndexedPack[] = [];
  private readonly tasks = new Set<Promise<void>>();
  private error: unknown = null;

  /** Per map blob: its entries as they complete, and how many are set. */
  private readonly groups = new Map<number, { entries: Buffer; set: number }>();
  private readonly mapIds: (Buffer | null)[];
  private readonly fed: Uint8Array;

  readonly stats: SnapshotStats = { bytesScanned: 0, bytesNew: 0, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0, durationMs: 0 };
  /** Index files this backup wrote. */
  indexFilesWritten = 0;
  /** Packs this backup uploaded. */
  packsUploaded = 0;

  constructor(ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool }, sizeBytes: number, limits: WriterLimits = {}) {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes < 0) throw new BackupError(BackupErrorCode.INVALID, `Bad image size ${sizeBytes}`);
    this.repo = ctx.repo;
    this.cache = ctx.cache;
    this.pool = ctx.pool;
    this.sizeBytes = sizeBytes;
    this.chunkSizeBytes = ctx.repo.config.chunkSizeBytes;
    this.chunkCount = Math.ceil(sizeBytes / this.chunkSizeBytes);
    this.budget = new ByteBudget(limits.inFlightBytesMax ?? 64 << 20);
    this.zeroes = Buffer.alloc(this.chunkSizeBytes);
    // The budget holds at most this many chunks at once (one more: a short last chunk).
    this.slots = new SharedSlots(this.chunkSizeBytes, Math.max(1, Math.ceil(this.budget.bytesMax / this.chunkSizeBytes)) + 1);
    const uploadsMax = Math.max(1, Math.min(limits.uploadsMax ?? 8, ctx.repo.backend.requestsMax));
    const packOptions = { packSizeTargetBytes: ctx.repo.config.packSizeTargetBytes, uploadsMax };
    const onUploaded = (p: IndexedPack) => this.packUploaded(p);
    this.data = new PackWriter({ backend: ctx.repo.backend, pool: ctx.pool, type: BlobType.DATA, onUploaded }, packOptions);
    this.meta = new PackWriter({ backend: ctx.repo.backend, pool: ctx.pool, type: BlobType.META, onUploaded }, packOptions);
    this.mapIds = new Array(Math.ceil(this.chunkCount / mapEntriesPerBlob)).fill(null);
    this.fed = new Uint8Array(this.chunkCount);
    this.started = ctx.repo.now();
  }

  /** Length of chunk `index` (the last one may be short). */
  chunkLength(index: number): number {
    return Math.min(this.chunkSizeBytes, this.sizeBytes - index * this.chunkSizeBytes);
  }

  /** The adaptive limits of this backup's data movers: busy workers, data pack uploads. */
  movers(): { workers: AdaptiveLimiterStats; uploads: AdaptiveLimiterStats } {
    return { workers: this.pool.stats(), uploads: this.data.limiter.stats() };
  }

  /** Progress so far. */
  progress(): BackupProgress {
    const s = this.stats;
    return { sizeBytes: this.sizeBytes, bytesScanned: s.bytesScanned, bytesStored: s.bytesStored, chunksNew: s.chunksNew, chunksReused: s.chunksReused, chunksZero: s.chunksZero };
  }

  private check(): void {
    if (this.error !== null) throw this.error;
  }

  private claim(index: number): void {
    assert.ok(Number.isSafeInteger(index) && index >= 0 && index < this.chunkCount, `chunk ${index} out of range`);
    assert.equal(this.fed[index], 0, `chunk ${index} fed twice`);
    this.fed[index] = 1;
  }

  /** A buffer for chunk `index`, once the budget has room for it. */
  async allocChunk(index: number): Promise<Buffer> {
    this.check();
    const length = this.chunkLength(index);
    await this.budget.acquire(length);
    const [slot] = await this.slots.take(1);
    const buf = this.slots.view(slot, length);
    this.slotOf.set(buf, slot);
    return buf;
  }

  /** Gives a chunk buffer's slot back. */
  private releaseChunk(buf: Buffer): void {
    const slot = this.slotOf.get(buf)!;
    this.slotOf.delete(buf);
    this.slots.give([slot]);
  }

  /** Hands over chunk `index` (from allocChunk, filled); processing goes on in the background. */
  putChunk(index: number, chunk: Buffer): void {
    this.check();
    assert.ok(this.slotOf.has(chunk), 'putChunk takes a buffer from allocChunk');
    this.claim(index);
    assert.equal(chunk.length, this.chunkLength(index));
    this.stats.bytesScanned += chunk.length;
    if (isAllZero(chunk, this.zeroes)) {
      this.budget.release(chunk.length);
      this.releaseChunk(chunk);
      this.stats.chunksZero++;
      this.setMapEntry(index, zeroId);
      return;
    }
    this.track(this.processChunk(index, chunk));
  }

  /** Records chunk `index` as all zeroes (a hole) without reading it. */
  putZero(index: number): void {
    this.check();
    this.claim(index);
    this.stats.bytesScanned += this.chunkLength(index);
    this.stats.chunksZero++;
    this.setMapEntry(index, zeroId);
  }

  /**
   * Records chunk `index` as blob `id` without reading it (an incremental backup copies the map
   * entries of unchanged chunks from its parent). Returns false, feeding nothing, when the
   * repository no longer has that blob: the caller then reads the chunk.
   */
  putKnown(index: number, id: Buffer): boolean {
    this.check();
    if (id.equals(zeroId)) {
      this.claim(index);
      this.stats.chunksZero++;
      this.setMapEntry(index, zeroId);
      return true;
    }
    if (!this.known(id)) return false;
    this.claim(index);
    this.stats.chunksReused++;
    this.setMapEntry(index, id);
    return true;
  }

  private track(p: Promise<void>): void {
    const t = p.catch((err) => {
      this.error ??= err;
    });
    this.tasks.add(t);
    void t.finally(() => this.tasks.delete(t));
  }

  /**
   * Whether the repository has blob `id` (or this backup is storing it), for a restore point that
   * refers to a blob it did not store itself: its pack is then kept for this backup like a
   * reused chunk's.
   */
  hasBlob(id: Buffer): boolean {
    this.check();
    return this.known(id);
  }

  /** Whether the repository has blob `id` or this backup is storing it already. */
  private known(id: Buffer): boolean {
    if (this.ownBlobs.has(id.toString('hex'))) return true;
    const loc = this.cache.lookup(id);
    if (loc === undefined) return false;
    this.reusedPacks.add(loc.packId.toString('hex'));
    return true;
  }

  /**
   * A prune that marked a pack after this backup synced its cache took it out of the index; if
   * this backup reused it, list it again before the restore point refers to it.
   */
  private async relistMarkedPacks(): Promise<void> {
    const markIds = await this.repo.listIds(layout.prune);
    if (markIds.length === 0) return;
    const relist: IndexedPack[] = [];
    for (const markId of markIds) {
      let mark: PruneMark;
      try {
        mark = (await this.repo.getObject(layout.prune, markId, `Prune mark ${markId}`)) as PruneMark;
      } catch (err) {
        if (err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND) continue; // swept meanwhile
        throw err;
      }
      for (const p of mark.packs) {
        const hex = p.id.toString('hex');
        if (!this.reusedPacks.has(hex) || relist.some((q) => q.id.equals(p.id))) continue;
        const size = this.cache.packSize(p.id) ?? p.size;
        relist.push({ id: p.id, size, blobs: indexBlobsOf(await readPackHeader(this.repo.backend, this.repo.keys, hex, size)) });
      }
    }
    this.unindexed.push(...relist);
  }

  /**
   * Whether the next chunk is most likely a new blob: most of the last recentBits chunks hashed
   * were. It is then hashed and sealed in one trip to a worker rather than two (a full backup,
   * the changed chunks of an incremental one); a chunk found known wastes its seal.
   */
  private likelyNew(): boolean {
    let n = 0;
    for (let bits = this.recentNew; bits !== 0; bits &= bits - 1) n++;
    return n >= likelyNewMin;
  }

  private async processChunk(index: number, chunk: Buffer): Promise<void> {
    const length = chunk.length;
    // The workers read the chunk where it lies, in its slot.
    const at = { memory: this.slots.memory, offset: this.slots.offsetOf(this.slotOf.get(chunk)!), length };
    try {
      const both = this.likelyNew() ? await this.pool.hashSealAt(at) : null;
      const id = both?.id ?? (await this.pool.hashAt(at));
      const isNew = !this.known(id);
      this.recentNew = ((this.recentNew << 1) | (isNew ? 1 : 0)) & recentMask;
      if (!isNew) {
        this.stats.chunksReused++;
      } else {
        this.ownBlobs.add(id.toString('hex'));
        const blob = both ?? (await this.pool.sealAt(at));
        this.stats.chunksNew++;
        this.stats.bytesNew += length;
        this.stats.bytesStored += blob.sealed.length;
        await this.data.add(id, blob);
      }
      this.setMapEntry(index, id);
    } finally {
      this.releaseChunk(chunk);
      this.budget.release(length);
    }
  }

  private setMapEntry(index: number, id: Buffer): void {
    const g = Math.floor(index / mapEntriesPerBlob);
    const count = Math.min(mapEntriesPerBlob, this.chunkCount - g * mapEntriesPerBlob);
    let group = this.groups.get(g);
    if (group === undefined) {
      group = { entries: Buffer.allocUnsafeSlow(count * idBytes), set: 0 };
      this.groups.set(g, group);
    }
    id.copy(group.entries, (index - g * mapEntriesPerBlob) * idBytes);
    if (++group.set === count) {
      this.groups.delete(g);
      this.track(this.storeMapBlob(g, group.entries));
    }
  }

  /** Stores a meta blob (a catalog part or root) with this backup's packs; returns its id. */
  async putMetaBlob(plain: Buffer): Promise<Buffer> {
    this.check();
    const blob = await this.pool.seal(plain, true);
    const id = blob.id!;
    if (this.known(id)) return id;
    this.ownBlobs.add(id.toString('hex'));
    this.stats.bytesStored += blob.sealed.length;
    await this.meta.add(id, blob);
    return id;
  }

  private async storeMapBlob(g: number, entries: Buffer): Promise<void> {
    const blob = await this.pool.seal(entries, true);
    const id = blob.id!;
    this.mapIds[g] = id;
    if (this.known(id)) return;
    this.ownBlobs.add(id.toString('hex'));
    this.stats.bytesStored += blob.sealed.length;
    await this.meta.add(id, blob);
  }

  /** Runs serially after each upload: an index file every indexEveryPacks packs. */
  private async packUploaded(p: IndexedPack): Promise<void> {
    this.packsUploaded++;
    this.unindexed.push(p);
    if (this.unindexed.length >= indexEveryPacks) await this.writeIndex();
  }

  private async writeIndex(): Promise<void> {
    const packs = this.unindexed;
    if (packs.length === 0) return;
    this.unindexed = [];
    const { id } = await this.repo.writeIndexFile(packs);
    this.indexFilesWritten++;
    this.cache.ingest(id, packs);
    for (const p of packs) for (const b of p.blobs) this.ownBlobs.delete(b[5].toString('hex'));
  }

  /** Waits for every chunk, stores the map and the last packs and index, then the restore point. */
  async finish(meta: {
    kind: Snapshot['kind'];
    name: string;
    source: Snapshot['source'];
    parent?: Buffer | null;
    group?: Buffer | null;
    catalog?: Buffer | null;
    tenant?: string;
    /** For archive copies: the original's time, host and provenance. */
    time?: number;
    hostname?: string;
    archivedFrom?: ArchivedFrom;
  }): Promise<BackupResult> {
    while (this.tasks.size > 0) await Promise.all(this.tasks);
    this.check();
    const missing = this.fed.indexOf(0);
    if (missing >= 0) throw new Error(`chunk ${missing} was never fed`);
    assert.equal(this.groups.size, 0);
    await this.data.flush();
    await this.meta.flush();
    await this.relistMarkedPacks();
    await this.writeIndex();
    this.stats.durationMs = this.repo.now() - this.started;
    const snapshot: Snapshot = {
      version: 1,
      time: meta.time ?? this.started,
      kind: meta.kind,
      name: meta.name,
      hostname: meta.hostname ?? hostname(),
      sizeBytes: this.sizeBytes,
      chunkSizeBytes: this.chunkSizeBytes,
      map: this.mapIds.map((id) => {
        assert.ok(id !== null);
        return id;
      }),
      parent: meta.parent ?? null,
      source: meta.source,
      group: meta.group ?? null,
      catalog: meta.catalog ?? null,
      stats: this.stats,
    };
    // Optional fields are left out when unset, so restore points without them keep their bytes.
    if (meta.tenant !== undefined) snapshot.tenant = meta.tenant;
    if (meta.archivedFrom !== undefined) snapshot.archivedFrom = meta.archivedFrom;
    const id = await this.repo.writeSnapshot(snapshot);
    return { id, snapshot };
  }

  /** Waits for background work after a failure, so nothing runs on after the caller gives up. */
  async abort(): Promise<void> {
    this.error ??= new BackupError(BackupErrorCode.INVALID, 'The backup was aborted');
    while (this.tasks.size > 0) await Promise.all(this.tasks);
    await this.data.flush().catch(() => {});
    await this.meta.flush().catch(() => {});
  }
}

/** Names a restore point: 1-128 printable characters without `/`. */
export function checkName(name: string): void {
  if (typeof name !== 'string' || name.length === 0 || name.length > 128 || !/^[\x21-\x7e]+$/.test(name)) {
    throw new BackupError(BackupErrorCode.INVALID, `Bad name '${name}': 1-128 printable characters without spaces`);
  }
}

/** Names a tenant: 1-64 letters, digits, `.`, `_`, `-`. */
export function checkTenant(tenant: string): void {
  if (typeof tenant !== 'string' || !tenantPattern.test(tenant)) {
    throw new BackupError(BackupErrorCode.INVALID, `Bad tenant '${tenant}': 1-64 letters, digits, '.', '_', '-'`);
  }
}

/** Options of backupFile. */
export interface BackupFileOptions extends WriterLimits {
  name: string;
  /** Tenant of the restore point (archival policies are per tenant); unset means `default`. */
  tenant?: string;
  onProgress?: (p: BackupProgress) => void;
}

/** Chunks one read of backupFile fills (one readv), and such reads in flight. */
const readChunksMax = 4;
const readsMax = 3;

/** Fills `bufs` back to back from `position` of `fh`, with as few readv calls as it takes. */
async function readFully(fh: FileHandle, bufs: Buffer[], position: number, path: string): Promise<void> {
  let rest = bufs;
  while (rest.length > 0) {
    const { bytesRead } = await fh.readv(rest, position);
    if (bytesRead === 0) throw new BackupError(BackupErrorCode.STORAGE, `${path} shrank while being backed up`);
    position += bytesRead;
    let skip = bytesRead;
    const left: Buffer[] = [];
    for (const b of rest) {
      if (skip >= b.length) skip -= b.length;
      else {
        left.push(skip === 0 ? b : b.subarray(skip));
        skip = 0;
      }
    }
    rest = left;
  }
}

/** Iterations of holeChunks' walk over a file's data runs, after which the rest counts as data. */
const dataRunsMax = 1_000_000;

/**
 * Which chunks of a file lie wholly in its holes (1) and so need not be read, found with
 * SEEK_DATA/SEEK_HOLE through the native helpers; null without them or when the file system
 * cannot say (every chunk is then read, and holes are found to be zero like any zero chunk).
 */
function holeChunks(fd: number, sizeBytes: number, chunkBytes: number): Uint8Array | null {
  if (native === null) return null;
  const chunkCount = Math.ceil(sizeBytes / chunkBytes);
  const holes = new Uint8Array(chunkCount).fill(1);
  const markData = (from: number, to: number) => holes.fill(0, Math.floor(from / chunkBytes), Math.ceil(Math.min(to, sizeBytes) / chunkBytes));
  try {
    let at = 0;
    for (let runs = 0; at < sizeBytes; runs++) {
      if (runs === dataRunsMax) {
        markData(at, sizeBytes);
        break;
      }
      const data = native.seek(fd, at, false);
      if (data < 0 || data >= sizeBytes) break;
      const hole = native.seek(fd, data, true);
      markData(data, hole < 0 ? sizeBytes : hole);
      if (hole <= data) break;
      at = hole;
    }
  } catch {
    return null;
  }
  return holes;
}

/**
 * Backs up a raw image file. Chunks in the file's holes are recorded as zero without being read
 * where the native helpers can find holes (holeChunks); other zero chunks cost reading, never
 * storing.
 */
export async function backupFile(ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool }, path: string, options: BackupFileOptions): Promise<BackupResult & { writer: BackupWriter }> {
  checkName(options.name);
  if (options.tenant !== undefined) checkTenant(options.tenant);
  let fh;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new BackupError(code === 'ENOENT' ? BackupErrorCode.NOT_FOUND : BackupErrorCode.STORAGE, `Cannot open ${path}: ${code ?? (err as Error).message}`, { cause: err });
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BackupError(BackupErrorCode.INVALID, `${path} is not a regular file`);
    const marker = await ctx.repo.startWriter();
    try {
      await ctx.cache.sync(ctx.repo);
      const writer = new BackupWriter(ctx, st.size, options);
      try {
        // Sequential reads of readChunksMax chunks each (one readv into the chunk buffers),
        // readsMax of them in flight, all within the writer's in-flight byte budget.
        // One reader at a time takes buffers, so no two readers each hold part of a batch while
        // the budget waits for both (a budget smaller than readsMax batches would deadlock).
        let next = 0;
        let failed: unknown = null;
        // The file catalog, from the filesystem metadata of the image, is built on this thread
        // while the chunks are read and sealed on the workers (after them, the workers idled
        // through it: about a second of a 2 GiB image's backup).
        const catalogDone = buildCatalog(fileSource(fh, st.size), (plain) => writer.putMetaBlob(plain));
        catalogDone.catch((err: unknown) => void (failed ??= err)); // stops the reads; awaited below
        let allocating: Promise<unknown> = Promise.resolve();
        const holes = holeChunks(fh.fd, st.size, writer.chunkSizeBytes);
        const reader = async (): Promise<void> => {
          while (next < writer.chunkCount && failed === null) {
            if (holes?.[next] === 1) {
              writer.putKnown(next++, zeroId); // a hole: zero, and not read
              continue;
            }
            const first = next;
            let count = 1;
            while (count < readChunksMax && first + count < writer.chunkCount && holes?.[first + count] !== 1) count++;
            next += count;
            const bufs: Buffer[] = [];
            const alloc = allocating.then(async () => {
              for (let j = 0; j < count; j++) bufs.push(await writer.allocChunk(first + j));
            });
            allocating = alloc.catch(() => {});
            await alloc;
            await readFully(fh, bufs, first * writer.chunkSizeBytes, path);
            for (let j = 0; j < count; j++) writer.putChunk(first + j, bufs[j]);
            options.onProgress?.(writer.progress());
          }
        };
        await Promise.all(
          Array.from({ length: readsMax }, () =>
            reader().catch((err) => {
              failed ??= err;
            }),
          ),
        );
        const catalog = await catalogDone.catch(() => null);
        if (failed !== null) throw failed;
        const result = await writer.finish({ kind: 'file', name: options.name, source: { path: resolvePath(path) }, catalog: catalog!.id, tenant: options.tenant });
        options.onProgress?.(writer.progress());
        return { ...result, writer };
      } catch (err) {
        await writer.abort();
        throw err;
      }
    } finally {
      await marker.stop();
    }
  } catch (err) {
    if (err instanceof BackupError || (err as Error)?.name === 'AssertionError') throw err;
    throw new BackupError(BackupErrorCode.STORAGE, `Cannot read ${path}: ${(err as Error).message}`, { cause: err });
  } finally {
    await fh.close();
  }
}
