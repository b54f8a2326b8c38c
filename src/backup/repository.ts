/**
 * An open backup repository (docs/backup.md): its keys and config, and typed access to its
 * encrypted files (index files, restore points, writer markers, prune marks).
 */
import { randomBytes } from 'node:crypto';
import { hostname, userInfo } from 'node:os';
import type { Backend } from '../objstore/index.ts';
import { decodeObject, encodeObject, makeKeyFile, parseKeyFile, sha256, splitMasterKey, unwrapKeyFile, type Keys } from './crypto.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { repoBackend } from './storage.ts';
import { BlobType, chunkSizeBytes as chunkLimits, idBytes, isHexId, layout, masterKeyBytes, packSizeTargetBytes as packLimits, repositoryFormat, writerMarker } from './format.ts';
import type { IndexBlob, IndexedPack } from './pack.ts';

/** The repository's parameters, from `config`. */
export interface RepoConfig {
  version: 1;
  /** Repository id, 32 random bytes as hex (the same as in `tessera-repository`). */
  id: string;
  chunkSizeBytes: number;
  packSizeTargetBytes: number;
  /** ms since the epoch. */
  created: number;
}

/** An index file's contents. */
export interface IndexFile {
  version: 1;
  packs: IndexedPack[];
  /** Index files this one replaces (prune deletes them after writing it). */
  supersedes: Buffer[];
}

/** Counters of one backup. */
export interface SnapshotStats {
  bytesScanned: number;
  /** Plaintext bytes of chunks not in the repository before. */
  bytesNew: number;
  /** Sealed bytes those took (data and map blobs). */
  bytesStored: number;
  chunksNew: number;
  chunksReused: number;
  chunksZero: number;
  durationMs: number;
}

/** A restore point as stored in `snapshots/<id>`. */
export interface Snapshot {
  version: 1;
  /** ms since the epoch. */
  time: number;
  kind: 'disk' | 'file';
  name: string;
  hostname: string;
  sizeBytes: number;
  chunkSizeBytes: number;
  /** Ids of the map blobs, in order. */
  map: Buffer[];
  parent: Buffer | null;
  source: { path: string } | { snapshot: string };
  group: Buffer | null;
  catalog: Buffer | null;
  stats: SnapshotStats;
  /** Tenant the restore point belongs to (archival policies are per tenant); absent means `default`. */
  tenant?: string;
  /** In an archive repository: the restore point this one is a copy of. */
  archivedFrom?: ArchivedFrom;
}

/** Where an archived copy came from. */
export interface ArchivedFrom {
  /** Id of the primary repository (hex). */
  repository: string;
  /** Id of the restore point there (hex). */
  id: string;
}

/** The tenant of restore points that name none. */
export const defaultTenant = 'default';

/** The tenant of a restore point. */
export function tenantOf(s: Snapshot): string {
  return s.tenant ?? defaultTenant;
}

/** A restore point with its id (its file name). */
export interface SnapshotEntry {
  id: string;
  snapshot: Snapshot;
}

/** A writer marker, `writers/<id>`. */
export interface WriterMarker {
  /** When the backup started (ms); kept across rewrites. */
  started: number;
  /** When this marker was written (ms): it is stale once writerMarker.staleMs old. */
  written: number;
  hostname: string;
  pid: number;
  /**
   * The node snapshot a disk backup takes (named before it is taken): while the marker is live,
   * no other backup removes that snapshot as stale. Absent for other writers (format v1: an
   * optional field; code before it ignores it).
   */
  nodeSnapshot?: string;
}

/** A prune mark, `prune/<id>`: packs to delete after the grace period. */
export interface PruneMark {
  /** ms; set once the index files no longer list the packs. */
  time: number;
  /** Pack ids with their blob ids (empty for orphans: packs no index listed). */
  packs: { id: Buffer; size: number; blobs: Buffer[] }[];
}

/** A key file as `backup key list` shows it. */
export interface KeyInfo {
  id: string;
  created: string;
  hostname: string;
  username: string;
  /** Whether it is the key file the repository was opened with. */
  current: boolean;
}

