/**
 * The sources `disk import` reads (docs/api.md, "Import"), as the API's ImportReader: an NBD
 * export (another server: qemu-nbd, nbdkit, another Tessera) through the NBD client, or a raw
 * image file on this machine. Their failures become ApiErrors here, in one place: a source that
 * cannot be reached, refuses or goes away mid-way is SOURCE.
 */
import { mkdir, open, readdir, rm, writeFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { isAbsolute, join } from 'node:path';
import { ApiError, ApiErrorCode } from '../api/index.ts';
import type { ImportReader, ImportSources } from '../api/index.ts';
import { NbdClient, NbdError, NbdErrorCode, nbdReadBytesMax, parseNbdUri } from '../nbd/index.ts';
import type { NbdErrorCodeValue } from '../nbd/index.ts';
import { native } from '../native/index.ts';
import type { Logger } from '../observe/index.ts';
import { syncDir } from '../util/sync-dir.ts';

/** The wire code of each NBD client failure. */
function apiCodeOf(code: NbdErrorCodeValue): (typeof ApiErrorCode)[keyof typeof ApiErrorCode] {
  switch (code) {
    case NbdErrorCode.INVALID_ARGUMENT:
      return ApiErrorCode.INVALID;
    case NbdErrorCode.NOT_FOUND:
      return ApiErrorCode.NOT_FOUND;
    default:
      return ApiErrorCode.SOURCE;
  }
}

/** The same failure as an ApiError (a typed error of the client, or a system error of a file). */
function asApiError(err: unknown, what: string): unknown {
  if (err instanceof ApiError) return err;
  if (err instanceof NbdError) return new ApiError(apiCodeOf(err.code), err.message, { cause: err });
  const code = (err as NodeJS.ErrnoException)?.code;
  if (typeof code === 'string') return new ApiError(ApiErrorCode.SOURCE, `${what}: ${code}`, { cause: err });
  return err;
}

/** Runs `fn`, its failures as ApiErrors. */
async function mapped<T>(what: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asApiError(err, what);
  }
}

/** A reader of an NBD export: one connection. */
async function nbdReader(uri: string): Promise<ImportReader> {
  const { target, exportName } = await mapped(`Bad NBD URI ${uri}`, async () => parseNbdUri(uri));
  const client = await mapped(`Cannot reach ${uri}`, () => NbdClient.connect(target, { exportName }));
  const max = client.blockSize !== null && client.blockSize.maximum > 0 ? Math.min(client.blockSize.maximum, nbdReadBytesMax) : nbdReadBytesMax;
  return {
    sizeBytes: client.sizeBytes,
    sparse: client.allocation,
    readBytesMax: max,
    extents: (offset, length) => mapped(`Block status of ${uri}`, async () => (await client.extents(offset, length)).map((e) => ({ offset: e.offset, length: e.length, zero: e.zero }))),
    read: (offset, length, into) => mapped(`Read of ${uri}`, () => client.read(offset, length, into)),
    close: () => client.close(),
  };
}

/** Iterations of a file's walk over its data runs in one extents call. */
const seeksMax = 4096;

