/**
 * The repository side of an instant restore: the opened repository, its index cache, a worker
 * pool and a writer marker, the restore point's whole map, and chunk fetches planned as range
 * reads of packs (docs/backup.md, "Instant restore").
 */
import { BackupError, BackupErrorCode, IndexCache, Repository, WorkerPool, format, openRepoBackend, planRangeReads, type BlobLocation, type RangeRead, type Snapshot } from '../backup/index.ts';
import type { Backend } from '../objstore/index.ts';
import { HydrateError, HydrateErrorCode } from './errors.ts';

/** Most chunks one restore may have (32 bytes of map and one byte of state each in memory). */
export const chunksMax = 4 * 1024 * 1024;

/** Largest gap between two needed blobs of a pack that one range read covers. */
const gapBytesMax = 1 << 20;
/** Largest range read. */
const readBytesMax = 16 << 20;
/** Plaintext bytes one range read opens at most (its blobs' chunks), as a restore's reads. */
const readPlainBytesMax = 16 << 20;

/** The AWS variables a restore from s3:// may carry to the node; nothing else is accepted. */
export const awsVariables = [
  'AWS_ENDPOINT_URL_S3',
  'AWS_ENDPOINT_URL',
  'AWS_REGION',
  'AWS_DEFAULT_REGION',
  'AWS_ACCESS_KEY_ID',
  'AWS_SECRET_ACCESS_KEY',
  'AWS_SESSION_TOKEN',
] as const;

/** Checks that `env` holds only AWS variables with string values. */
export function checkEnv(env: Record<string, unknown>): Record<string, string> {
  for (const [k, v] of Object.entries(env)) {
    if (!(awsVariables as readonly string[]).includes(k)) throw new HydrateError(HydrateErrorCode.INVALID, `Variable ${k} is not one a restore takes; expected some of ${awsVariables.join(', ')}`);
    if (typeof v !== 'string') throw new HydrateError(HydrateErrorCode.INVALID, `Variable ${k} must be a string`);
  }
  return env as Record<string, string>;
}

/** How to reach a repository: where, with which password, with which AWS variables. */
export interface RepoCredentials {
  repo: string;
  password: string;
  env: Record<string, string>;
}

/** A blob to fetch and the chunks it fills. */
interface Needed {
  id: Buffer;
  location: BlobLocation;
  chunks: number[];
}

/** An open repository reading one restore point. */
export class ChunkSource {
  readonly snapshotId: string;
  readonly snapshot: Snapshot;
  readonly chunkCount: number;
  /** The whole map: 32 bytes per chunk. */
  private readonly map: Buffer;
  private readonly backend: Backend;
  private readonly cache: IndexCache;
  private readonly pool: WorkerPool;
  private readonly writer: { stop(): Promise<void> };
  /** Bytes read from the repository so far. */
  bytesRead = 0;
  /** Range reads made so far. */
  reads = 0;

  private constructor(f: { snapshotId: string; snapshot: Snapshot; map: Buffer; backend: Backend; cache: IndexCache; pool: WorkerPool; writer: { stop(): Promise<void> } }) {
    this.snapshotId = f.snapshotId;
    this.snapshot = f.snapshot;
    this.chunkCount = Math.ceil(f.snapshot.sizeBytes / f.snapshot.chunkSizeBytes);
    this.map = f.map;
    this.backend = f.backend;
    this.cache = f.cache;
    this.pool = f.pool;
    this.writer = f.writer;
  }

  /**
   * Opens the repository, finds the restore point (`snapshot`: an id or a unique prefix), brings
   * the index cache under `cacheDir` up to date, reads the whole map and writes a writer marker
   * (so a prune keeps the packs it reads). Everything opened is closed again on failure.
   */
  static async open(creds: RepoCredentials, snapshot: string, options: { cacheDir: string; workers?: number }): Promise<ChunkSource> {
    const backend = await openRepoBackend(creds.repo, creds.env);
    let cache: IndexCache | null = null;
    let pool: WorkerPool | null = null;
    let writer: { stop(): Promise<void> } | null = null;
    try {
      const repo = await Repository.open(backend, creds.password);
      const entry = await repo.findSnapshot(snapshot);
      const s = entry.snapshot;
      const chunkCount = Math.ceil(s.sizeBytes / s.chunkSizeBytes);
      if (chunkCount > chunksMax) {
        throw new HydrateError(HydrateErrorCode.INVALID, `Restore point ${entry.id.slice(0, 8)} has ${chunkCount} chunks; an instant restore takes at most ${chunksMax}`);
      }
      if (s.map.length !== Math.ceil(chunkCount / format.mapEntriesPerBlob)) throw new BackupError(BackupErrorCode.CORRUPT, `Restore point ${entry.id} has a map of the wrong length`);
      cache = IndexCache.open(repo.id, options.cacheDir);
      pool = new WorkerPool(repo.keys, { workers: options.workers ?? 2 });
      writer = await repo.startWriter();
      await cache.sync(repo);
      const parts: Buffer[] = [];
      for (let g = 0; g < s.map.length; g++) {
        const loc = cache.lookup(s.map[g]);
        if (loc === undefined) throw new BackupError(BackupErrorCode.CORRUPT, `Map blob ${s.map[g].toString('hex')} is in no index file (run \`tessera backup verify\`)`);
        const sealed = await backend.get(format.packPath(loc.packId.toString('hex')), { offset: loc.offset, length: loc.storedLength });
        const entries = await pool.open(sealed, { flags: loc.flags, plainLength: loc.plainLength, id: s.map[g] }, `Map blob ${s.map[g].toString('hex')}`);
        const expected = Math.min(format.mapEntriesPerBlob, chunkCount - g * format.mapEntriesPerBlob) * format.idBytes;
        if (entries.length !== expected) throw new BackupError(BackupErrorCode.CORRUPT, `Map blob ${s.map[g].toString('hex')} has ${entries.length / format.idBytes} entries where ${expected / format.idBytes} are due`);
        parts.push(entries);
      }
      return new ChunkSource({ snapshotId: entry.id, snapshot: s, map: Buffer.concat(parts), backend, cache, pool, writer });
    } catch (err) {
      await writer?.stop().catch(() => {});
      await pool?.close();
      await cache?.close();
      await backend.close();
      throw err;
    }
  }

