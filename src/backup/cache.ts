/**
 * The local index cache (docs/backup.md, "Index"): an LMDB copy of the repository's index files,
 * so that dedup and restore look blobs up on disk rather than in RAM, and of the restore point
 * files read (as stored, encrypted), so that listing them costs one request. It is only a cache:
 * the files are the truth, and deleting the cache costs one full read of `index/`.
 */
import { mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { open, type Database, type RootDatabase } from 'lmdb';
import { BackupError, BackupErrorCode } from './errors.ts';
import { idBytes, layout, type BlobTypeValue } from './format.ts';
import type { IndexedPack } from './pack.ts';
import { mapConcurrent, type IndexFile, type ObjectCache, type Repository } from './repository.ts';

/** Where a blob is stored. */
export interface BlobLocation {
  packId: Buffer;
  offset: number;
  storedLength: number;
  plainLength: number;
  flags: number;
  type: BlobTypeValue;
}

/** Value bytes of a blob entry: pack id, offset u32, storedLength u32, plainLength u32, flags u8, type u8. */
const locationBytes = idBytes + 4 + 4 + 4 + 1 + 1;

function encodeLocation(packId: Buffer, offset: number, storedLength: number, plainLength: number, flags: number, type: number): Buffer {
  const b = Buffer.allocUnsafe(locationBytes);
  packId.copy(b, 0);
  b.writeUInt32LE(offset, 32);
  b.writeUInt32LE(storedLength, 36);
  b.writeUInt32LE(plainLength, 40);
  b.writeUInt8(flags, 44);
  b.writeUInt8(type, 45);
  return b;
}

function decodeLocation(b: Buffer): BlobLocation {
  return {
    packId: Buffer.from(b.subarray(0, 32)),
    offset: b.readUInt32LE(32),
    storedLength: b.readUInt32LE(36),
    plainLength: b.readUInt32LE(40),
    flags: b.readUInt8(44),
    type: b.readUInt8(45) as BlobTypeValue,
  };
}

/** The cache directory: `$TESSERA_CACHE_DIR`, else `$XDG_CACHE_HOME/tessera/backup`, else `~/.cache/tessera/backup`. */
export function cacheRoot(env: Record<string, string | undefined> = process.env): string {
  if (env.TESSERA_CACHE_DIR) return env.TESSERA_CACHE_DIR;
  return join(env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'tessera', 'backup');
}

/** Index files read at once while syncing. */
const syncConcurrency = 8;

/** One repository's index cache. */
export class IndexCache implements ObjectCache {
  private readonly root: RootDatabase;
  /** blob id → location (the first pack seen holding it). */
  private readonly blobs: Database<Buffer, Buffer>;
  /** pack id → size. */
  private readonly packs: Database<number, Buffer>;
  /** index file id → 1, for the files read. */
  private readonly files: Database<number, string>;
  /** restore point id → its file as stored (see ObjectCache). */
  private readonly objectFiles: Database<Buffer, string>;

  private constructor(path: string) {
    this.root = open({ path, maxDbs: 4, mapSize: 2 ** 40, noSubdir: false });
    this.blobs = this.root.openDB<Buffer, Buffer>('blobs', { keyEncoding: 'binary', encoding: 'binary' });
    this.packs = this.root.openDB<number, Buffer>('packs', { keyEncoding: 'binary', encoding: 'msgpack' });
    this.files = this.root.openDB<number, string>('files', { encoding: 'msgpack' });
    this.objectFiles = this.root.openDB<Buffer, string>('objects', { encoding: 'binary' });
  }

  /** Opens (creating if needed) the cache of repository `repoId` under `dir` (default cacheRoot()). */
  static open(repoId: string, dir: string = cacheRoot()): IndexCache {
    const path = join(dir, repoId, 'index.lmdb');
    try {
      mkdirSync(path, { recursive: true });
      return new IndexCache(path);
    } catch (err) {
      throw new BackupError(BackupErrorCode.STORAGE, `Cannot open the index cache at ${path}: ${(err as Error).message}`, { cause: err });
    }
  }

  /**
   * Brings the cache up to date with `index/`: reads the files it has not seen; if a file it has
   * read is gone (prune replaced it), starts over from the current files.
   */
  async sync(repo: Repository): Promise<{ filesRead: number; rebuilt: boolean }> {
    const current = new Set(await repo.listIds(layout.index));
    let rebuilt = false;
    for (const id of this.files.getKeys()) {
      if (!current.has(id)) {
        rebuilt = true;
        break;
      }
    }
    if (rebuilt) this.clear();
    const unseen = [...current].filter((id) => this.files.get(id) === undefined);
    await mapConcurrent(unseen, syncConcurrency, async (id) => {
      let file: IndexFile;
      try {
        file = await repo.readIndexFile(id);
      } catch (err) {
        // Deleted by a prune since the listing: its successor is read on the next sync.
        if (err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND) return;
        throw err;
      }
      await this.ingest(id, file.packs);
    });
    return { filesRead: unseen.length, rebuilt };
  }

  /** Records index file `id` listing `packs` as read. */
  async ingest(id: string, packs: readonly IndexedPack[]): Promise<void> {
    this.root.transactionSync(() => {
      for (const p of packs) {
        this.packs.put(p.id, p.size);
        for (const [type, flags, offset, storedLength, plainLength, blobId] of p.blobs) {
          if (this.blobs.get(blobId) === undefined) this.blobs.put(blobId, encodeLocation(p.id, offset, storedLength, plainLength, flags, type));
        }
      }
      this.files.put(id, 1);
    });
  }

  /** Where blob `id` is, or undefined if no index file read lists it. */
  lookup(id: Buffer): BlobLocation | undefined {
    const b = this.blobs.get(id);
    return b === undefined ? undefined : decodeLocation(b);
  }

  /** Whether blob `id` is in the repository (as far as the index files read say). */
  has(id: Buffer): boolean {
    return this.blobs.doesExist(id);
  }

  /** Size of a pack an index file lists, or undefined. */
  packSize(id: Buffer): number | undefined {
    return this.packs.get(id);
  }

  getObjectFile(id: string): Buffer | undefined {
    return this.objectFiles.get(id);
  }

  updateObjectFiles(existing: readonly string[], add: readonly [string, Buffer][]): void {
    const keep = new Set(existing);
    const gone = [...this.objectFiles.getKeys()].filter((id) => !keep.has(id));
    if (gone.length === 0 && add.length === 0) return;
    this.root.transactionSync(() => {
      for (const id of gone) this.objectFiles.removeSync(id);
      for (const [id, bytes] of add) this.objectFiles.putSync(id, bytes);
    });
  }

  /** Forgets everything (the next sync reads every index file). */
  clear(): void {
    this.root.transactionSync(() => {
      this.blobs.clearSync();
      this.packs.clearSync();
      this.files.clearSync();
    });
  }

  async close(): Promise<void> {
    await this.root.close();
  }
}