/** A reader of a raw image file: its own file handle. */
async function fileReader(path: string): Promise<ImportReader> {
  let fh: FileHandle;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ApiError(ApiErrorCode.NOT_FOUND, `No file ${path} on the node`, { cause: err });
    throw new ApiError(ApiErrorCode.SOURCE, `Cannot open ${path} on the node: ${code ?? (err as Error).message}`, { cause: err });
  }
  const st = await fh.stat();
  if (!st.isFile()) {
    await fh.close();
    throw new ApiError(ApiErrorCode.INVALID, `${path} is not a regular file (a raw image)`);
  }
  const sizeBytes = st.size;
  let sparse = native !== null;
  return {
    sizeBytes,
    get sparse() {
      return sparse;
    },
    readBytesMax: nbdReadBytesMax,
    async extents(offset, length) {
      // SEEK_DATA/SEEK_HOLE through the native helpers; without them (or where the file system
      // cannot say) the whole range is data, and the copy's zero check skips what is zero.
      const end = offset + length;
      if (native === null) return [{ offset, length, zero: false }];
      const runs: Array<{ offset: number; length: number; zero: boolean }> = [];
      let at = offset;
      try {
        for (let i = 0; at < end && i < seeksMax; i++) {
          let data = native.seek(fh.fd, at, false);
          if (data < 0 || data > end) data = end;
          if (data > at) runs.push({ offset: at, length: data - at, zero: true });
          if (data >= end) return runs;
          let hole = native.seek(fh.fd, data, true);
          if (hole < 0 || hole > end) hole = end;
          runs.push({ offset: data, length: hole - data, zero: false });
          at = hole;
        }
      } catch {
        sparse = false;
        return [{ offset, length, zero: false }];
      }
      return runs;
    },
    async read(offset, length, into) {
      const buf = into.subarray(0, length);
      let filled = 0;
      while (filled < length) {
        const { bytesRead } = await mapped(`Read of ${path}`, () => fh.read(buf, filled, length - filled, offset + filled));
        if (bytesRead === 0) {
          // The end of the image: zeroes up to the disk's size, rounded up to 512 bytes; short anywhere else.
          if (offset + filled >= sizeBytes) {
            buf.fill(0, filled);
            break;
          }
          throw new ApiError(ApiErrorCode.SOURCE, `${path} shrank while it was imported (it ends before ${offset + length})`);
        }
        filled += bytesRead;
      }
      return buf;
    },
    close: () => fh.close(),
  };
}

/**
 * The node's import sources: NBD URIs, and absolute paths of raw images on its machine. Each
 * import under way is noted as an empty file `DIR/imports/NAME`, so that a node killed mid-import
 * deletes the half-imported disk when it starts again (`deleteLeftovers`), and nothing that
 * looks complete is left.
 */
export class NodeImports implements ImportSources {
  readonly #dir: string;

  /** `dir`: where the notes are kept (DIR/imports). */
  constructor(dir: string) {
    this.#dir = dir;
  }

  open(source: string): Promise<ImportReader> {
    if (/^nbd[a-z+]*:/i.test(source)) return nbdReader(source);
    if (isAbsolute(source)) return fileReader(source);
    return Promise.reject(new ApiError(ApiErrorCode.INVALID, `An import source is nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH or an absolute path on the node: got ${JSON.stringify(source)}`));
  }

  async begin(disk: string): Promise<void> {
    // The disk exists, so its name is a valid one: letters, digits, '.', '_', '-', never a path.
    await mkdir(this.#dir, { recursive: true });
    await writeFile(join(this.#dir, disk), '');
    await syncDir(this.#dir);
  }

  async end(disk: string): Promise<void> {
    await rm(join(this.#dir, disk), { force: true });
  }

  /**
   * Deletes the disks of imports a stopped node left unfinished, through `deleteDisk` (the
   * store's, or the cluster's); one it cannot delete now stays noted for the next start.
   */
  async deleteLeftovers(deleteDisk: (name: string) => Promise<void>, log: Logger): Promise<void> {
    let names: string[];
    try {
      names = await readdir(this.#dir);
    } catch {
      return; // no notes: no import ever ran, or none was left
    }
    for (const name of names) {
      try {
        await deleteDisk(name);
        log.warn(`deleted disk ${name}: its import was cut short when the node stopped`, { disk: name });
      } catch (err) {
        const code = (err as { code?: string }).code;
        if (code !== 'ENGINE_NOT_FOUND' && code !== 'CLUSTER_DISK_NOT_FOUND') {
          log.warn(`disk ${name}, whose import was cut short when the node stopped, could not be deleted: ${(err as Error).message}`, { disk: name });
          continue;
        }
      }
      await this.end(name);
    }
  }
}
