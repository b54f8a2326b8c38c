/**
 * Tiered archival (docs/backup.md, "Archival"): restore points older than a tenant's policy
 * allows are copied into an archive repository (blobs opened with the primary's keys, sealed and
 * deduplicated with the archive's), the copy is read back and checked against the original's
 * chunk ids, an archived record is left in the primary, and the original is forgotten there.
 * Every step can be repeated: a rerun after a kill finds the copy by its `archivedFrom`.
 */
import { pack } from 'msgpackr';
import { decodeCatalogRoot } from './catalog.ts';
import type { IndexCache } from './cache.ts';
import { blobId, decodeObject, encodeObject } from './crypto.ts';
import { BackupError, BackupErrorCode } from './errors.ts';
import { idBytes, isHexId, layout, mapEntriesPerBlob, zeroId } from './format.ts';
import type { WorkerPool } from './pool.ts';
import { mapConcurrent, tenantOf, tenantPattern, type Repository, type Snapshot, type SnapshotEntry } from './repository.ts';
import { readBlob, readMapBlob, restoreTo, type RestoreMovers } from './restore.ts';
import { BackupWriter } from './writer.ts';

/** An open repository with its index cache and worker pool. */
export interface RepoContext {
  repo: Repository;
  cache: IndexCache;
  pool: WorkerPool;
}

/** Objects under `archived/<primary restore point id>` in the primary: where it went. */
export const archivedPrefix = layout.archived;

/** What the primary keeps of an archived restore point (encrypted like every other object). */
export interface ArchiveRecord {
  version: 1;
  /** The restore point's id in the primary (also the file name). */
  id: string;
  name: string;
  tenant: string;
  /** The restore point's own time, and when it was archived (ms). */
  snapshotTime: number;
  archivedTime: number;
  archive: {
    /** Repository URL as given to archive (a path or `s3://…`). */
    location: string;
    /** The archive repository's id (hex). */
    repository: string;
    /** The copy's restore point id there. */
    id: string;
  };
}

/** An archival policy file (JSON). */
export interface ArchivePolicy {
  version: 1;
  /** Tenant → when its restore points move, and where. Tenants not named are never archived. */
  tenants: Record<string, { archiveAfterDays: number; archive: string }>;
}

/** Largest policy file read. */
export const policyBytesMax = 1 << 20;