  /** Whether chunk `c` is all zeroes in the restore point (nothing to fetch). */
  isZero(c: number): boolean {
    const at = c * format.idBytes;
    return this.map.subarray(at, at + format.idBytes).equals(format.zeroId);
  }

  /** Bytes of chunk `c` (the last one may be short). */
  chunkBytes(c: number): number {
    const cs = this.snapshot.chunkSizeBytes;
    return Math.min(cs, this.snapshot.sizeBytes - c * cs);
  }

  /** Plans the range reads that fetch `chunks` (none of them zero). */
  private plan(chunks: readonly number[]): RangeRead<Needed>[] {
    const byPack = new Map<string, Map<string, Needed>>();
    for (const c of chunks) {
      const id = this.map.subarray(c * format.idBytes, (c + 1) * format.idBytes);
      const key = id.toString('hex');
      const location = this.cache.lookup(id);
      if (location === undefined) throw new BackupError(BackupErrorCode.CORRUPT, `Data blob ${key} of chunk ${c} is in no index file (run \`tessera backup verify\`)`);
      const packKey = location.packId.toString('hex');
      let blobs = byPack.get(packKey);
      if (blobs === undefined) byPack.set(packKey, (blobs = new Map()));
      const b = blobs.get(key);
      if (b === undefined) blobs.set(key, { id: Buffer.from(id), location, chunks: [c] });
      else b.chunks.push(c);
    }
    // A read takes at most as many blobs as there are chunks in readPlainBytesMax.
    const limits = { gapBytesMax, readBytesMax, blobsMax: Math.max(1, Math.floor(readPlainBytesMax / this.snapshot.chunkSizeBytes)) };
    return [...byPack].flatMap(([packIdHex, blobs]) => planRangeReads(packIdHex, [...blobs.values()], limits));
  }

  /**
   * Fetches `chunks` (none zero) with as few range reads as the plan allows, run in parallel,
   * and hands each chunk's plaintext to `deliver` as soon as its read is opened. Rejects with the
   * first error once every read has settled; chunks delivered before stay delivered.
   */
  async fetch(chunks: readonly number[], deliver: (chunk: number, plain: Buffer) => Promise<void>): Promise<void> {
    const reads = this.plan(chunks);
    const results = await Promise.allSettled(reads.map((r) => this.runRead(r, deliver)));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed !== undefined) throw failed.reason;
  }

  private async runRead(r: RangeRead<Needed>, deliver: (chunk: number, plain: Buffer) => Promise<void>): Promise<void> {
    const data = await this.backend.get(format.packPath(r.packIdHex), { offset: r.offset, length: r.length });
    this.bytesRead += data.length;
    this.reads++;
    const plains = await this.pool.openMany(
      data,
      r.blobs.map((b) => ({
        offset: b.location.offset - r.offset,
        storedLength: b.location.storedLength,
        flags: b.location.flags,
        plainLength: b.location.plainLength,
        id: b.id,
        what: `Blob ${b.id.toString('hex')} in pack ${r.packIdHex}`,
      })),
    );
    for (const [i, b] of r.blobs.entries()) {
      for (const c of b.chunks) {
        const expected = this.chunkBytes(c);
        if (plains[i].length !== expected) throw new BackupError(BackupErrorCode.CORRUPT, `Blob ${b.id.toString('hex')} is ${plains[i].length} bytes where chunk ${c} needs ${expected}`);
        await deliver(c, plains[i]);
      }
    }
  }

  /** Stops the writer marker and closes the pool, cache and backend. */
  async close(): Promise<void> {
    await this.writer.stop().catch(() => {});
    await this.pool.close();
    await this.cache.close();
    await this.backend.close();
  }
}
