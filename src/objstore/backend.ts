/**
 * Object storage backends: a flat store of objects named by paths (docs/objstore.md). Backup
 * repositories keep their files in one (docs/backup.md, "Layout").
 *
 * Backend validates arguments and owns the public face; subclasses implement the `_`-methods
 * for one kind of storage (a directory, an S3 bucket). Every backend must pass the shared
 * conformance suite in test/objstore/conformance.ts.
 */

import { ObjstoreError, ObjstoreErrorCode } from './errors.ts';

/** One stored object as `list` reports it. */
export interface ObjectInfo {
  /** Path relative to the store's root, `/`-separated, e.g. `data/ab/ab12…`. */
  path: string;
  sizeBytes: number;
}

/**
 * A file a writer made on its way to becoming an object and left behind when it was killed (a
 * directory's temporary files): no object, listed only for a cleaner (a backup's prune) to remove.
 */
export interface TemporaryInfo {
  /** Path relative to the store's root, `/`-separated, its last part the temporary's name. */
  path: string;
  sizeBytes: number;
  /** When it was last written, by the storage's clock. */
  modifiedMs: number;
}

/** A byte range of an object: `length` bytes from `offset`. */
export interface ByteRange {
  offset: number;
  length: number;
}

/**
 * An object written piece by piece whose path is known only once it is whole (a pack's path is
 * the hash of its bytes): Backend.writeObject.
 */
export interface ObjectWriter {
  /**
   * Appends `data` (moved: the caller must not change it). Writes run in order in the
   * background; a failed one fails commit().
   */
  write(data: Buffer): void;
  /** Bytes written so far. */
  readonly bytes: number;
  /** Stores everything written as the object at `path`, as put() would; the writer is then done. */
  commit(path: string): Promise<void>;
  /** Drops everything written; the writer is then done. Never fails. */
  abort(): Promise<void>;
}

/** What a backend implements of an ObjectWriter (Backend.writeObject checks and counts). */
export type ObjectSink = Omit<ObjectWriter, 'bytes'>;

/** Longest path a backend accepts (S3 keys are limited to 1024 bytes with the prefix). */
export const pathBytesMax = 512;

/** Largest object a backend must store in one put (packs are far smaller). */
export const objectBytesMax = 1 << 30;

const pathPattern = /^[a-z0-9][a-z0-9._-]*(\/[a-z0-9][a-z0-9._-]*)*$/;
/** A temporary's path: object path segments, then a name that starts with a dot. */
const temporaryPattern = /^([a-z0-9][a-z0-9._-]*\/)*\.[a-z0-9._-]+$/;

/**
 * An object store: a directory, an S3 prefix. Paths are relative, `/`-separated, lowercase
 * ASCII; a missing object is `OBJSTORE_NOT_FOUND`; failures of the storage itself are
 * `OBJSTORE_STORAGE` with the cause chained. Operations may run concurrently.
 */
export abstract class Backend {
  /** Human-readable location, e.g. `/srv/repo` or `s3://bucket/prefix`, for messages. */
  abstract readonly location: string;

  /**
   * Requests this backend runs at once (more wait inside it); the data movers keep their
   * adaptive limits below it. Unbounded unless a subclass says otherwise.
   */
  get requestsMax(): number {
    return Infinity;
  }

  /**
   * The whole object, or `range` of it (a range past the end is `OBJSTORE_INVALID`). Where the
   * backend reads into memory of its choosing (a directory), `alloc(n)` provides it: a buffer of
   * at least n bytes, of which the result is then the first n.
   */
  async get(path: string, range?: ByteRange, options: { alloc?: (n: number) => Buffer } = {}): Promise<Buffer> {
    checkPath(path);
    if (range !== undefined) {
      if (!Number.isSafeInteger(range.offset) || !Number.isSafeInteger(range.length) || range.offset < 0 || range.length <= 0) {
        throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Bad byte range ${range.offset}+${range.length} of ${path}`);
      }
    }
    return this._get(path, range, options.alloc);
  }

  /**
   * Store `data` at `path`, atomically: readers see all of it or nothing, and once this
   * resolves it is durable. An existing object is replaced.
   */
  async put(path: string, data: Buffer): Promise<void> {
    checkPath(path);
    if (data.length > objectBytesMax) {
      throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Object ${path} is ${data.length} bytes, over the limit of ${objectBytesMax}`);
    }
    return this._put(path, data);
  }

