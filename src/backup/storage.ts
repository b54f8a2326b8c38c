/**
 * A repository's storage as the backup code sees it: an object store (src/objstore) whose
 * failures are BackupErrors. This is the one place ObjstoreErrors become BackupErrors: the
 * repository code tells a missing object from a failing store by BackupErrorCode, and the CLI and
 * the API report BackupErrors, with the store's message as it was.
 */
import { Backend, ObjstoreError, ObjstoreErrorCode, openBackend, type ByteRange, type ObjectInfo, type ObjectWriter, type ObjstoreErrorCodeValue, type TemporaryInfo } from '../objstore/index.ts';
import { BackupError, BackupErrorCode, type BackupErrorCodeValue } from './errors.ts';

/** The BackupErrorCode of every ObjstoreErrorCode. */
const codeOfObjstoreCode: Record<ObjstoreErrorCodeValue, BackupErrorCodeValue> = {
  [ObjstoreErrorCode.INVALID]: BackupErrorCode.INVALID,
  [ObjstoreErrorCode.NOT_FOUND]: BackupErrorCode.NOT_FOUND,
  [ObjstoreErrorCode.STORAGE]: BackupErrorCode.STORAGE,
};

/** `err` as a BackupError if it is an ObjstoreError (same message, the ObjstoreError as cause); else `err`. */
export function backupErrorOf(err: unknown): unknown {
  if (!(err instanceof ObjstoreError)) return err;
  return new BackupError(codeOfObjstoreCode[err.code], err.message, { cause: err });
}

/** Awaits `p`, its rejection as a BackupError. */
async function mapped<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw backupErrorOf(err);
  }
}

/** Runs `fn`, what it throws as a BackupError. */
function mappedSync<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    throw backupErrorOf(err);
  }
}

/**
 * A backend that forwards to `inner` and fails with BackupErrors. Its public methods are
 * overridden, not only the `_`-methods, because the base's own checks (bad path, bad range,
 * object too large) throw ObjstoreErrors before any `_`-method runs.
 */
class RepoBackend extends Backend {
  readonly location: string;
  /** The store it forwards to. */
  readonly inner: Backend;

  constructor(inner: Backend) {
    super();
    this.inner = inner;
    this.location = inner.location;
  }

  override get requestsMax(): number {
    return this.inner.requestsMax;
  }

  override get(path: string, range?: ByteRange, options?: { alloc?: (n: number) => Buffer }): Promise<Buffer> {
    return mapped(super.get(path, range, options));
  }

  override put(path: string, data: Buffer): Promise<void> {
    return mapped(super.put(path, data));
  }

  override putParts(path: string, parts: readonly Buffer[]): Promise<void> {
    return mapped(super.putParts(path, parts));
  }

  override writeObject(dir: string): ObjectWriter {
    const w = mappedSync(() => super.writeObject(dir));
    return {
      write: (data) => mappedSync(() => w.write(data)),
      get bytes() {
        return w.bytes;
      },
      commit: (path) => mapped(w.commit(path)),
      abort: () => mapped(w.abort()),
    };
  }

  override list(prefix: string): Promise<ObjectInfo[]> {
    return mapped(super.list(prefix));
  }

  override stat(path: string): Promise<ObjectInfo | null> {
    return mapped(super.stat(path));
  }

  override delete(path: string): Promise<void> {
    return mapped(super.delete(path));
  }

  override listTemporaries(): Promise<TemporaryInfo[]> {
    return mapped(super.listTemporaries());
  }

  override deleteTemporary(path: string): Promise<void> {
    return mapped(super.deleteTemporary(path));
  }

  override close(): Promise<void> {
    return mapped(super.close());
  }

  protected _get(path: string, range: ByteRange | undefined, alloc?: (n: number) => Buffer): Promise<Buffer> {
    return this.inner.get(path, range, { alloc });
  }
  protected _put(path: string, data: Buffer): Promise<void> {
    return this.inner.put(path, data);
  }
  protected override _putParts(path: string, parts: readonly Buffer[]): Promise<void> {
    return this.inner.putParts(path, parts);
  }
  protected override _writeObject(dir: string): ObjectWriter {
    return this.inner.writeObject(dir);
  }
  protected _list(prefix: string): Promise<ObjectInfo[]> {
    return this.inner.list(prefix);
  }
  protected _stat(path: string): Promise<ObjectInfo | null> {
    return this.inner.stat(path);
  }
  protected _delete(path: string): Promise<void> {
    return this.inner.delete(path);
  }
  protected override _listTemporaries(): Promise<TemporaryInfo[]> {
    return this.inner.listTemporaries();
  }
  protected override _deleteTemporary(path: string): Promise<void> {
    return this.inner.deleteTemporary(path);
  }
  protected override _close(): Promise<void> {
    return this.inner.close();
  }
}

/** `backend` failing with BackupErrors (itself if it does already). */
export function repoBackend(backend: Backend): Backend {
  return backend instanceof RepoBackend ? backend : new RepoBackend(backend);
}

/**
 * The storage of the repository at `location` (a directory path or `s3://bucket/prefix`; `env`
 * holds the AWS_* variables), failing with BackupErrors, opening included.
 */
export async function openRepoBackend(location: string, env: NodeJS.ProcessEnv = process.env): Promise<Backend> {
  return repoBackend(await mapped(openBackend(location, env)));
}