/** Options of Repository.init. */
export interface InitOptions {
  chunkSizeBytes?: number;
  packSizeTargetBytes?: number;
  /** Clock, for tests. */
  now?: () => number;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isSafeInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function corrupt(what: string, detail: string): BackupError {
  return new BackupError(BackupErrorCode.CORRUPT, `${what} ${detail}`);
}

function isId(v: unknown): v is Buffer {
  return Buffer.isBuffer(v) && v.length === idBytes;
}

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/** Checks the shape of a decoded index file. */
export function checkIndexFile(v: any, what: string): IndexFile {
  if (v === null || typeof v !== 'object' || v.version !== 1 || !Array.isArray(v.packs) || !Array.isArray(v.supersedes)) throw corrupt(what, 'is not an index file');
  for (const p of v.packs) {
    if (!isId(p?.id) || !isCount(p.size) || !Array.isArray(p.blobs)) throw corrupt(what, 'has a malformed pack entry');
    for (const b of p.blobs as IndexBlob[]) {
      const ok = Array.isArray(b) && b.length === 6 && (b[0] === BlobType.DATA || b[0] === BlobType.META) && isCount(b[1]) && isCount(b[2]) && isCount(b[3]) && isCount(b[4]) && isId(b[5]);
      if (!ok || b[2] + b[3] > p.size) throw corrupt(what, 'has a malformed blob entry');
    }
  }
  if (!v.supersedes.every(isId)) throw corrupt(what, 'has a malformed supersedes list');
  return v as IndexFile;
}

/** Tenant names: 1-64 letters, digits, `.`, `_`, `-`. */
export const tenantPattern = /^[A-Za-z0-9._-]{1,64}$/;

function checkSnapshot(v: any, what: string): Snapshot {
  const ok =
    v !== null && typeof v === 'object' && v.version === 1 && isCount(v.time) && (v.kind === 'disk' || v.kind === 'file') &&
    typeof v.name === 'string' && isCount(v.sizeBytes) && isPowerOfTwo(v.chunkSizeBytes) && Array.isArray(v.map) && v.map.every(isId) &&
    (v.parent === null || isId(v.parent)) && v.stats !== null && typeof v.stats === 'object' &&
    (v.tenant === undefined || (typeof v.tenant === 'string' && tenantPattern.test(v.tenant))) &&
    (v.archivedFrom === undefined || (isHexId(v.archivedFrom?.repository) && isHexId(v.archivedFrom?.id)));
  if (!ok) throw corrupt(what, 'is not a restore point');
  return v as Snapshot;
}

/** The plaintext marker file `tessera-repository`. */
interface RepoMarker {
  format: string;
  version: number;
  id: string;
}

/** An open repository: the backend, the keys and the config. */
export class Repository {
  /** Its storage, failing with BackupErrors (storage.ts) whatever backend it was opened on. */
  readonly backend: Backend;
  readonly keys: Keys;
  readonly config: RepoConfig;
  /** The key file the password opened. */
  readonly keyId: string;
  /** Clock, replaceable in tests. */
  now: () => number;

  private constructor(backend: Backend, keys: Keys, config: RepoConfig, keyId: string, now: () => number) {
    this.backend = backend;
    this.keys = keys;
    this.config = config;
    this.keyId = keyId;
    this.now = now;
  }

  /** Repository id (hex). */
  get id(): string {
    return this.config.id;
  }

