/**
 * Restoring a restore point (docs/backup.md, "Restore"): the map is read a map blob at a time,
 * its chunks grouped by pack into range reads (gaps up to 1 MiB are read through), the reads run
 * in parallel under a byte budget, blobs are opened on workers and written at their offsets.
 */
import { FileSink, type FileSinkOptions, type FileSinkStats } from './file-sink.ts';
import type { RestoreSink } from './sink.ts';
import { AdaptiveLimiter, BufferPool, ByteBudget, Hedger, SharedSlots, type AdaptiveLimiterStats, type HedgerOptions, type HedgerStats } from '../flow/index.ts';
import type { BlobLocation, IndexCache } from './cache.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { idBytes, mapEntriesPerBlob, packPath, zeroId } from './format.ts';
import type { OpenSpec, WorkerPool } from './pool.ts';
import type { Repository, Snapshot } from './repository.ts';
import { planRangeReads, type RangeRead as PlannedRead } from './plan-reads.ts';

export type { RestoreSink } from './sink.ts';

/** Limits of a restore. */
export interface RestoreLimits {
  /**
   * Most range reads at once: the adaptive limit moves between readsMin and this, starting at
   * readsInitial, and stays below the backend's requestsMax less the hedges. Default 32.
   */
  readsMax?: number;
  /** Fewest range reads at once. Default 1. */
  readsMin?: number;
  /** Range reads at once to start with. Default 8. */
  readsInitial?: number;
  /** Hedging of range reads (false: none). */
  hedge?: HedgerOptions | false;
  /** Bytes of range reads in flight with the plaintexts they open into. Default 64 MiB. */
  inFlightBytesMax?: number;
  /** Largest gap between two needed blobs of a pack that one read covers. Default 1 MiB. */
  gapBytesMax?: number;
  /** Largest single range read. Default 4 MiB (several reads and their plaintexts fit the byte budget). */
  readBytesMax?: number;
}

/** Progress of a restore. */
export interface RestoreProgress {
  sizeBytes: number;
  bytesWritten: number;
  bytesRead: number;
}

/** What the data movers of a restore did: the adaptive limits and the hedged reads. */
export interface RestoreMovers {
  reads: AdaptiveLimiterStats;
  workers: AdaptiveLimiterStats;
  hedges: HedgerStats;
}

/** A finished restore. */
export interface RestoreResult extends RestoreProgress {
  movers: RestoreMovers;
}

/** Where each chunk of one map blob goes: blob → chunk indexes. */
interface Needed {
  location: BlobLocation;
  id: Buffer;
  chunks: number[];
}

/** One range read of a pack and the blobs in it. */
type RangeRead = PlannedRead<Needed>;

/** Looks up a blob in the cache; one that is missing is a damaged repository. */
function locate(cache: IndexCache, id: Buffer, what: string): BlobLocation {
  const loc = cache.lookup(id);
  if (loc === undefined) throw new BackupError(BackupErrorCode.CORRUPT, `${what} ${id.toString('hex')} is in no index file (run \`tessera backup verify\`)`);
  return loc;
}

/** Reads one blob by itself (map blobs). */
export async function readBlob(ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool }, id: Buffer, what: string): Promise<Buffer> {
  const loc = locate(ctx.cache, id, what);
  const packIdHex = loc.packId.toString('hex');
  const sealed = await ctx.repo.backend.get(packPath(packIdHex), { offset: loc.offset, length: loc.storedLength });
  return ctx.pool.open(sealed, { flags: loc.flags, plainLength: loc.plainLength, id }, `${what} ${id.toString('hex')} in pack ${packIdHex}`);
}

/** Reads map blob `g` of a snapshot and checks its length. */
export async function readMapBlob(ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool }, s: Snapshot, g: number): Promise<Buffer> {
  const chunkCount = Math.ceil(s.sizeBytes / s.chunkSizeBytes);
  const count = Math.min(mapEntriesPerBlob, chunkCount - g * mapEntriesPerBlob);
  const entries = await readBlob(ctx, s.map[g], 'Map blob');
  if (entries.length !== count * idBytes) throw new BackupError(BackupErrorCode.CORRUPT, `Map blob ${s.map[g].toString('hex')} has ${entries.length / idBytes} entries, expected ${count}`);
  return entries;
}

/**
 * Direct writes of a restore in flight at once (each holds one of the 4 threads of libuv's pool,
 * which the range reads need too), and, when the file is not synced, writes waiting for them
 * before the page cache takes one. A restore of 1.3–1.4 GiB on the benchmark's VM (alternating
 * runs): 2.7–3.1 s with 3 and 16, 3.2–3.5 s with every write direct at once (the reads queued
 * behind the writes in the pool), 3.4–3.5 s with 3 and none waiting (bursts of a range read's
 * chunks went through the cache: 70–80% of the bytes, at 1–2 s of system time per GiB there).
 */
