/**
 * File catalogs (docs/backup.md, "File catalogs"): built at backup time from the filesystems in
 * an image, stored as meta blobs (a root and parts of directory listings in catalog order), and
 * read back to list directories and to read one file through only the chunks it covers.
 */
import assert from 'node:assert/strict';
import { pack, unpack } from 'msgpackr';
import { cachedSource, compareNames, FsReadError, openFilesystem, partitionSource, readLayout, walk, type ByteSource, type FileType, type ListedNode } from '../fsread/index.ts';
import type { IndexCache } from './cache.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { idBytes, mapEntriesPerBlob, zeroId } from './format.ts';
import type { WorkerPool } from './pool.ts';
import type { Repository, Snapshot } from './repository.ts';
import { readBlob, readMapBlob } from './restore.ts';

/** Name and version of the catalog format. */
export const catalogFormat = {
  /** The `format` field of a catalog root. */
  name: 'tessera-file-catalog',
  /** The one version this code reads and writes. */
  version: 1,
} as const;

/** Where parts are cut, and the limits of a catalog. */
export const catalogLimits = {
  /** A part is closed once its estimated size reaches this. */
  partBytesTarget: 256 << 10,
  /** … or once it holds this many entries. */
  partEntriesMax: 8192,
  /** Entries of a whole catalog. */
  entriesMax: 16_000_000,
} as const;

/** One filesystem (or unreadable volume) of an image. */
export interface CatalogVolume {
  /** `/` for a whole-disk filesystem, `/pN` for partition N. */
  path: string;
  partition: { number: number; startBytes: number; sizeBytes: number; type: string } | null;
  fs: string | null;
  label: string;
  uuid: string;
  status: 'ok' | 'unrecognised' | 'damaged';
  error: string | null;
  files: number;
  bytes: number;
}

/** A catalog's root blob. */
export interface CatalogRoot {
  format: typeof catalogFormat.name;
  version: 1;
  table: 'gpt' | 'mbr' | null;
  volumes: CatalogVolume[];
  parts: { id: Buffer; first: string; last: string }[];
  /**
   * The bytes of the image the catalog was made from: flat sorted runs [offset, length, …]
   * (runs less than readsGapBytes apart merged). A catalog is a function of these bytes alone, so
   * a later image of the same size in which none of them changed has the same catalog. Absent in
   * catalogs of older code.
   */
  reads?: number[];
}

/** Runs of bytes read less than this apart are recorded as one. */
const readsGapBytes = 64 << 10;

/** Whether any run of `a` overlaps one of `b` (both flat sorted runs [offset, length, …]). */
export function runsOverlap(a: readonly number[], b: readonly number[]): boolean {
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] + a[i + 1] <= b[j]) i += 2;
    else if (b[j] + b[j + 1] <= a[i]) j += 2;
    else return true;
  }
  return false;
}

/** [offset, length] pairs as flat sorted runs, those closer than `gap` merged. */
function mergeRuns(pairs: [number, number][], gap: number): number[] {
  pairs.sort((x, y) => x[0] - y[0]);
  const out: number[] = [];
  for (const [offset, length] of pairs) {
    const n = out.length;
    if (n > 0 && offset <= out[n - 2] + out[n - 1] + gap) out[n - 1] = Math.max(out[n - 1], offset + length - out[n - 2]);
    else out.push(offset, length);
  }
  return out;
}

/** An entry as stored: [name, type, mode, uid, gid, size, mtimeMs, target, extents]. */
type StoredEntry = [string, FileType, number, number, number, number, number, string | null, number[] | null];

/** A part blob. */
interface CatalogPart {
  version: 1;
  dirs: [string, StoredEntry[]][];
}

/** One file of the catalog. */
export interface CatalogEntry {
  name: string;
  type: FileType;
  mode: number;
  uid: number;
  gid: number;
  sizeBytes: number;
  mtimeMs: number;
  target: string | null;
  /** Regular files: flat runs [fileOffset, imageOffset, length, …]; else null. */
  extents: number[] | null;
}

/** Compares catalog paths component by component (UTF-8 bytes, a prefix first): catalog order. */
export function comparePaths(a: string, b: string): number {
  if (a === b) return 0;
  const pa = a.split('/').filter((s) => s !== '');
  const pb = b.split('/').filter((s) => s !== '');
  for (let i = 0; i < Math.min(pa.length, pb.length); i++) {
    const c = compareNames(pa[i], pb[i]);
    if (c !== 0) return c;
  }
  return pa.length - pb.length;
}

