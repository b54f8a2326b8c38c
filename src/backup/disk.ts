/**
 * Disk backups through a node (docs/backup.md, "Disk backups through the node"): a node snapshot
 * is read through a source that knows its extents, so a first backup reads only allocated data
 * and a later one only the chunks holding blocks changed since its parent's node snapshot; the
 * other map entries are copied from the parent.
 */
import { cachedSource, type ByteSource } from '../fsread/index.ts';
import { buildCatalog, catalogBlobIds, decodeCatalogRoot, runsOverlap, type CatalogRoot } from './catalog.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { idBytes, mapEntriesPerBlob, zeroId } from './format.ts';
import type { IndexCache } from './cache.ts';
import type { WorkerPool } from './pool.ts';
import { damagedAdvice, type ObjectCache, type Repository, type Snapshot, type SnapshotEntry } from './repository.ts';
import { readBlob, readMapBlob } from './restore.ts';
import { BackupWriter, checkTenant, type BackupProgress, type BackupResult, type WriterLimits } from './writer.ts';

/** One run of a snapshot's extents, as the node reports them. */
export interface DiskExtent {
  offset: number;
  length: number;
  type: 'data' | 'zero' | 'hole' | 'changed' | 'unchanged';
}

/** A node snapshot of a disk, as a disk backup reads it. */
export interface DiskSnapshotSource {
  /** Disk name: the restore point's name. */
  readonly disk: string;
  /** Node snapshot being backed up: the base of the next incremental. */
  readonly snapshot: string;
  readonly sizeBytes: number;
  /**
   * Calls `visit` with the runs of the snapshot in order: allocation, or with `since` the runs
   * changed since that snapshot of the same disk.
   */
  extents(visit: (e: DiskExtent) => void, since?: string): Promise<void>;
  /** Fills `into` with the snapshot's bytes from `offset`. */
  read(offset: number, into: Buffer): Promise<void>;
  /**
   * Fills `into`'s buffers one after the other with the snapshot's bytes from `offset`, in one
   * request where it can (several chunks at once). Optional: without it, each is read alone.
   */
  readMany?(offset: number, into: readonly Buffer[]): Promise<void>;
}

/** Progress of a disk backup. */
export interface DiskBackupProgress extends BackupProgress {
  disk: string;
  /** Bytes of the chunks this backup reads (allocated, or changed since the parent). */
  bytesToRead: number;
  bytesRead: number;
}

/** Options of backupDisk. */
export interface DiskBackupOptions extends WriterLimits {
  /** The restore point to back up incrementally from; its `source.snapshot` must still exist. */
  parent?: SnapshotEntry | null;
  /** Id shared by the restore points of one consistency group. */
  group?: Buffer | null;
  /** Reads in flight (each of up to readRunBytesMax of consecutive chunks). Default 4. */
  readsMax?: number;
  onProgress?: (p: DiskBackupProgress) => void;
  /** Tenant of the restore point (archival policies are per tenant); unset means `default`. */
  tenant?: string;
  /** Whether to build the file catalog from the snapshot's filesystem metadata. Default true. */
  catalog?: boolean;
}

/**
 * Consecutive chunks to read go to the source in one readMany of at most this many bytes: a
 * request per chunk cost the node and the client CPU per chunk (docs/benchmarks.md).
 */
export const readRunBytesMax = 4 << 20;

/** Bytes per catalog read of a snapshot: metadata reads are aligned to and cached in pages this big. */
export const catalogReadPageBytes = 1 << 20;
/** Pages of catalogReadPageBytes kept while a catalog is built. */
export const catalogReadPagesMax = 16;

/**
 * The bytes of a node snapshot as a filesystem reader sees them: reads aligned to 1 MiB pages
 * and cached, so that the many small metadata reads of a catalog become few requests.
 */
export function snapshotByteSource(source: DiskSnapshotSource): ByteSource & { pagesRead: number; ioError: unknown } {
  const raw: ByteSource = {
    sizeBytes: source.sizeBytes,
    async read(offset, length) {
      const buf = Buffer.allocUnsafe(length);
      try {
        await source.read(offset, buf);
      } catch (err) {
        // The filesystem readers see this as a damaged volume; the caller fails the backup instead.
        out.ioError ??= err;
        throw err;
      }
      return buf;
    },
  };
  const out = Object.assign(cachedSource(raw, { pageBytes: catalogReadPageBytes, pagesMax: catalogReadPagesMax }), { ioError: null as unknown });
  return out;
}

