/**
 * An object store in a local directory: one file per object, written to a temporary name, fsynced,
 * renamed over the final name, and the directory fsynced, so a reader (or a crash) sees the whole
 * object or none of it.
 */
import { randomBytes } from 'node:crypto';
import type { Dirent, Stats } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink, type FileHandle } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { writeAll, writevAll } from '../util/write-all.ts';
import { Backend, type ByteRange, type ObjectInfo, type ObjectSink, type TemporaryInfo } from './backend.ts';
import { ObjstoreError, ObjstoreErrorCode } from './errors.ts';
import { syncDir } from '../util/sync-dir.ts';

/** Temporary files start with a dot, which no object path does, so `list` never reports them. */
const tempPrefix = '.tmp-';
/** The name a put gives its temporary file (left behind if its process dies before the rename). */
const temporaryName = /^\.tmp-[0-9a-f]{16}$/;

/** Errors that say the object (or a directory on its path) is not there. */
const missingCodes = new Set(['ENOENT', 'ENOTDIR', 'EISDIR']);

function errnoCode(err: unknown): string | undefined {
  return (err as NodeJS.ErrnoException | null)?.code;
}

/** A directory-backed Backend; `root` need not exist until the first put. */
export class DirBackend extends Backend {
  readonly location: string;
  readonly root: string;

  constructor(root: string) {
    super();
    this.root = root;
    this.location = root;
  }

  private storageError(what: string, path: string, err: unknown): ObjstoreError {
    const code = errnoCode(err);
    return new ObjstoreError(ObjstoreErrorCode.STORAGE, `Cannot ${what} ${path} in ${this.root}: ${code ?? (err as Error).message}`, { cause: err });
  }