const directWritesMax = 3;
const unsyncedDirectQueueMax = 16;

/**
 * Restores `snapshot` into a new file at `path` (which must not exist). Zero chunks stay holes;
 * data chunks are written with O_DIRECT where the file system allows, directWritesMax at once;
 * unsynced, a chunk that finds unsyncedDirectQueueMax others waiting goes through the page cache
 * (file-sink.ts). With `sync` every chunk it can is written directly (the page cache would only
 * defer those writes to the sync), and the file is synced before this returns (FileSink.finish).
 */
export async function restoreToFile(
  ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool },
  snapshot: Snapshot,
  path: string,
  options: RestoreLimits & { onProgress?: (p: RestoreProgress) => void; sink?: FileSinkOptions; sync?: boolean } = {},
): Promise<RestoreResult & { writes: FileSinkStats }> {
  const sync = options.sync ?? false;
  const sink = await FileSink.create(path, snapshot.sizeBytes, snapshot.chunkSizeBytes, {
    directWritesMax,
    directQueueMax: sync ? Infinity : unsyncedDirectQueueMax,
    ...options.sink,
  });
  try {
    const result = await restoreTo(ctx, snapshot, sink, options);
    await sink.finish({ sync });
    return { ...result, writes: sink.stats };
  } catch (err) {
    await sink.close().catch(() => {});
    throw err;
  }
}