/** What backupDisk made. */
export interface DiskBackupResult extends BackupResult {
  /** Whether chunks were copied from a parent. */
  incremental: boolean;
  chunksRead: number;
  /** Pages of catalogReadPageBytes read from the snapshot for the file catalog (0 without one). */
  catalogPagesRead: number;
  /** Whether the parent's catalog was kept: none of the bytes it was made from changed. */
  catalogReused: boolean;
}

/**
 * Whether catalog `rootId` (the parent's) holds for an image whose changes since the parent are
 * `changedRuns`: the root records the bytes it was made from, none of them changed, and the
 * repository still has its blobs. A damaged or unreadable root only means a new catalog.
 */
async function catalogStillHolds(ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool }, writer: BackupWriter, rootId: Buffer, changedRuns: number[]): Promise<boolean> {
  if (!writer.hasBlob(rootId)) return false;
  let root: CatalogRoot;
  try {
    root = decodeCatalogRoot(await readBlob(ctx, rootId, 'Catalog root'));
  } catch (err) {
    if (err instanceof BackupError) return false;
    throw err;
  }
  if (root.reads === undefined || runsOverlap(root.reads, changedRuns)) return false;
  return catalogBlobIds(rootId, root).every((id) => writer.hasBlob(id));
}

/**
 * The newest readable disk restore point of each of `disks` (by name), or none, and the ids of
 * the restore points that cannot be read. A damaged one is not a parent: a backup without its
 * parent reads more (from an older parent, or all of the disk), never wrong data.
 */
export async function latestDiskRestorePoints(repo: Repository, disks: readonly string[], cache?: ObjectCache): Promise<{ parents: Map<string, SnapshotEntry>; damaged: string[] }> {
  const { snapshots, damaged } = await repo.readSnapshots({ cache });
  const parents = new Map<string, SnapshotEntry>();
  for (const e of snapshots) {
    if (e.snapshot.kind !== 'disk' || !disks.includes(e.snapshot.name) || !('snapshot' in e.snapshot.source)) continue;
    parents.set(e.snapshot.name, e); // oldest first: the last one wins
  }
  return { parents, damaged: damaged.map((d) => d.id) };
}

/** Hex digits of the repository id a backup's node snapshot name ends in (64 bits). */
const snapshotRepoIdDigits = 16;

/**
 * The node snapshot a disk backup into repository `repoId` takes at `ms`:
 * `backup-2026-11-22T05-50-31-123Z-87712376a1b2c3d4`, a valid engine name that sorts by time and
 * says which repository's backup took it (the first 16 hex digits of its id).
 */
export function backupSnapshotName(ms: number, repoId: string): string {
  return `backup-${new Date(ms).toISOString().replace(/[:.]/g, '-')}-${repoId.slice(0, snapshotRepoIdDigits)}`;
}

const backupSnapshotPattern = /^backup-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z-([0-9a-f]{16})$/;

/**
 * The node snapshots among `nodeSnapshots` (of disk `disk`) that backups into `repo` took and
 * nothing needs any more, so the caller may delete them (docs/backup.md, "Stale backup
 * snapshots"): named by backupSnapshotName for this repository (never a snapshot another
 * repository's backup took, nor one named without a repository), not `current` (the caller's own),
 * not named by a live writer marker (a backup still running), and not the base (`source.snapshot`)
 * of any restore point of `disk` in the repository (the newest one's is the next incremental's).
 * `nodeSnapshots` must be listed before this is called: the markers are read before the restore
 * points, and a backup writes its marker before its snapshot and its restore point before it
 * removes its marker, so a backup that took a listed snapshot is seen in one of the two.
 */
