/**
 * What an instant restore keeps in the node's data directory (docs/backup.md, "Instant
 * restore"): `NAME.json`, what is restored where (no secret), and `NAME.copied`, the append-only
 * log of chunks whose copy is durable in the engine.
 */
import { mkdir, open, readdir, readFile, rename, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from '../native/index.ts';
import { writeAll } from '../util/write-all.ts';
import { HydrateError, HydrateErrorCode } from './errors.ts';
import { syncDir } from '../util/sync-dir.ts';

/**
 * Where the restore point of an instant restore from an archive repository came from: the
 * restore reads the archive's copy (`repo`, `snapshot` of the state); this says what the user
 * asked for, and that a resume needs the archive's password.
 */
export interface ArchivedOrigin {
  /** The primary repository's location, as the command was given it. */
  repo: string;
  /** The original restore point's id there, 64 hex digits. */
  snapshot: string;
}

/** Whether `v` is an ArchivedOrigin. */
export function isArchivedOrigin(v: any): v is ArchivedOrigin {
  return v !== null && typeof v === 'object' && typeof v.repo === 'string' && v.repo !== '' && typeof v.snapshot === 'string' && /^[0-9a-f]{64}$/.test(v.snapshot);
}

/** What is being restored where; written before the disk is created. */
export interface RestoreState {
  version: 1;
  /** Disk being restored. */
  disk: string;
  /** Repository location as the node opens it (an absolute path or an s3:// URL). */
  repo: string;
  /** Restore point id, 64 hex digits. */
  snapshot: string;
  /** Size of the image in the restore point. */
  imageBytes: number;
  chunkSizeBytes: number;
  /** When the restore started (ms); the disk was created at or after it. */
  startedMs: number;
  /** The disk's createdMs once created: the restore belongs to that disk only. Null before. */
  diskCreatedMs: number | null;
  /** Set when `repo` is an archive and `snapshot` the copy there of this restore point; absent otherwise. */
  archivedFrom?: ArchivedOrigin;
}

/** Bytes of one record of the copied log: u32 LE chunk, u32 LE CRC-32 of those 4 bytes. */
export const copiedRecordBytes = 8;

const statePath = (dir: string, disk: string): string => join(dir, `${disk}.json`);
const copiedPath = (dir: string, disk: string): string => join(dir, `${disk}.copied`);

function isCount(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}

/** Checks the shape of a state file. */
function checkState(v: any, what: string): RestoreState {
  const ok =
    v !== null && typeof v === 'object' && v.version === 1 && typeof v.disk === 'string' && typeof v.repo === 'string' &&
    typeof v.snapshot === 'string' && /^[0-9a-f]{64}$/.test(v.snapshot) && isCount(v.imageBytes) && isCount(v.chunkSizeBytes) &&
    v.chunkSizeBytes > 0 && isCount(v.startedMs) && (v.diskCreatedMs === null || isCount(v.diskCreatedMs)) &&
    (v.archivedFrom === undefined || isArchivedOrigin(v.archivedFrom));
  if (!ok) throw new HydrateError(HydrateErrorCode.CORRUPT, `${what} is damaged`);
  return v as RestoreState;
}

/** Writes `bytes` to `path` atomically: a temporary file, fsync, rename, fsync of the directory. */
async function writeAtomic(dir: string, path: string, bytes: Buffer): Promise<void> {
  const tmp = `${path}.tmp`;
  const fh = await open(tmp, 'w');
  try {
    await fh.writeFile(bytes);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
  await syncDir(dir);
}

/** Writes (or replaces) the state file of `state.disk`. */
export async function writeState(dir: string, state: RestoreState): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeAtomic(dir, statePath(dir, state.disk), Buffer.from(JSON.stringify(state) + '\n'));
}

/** Every state file in `dir`: the ones that parse, and the names of damaged ones. */
export async function readStates(dir: string): Promise<{ states: RestoreState[]; damaged: { disk: string; error: HydrateError }[] }> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { states: [], damaged: [] };
    throw err;
  }
  const states: RestoreState[] = [];
  const damaged: { disk: string; error: HydrateError }[] = [];
  for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
    const disk = name.slice(0, -'.json'.length);
    const what = `The instant restore state file ${name}`;
    try {
      let parsed: unknown;
      try {
        parsed = JSON.parse(await readFile(join(dir, name), 'utf8'));
      } catch (err) {
        throw new HydrateError(HydrateErrorCode.CORRUPT, `${what} is damaged`, { cause: err });
      }
      const s = checkState(parsed, what);
      if (s.disk !== disk) throw new HydrateError(HydrateErrorCode.CORRUPT, `${what} names another disk (${s.disk})`);
      states.push(s);
    } catch (err) {
      if (!(err instanceof HydrateError)) throw err;
      damaged.push({ disk, error: err });
    }
  }
  return { states, damaged };
}

/** Deletes the state files of `disk` (the state file last, so a crash in between leaves a restore that resumes). */
export async function removeState(dir: string, disk: string): Promise<void> {
  await rm(copiedPath(dir, disk), { force: true });
  await rm(statePath(dir, disk), { force: true });
  await syncDir(dir).catch(() => {});
}

/** Encodes one record of the copied log. */
export function encodeCopied(chunk: number): Buffer {
  const b = Buffer.allocUnsafe(copiedRecordBytes);
  b.writeUInt32LE(chunk, 0);
  b.writeUInt32LE(crc32(b.subarray(0, 4)), 4);
  return b;
}

/**
 * Decodes the copied log: the chunks of every valid record up to the first bad one (a torn
 * tail, or a chunk out of range), and the byte length of that valid prefix.
 */
export function decodeCopied(bytes: Buffer, chunkCount: number): { chunks: number[]; validBytes: number } {
  const chunks: number[] = [];
  let at = 0;
  for (; at + copiedRecordBytes <= bytes.length; at += copiedRecordBytes) {
    const chunk = bytes.readUInt32LE(at);
    if (bytes.readUInt32LE(at + 4) !== crc32(bytes.subarray(at, at + 4)) || chunk >= chunkCount) break;
    chunks.push(chunk);
  }
  return { chunks, validBytes: at };
}

/** The append-only log of chunks whose copy is durable. */
export class CopiedLog {
  private readonly fh: FileHandle;
  private constructor(fh: FileHandle) {
    this.fh = fh;
  }

  /** Opens (creating) the log of `disk`, cuts off a bad tail, and returns the chunks it lists. */
  static async open(dir: string, disk: string, chunkCount: number): Promise<{ log: CopiedLog; chunks: number[] }> {
    await mkdir(dir, { recursive: true });
    const fh = await open(copiedPath(dir, disk), 'a+');
    try {
      const bytes = await fh.readFile();
      const { chunks, validBytes } = decodeCopied(bytes, chunkCount);
      if (validBytes < bytes.length) {
        await fh.truncate(validBytes);
        await fh.datasync();
      }
      return { log: new CopiedLog(fh), chunks };
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Appends records for `chunks` and makes them durable. */
  async append(chunks: readonly number[]): Promise<void> {
    if (chunks.length === 0) return;
    const bytes = Buffer.concat(chunks.map(encodeCopied));
    await writeAll(this.fh, bytes, null);
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    await this.fh.close();
  }
}