  protected async _get(path: string, range: ByteRange | undefined, alloc?: (n: number) => Buffer): Promise<Buffer> {
    let fh;
    try {
      fh = await open(join(this.root, path), 'r');
    } catch (err) {
      if (missingCodes.has(errnoCode(err) ?? '')) throw new ObjstoreError(ObjstoreErrorCode.NOT_FOUND, `No object ${path} in ${this.root}`, { cause: err });
      throw this.storageError('open', path, err);
    }
    try {
      const size = (await fh.stat()).size;
      const offset = range?.offset ?? 0;
      const length = range?.length ?? size;
      if (offset + length > size) {
        throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Byte range ${offset}+${length} is past the end of ${path} (${size} bytes)`);
      }
      const buf = alloc === undefined ? Buffer.allocUnsafe(length) : alloc(length).subarray(0, length);
      if (buf.length !== length) throw new RangeError(`alloc(${length}) returned ${buf.length} bytes`);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) throw new ObjstoreError(ObjstoreErrorCode.STORAGE, `Object ${path} in ${this.root} shrank while being read`);
        done += bytesRead;
      }
      return buf;
    } catch (err) {
      if (err instanceof ObjstoreError) throw err;
      if (missingCodes.has(errnoCode(err) ?? '')) throw new ObjstoreError(ObjstoreErrorCode.NOT_FOUND, `No object ${path} in ${this.root}`, { cause: err });
      throw this.storageError('read', path, err);
    } finally {
      await fh.close();
    }
  }

  protected async _put(path: string, data: Buffer): Promise<void> {
    return this._putParts(path, [data]);
  }

  protected override async _putParts(path: string, parts: readonly Buffer[]): Promise<void> {
    const target = join(this.root, path);
    const dir = dirname(target);
    const temp = join(dir, tempPrefix + randomBytes(8).toString('hex'));
    try {
      const made = await mkdir(dir, { recursive: true });
      if (made !== undefined) await syncNewDirs(made, dir);
      const fh = await open(temp, 'wx');
      try {
        await writevAll(fh, parts, 0);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(temp, target);
      await syncDir(dir);
    } catch (err) {
      await unlink(temp).catch(() => {});
      throw this.storageError('write', path, err);
    }
  }

  /**
   * Writes to a temporary file in `dir` as the bytes come (created with the first write), then
   * at commit fsyncs it and renames it to its path as _putParts does.
   */
  protected override _writeObject(dir: string): ObjectSink {
    const temp = join(this.root, dir, tempPrefix + randomBytes(8).toString('hex'));
    let fh: FileHandle | null = null;
    let position = 0;
    let failure: unknown = null;
    let chain: Promise<void> = Promise.resolve();
    const opened = async (): Promise<FileHandle> => {
      if (fh === null) {
        const made = await mkdir(dirname(temp), { recursive: true });
        if (made !== undefined) await syncNewDirs(made, dirname(temp));
        fh = await open(temp, 'wx');
      }
      return fh;
    };
    const drop = async (): Promise<void> => {
      await chain;
      await fh?.close().catch(() => {});
      fh = null;
      await unlink(temp).catch(() => {}); // none if nothing was written
    };
    return {
      write: (data) => {
        const at = position;
        position += data.length;
        chain = chain.then(async () => {
          if (failure !== null) return;
          try {
            await writeAll(await opened(), data, at);
          } catch (err) {
            failure = err; // reported by commit
          }
        });
      },
      commit: async (path) => {
        const target = join(this.root, path);
        try {
          await chain;
          if (failure !== null) throw failure;
          const file = await opened(); // an empty object has had no write
          await file.sync();
          await file.close();
          fh = null;
          const made = await mkdir(dirname(target), { recursive: true });
          if (made !== undefined) await syncNewDirs(made, dirname(target));
          await rename(temp, target);
          await syncDir(dirname(target));
        } catch (err) {
          await drop();
          throw this.storageError('write', path, err);
        }
      },
      abort: drop,
    };
  }

  protected async _list(prefix: string): Promise<ObjectInfo[]> {
    // Walk only the deepest directory the prefix names in full.
    const slash = prefix.lastIndexOf('/');
    const start = slash < 0 ? '' : prefix.slice(0, slash);
    const out: ObjectInfo[] = [];
    const walk = async (rel: string): Promise<void> => {
      for (const e of await this.entriesOf(rel)) {
        if (e.name.startsWith('.')) continue;
        const path = rel === '' ? e.name : `${rel}/${e.name}`;
        if (e.isDirectory()) {
          if (prefix.startsWith(path + '/') || path.startsWith(prefix) || (path + '/').startsWith(prefix)) await walk(path);
        } else if (e.isFile() && path.startsWith(prefix)) {
          const s = await this.statOf(path);
          if (s !== null) out.push({ path, sizeBytes: s.size });
        }
      }
    };
    await walk(start);
    return out;
  }

  /** The entries of directory `rel` (none if it is missing). */
  private async entriesOf(rel: string): Promise<Dirent[]> {
    try {
      return await readdir(join(this.root, rel), { withFileTypes: true });
    } catch (err) {
      if (missingCodes.has(errnoCode(err) ?? '')) return [];
      throw this.storageError('list', rel || '/', err);
    }
  }

  /** stat of `path`, or null if nothing is there (or it went meanwhile: renamed or deleted). */
  private async statOf(path: string): Promise<Stats | null> {
    return stat(join(this.root, path)).catch((err) => {
      if (missingCodes.has(errnoCode(err) ?? '')) return null;
      throw this.storageError('stat', path, err);
    });
  }

  protected async _stat(path: string): Promise<ObjectInfo | null> {
    const s = await this.statOf(path);
    return s?.isFile() ? { path, sizeBytes: s.size } : null;
  }

  /** Every temporary file in the store's tree, at most three directories down (a backup repository's objects live two down). */
  protected override async _listTemporaries(): Promise<TemporaryInfo[]> {
    const out: TemporaryInfo[] = [];
    const walk = async (rel: string, depth: number): Promise<void> => {
      for (const e of await this.entriesOf(rel)) {
        const path = rel === '' ? e.name : `${rel}/${e.name}`;
        if (e.isDirectory() && !e.name.startsWith('.') && depth < 3) await walk(path, depth + 1);
        else if (e.isFile() && temporaryName.test(e.name)) {
          const s = await this.statOf(path);
          if (s !== null) out.push({ path, sizeBytes: s.size, modifiedMs: s.mtimeMs });
        }
      }
    };
    await walk('', 0);
    return out;
  }

  protected override async _deleteTemporary(path: string): Promise<void> {
    if (!temporaryName.test(path.slice(path.lastIndexOf('/') + 1))) return; // not one of ours: left alone
    await this._delete(path);
  }

  protected async _delete(path: string): Promise<void> {
    try {
      await unlink(join(this.root, path));
    } catch (err) {
      const code = errnoCode(err) ?? '';
      if (missingCodes.has(code) || code === 'EPERM') {
        // EPERM: unlink of a directory on some systems; a directory is no object.
        if (code === 'EPERM' && (await this._stat(path)) !== null) throw this.storageError('delete', path, err);
        return;
      }
      throw this.storageError('delete', path, err);
    }
  }
}

/** fsync the parents of directories `mkdir` just made, `first` (outermost) down to `last`. */
async function syncNewDirs(first: string, last: string): Promise<void> {
  for (let d = last; ; d = dirname(d)) {
    await syncDir(dirname(d));
    if (d === first || d === dirname(d)) return;
  }
}