export async function staleBackupSnapshots(repo: Repository, disk: string, nodeSnapshots: readonly string[], current: string, cache?: ObjectCache): Promise<string[]> {
  const prefix = repo.id.slice(0, snapshotRepoIdDigits);
  const ours = nodeSnapshots.filter((n) => n !== current && backupSnapshotPattern.exec(n)?.[1] === prefix);
  if (ours.length === 0) return [];
  const running = new Set((await repo.liveWriters()).map((m) => m.nodeSnapshot));
  const bases = new Set<string>();
  const { snapshots, damaged } = await repo.readSnapshots({ cache });
  // A damaged restore point's base cannot be known: every snapshot stays until it is forgotten.
  if (damaged.length > 0) throw new BackupError(BackupErrorCode.CORRUPT, `the snapshots interrupted backups left are kept: ${damagedAdvice(damaged.map((d) => d.id))}`);
  for (const e of snapshots) {
    const s = e.snapshot;
    if (s.kind === 'disk' && s.name === disk && 'snapshot' in s.source) bases.add(s.source.snapshot);
  }
  return ours.filter((n) => !running.has(n) && !bases.has(n));
}

/** Marks every chunk `[offset, offset + length)` touches. */
function mark(bits: Uint8Array, chunkSizeBytes: number, offset: number, length: number): void {
  const last = Math.min(bits.length, Math.ceil((offset + length) / chunkSizeBytes));
  for (let i = Math.floor(offset / chunkSizeBytes); i < last; i++) bits[i] = 1;
}

/**
 * Backs up one node snapshot. The caller holds the repository's writer marker and has synced the
 * index cache. With a parent, chunks without a changed block are recorded as the parent's blob
 * (if the repository still has it) without being read.
 */