/** Restores `snapshot` into `sink`, reading packs in parallel and pipelined under the limits. */
export async function restoreTo(
  ctx: { repo: Repository; cache: IndexCache; pool: WorkerPool },
  snapshot: Snapshot,
  sink: RestoreSink,
  options: RestoreLimits & { onProgress?: (p: RestoreProgress) => void } = {},
): Promise<RestoreResult> {
  const hedger = options.hedge === false ? null : new Hedger(options.hedge);
  const extraMax = options.hedge === false ? 0 : (options.hedge?.extraMax ?? 2);
  const readsMax = Math.max(1, Math.min(options.readsMax ?? 32, ctx.repo.backend.requestsMax - extraMax));
  // Stragglers are hedged, not a sign of overload: back off only when a fifth of the reads time out.
  const reads = new AdaptiveLimiter({ min: Math.min(options.readsMin ?? 1, readsMax), max: readsMax, initial: options.readsInitial ?? 8, errorFractionMax: 0.2 });
  const gapBytesMax = options.gapBytesMax ?? 1 << 20;
  const readBytesMax = Math.max(options.readBytesMax ?? 4 << 20, snapshot.chunkSizeBytes * 2);
  const inFlightBytesMax = options.inFlightBytesMax ?? 64 << 20;
  const budget = new ByteBudget(inFlightBytesMax);
  const progress: RestoreProgress = { sizeBytes: snapshot.sizeBytes, bytesWritten: 0, bytesRead: 0 };
  const chunkSize = snapshot.chunkSizeBytes;
  const chunkCount = Math.ceil(snapshot.sizeBytes / chunkSize);
  if (snapshot.map.length !== Math.ceil(chunkCount / mapEntriesPerBlob)) throw new BackupError(BackupErrorCode.CORRUPT, 'The restore point has a map of the wrong length');
  // Plaintexts are opened into slots of shared memory, one chunk each: as many as the byte
  // budget holds, and at least a range read's worth (a read takes at most readSlotsMax blobs).
  const readSlotsMax = Math.max(1, Math.floor(readPlainBytesMax / chunkSize));
  const slots = new SharedSlots(chunkSize, Math.max(readSlotsMax, Math.floor(inFlightBytesMax / chunkSize)));

  // Range reads land in reusable shared memory that the workers read where it is.
  const readBuffers = new BufferPool({ pooledBytesMax: inFlightBytesMax, shared: true });
  const alloc = (n: number) => readBuffers.take(n);

  await ctx.cache.sync(ctx.repo);
  let error: unknown = null;
  const inFlight = new Set<Promise<void>>();
  const zeroing = new Set<Promise<void>>();
  /** One range read, hedged; its read slot is given back as soon as its bytes are in. */
  const get = async (r: RangeRead): Promise<Buffer> => {
    const path = packPath(r.packIdHex);
    const range = { offset: r.offset, length: r.length };
    let timedOut = false;
    try {
      if (hedger === null) return await ctx.repo.backend.get(path, range, { alloc });
      // A second request's bytes must fit the in-flight budget as the first one's did.
      const result = await hedger.run(
        () => ctx.repo.backend.get(path, range, { alloc }),
        () => (budget.tryAcquire(r.length) ? () => budget.release(r.length) : null),
      );
      timedOut = result.timedOut;
      return result.value;
    } finally {
      reads.release({ bytes: r.length, ok: !timedOut });
    }
  };
  const runRead = async (r: RangeRead, held: number): Promise<void> => {
    let data: Buffer | null = null;
    try {
      data = await get(r);
      progress.bytesRead += data.length;
      const specs: OpenSpec[] = r.blobs.map((b) => ({
        offset: b.location.offset - r.offset,
        storedLength: b.location.storedLength,
        flags: b.location.flags,
        plainLength: b.location.plainLength,
        id: b.id,
        what: `Blob ${b.id.toString('hex')} in pack ${r.packIdHex}`,
      }));
      const taken = await slots.take(r.blobs.length);
      try {
        const lengths = await ctx.pool.openManyInto(data, specs, { memory: slots.memory, offsets: taken.map((i) => slots.offsetOf(i)), slotBytes: chunkSize });
        // Every write settles before the slots go back (a failed one must not let the next read
        // overwrite a slot another write of this read still reads from).
        const writes = await Promise.allSettled(
          r.blobs.flatMap((b, i) =>
            b.chunks.map(async (chunk) => {
              const expected = Math.min(chunkSize, snapshot.sizeBytes - chunk * chunkSize);
              if (lengths[i] !== expected) throw new BackupError(BackupErrorCode.CORRUPT, `Blob ${b.id.toString('hex')} is ${lengths[i]} bytes where chunk ${chunk} needs ${expected}`);
              await sink.write(slots.view(taken[i], expected), chunk * chunkSize);
              progress.bytesWritten += expected;
            }),
          ),
        );
        const failed = writes.find((w) => w.status === 'rejected');
        if (failed !== undefined) throw failed.reason;
      } finally {
        slots.give(taken);
      }
      options.onProgress?.(progress);
    } catch (err) {
      error ??= err;
    } finally {
      // The worker is done with it (its request settled): the next read may reuse it. (A backend
      // that reads into memory of its own, S3, returns no shared memory.)
      if (data?.buffer instanceof SharedArrayBuffer) readBuffers.give(Buffer.from(data.buffer));
      budget.release(held);
    }
  };

  for (let g = 0; g < snapshot.map.length && error === null; g++) {
    const entries = await readMapBlob(ctx, snapshot, g);
    const byBlob = new Map<string, Needed>();
    const zeroRuns: { from: number; to: number }[] = [];
    for (let j = 0; j < entries.length / idBytes; j++) {
      const id = entries.subarray(j * idBytes, (j + 1) * idBytes);
      if (id.equals(zeroId)) {
        const chunk = g * mapEntriesPerBlob + j;
        const last = zeroRuns.at(-1);
        if (last !== undefined && last.to === chunk) last.to++;
        else zeroRuns.push({ from: chunk, to: chunk + 1 });
        continue;
      }
      const key = id.toString('hex');
      let n = byBlob.get(key);
      if (n === undefined) {
        n = { id: Buffer.from(id), location: locate(ctx.cache, id, 'Data blob'), chunks: [] };
        byBlob.set(key, n);
      }
      n.chunks.push(g * mapEntriesPerBlob + j);
    }
    for (const run of sink.zero === undefined ? [] : zeroRuns) {
      while (zeroing.size >= zeroWritesMax) await Promise.race(zeroing);
      const offset = run.from * chunkSize;
      const length = Math.min(run.to * chunkSize, snapshot.sizeBytes) - offset;
      const p = sink.zero!(offset, length).catch((err) => {
        error ??= err;
      });
      zeroing.add(p);
      void p.finally(() => zeroing.delete(p));
    }
    const byPack = new Map<string, Needed[]>();
    for (const n of byBlob.values()) {
      const key = n.location.packId.toString('hex');
      const list = byPack.get(key);
      if (list === undefined) byPack.set(key, [n]);
      else list.push(n);
    }
    for (const [packIdHex, blobs] of byPack) {
      for (const r of planRangeReads(packIdHex, blobs, { gapBytesMax, readBytesMax, blobsMax: readSlotsMax })) {
        await reads.acquire();
        // The read's bytes and the plaintexts they open into are held together.
        const held = r.length + r.blobs.reduce((n, b) => n + b.location.plainLength, 0);
        await budget.acquire(held);
        if (error !== null) {
          budget.release(held);
          reads.cancel();
          break;
        }
        const p = runRead(r, held);
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
    }
  }
  await Promise.all(inFlight);
  await Promise.all(zeroing);
  if (error !== null) throw error;
  const hedges: HedgerStats = hedger?.stats() ?? { requests: 0, timedOut: 0, hedged: 0, hedgesWon: 0, hedgesSkipped: 0, abandoned: 0, deadlineMs: null };
  return { ...progress, movers: { reads: reads.stats(), workers: ctx.pool.stats(), hedges } };
}

/** Plaintext bytes one range read opens at most (it takes at most this many bytes of chunks in blobs). */
const readPlainBytesMax = 16 << 20;

/** Zero runs handed to a sink at once. */
const zeroWritesMax = 8;