/** Normalises a path given by a user: absolute, no `.`, no empty components; `..` is refused. */
export function normalisePath(path: string): string {
  const parts: string[] = [];
  for (const p of path.split('/')) {
    if (p === '' || p === '.') continue;
    if (p === '..') throw new BackupError(BackupErrorCode.INVALID, `Bad path '${path}': '..' is not allowed`);
    parts.push(p);
  }
  return '/' + parts.join('/');
}

function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}

function encodeCatalogObject(v: unknown): Buffer {
  return pack(v);
}

/** Streams listings into parts and stores each part as it closes. */
class PartWriter {
  readonly parts: CatalogRoot['parts'] = [];
  private dirs: [string, StoredEntry[]][] = [];
  private bytes = 0;
  private entries = 0;
  private last: string | null = null;
  private readonly store: (plain: Buffer) => Promise<Buffer>;

  constructor(store: (plain: Buffer) => Promise<Buffer>) {
    this.store = store;
  }

  async add(dir: string, entries: StoredEntry[]): Promise<void> {
    assert.ok(this.last === null || comparePaths(this.last, dir) < 0, `listing ${dir} out of catalog order`);
    this.last = dir;
    let current: StoredEntry[] = [];
    this.dirs.push([dir, current]);
    this.bytes += 16 + Buffer.byteLength(dir);
    for (const e of entries) {
      if (this.bytes >= catalogLimits.partBytesTarget || this.entries >= catalogLimits.partEntriesMax) {
        await this.flush();
        current = [];
        this.dirs.push([dir, current]);
      }
      current.push(e);
      this.entries++;
      this.bytes += 32 + Buffer.byteLength(e[0]) + (e[7] === null ? 0 : Buffer.byteLength(e[7])) + (e[8] === null ? 0 : e[8].length * 9);
    }
  }

  async flush(): Promise<void> {
    if (this.dirs.length === 0) return;
    const part: CatalogPart = { version: catalogFormat.version, dirs: this.dirs };
    const first = this.dirs[0][0];
    const last = this.dirs[this.dirs.length - 1][0];
    this.dirs = [];
    this.bytes = 0;
    this.entries = 0;
    const id = await this.store(encodeCatalogObject(part));
    this.parts.push({ id, first, last });
  }
}

function storedEntry(n: ListedNode, offsetBytes: number): StoredEntry {
  let extents: number[] | null = null;
  if (n.extents !== null) {
    extents = n.extents.slice();
    for (let i = 1; i < extents.length; i += 3) extents[i] += offsetBytes;
  }
  return [n.name, n.type, n.mode, n.uid, n.gid, n.sizeBytes, n.mtimeMs, n.target, extents];
}

/**
 * Builds the catalog of the image behind `source` and stores it through `store` (which stores a
 * meta blob and returns its id); returns the root blob's id. Metadata only is read. What cannot
 * be read is recorded in the volumes, not thrown; errors of `store` and of the source's I/O are.
 */
export async function buildCatalog(source: ByteSource, store: (plain: Buffer) => Promise<Buffer>): Promise<{ id: Buffer; root: CatalogRoot }> {
  const reads: [number, number][] = [];
  const src = cachedSource({
    sizeBytes: source.sizeBytes,
    read: (offset, length, hint) => {
      reads.push([offset, length]);
      return source.read(offset, length, hint);
    },
  });
  const writer = new PartWriter(store);
  const root: CatalogRoot = { format: catalogFormat.name, version: catalogFormat.version, table: null, volumes: [], parts: writer.parts };
  const finish = async () => {
    root.reads = mergeRuns(reads, readsGapBytes);
    return { id: await store(encodeCatalogObject(root)), root };
  };
  const blank = (path: string): CatalogVolume => ({ path, partition: null, fs: null, label: '', uuid: '', status: 'unrecognised', error: null, files: 0, bytes: 0 });
  let entriesLeft: number = catalogLimits.entriesMax;
  const catalogue = async (vol: CatalogVolume, volSource: ByteSource, offsetBytes: number) => {
    try {
      const fs = await openFilesystem(volSource);
      if (fs === null) return;
      vol.fs = fs.kind;
      vol.label = fs.label;
      vol.uuid = fs.uuid;
      vol.status = 'ok';
      const counts = await walk(
        fs,
        async (dir, entries) => {
          const path = vol.path === '/' ? '/' + dir.join('/') : [vol.path, ...dir].join('/');
          await writer.add(path, entries.map((e) => storedEntry(e, offsetBytes)));
          vol.files += entries.length;
          vol.bytes += entries.reduce((n, e) => n + (e.type === 'f' ? e.sizeBytes : 0), 0);
        },
        { entriesMax: entriesLeft },
      );
      entriesLeft -= counts.entries;
    } catch (err) {
      if (!(err instanceof FsReadError)) throw err;
      vol.status = 'damaged';
      vol.error = err.message;
      entriesLeft -= vol.files;
    }
  };
  let layout;
  try {
    layout = await readLayout(src);
  } catch (err) {
    if (!(err instanceof FsReadError)) throw err;
    root.volumes.push({ ...blank('/'), status: 'damaged', error: err.message });
    await writer.flush();
    return finish();
  }
  root.table = layout.table;
  if (layout.table === null) {
    const vol = blank('/');
    root.volumes.push(vol);
    await catalogue(vol, src, 0);
  } else {
    const partitions = layout.partitions.slice().sort((a, b) => compareNames(`p${a.number}`, `p${b.number}`));
    for (const p of partitions) {
      const vol = blank(`/p${p.number}`);
      vol.partition = { number: p.number, startBytes: p.startBytes, sizeBytes: p.sizeBytes, type: p.type };
      if (p.clipped) vol.error = 'the partition runs past the end of the image';
      root.volumes.push(vol);
      await catalogue(vol, partitionSource(src, p), p.startBytes);
    }
  }
  await writer.flush();
  return finish();
}