  /** Creates a repository at an empty location. */
  static async init(backend: Backend, password: string, options: InitOptions = {}): Promise<Repository> {
    backend = repoBackend(backend);
    const now = options.now ?? Date.now;
    const chunkSizeBytes = options.chunkSizeBytes ?? chunkLimits.default;
    if (!isPowerOfTwo(chunkSizeBytes) || chunkSizeBytes < chunkLimits.min || chunkSizeBytes > chunkLimits.max) {
      throw new BackupError(BackupErrorCode.INVALID, `Chunk size ${chunkSizeBytes} is not a power of two from ${chunkLimits.min} to ${chunkLimits.max} bytes`);
    }
    const packSizeTargetBytes = options.packSizeTargetBytes ?? packLimits.default;
    if (!Number.isSafeInteger(packSizeTargetBytes) || packSizeTargetBytes < packLimits.min || packSizeTargetBytes > packLimits.max) {
      throw new BackupError(BackupErrorCode.INVALID, `Pack size ${packSizeTargetBytes} is not from ${packLimits.min} to ${packLimits.max} bytes`);
    }
    checkPassword(password);
    if ((await backend.stat(layout.marker)) !== null) throw new BackupError(BackupErrorCode.EXISTS, `A backup repository exists at ${backend.location} already`);
    if ((await backend.list('')).length > 0) throw new BackupError(BackupErrorCode.EXISTS, `${backend.location} is not empty and holds no backup repository`);
    const master = randomBytes(masterKeyBytes);
    const keys = splitMasterKey(master);
    const config: RepoConfig = { version: 1, id: randomBytes(32).toString('hex'), chunkSizeBytes, packSizeTargetBytes, created: now() };
    const keyFile = await makeKeyFile(master, password, keyMeta(now()));
    const keyId = sha256(keyFile).toString('hex');
    await backend.put(layout.keys + keyId, keyFile);
    await backend.put(layout.config, encodeObject(keys.encKey, config));
    const marker: RepoMarker = { format: repositoryFormat.name, version: repositoryFormat.version, id: config.id };
    await backend.put(layout.marker, Buffer.from(JSON.stringify(marker) + '\n'));
    return new Repository(backend, keys, config, keyId, now);
  }

  /** Opens a repository with one of its passwords. */
  static async open(backend: Backend, password: string, options: { now?: () => number } = {}): Promise<Repository> {
    backend = repoBackend(backend);
    const markerBytes = await backend.get(layout.marker).catch((err) => {
      if (err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND) {
        throw new BackupError(BackupErrorCode.NOT_FOUND, `No backup repository at ${backend.location} (run \`tessera backup init\` to create one)`, { cause: err });
      }
      throw err;
    });
    let marker: RepoMarker;
    try {
      marker = JSON.parse(markerBytes.toString('utf8')) as RepoMarker;
    } catch (err) {
      throw new BackupError(BackupErrorCode.CORRUPT, `The repository marker at ${backend.location} is damaged`, { cause: err });
    }
    if (marker?.format !== repositoryFormat.name || typeof marker.id !== 'string' || !isHexId(marker.id)) {
      throw new BackupError(BackupErrorCode.CORRUPT, `The repository marker at ${backend.location} is damaged`);
    }
    if (marker.version !== repositoryFormat.version) {
      throw new BackupError(BackupErrorCode.UNSUPPORTED, `The repository at ${backend.location} has format version ${marker.version}; this Tessera reads version ${repositoryFormat.version}`);
    }
    const keyInfos = await backend.list(layout.keys);
    if (keyInfos.length === 0) throw new BackupError(BackupErrorCode.CORRUPT, `The repository at ${backend.location} has no key files`);
    let opened: { master: Buffer; keyId: string } | null = null;
    let damaged = 0;
    for (const info of keyInfos) {
      const keyId = info.path.slice(layout.keys.length);
      let master: Buffer | null;
      try {
        const f = parseKeyFile(await backend.get(info.path), `Key file ${keyId}`);
        master = await unwrapKeyFile(f, password);
      } catch (err) {
        if (err instanceof BackupError && (err.code === BackupErrorCode.CORRUPT || err.code === BackupErrorCode.NOT_FOUND)) {
          damaged++;
          continue;
        }
        throw err;
      }
      if (master !== null) {
        opened = { master, keyId };
        break;
      }
    }
    if (opened === null) {
      const note = damaged > 0 ? ` (${damaged} of ${keyInfos.length} key files are damaged)` : '';
      throw new BackupError(BackupErrorCode.WRONG_PASSWORD, `Wrong password for the repository at ${backend.location}${note}`);
    }
    const keys = splitMasterKey(opened.master);
    const config = decodeObject(keys.encKey, await backend.get(layout.config), `The config of ${backend.location}`) as RepoConfig;
    const ok = config?.version === 1 && config.id === marker.id && isPowerOfTwo(config.chunkSizeBytes) && isCount(config.packSizeTargetBytes);
    if (!ok) throw new BackupError(BackupErrorCode.CORRUPT, `The config of ${backend.location} is damaged or belongs to another repository`);
    return new Repository(backend, keys, config, opened.keyId, options.now ?? Date.now);
  }

