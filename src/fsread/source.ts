/**
 * Byte sources the readers work over: an async "read bytes at offset", a window of one (a
 * partition), and a page cache so that many small metadata reads become few large ones.
 */
import assert from 'node:assert/strict';
import type { FileHandle } from 'node:fs/promises';
import { FsReadError, FsReadErrorCode } from './errors.ts';

/** Random-access, read-only bytes: an image file, a snapshot through the node, a partition. */
export interface ByteSource {
  /** Size in bytes. */
  readonly sizeBytes: number;
  /**
   * Exactly `length` bytes at `offset` (the caller keeps the range inside sizeBytes). With
   * `uncached`, a page cache reads just that range around itself (a bulk read of known metadata).
   */
  read(offset: number, length: number, hint?: ReadHint): Promise<Buffer>;
}

/** How a read is meant. */
export interface ReadHint {
  uncached?: boolean;
}

/** Checks a range against a source and reads it; a range outside is FSREAD_CORRUPT. */
export async function readAt(source: ByteSource, offset: number, length: number, what: string): Promise<Buffer> {
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > source.sizeBytes) {
    throw new FsReadError(FsReadErrorCode.CORRUPT, `${what} at ${offset} (+${length}) lies outside the volume of ${source.sizeBytes} bytes`);
  }
  if (length === 0) return Buffer.alloc(0);
  let buf: Buffer;
  try {
    buf = await source.read(offset, length);
  } catch (err) {
    if (err instanceof FsReadError) throw err;
    throw new FsReadError(FsReadErrorCode.IO, `Cannot read ${what} at ${offset}: ${(err as Error).message}`, { cause: err });
  }
  if (buf.length !== length) throw new FsReadError(FsReadErrorCode.IO, `Short read of ${what} at ${offset}: ${buf.length} of ${length} bytes`);
  return buf;
}

/** `length` bytes of `source` from `start`: a partition seen as a volume of its own. */
export function windowSource(source: ByteSource, start: number, length: number): ByteSource {
  assert.ok(start >= 0 && start + length <= source.sizeBytes);
  return { sizeBytes: length, read: (offset, n, hint) => source.read(start + offset, n, hint) };
}

/** A source over an open file (an image), reading with positioned reads. */
export function fileSource(fh: FileHandle, sizeBytes: number): ByteSource {
  return {
    sizeBytes,
    async read(offset, length) {
      // Not zero-filled: only the bytes read are returned.
      const buf = Buffer.allocUnsafe(length);
      let done = 0;
      while (done < length) {
        const { bytesRead } = await fh.read(buf, done, length - done, offset + done);
        if (bytesRead === 0) break;
        done += bytesRead;
      }
      return done === length ? buf : buf.subarray(0, done);
    },
  };
}

/** A source over bytes in memory (tests, small images). */
export function bufferSource(bytes: Buffer): ByteSource {
  return { sizeBytes: bytes.length, read: async (offset, length) => bytes.subarray(offset, offset + length) };
}

/** Options of cachedSource. */
export interface CacheOptions {
  /** Bytes per page, a power of two. Default 64 KiB. */
  pageBytes?: number;
  /** Pages kept (least recently used dropped). Default 256 (16 MiB at 64 KiB). */
  pagesMax?: number;
}

/**
 * A page cache over a source: reads are served from aligned pages, each read once while it stays
 * cached. Metadata (inode tables, directories, FATs) is read in many small pieces close together.
 */
export function cachedSource(source: ByteSource, options: CacheOptions = {}): ByteSource & { pagesRead: number } {
  const pageBytes = options.pageBytes ?? 64 << 10;
  const pagesMax = options.pagesMax ?? 256;
  assert.ok(pageBytes > 0 && (pageBytes & (pageBytes - 1)) === 0 && pagesMax >= 1);
  const pages = new Map<number, Promise<Buffer>>();
  const out = {
    sizeBytes: source.sizeBytes,
    pagesRead: 0,
    page(n: number): Promise<Buffer> {
      let p = pages.get(n);
      if (p !== undefined) {
        pages.delete(n); // re-insert: Map order is the LRU order
        pages.set(n, p);
        return p;
      }
      const start = n * pageBytes;
      const length = Math.min(pageBytes, source.sizeBytes - start);
      out.pagesRead++;
      p = readAt(source, start, length, 'page');
      pages.set(n, p);
      p.catch(() => pages.delete(n));
      while (pages.size > pagesMax) pages.delete(pages.keys().next().value!);
      return p;
    },
    async read(offset: number, length: number, hint?: ReadHint): Promise<Buffer> {
      if (hint?.uncached) return source.read(offset, length, hint);
      const first = Math.floor(offset / pageBytes);
      const last = Math.floor((offset + length - 1) / pageBytes);
      if (first === last) {
        const page = await out.page(first);
        const at = offset - first * pageBytes;
        return page.subarray(at, at + length);
      }
      // Large reads (file data, big directories) go around the cache.
      if (last - first + 1 > pagesMax / 4) return source.read(offset, length);
      const parts = await Promise.all(Array.from({ length: last - first + 1 }, (_, i) => out.page(first + i)));
      const whole = Buffer.concat(parts);
      const at = offset - first * pageBytes;
      return whole.subarray(at, at + length);
    },
  };
  return out;
}