/** Parses and checks a policy file; anything wrong is BACKUP_INVALID naming `what`. */
export function parsePolicy(text: string, what: string): ArchivePolicy {
  const bad = (detail: string) => new BackupError(BackupErrorCode.INVALID, `${what}: ${detail}`);
  if (text.length > policyBytesMax) throw bad(`larger than ${policyBytesMax} bytes`);
  let v: any;
  try {
    v = JSON.parse(text);
  } catch (err) {
    throw new BackupError(BackupErrorCode.INVALID, `${what} is not JSON: ${(err as Error).message}`, { cause: err });
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw bad('expected an object {"version": 1, "tenants": {...}}');
  for (const k of Object.keys(v)) if (k !== 'version' && k !== 'tenants') throw bad(`unknown field '${k}'`);
  if (v.version !== 1) throw bad(`version ${JSON.stringify(v.version)} is not 1`);
  if (v.tenants === null || typeof v.tenants !== 'object' || Array.isArray(v.tenants)) throw bad('"tenants" must be an object');
  for (const [tenant, rule] of Object.entries(v.tenants as Record<string, any>)) {
    if (!tenantPattern.test(tenant)) throw bad(`bad tenant name '${tenant}'`);
    if (rule === null || typeof rule !== 'object') throw bad(`tenant '${tenant}': expected {"archiveAfterDays": N, "archive": URL}`);
    for (const k of Object.keys(rule)) if (k !== 'archiveAfterDays' && k !== 'archive') throw bad(`tenant '${tenant}': unknown field '${k}'`);
    if (!Number.isSafeInteger(rule.archiveAfterDays) || rule.archiveAfterDays < 0 || rule.archiveAfterDays > 36500) throw bad(`tenant '${tenant}': archiveAfterDays must be a whole number from 0 to 36500`);
    if (typeof rule.archive !== 'string' || rule.archive === '') throw bad(`tenant '${tenant}': archive must be a repository URL`);
  }
  return v as ArchivePolicy;
}

/** One restore point due for archival and where it goes. */
export interface ArchiveTask {
  entry: SnapshotEntry;
  tenant: string;
  /** Archive repository URL. */
  archive: string;
}

/** What to archive: a policy, or one archive for restore points older than a duration. */
export type ArchiveRule = { policy: ArchivePolicy; tenant?: string } | { archive: string; olderThanMs: number; tenant?: string };

/** The restore points `rule` makes due at `nowMs`, oldest first (pure). */
export function dueForArchive(entries: readonly SnapshotEntry[], rule: ArchiveRule, nowMs: number): ArchiveTask[] {
  const out: ArchiveTask[] = [];
  for (const entry of entries) {
    const tenant = tenantOf(entry.snapshot);
    if (rule.tenant !== undefined && tenant !== rule.tenant) continue;
    let archive: string;
    let olderThanMs: number;
    if ('policy' in rule) {
      const r = rule.policy.tenants[tenant];
      if (r === undefined) continue;
      archive = r.archive;
      olderThanMs = r.archiveAfterDays * 86_400_000;
    } else {
      archive = rule.archive;
      olderThanMs = rule.olderThanMs;
    }
    if (nowMs - entry.snapshot.time >= olderThanMs) out.push({ entry, tenant, archive });
  }
  return out.sort((a, b) => a.entry.snapshot.time - b.entry.snapshot.time || a.entry.id.localeCompare(b.entry.id));
}

/** What archiving one restore point did. */
export interface ArchiveOutcome {
  id: string;
  archiveId: string;
  /** False when an earlier, interrupted run had copied it already. */
  copied: boolean;
  /** Chunks read back from the archive and matched against the original's ids. */
  chunksVerified: number;
  /** Sealed bytes the copy added to the archive (0 when everything was there). */
  bytesStored: number;
  movers: RestoreMovers | null;
}

/** Restore points of `archive` that are copies, by `<primary repo id>/<primary restore point id>`. */
export async function copiesIn(archive: Repository): Promise<Map<string, SnapshotEntry>> {
  const out = new Map<string, SnapshotEntry>();
  for (const e of await archive.listSnapshots()) {
    const from = e.snapshot.archivedFrom;
    if (from !== undefined) out.set(`${from.repository}/${from.id}`, e);
  }
  return out;
}

/**
 * Archives one restore point of `primary` into `archive` (whose URL is `location`): copy unless
 * `copies` has it already, verify, record, forget. `copies` is updated.
 */
export async function archiveRestorePoint(primary: RepoContext, archive: RepoContext, entry: SnapshotEntry, location: string, copies: Map<string, SnapshotEntry>): Promise<ArchiveOutcome> {
  const key = `${primary.repo.id}/${entry.id}`;
  if (primary.repo.id === archive.repo.id) throw new BackupError(BackupErrorCode.INVALID, `The archive repository at ${location} is the primary repository itself`);
  let copy = copies.get(key);
  let copied = false;
  let bytesStored = 0;
  if (copy === undefined) {
    const r = await copyRestorePoint(primary, archive, entry);
    copy = { id: r.id, snapshot: r.snapshot };
    copies.set(key, copy);
    copied = true;
    bytesStored = r.snapshot.stats.bytesStored;
  }
  const { chunksVerified, movers } = await verifyCopy(primary, archive, entry, copy);
  const record: ArchiveRecord = {
    version: 1,
    id: entry.id,
    name: entry.snapshot.name,
    tenant: tenantOf(entry.snapshot),
    snapshotTime: entry.snapshot.time,
    archivedTime: primary.repo.now(),
    archive: { location, repository: archive.repo.id, id: copy.id },
  };
  // The record first: a kill between the two leaves a restore point that the next run finds
  // copied, verifies again and forgets.
  await primary.repo.backend.put(archivedPrefix + entry.id, encodeObject(primary.repo.keys.encKey, record));
  await primary.repo.backend.delete(layout.snapshots + entry.id);
  return { id: entry.id, archiveId: copy.id, copied, chunksVerified, bytesStored, movers };
}

/** Chunk reads at once while copying. */
const copyConcurrency = 8;

/** Writes a copy of `entry` into the archive: every chunk re-hashed and re-sealed there. */
async function copyRestorePoint(primary: RepoContext, archive: RepoContext, entry: SnapshotEntry): Promise<{ id: string; snapshot: Snapshot }> {
  const s = entry.snapshot;
  if (archive.repo.config.chunkSizeBytes !== s.chunkSizeBytes) {
    throw new BackupError(
      BackupErrorCode.INVALID,
      `The archive repository at ${archive.repo.backend.location} has chunks of ${archive.repo.config.chunkSizeBytes} bytes; restore point ${entry.id} has ${s.chunkSizeBytes}`,
    );
  }
  await primary.cache.sync(primary.repo);
  const marker = await archive.repo.startWriter();
  try {
    await archive.cache.sync(archive.repo);
    const writer = new BackupWriter(archive, s.sizeBytes);
    try {
      for (let g = 0; g < s.map.length; g++) {
        const entries = await readMapBlob(primary, s, g);
        const count = entries.length / idBytes;
        await mapConcurrent(Array.from({ length: count }, (_, j) => j), copyConcurrency, async (j) => {
          const index = g * mapEntriesPerBlob + j;
          const id = entries.subarray(j * idBytes, (j + 1) * idBytes);
          if (id.equals(zeroId)) return writer.putZero(index);
          const buf = await writer.allocChunk(index);
          const plain = await readBlob(primary, Buffer.from(id), 'Data blob');
          if (plain.length !== buf.length) throw new BackupError(BackupErrorCode.CORRUPT, `Blob ${id.toString('hex')} is ${plain.length} bytes where chunk ${index} needs ${buf.length}`);
          plain.copy(buf);
          writer.putChunk(index, buf);
        });
      }
      const catalog = s.catalog === null ? null : await copyCatalog(primary, s.catalog, (plain) => writer.putMetaBlob(plain));
      return await writer.finish({
        kind: s.kind,
        name: s.name,
        source: s.source,
        parent: null,
        group: s.group,
        catalog,
        tenant: s.tenant,
        time: s.time,
        hostname: s.hostname,
        archivedFrom: { repository: primary.repo.id, id: entry.id },
      });
    } catch (err) {
      await writer.abort();
      throw err;
    }
  } finally {
    await marker.stop();
  }
}

/** Copies a file catalog: its parts as they are, its root with the parts' new ids. */
async function copyCatalog(primary: RepoContext, rootId: Buffer, store: (plain: Buffer) => Promise<Buffer>): Promise<Buffer> {
  const root = decodeCatalogRoot(await readBlob(primary, rootId, 'Catalog root'));
  const parts = await mapConcurrent(root.parts, copyConcurrency, async (p) => ({ ...p, id: await store(await readBlob(primary, p.id, 'Catalog part')) }));
  return store(pack({ ...root, parts }));
}

/**
 * Reads the whole copy back from the archive (opened and authenticated with the archive's keys)
 * and checks every chunk against the original's map: its HMAC under the primary's id key must be
 * the id the original records, and zero chunks must be zero in both.
 */
async function verifyCopy(primary: RepoContext, archive: RepoContext, entry: SnapshotEntry, copy: SnapshotEntry): Promise<{ chunksVerified: number; movers: RestoreMovers }> {
  const s = entry.snapshot;
  const c = copy.snapshot;
  const differs = (detail: string) => new BackupError(BackupErrorCode.CORRUPT, `The archived copy ${copy.id} of restore point ${entry.id} ${detail}`);
  if (c.sizeBytes !== s.sizeBytes || c.chunkSizeBytes !== s.chunkSizeBytes || c.map.length !== s.map.length) throw differs('has another size');
  await primary.cache.sync(primary.repo);
  // The original's map, 32 bytes per chunk.
  const original = Buffer.concat(await mapConcurrent(s.map.map((_, g) => g), 4, (g) => readMapBlob(primary, s, g)));
  const chunkCount = original.length / idBytes;
  let dataChunks = 0;
  for (let i = 0; i < chunkCount; i++) if (!original.subarray(i * idBytes, (i + 1) * idBytes).equals(zeroId)) dataChunks++;
  const seen = new Uint8Array(chunkCount);
  let verified = 0;
  const result = await restoreTo(archive, c, {
    write: async (data, offset) => {
      const i = offset / s.chunkSizeBytes;
      const want = original.subarray(i * idBytes, (i + 1) * idBytes);
      if (!Number.isSafeInteger(i) || i >= chunkCount || seen[i] !== 0) throw differs(`writes chunk ${i} twice or out of place`);
      if (want.equals(zeroId)) throw differs(`has data at chunk ${i}, which is zero in the original`);
      if (!blobId(primary.repo.keys.idKey, data).equals(want)) throw differs(`differs from it at chunk ${i}`);
      seen[i] = 1;
      verified++;
    },
  });
  if (verified !== dataChunks) throw differs(`has ${verified} chunks of data, the original ${dataChunks}`);
  return { chunksVerified: verified, movers: result.movers };
}

/** Whether `text` is a restore point id or a prefix of one (at least 4 hex digits). */
function checkIdPrefix(text: string): void {
  if (!/^[0-9a-f]{4,64}$/.test(text)) throw new BackupError(BackupErrorCode.INVALID, `Bad restore point id '${text}': expected at least 4 hex digits`);
}

/** Reads and checks archived record `id` of `repo`. */
async function readArchived(repo: Repository, id: string): Promise<ArchiveRecord> {
  const what = `Archived record ${id}`;
  const v = decodeObject(repo.keys.encKey, await repo.backend.get(archivedPrefix + id), what) as ArchiveRecord;
  const ok =
    v?.version === 1 && v.id === id && typeof v.name === 'string' && typeof v.tenant === 'string' && Number.isSafeInteger(v.snapshotTime) &&
    Number.isSafeInteger(v.archivedTime) && typeof v.archive?.location === 'string' && isHexId(v.archive.repository) && isHexId(v.archive.id);
  if (!ok) throw new BackupError(BackupErrorCode.CORRUPT, `${what} is damaged`);
  return v;
}

/**
 * Reads every archived record of `repo`: how many, and the damaged ones (for verify). A record
 * that vanished while being read (a prune or archive run meanwhile) is neither.
 */
export async function checkArchived(repo: Repository): Promise<{ count: number; damaged: { id: string; error: BackupError }[] }> {
  const damaged: { id: string; error: BackupError }[] = [];
  let count = 0;
  await mapConcurrent(await repo.listIds(archivedPrefix), 16, async (id) => {
    try {
      await readArchived(repo, id);
      count++;
    } catch (err) {
      if (err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND) return;
      if (!(err instanceof BackupError && err.code === BackupErrorCode.CORRUPT)) throw err;
      count++;
      damaged.push({ id, error: err });
    }
  });
  return { count, damaged: damaged.sort((a, b) => a.id.localeCompare(b.id)) };
}

/** The archived records of `repo` whose id starts with `idOrPrefix`. */
export async function findArchived(repo: Repository, idOrPrefix: string): Promise<ArchiveRecord[]> {
  checkIdPrefix(idOrPrefix);
  const ids = (await repo.listIds(archivedPrefix)).filter((id) => id.startsWith(idOrPrefix));
  return mapConcurrent(ids, 8, (id) => readArchived(repo, id));
}

/** Every archived record of `repo`, by the archived restore point's time (oldest first). */
export async function listArchived(repo: Repository): Promise<ArchiveRecord[]> {
  const records = await mapConcurrent(await repo.listIds(archivedPrefix), 16, (id) => readArchived(repo, id));
  return records.sort((a, b) => a.snapshotTime - b.snapshotTime || a.id.localeCompare(b.id));
}

/** Where a restore point is: in this repository, or archived elsewhere (the record says where). */
export type Located = { entry: SnapshotEntry } | { archived: ArchiveRecord };

/**
 * Finds a restore point by id or prefix: among this repository's restore points, then among
 * the copies it holds as an archive (by the original's id), then among its archived records.
 */
export async function locateRestorePoint(repo: Repository, idOrPrefix: string): Promise<Located> {
  try {
    return { entry: await repo.findSnapshot(idOrPrefix) };
  } catch (err) {
    if (!(err instanceof BackupError && err.code === BackupErrorCode.NOT_FOUND)) throw err;
  }
  const copies = (await repo.listSnapshots()).filter((e) => e.snapshot.archivedFrom?.id.startsWith(idOrPrefix));
  if (copies.length > 1) throw new BackupError(BackupErrorCode.INVALID, `Restore point id ${idOrPrefix} is ambiguous: ${copies.length} archived copies match`);
  if (copies.length === 1) return { entry: copies[0] };
  const records = await findArchived(repo, idOrPrefix);
  if (records.length > 1) throw new BackupError(BackupErrorCode.INVALID, `Restore point id ${idOrPrefix} is ambiguous: ${records.length} archived records match`);
  if (records.length === 1) return { archived: records[0] };
  throw new BackupError(BackupErrorCode.NOT_FOUND, `No restore point ${idOrPrefix} in ${repo.backend.location}`);
}