function corrupt(what: string, detail: string): BackupError {
  return new BackupError(BackupErrorCode.CORRUPT, `${what} ${detail}`);
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

function decode(plain: Buffer, what: string): any {
  let v: any;
  try {
    v = unpack(plain);
  } catch (err) {
    throw new BackupError(BackupErrorCode.CORRUPT, `${what} is not valid msgpack`, { cause: err });
  }
  if (v === null || typeof v !== 'object' || !Number.isSafeInteger(v.version)) throw corrupt(what, 'is not a catalog object');
  if (v.version !== catalogFormat.version) throw new BackupError(BackupErrorCode.UNSUPPORTED, `${what} has catalog version ${String(v.version)}; this Tessera reads version ${catalogFormat.version}`);
  return v;
}

/** Decodes and checks a catalog root blob. */
export function decodeCatalogRoot(plain: Buffer, what = 'Catalog root'): CatalogRoot {
  const v = decode(plain, what);
  const ok =
    v.format === catalogFormat.name && (v.table === null || v.table === 'gpt' || v.table === 'mbr') && Array.isArray(v.volumes) && Array.isArray(v.parts) &&
    v.parts.every((p: any) => Buffer.isBuffer(p?.id) && p.id.length === idBytes && typeof p.first === 'string' && typeof p.last === 'string') &&
    v.volumes.every((vol: any) => typeof vol?.path === 'string' && typeof vol.status === 'string') &&
    (v.reads === undefined || (Array.isArray(v.reads) && v.reads.length % 2 === 0 && v.reads.every(isCount)));
  if (!ok) throw corrupt(what, 'is not a catalog root');
  return v as CatalogRoot;
}

const fileTypes = new Set(['f', 'd', 'l', 'c', 'b', 'p', 's']);

/** Decodes and checks a catalog part blob: its listings as [dirPath, entries]. */
export function decodeCatalogPart(plain: Buffer, what = 'Catalog part'): [string, CatalogEntry[]][] {
  return decodePart(plain, what).dirs.map(([dir, entries]) => [dir, entries.map(entryOf)]);
}

function decodePart(plain: Buffer, what: string): CatalogPart {
  const v = decode(plain, what);
  if (!Array.isArray(v.dirs)) throw corrupt(what, 'is not a catalog part');
  for (const d of v.dirs) {
    const ok = Array.isArray(d) && d.length === 2 && typeof d[0] === 'string' && Array.isArray(d[1]);
    if (!ok) throw corrupt(what, 'has a malformed listing');
    for (const e of d[1]) {
      const good =
        Array.isArray(e) && e.length === 9 && typeof e[0] === 'string' && fileTypes.has(e[1]) && isCount(e[2]) && isCount(e[3]) && isCount(e[4]) && isCount(e[5]) &&
        Number.isSafeInteger(e[6]) && (e[7] === null || typeof e[7] === 'string') && (e[8] === null || (Array.isArray(e[8]) && e[8].length % 3 === 0 && e[8].every(isCount)));
      if (!good) throw corrupt(what, `has a malformed entry in ${d[0]}`);
    }
  }
  return v as CatalogPart;
}

function entryOf(e: StoredEntry): CatalogEntry {
  return { name: e[0], type: e[1], mode: e[2], uid: e[3], gid: e[4], sizeBytes: e[5], mtimeMs: e[6], target: e[7], extents: e[8] };
}

/** The blob ids a catalog consists of (root first), for prune and verify. */
export function catalogBlobIds(rootId: Buffer, root: CatalogRoot): Buffer[] {
  return [rootId, ...root.parts.map((p) => p.id)];
}

type Ctx = { repo: Repository; cache: IndexCache; pool: WorkerPool };

/** An open catalog of one restore point. Reads parts as needed and keeps the last few. */
export class Catalog {
  readonly root: CatalogRoot;
  readonly snapshot: Snapshot;
  private readonly ctx: Ctx;
  private readonly parts = new Map<number, Promise<CatalogPart>>();
  /** Part blobs read (tests). */
  partsRead = 0;

  private constructor(ctx: Ctx, snapshot: Snapshot, root: CatalogRoot) {
    this.ctx = ctx;
    this.snapshot = snapshot;
    this.root = root;
  }

  /** Opens the catalog of `snapshot` (the cache must be synced); none is BACKUP_NOT_FOUND. */
  static async open(ctx: Ctx, snapshot: Snapshot, snapshotId: string): Promise<Catalog> {
    if (snapshot.catalog === null || snapshot.catalog === undefined) {
      throw new BackupError(BackupErrorCode.NOT_FOUND, `Restore point ${snapshotId.slice(0, 8)} has no file catalog (made without one, or by an older Tessera)`);
    }
    const plain = await readBlob(ctx, snapshot.catalog, 'Catalog root');
    return new Catalog(ctx, snapshot, decodeCatalogRoot(plain));
  }

  /** Whether the image is a partitioned disk (its root lists the partitions). */
  get partitioned(): boolean {
    return this.root.table !== null;
  }

  private part(i: number): Promise<CatalogPart> {
    let p = this.parts.get(i);
    if (p === undefined) {
      this.partsRead++;
      const id = this.root.parts[i].id;
      p = readBlob(this.ctx, id, 'Catalog part').then((plain) => decodePart(plain, `Catalog part ${id.toString('hex')}`));
      this.parts.set(i, p);
      if (this.parts.size > 16) this.parts.delete(this.parts.keys().next().value!);
    }
    return p;
  }

  /** The volume a path lies in (null for the root of a partitioned disk). */
  volumeOf(path: string): CatalogVolume | null {
    if (!this.partitioned) return this.root.volumes[0] ?? null;
    const first = path.split('/')[1] ?? '';
    return this.root.volumes.find((v) => v.path === `/${first}`) ?? null;
  }

  /** The listing of directory `dir` (normalised), or null when the catalog has none. */
  async listing(dir: string): Promise<CatalogEntry[] | null> {
    if (dir === '/' && this.partitioned) {
      return this.root.volumes.map((v) => ({ name: v.path.slice(1), type: 'd' as const, mode: 0o755, uid: 0, gid: 0, sizeBytes: 0, mtimeMs: 0, target: null, extents: null }));
    }
    const parts = this.root.parts;
    // First part whose last listing is at or after dir; then every part that starts at or before it.
    let lo = 0;
    let hi = parts.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (comparePaths(parts[mid].last, dir) < 0) lo = mid + 1;
      else hi = mid;
    }
    let found = false;
    const out: CatalogEntry[] = [];
    for (let i = lo; i < parts.length && comparePaths(parts[i].first, dir) <= 0; i++) {
      for (const [path, entries] of (await this.part(i)).dirs) {
        if (path !== dir) continue;
        found = true;
        for (const e of entries) out.push(entryOf(e));
      }
    }
    return found ? out : null;
  }

  /** The entry at `path` (normalised); a path not in the catalog is BACKUP_NOT_FOUND. */
  async stat(path: string): Promise<CatalogEntry> {
    if (path === '/') return { name: '', type: 'd', mode: 0o755, uid: 0, gid: 0, sizeBytes: 0, mtimeMs: 0, target: null, extents: null };
    const cut = path.lastIndexOf('/');
    const parent = cut === 0 ? '/' : path.slice(0, cut);
    const name = path.slice(cut + 1);
    const entry = (await this.listing(parent))?.find((e) => e.name === name);
    if (entry === undefined) throw new BackupError(BackupErrorCode.NOT_FOUND, `No ${path} in the catalog of this restore point`);
    return entry;
  }

  /** What `ls PATH` shows: a directory's entries, or the one entry of a file. */
  async list(path: string): Promise<{ entry: CatalogEntry; entries: CatalogEntry[] }> {
    const entry = await this.stat(path);
    if (entry.type !== 'd') return { entry, entries: [entry] };
    return { entry, entries: (await this.listing(path)) ?? [] };
  }
}