  /** Encrypts `object` and stores it as `<prefix><sha256 of the bytes>`; returns the id. */
  async putObject(prefix: string, object: unknown): Promise<string> {
    const bytes = encodeObject(this.keys.encKey, object);
    const id = sha256(bytes).toString('hex');
    await this.backend.put(prefix + id, bytes);
    return id;
  }

  /** Reads and decrypts `<prefix><id>`, checking that its name is its hash. */
  async getObject(prefix: string, id: string, what: string): Promise<unknown> {
    return this.openObject(await this.backend.get(prefix + id), id, what);
  }

  /** Opens the bytes of object `id`: they must match its name and open with the key. */
  private openObject(bytes: Buffer, id: string, what: string): unknown {
    if (sha256(bytes).toString('hex') !== id) throw corrupt(what, 'does not match its name (damaged)');
    return decodeObject(this.keys.encKey, bytes, what);
  }

  /** Ids of the files under a prefix (`index/`, `snapshots/`, ...). */
  async listIds(prefix: string): Promise<string[]> {
    return (await this.backend.list(prefix)).map((o) => o.path.slice(prefix.length)).filter(isHexId);
  }

  async readIndexFile(id: string): Promise<IndexFile> {
    const what = `Index file ${id}`;
    return checkIndexFile(await this.getObject(layout.index, id, what), what);
  }

  async writeIndexFile(packs: IndexedPack[], supersedes: Buffer[] = []): Promise<{ id: string; file: IndexFile }> {
    const file: IndexFile = { version: 1, packs, supersedes };
    return { id: await this.putObject(layout.index, file), file };
  }

  async readSnapshot(id: string): Promise<Snapshot> {
    return this.openSnapshot(await this.backend.get(layout.snapshots + id), id);
  }

  /** Opens the bytes of restore point `id`'s file. */
  private openSnapshot(bytes: Buffer, id: string): Snapshot {
    const what = `Restore point ${id}`;
    return checkSnapshot(this.openObject(bytes, id, what), what);
  }

  async writeSnapshot(s: Snapshot): Promise<string> {
    return this.putObject(layout.snapshots, s);
  }

  /**
   * Every restore point that can be read, oldest first, and those that cannot (damaged: verify
   * says what each affects). One deleted while it was being listed is left out. With `cache`,
   * the files of the restore points it kept are not read again (one listing, then nothing per
   * restore point), and it keeps only those listed.
   */
  async readSnapshots(options: { concurrency?: number; cache?: ObjectCache } = {}): Promise<{ snapshots: SnapshotEntry[]; damaged: { id: string; error: BackupError }[] }> {
    const damaged: { id: string; error: BackupError }[] = [];
    const ids = await this.listIds(layout.snapshots);
    const { cache } = options;
    const fresh: [string, Buffer][] = [];
    const read = await mapConcurrent(ids, options.concurrency ?? 16, async (id) => {
      // A kept copy is opened and authenticated as the stored file would be; one that does not
      // open (the cache was damaged) is read again.
      const kept = cache?.getObjectFile(id);
      if (kept !== undefined) {
        try {
          return { id, snapshot: this.openSnapshot(kept, id) };
        } catch {
          // read it from the repository below
        }
      }
      try {
        const bytes = await this.backend.get(layout.snapshots + id);
        const snapshot = this.openSnapshot(bytes, id);
        if (cache !== undefined) fresh.push([id, bytes]);
        return { id, snapshot };
      } catch (err) {
        if (err instanceof BackupError && err.code === BackupErrorCode.CORRUPT) damaged.push({ id, error: err });
        else if (!(err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND)) throw err;
        return null;
      }
    });
    cache?.updateObjectFiles(ids, fresh);
    const snapshots = read.filter((e) => e !== null).sort((a, b) => a.snapshot.time - b.snapshot.time || a.id.localeCompare(b.id));
    return { snapshots, damaged: damaged.sort((a, b) => a.id.localeCompare(b.id)) };
  }

