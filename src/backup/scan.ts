/**
 * Whole-repository scans for verify and prune: every index file read straight from the
 * repository (never from the cache, which may hide damage), and every restore point's map.
 * v1 holds these in memory: about 100 bytes per blob.
 */
import type { BlobLocation } from './cache.ts';
import { catalogBlobIds, decodeCatalogRoot } from './catalog.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { idBytes, layout, mapEntriesPerBlob, packPath, zeroId } from './format.ts';
import { readPackHeader, type IndexedPack } from './pack.ts';
import type { WorkerPool } from './pool.ts';
import { mapConcurrent, type PruneMark, type Repository, type Snapshot } from './repository.ts';

/** A pack as the index files list it. */
export interface ScannedPack {
  pack: IndexedPack;
  /** Index files listing it. */
  indexIds: string[];
}

/** The repository's index, read in full. */
export interface ScannedIndex {
  /** Index files read (the damaged ones are in `damaged`). */
  fileIds: string[];
  damaged: { id: string; error: BackupError }[];
  /** pack id hex → pack. */
  packs: Map<string, ScannedPack>;
  /** blob id hex → where it is (first pack listing it). */
  blobs: Map<string, BlobLocation>;
  /**
   * Blobs of packs that a prune mark took out of the index and that are still stored: a backup
   * running at the mark may use them, and the sweep lists them again (see scanMarks).
   */
  marked: Map<string, BlobLocation>;
}

/** Reads every index file. Damaged ones are returned, not thrown. */
export async function scanIndex(repo: Repository): Promise<ScannedIndex> {
  const ids = await repo.listIds(layout.index);
  const out: ScannedIndex = { fileIds: [], damaged: [], packs: new Map(), blobs: new Map(), marked: new Map() };
  const files = await mapConcurrent(ids, 8, async (id) => {
    try {
      return { id, file: await repo.readIndexFile(id) };
    } catch (err) {
      if (err instanceof BackupError && err.code === BackupErrorCode.CORRUPT) {
        out.damaged.push({ id, error: err });
        return null;
      }
      if (err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND) return null; // replaced meanwhile
      throw err;
    }
  });
  for (const f of files) {
    if (f === null) continue;
    out.fileIds.push(f.id);
    for (const p of f.file.packs) {
      const hex = p.id.toString('hex');
      const known = out.packs.get(hex);
      if (known !== undefined) {
        known.indexIds.push(f.id);
        continue;
      }
      out.packs.set(hex, { pack: p, indexIds: [f.id] });
      for (const [type, flags, offset, storedLength, plainLength, id] of p.blobs) {
        const key = id.toString('hex');
        if (!out.blobs.has(key)) out.blobs.set(key, { packId: p.id, offset, storedLength, plainLength, flags, type });
      }
    }
  }
  return out;
}

/** Reads and opens one blob at a known location. */
export async function readBlobAt(repo: Repository, pool: WorkerPool, loc: BlobLocation, id: Buffer, what: string): Promise<Buffer> {
  const packIdHex = loc.packId.toString('hex');
  const sealed = await repo.backend.get(packPath(packIdHex), { offset: loc.offset, length: loc.storedLength });
  return pool.open(sealed, { flags: loc.flags, plainLength: loc.plainLength, id }, `${what} ${id.toString('hex')} in pack ${packIdHex}`);
}

/** What one restore point's map holds, or why it could not be read. */
export interface MapScan {
  /** Map blob ids and data blob ids (hex), without zero entries. */
  blobs: Set<string>;
  /** Map blobs that are in no index file or fail to read. */
  faults: { blobIdHex: string; message: string }[];
}

/** Reads a restore point's map blobs through an in-memory index. */
export async function scanMap(repo: Repository, pool: WorkerPool, index: ScannedIndex, s: Snapshot): Promise<MapScan> {
  const out: MapScan = { blobs: new Set(), faults: [] };
  const chunkCount = Math.ceil(s.sizeBytes / s.chunkSizeBytes);
  await mapConcurrent(s.map, 4, async (mapId, g) => {
    const hex = mapId.toString('hex');
    out.blobs.add(hex);
    const loc = index.blobs.get(hex) ?? index.marked.get(hex);
    if (loc === undefined) {
      out.faults.push({ blobIdHex: hex, message: `Map blob ${hex} is in no index file` });
      return;
    }
    let entries: Buffer;
    try {
      entries = await readBlobAt(repo, pool, loc, mapId, 'Map blob');
    } catch (err) {
      if (err instanceof BackupError && (err.code === BackupErrorCode.CORRUPT || err.code === BackupErrorCode.NOT_FOUND || err.code === BackupErrorCode.INVALID)) {
        out.faults.push({ blobIdHex: hex, message: err.message });
        return;
      }
      throw err;
    }
    const count = Math.min(mapEntriesPerBlob, chunkCount - g * mapEntriesPerBlob);
    if (entries.length !== count * idBytes) {
      out.faults.push({ blobIdHex: hex, message: `Map blob ${hex} has ${entries.length / idBytes} entries, expected ${count}` });
      return;
    }
    for (let j = 0; j < count; j++) {
      const id = entries.subarray(j * idBytes, (j + 1) * idBytes);
      if (!id.equals(zeroId)) out.blobs.add(id.toString('hex'));
    }
  });
  if (s.catalog) await scanCatalog(repo, pool, index, s.catalog, out);
  return out;
}

/** Adds a restore point's file catalog blobs (root and parts) to `out`. */
async function scanCatalog(repo: Repository, pool: WorkerPool, index: ScannedIndex, rootId: Buffer, out: MapScan): Promise<void> {
  const hex = rootId.toString('hex');
  out.blobs.add(hex);
  const loc = index.blobs.get(hex) ?? index.marked.get(hex);
  if (loc === undefined) return; // counted as missing
  try {
    for (const id of catalogBlobIds(rootId, decodeCatalogRoot(await readBlobAt(repo, pool, loc, rootId, 'Catalog root')))) out.blobs.add(id.toString('hex'));
  } catch (err) {
    if (err instanceof BackupError && err.code !== BackupErrorCode.STORAGE) out.faults.push({ blobIdHex: hex, message: err.message });
    else throw err;
  }
}

/**
 * Reads the prune marks and fills `index.marked` from the headers of their packs that are still
 * stored and in no index file. `stored` maps pack id hex → size.
 */
export async function scanMarks(repo: Repository, index: ScannedIndex, stored: Map<string, number>): Promise<{ id: string; mark: PruneMark }[]> {
  const marks = await mapConcurrent(await repo.listIds(layout.prune), 8, async (id) => ({ id, mark: (await repo.getObject(layout.prune, id, `Prune mark ${id}`)) as PruneMark }));
  const packs = new Set<string>();
  for (const { mark } of marks) for (const p of mark.packs) packs.add(p.id.toString('hex'));
  await mapConcurrent([...packs], 8, async (hex) => {
    const size = stored.get(hex);
    if (size === undefined || index.packs.has(hex)) return;
    let offset = 0;
    for (const e of await readPackHeader(repo.backend, repo.keys, hex, size)) {
      const key = e.id.toString('hex');
      if (!index.blobs.has(key) && !index.marked.has(key)) index.marked.set(key, { packId: Buffer.from(hex, 'hex'), offset, storedLength: e.storedLength, plainLength: e.plainLength, flags: e.flags, type: e.type });
      offset += e.storedLength;
    }
  });
  return marks;
}