/** Limits of readFile. */
export interface ReadFileLimits {
  /** Chunks read ahead of the one being written. Default 4. */
  readAheadChunks?: number;
}

/**
 * Writes the bytes of a regular file of the catalog through `write`, reading only the map blobs
 * and data blobs of the chunks its extents cover (one range read each); holes are zeroes.
 */
export async function readFile(ctx: Ctx, snapshot: Snapshot, entry: CatalogEntry, write: (bytes: Buffer) => Promise<void>, limits: ReadFileLimits = {}): Promise<{ chunksRead: number }> {
  if (entry.type !== 'f' || entry.extents === null) throw new BackupError(BackupErrorCode.INVALID, `${entry.name} is not a regular file`);
  const size = entry.sizeBytes;
  const chunkSize = snapshot.chunkSizeBytes;
  const runs = entry.extents;
  // Check the extents once: in file order, inside the file and the image.
  let end = 0;
  for (let i = 0; i < runs.length; i += 3) {
    const [f, v, l] = [runs[i], runs[i + 1], runs[i + 2]];
    if (f < end || l <= 0 || f + l > size || v + l > snapshot.sizeBytes) throw corrupt(`The catalog entry of ${entry.name}`, 'has extents outside the file or the image');
    end = f + l;
  }
  // Pieces in file order: zeroes, or a slice of one chunk.
  type Piece = { zero: number } | { chunk: number; at: number; length: number };
  const pieces: Piece[] = [];
  let pos = 0;
  for (let i = 0; i < runs.length; i += 3) {
    if (runs[i] > pos) pieces.push({ zero: runs[i] - pos });
    let v = runs[i + 1];
    let left = runs[i + 2];
    while (left > 0) {
      const chunk = Math.floor(v / chunkSize);
      const at = v - chunk * chunkSize;
      const length = Math.min(left, chunkSize - at);
      pieces.push({ chunk, at, length });
      v += length;
      left -= length;
    }
    pos = runs[i] + runs[i + 2];
  }
  if (pos < size) pieces.push({ zero: size - pos });

  const order: number[] = [];
  for (const p of pieces) if ('chunk' in p && order[order.length - 1] !== p.chunk) order.push(p.chunk);
  const maps = new Map<number, Promise<Buffer>>();
  const mapBlob = (g: number) => {
    let m = maps.get(g);
    if (m === undefined) {
      m = readMapBlob(ctx, snapshot, g);
      maps.set(g, m);
      if (maps.size > 2) maps.delete(maps.keys().next().value!);
    }
    return m;
  };
  let chunksRead = 0;
  const fetchChunk = async (chunk: number): Promise<Buffer> => {
    const g = Math.floor(chunk / mapEntriesPerBlob);
    const entries = await mapBlob(g);
    const j = chunk - g * mapEntriesPerBlob;
    const id = entries.subarray(j * idBytes, (j + 1) * idBytes);
    const length = Math.min(chunkSize, snapshot.sizeBytes - chunk * chunkSize);
    if (id.equals(zeroId)) return Buffer.alloc(length);
    chunksRead++;
    const plain = await readBlob(ctx, Buffer.from(id), 'Data blob');
    if (plain.length !== length) throw corrupt(`Blob ${id.toString('hex')}`, `is ${plain.length} bytes where chunk ${chunk} needs ${length}`);
    return plain;
  };
  const readAhead = Math.max(1, limits.readAheadChunks ?? 4);
  const pending = new Map<number, Promise<Buffer>>();
  let next = 0;
  const fill = () => {
    while (next < order.length && pending.size < readAhead) {
      const p = fetchChunk(order[next]);
      p.catch(() => {}); // awaited in order below; an error surfaces there
      pending.set(next++, p);
    }
  };
  let q = -1;
  let current: Buffer | null = null;
  const zeroes = Buffer.alloc(Math.min(1 << 20, Math.max(1, size)));
  try {
    for (const p of pieces) {
      if ('zero' in p) {
        for (let left = p.zero; left > 0; left -= zeroes.length) await write(zeroes.subarray(0, Math.min(left, zeroes.length)));
        continue;
      }
      if (q < 0 || order[q] !== p.chunk) {
        q++;
        fill();
        current = await pending.get(q)!;
        pending.delete(q);
        fill();
      }
      await write(current!.subarray(p.at, p.at + p.length));
    }
  } finally {
    await Promise.allSettled(pending.values());
  }
  return { chunksRead };
}