  /** Every restore point, oldest first. A damaged one fails the call (readSnapshots reports them instead). */
  async listSnapshots(options: { concurrency?: number; cache?: ObjectCache } = {}): Promise<SnapshotEntry[]> {
    const { snapshots, damaged } = await this.readSnapshots(options);
    if (damaged.length > 0) throw damaged[0].error;
    return snapshots;
  }

  /** The restore point whose id is `idOrPrefix` or starts with it (at least 4 hex digits). */
  async findSnapshot(idOrPrefix: string): Promise<SnapshotEntry> {
    if (!/^[0-9a-f]{4,64}$/.test(idOrPrefix)) throw new BackupError(BackupErrorCode.INVALID, `Bad restore point id '${idOrPrefix}': expected at least 4 hex digits`);
    const ids = (await this.listIds(layout.snapshots)).filter((id) => id.startsWith(idOrPrefix));
    if (ids.length === 0) throw new BackupError(BackupErrorCode.NOT_FOUND, `No restore point ${idOrPrefix} in ${this.backend.location}`);
    if (ids.length > 1) throw new BackupError(BackupErrorCode.INVALID, `Restore point id ${idOrPrefix} is ambiguous: ${ids.length} match`);
    return { id: ids[0], snapshot: await this.readSnapshot(ids[0]) };
  }

  /** Every writer marker that can be read (a damaged or vanished one is skipped). */
  async listWriters(): Promise<{ id: string; marker: WriterMarker }[]> {
    return (await this.readWriters()).writers;
  }

  /** The writer markers that can be read, and whether one that was listed vanished before it was read. */
  private async readWriters(): Promise<{ writers: { id: string; marker: WriterMarker }[]; vanished: boolean }> {
    const ids = await this.listIds(layout.writers);
    let vanished = false;
    const out = await mapConcurrent(ids, 8, async (id) => {
      try {
        return { id, marker: (await this.getObject(layout.writers, id, `Writer marker ${id}`)) as WriterMarker };
      } catch (err) {
        if (err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND) vanished = true;
        if (err instanceof BackupError && (err.code === BackupErrorCode.NOT_FOUND || err.code === BackupErrorCode.CORRUPT)) return null;
        throw err;
      }
    });
    return { writers: out.filter((w) => w !== null), vanished };
  }

  /**
   * The markers of the writers running now, none missed: a marker that vanished between the
   * listing and its read was replaced by its refresh (which writes the new marker before it
   * deletes the old one), so the listing is read again. A marker of a writer still running is
   * then seen, unless markers keep vanishing (BACKUP_STORAGE after 3 readings).
   */
  async liveWriters(): Promise<WriterMarker[]> {
    for (let reading = 1; ; reading++) {
      const { writers, vanished } = await this.readWriters();
      if (!vanished) return writers.map((w) => w.marker).filter((m) => this.writerIsLive(m));
      if (reading === 3) throw new BackupError(BackupErrorCode.STORAGE, `Writer markers of ${this.backend.location} kept vanishing while they were read`);
    }
  }

  /** Whether a writer marker still stands for a running backup. */
  writerIsLive(m: WriterMarker): boolean {
    if (this.now() - m.written > writerMarker.staleMs) return false;
    if (m.hostname === hostname()) {
      try {
        process.kill(m.pid, 0);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
      }
    }
    return true;
  }