export async function backupDisk(ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool }, source: DiskSnapshotSource, options: DiskBackupOptions = {}): Promise<DiskBackupResult> {
  if (options.tenant !== undefined) checkTenant(options.tenant);
  const writer = new BackupWriter(ctx, source.sizeBytes, options);
  const chunkSize = writer.chunkSizeBytes;
  const count = writer.chunkCount;
  const readsMax = options.readsMax ?? 4;
  const parent = options.parent ?? null;
  const base = parent !== null && 'snapshot' in parent.snapshot.source ? parent.snapshot.source.snapshot : null;
  const incremental = parent !== null && base !== null && parent.snapshot.chunkSizeBytes === chunkSize;
  let chunksRead = 0;
  let bytesRead = 0;
  try {
    const parentSize = parent?.snapshot.sizeBytes ?? 0;
    // Allocation says which chunks to read at all. An incremental backup of a disk whose size
    // did not change reads only changed chunks, so it does without (a changed chunk that became
    // a hole reads as zeroes, and is stored as the zero chunk).
    const hasData = new Uint8Array(count);
    if (incremental && parentSize === source.sizeBytes) hasData.fill(1);
    else {
      await source.extents((e) => {
        if (e.type === 'data') mark(hasData, chunkSize, e.offset, e.length);
      });
    }
    const changed = incremental ? new Uint8Array(count) : null;
    const changedRuns: number[] = [];
    if (changed !== null) {
      await source.extents((e) => {
        if (e.type !== 'changed') return;
        mark(changed, chunkSize, e.offset, e.length);
        changedRuns.push(e.offset, e.length);
      }, base!);
    }
    // The parent's catalog is this one's if no byte it was made from changed (same size: the
    // catalog also depends on where the image ends).
    const wantCatalog = options.catalog ?? true;
    const parentCatalog = wantCatalog && incremental && parentSize === source.sizeBytes ? parent!.snapshot.catalog ?? null : null;
    // A chunk is copied only if it is whole (or equally short) in both the parent and this image.
    const copyable = (i: number): boolean => {
      const end = (i + 1) * chunkSize;
      return (end <= parentSize && end <= source.sizeBytes) || (parentSize === source.sizeBytes && i * chunkSize < parentSize);
    };
    // Chunks to read now, and unchanged chunks whose entries come from the parent's map: those
    // are copied while the changed chunks are read (a map blob is a read from the repository and
    // a worker's open, ~20 ms before the first read otherwise), and read after them where the
    // repository no longer has the parent's blob.
    const toRead: number[] = [];
    const fromParent: number[] = [];
    for (let i = 0; i < count; i++) {
      if (hasData[i] === 0) writer.putKnown(i, zeroId); // not read, so not counted as scanned
      else if (changed !== null && changed[i] === 0 && copyable(i)) fromParent.push(i);
      else toRead.push(i);
    }
    let error: unknown = null;
    const lateReads: number[] = [];
    const copied = (async (): Promise<void> => {
      let entries: Buffer | null = null;
      let entriesGroup = -1;
      for (const i of fromParent) {
        const g = Math.floor(i / mapEntriesPerBlob);
        if (g !== entriesGroup) {
          entries = await readMapBlob(ctx, parent!.snapshot, g);
          entriesGroup = g;
        }
        const j = i - g * mapEntriesPerBlob;
        if (!writer.putKnown(i, entries!.subarray(j * idBytes, (j + 1) * idBytes))) lateReads.push(i);
      }
    })();
    let bytesToRead = toRead.reduce((n, i) => n + writer.chunkLength(i), 0);
    const progress = (): void => options.onProgress?.({ ...writer.progress(), disk: source.disk, bytesToRead, bytesRead });
    // The file catalog, from the filesystem metadata of the new snapshot (read through the node:
    // an incremental backup has not read the unchanged metadata). It is built on this thread
    // while the chunks are read and sealed on the workers.
    let catalogPagesRead = 0;
    const newCatalog = async (): Promise<Buffer> => {
      const bytes = snapshotByteSource(source);
      const id = (await buildCatalog(bytes, (plain) => writer.putMetaBlob(plain))).id;
      // A node that failed a read is not a damaged filesystem: the backup fails (and can be rerun).
      if (bytes.ioError !== null) throw bytes.ioError;
      catalogPagesRead = bytes.pagesRead;
      return id;
    };
    // Whether the parent's catalog still holds (reading its root: ~0.25 s) is found out while
    // the chunks are read too.
    let catalogReused = false;
    const catalogDone = (async (): Promise<Buffer | null> => {
      if (parentCatalog !== null && (await catalogStillHolds(ctx, writer, parentCatalog, changedRuns))) {
        catalogReused = true;
        return parentCatalog;
      }
      return wantCatalog ? newCatalog() : null;
    })();
    // Either failing stops the reads; both are awaited below.
    catalogDone.catch((err: unknown) => void (error ??= err));
    copied.catch((err: unknown) => void (error ??= err));
    const inFlight = new Set<Promise<void>>();
    const runChunksMax = source.readMany === undefined ? 1 : Math.max(1, Math.floor(readRunBytesMax / chunkSize));
    const readAll = async (indexes: readonly number[]): Promise<void> => {
      for (let k = 0; k < indexes.length; ) {
        // A run of consecutive chunks, read in one request.
        let n = 1;
        while (n < runChunksMax && k + n < indexes.length && indexes[k + n] === indexes[k] + n) n++;
        const run = indexes.slice(k, k + n);
        k += n;
        while (inFlight.size >= readsMax) await Promise.race(inFlight);
        if (error !== null) break;
        const bufs: Buffer[] = [];
        for (const i of run) bufs.push(await writer.allocChunk(i));
        const p = (async () => {
          try {
            if (bufs.length === 1) await source.read(run[0] * chunkSize, bufs[0]);
            else await source.readMany!(run[0] * chunkSize, bufs);
            for (const [j, i] of run.entries()) {
              writer.putChunk(i, bufs[j]);
              chunksRead++;
              bytesRead += bufs[j].length;
            }
            progress();
          } catch (err) {
            error ??= err;
          }
        })();
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
    };
    await readAll(toRead);
    await copied.catch(() => {});
    if (error === null && lateReads.length > 0) {
      bytesToRead += lateReads.reduce((n, i) => n + writer.chunkLength(i), 0);
      await readAll(lateReads);
    }
    await Promise.all(inFlight);
    const catalog = await catalogDone.catch(() => null);
    if (error !== null) throw error;
    const result = await writer.finish({
      kind: 'disk',
      name: source.disk,
      source: { snapshot: source.snapshot },
      parent: incremental ? Buffer.from(parent!.id, 'hex') : null,
      group: options.group ?? null,
      catalog,
      tenant: options.tenant,
    });
    progress();
    return { ...result, incremental, chunksRead, catalogPagesRead, catalogReused };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/** Checks that a restore point can become a disk: its size rounded up to 512 bytes. */
export function diskSizeOf(s: Snapshot): number {
  const size = Math.ceil(s.sizeBytes / 512) * 512;
  if (size === 0) throw new BackupError(BackupErrorCode.INVALID, 'The restore point is empty: there is nothing to restore into a disk');
  return size;
}