  /**
   * put() of the bytes of `parts` one after the other, without joining them first where the
   * backend can write them as they are (a directory writes them with one `writev`).
   */
  async putParts(path: string, parts: readonly Buffer[]): Promise<void> {
    checkPath(path);
    const bytes = parts.reduce((n, p) => n + p.length, 0);
    if (bytes > objectBytesMax) {
      throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Object ${path} is ${bytes} bytes, over the limit of ${objectBytesMax}`);
    }
    return this._putParts(path, parts);
  }

  /**
   * An object under directory `dir` (e.g. `data`) written as its bytes come: a directory writes
   * them to a temporary file there as they come, so that committing has only the rest to write;
   * other backends keep them and put() them at commit.
   */
  writeObject(dir: string): ObjectWriter {
    checkPath(dir);
    const inner = this._writeObject(dir);
    let bytes = 0;
    let done = false;
    const finish = (): void => {
      if (done) throw new Error('This object writer was committed or aborted already');
      done = true;
    };
    return {
      write(data) {
        if (done) throw new Error('This object writer was committed or aborted already');
        if (bytes + data.length > objectBytesMax) throw new ObjstoreError(ObjstoreErrorCode.INVALID, `An object under ${dir}/ would be over the limit of ${objectBytesMax} bytes`);
        bytes += data.length;
        inner.write(data);
      },
      get bytes() {
        return bytes;
      },
      async commit(path) {
        finish();
        try {
          checkPath(path);
          if (!path.startsWith(dir + '/')) throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Object ${path} is not under ${dir}/, where it was written`);
        } catch (err) {
          await inner.abort();
          throw err;
        }
        return inner.commit(path);
      },
      async abort() {
        if (done) return;
        done = true;
        return inner.abort();
      },
    };
  }

  /** Every object whose path starts with `prefix` (e.g. `snapshots/`), in no particular order. */
  async list(prefix: string): Promise<ObjectInfo[]> {
    if (prefix !== '' && !pathPattern.test(prefix.replace(/\/$/, ''))) {
      throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Bad path prefix ${JSON.stringify(prefix)}`);
    }
    return this._list(prefix);
  }

  /** Size of the object, or null if there is none. */
  async stat(path: string): Promise<ObjectInfo | null> {
    checkPath(path);
    return this._stat(path);
  }

  /** Delete the object; deleting a missing object is not an error. */
  async delete(path: string): Promise<void> {
    checkPath(path);
    return this._delete(path);
  }

  /**
   * The temporaries writers left behind (a backend whose puts leave none, like S3's single
   * PUTs, has none), in no particular order.
   */
  async listTemporaries(): Promise<TemporaryInfo[]> {
    return this._listTemporaries();
  }

  /** Deletes a temporary listTemporaries reported; a missing one is not an error. */
  async deleteTemporary(path: string): Promise<void> {
    if (typeof path !== 'string' || path.length > pathBytesMax || !temporaryPattern.test(path)) {
      throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Bad temporary path ${JSON.stringify(path)}`);
    }
    return this._deleteTemporary(path);
  }

  /** Release connections and handles. */
  async close(): Promise<void> {
    return this._close();
  }

  protected abstract _get(path: string, range: ByteRange | undefined, alloc?: (n: number) => Buffer): Promise<Buffer>;
  protected abstract _put(path: string, data: Buffer): Promise<void>;
  /** Joins the parts and puts them; backends that can write parts as they are override this. */
  protected async _putParts(path: string, parts: readonly Buffer[]): Promise<void> {
    return this._put(path, parts.length === 1 ? parts[0] : Buffer.concat(parts));
  }
  /** Keeps the bytes and puts them at commit; backends that can write them as they come override this. */
  protected _writeObject(_dir: string): ObjectSink {
    let parts: Buffer[] = [];
    return {
      write: (data) => void parts.push(data),
      commit: (path) => this._putParts(path, parts),
      abort: async () => {
        parts = [];
      },
    };
  }
  protected abstract _list(prefix: string): Promise<ObjectInfo[]>;
  protected abstract _stat(path: string): Promise<ObjectInfo | null>;
  protected abstract _delete(path: string): Promise<void>;
  protected async _listTemporaries(): Promise<TemporaryInfo[]> {
    return [];
  }
  protected async _deleteTemporary(_path: string): Promise<void> {}
  protected async _close(): Promise<void> {}
}

function checkPath(path: string): void {
  if (typeof path !== 'string' || path.length > pathBytesMax || !pathPattern.test(path)) {
    throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Bad object path ${JSON.stringify(path)}`);
  }
}