  /**
   * Writes a writer marker and keeps it fresh until the returned stop() is called; a disk
   * backup names the node snapshot it takes (`nodeSnapshot`).
   */
  async startWriter(options: { nodeSnapshot?: string } = {}): Promise<{ stop(): Promise<void> }> {
    const started = this.now();
    const snapshot = options.nodeSnapshot !== undefined ? { nodeSnapshot: options.nodeSnapshot } : {};
    const write = () => this.putObject(layout.writers, { started, written: this.now(), hostname: hostname(), pid: process.pid, ...snapshot } satisfies WriterMarker);
    let current = await write();
    let refreshing: Promise<void> = Promise.resolve();
    const timer = setInterval(() => {
      refreshing = (async () => {
        const next = await write();
        await this.backend.delete(layout.writers + current);
        current = next;
      })().catch(() => {}); // a failed refresh is retried at the next tick; staleness takes 6 of them
    }, writerMarker.refreshMs);
    timer.unref();
    return {
      stop: async () => {
        clearInterval(timer);
        await refreshing;
        await this.backend.delete(layout.writers + current);
      },
    };
  }

  /** Every key file, with its metadata. */
  async listKeys(): Promise<KeyInfo[]> {
    const out: KeyInfo[] = [];
    for (const info of await this.backend.list(layout.keys)) {
      const id = info.path.slice(layout.keys.length);
      const f = parseKeyFile(await this.backend.get(info.path), `Key file ${id}`);
      out.push({ id, created: f.created, hostname: f.hostname, username: f.username, current: id === this.keyId });
    }
    return out.sort((a, b) => a.created.localeCompare(b.created) || a.id.localeCompare(b.id));
  }

  /** Adds a password: a new key file wrapping the same master key. */
  async addKey(password: string): Promise<string> {
    checkPassword(password);
    const master = Buffer.concat([this.keys.encKey, this.keys.idKey]);
    const keyFile = await makeKeyFile(master, password, keyMeta(this.now()));
    const id = sha256(keyFile).toString('hex');
    await this.backend.put(layout.keys + id, keyFile);
    return id;
  }

  /** Removes a key file by id or unique prefix; the last one cannot be removed. */
  async removeKey(idOrPrefix: string): Promise<string> {
    const keys = await this.listKeys();
    const matches = keys.filter((k) => k.id.startsWith(idOrPrefix));
    if (idOrPrefix.length < 4 || matches.length === 0) throw new BackupError(BackupErrorCode.NOT_FOUND, `No key ${idOrPrefix} in ${this.backend.location}`);
    if (matches.length > 1) throw new BackupError(BackupErrorCode.INVALID, `Key id ${idOrPrefix} is ambiguous: ${matches.length} match`);
    if (keys.length === 1) throw new BackupError(BackupErrorCode.INVALID, 'Cannot remove the last key of a repository');
    await this.backend.delete(layout.keys + matches[0].id);
    return matches[0].id;
  }
}

function checkPassword(password: string): void {
  if (typeof password !== 'string' || password.length === 0) throw new BackupError(BackupErrorCode.INVALID, 'The password must not be empty');
}

function keyMeta(nowMs: number): { created: string; hostname: string; username: string } {
  let username = '';
  try {
    username = userInfo().username;
  } catch {
    // no passwd entry for this uid
  }
  return { created: new Date(nowMs).toISOString(), hostname: hostname(), username };
}

/** Maps `items` through `fn` with at most `limit` calls running at once, keeping the order. */
export async function mapConcurrent<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return out;
}

/**
 * A local copy of objects as stored (encrypted; each named by the SHA-256 of its bytes, which is
 * checked on every use), so that reading them again costs no request: the index cache keeps the
 * restore point files it has read (IndexCache).
 */
export interface ObjectCache {
  getObjectFile(id: string): Buffer | undefined;
  /** Keeps the files `add`, and drops every kept file whose id is not in `existing`. */
  updateObjectFiles(existing: readonly string[], add: readonly [string, Buffer][]): void;
}

/** What a damaged restore point's message adds: how to be rid of it. */
export function damagedAdvice(ids: readonly string[]): string {
  const first = ids[0].slice(0, 8);
  return `${ids.length === 1 ? `restore point ${first} is damaged` : `${ids.length} restore points are damaged (${first} …)`}: \`tessera backup verify\` says what it affects, \`tessera backup forget ${first}\` removes it`;
}
