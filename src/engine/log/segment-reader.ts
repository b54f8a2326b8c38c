/**
 * A segment file read by a reader of its own, not through the write log's descriptors: the
 * scrub's. It opens the file with O_DIRECT where the file system takes it, so that what is read
 * is what the drive holds, not the page cache's copy, and a pass over the whole log does not push
 * the foreground's pages out of the cache. A descriptor of its own also keeps the file's bytes
 * readable should the log remove the segment meanwhile (the caller checks that).
 */
import fs from 'node:fs';
import type { LogFiles } from './files.ts';

/** Reads of one segment file; `close` when done. */
export interface SegmentReader {
  /** Whether reads bypass the page cache (then buffers, offsets and lengths are 4 KiB-aligned). */
  readonly direct: boolean;
  /** The file's size now. */
  size(): number;
  /** Reads up to buf.length bytes at `position` (fewer at the end of the file); rejects with the system's error. */
  read(buf: Buffer, position: number): Promise<number>;
  close(): void;
}

/**
 * Opens `file` for reading through `files` (the log's file layer, where a test's faulty drive
 * sits), directly if the file system allows; throws the system's error (ENOENT: it is gone).
 */
export function openSegmentReader(files: LogFiles, file: string): SegmentReader {
  let fd: number;
  let direct = true;
  try {
    fd = files.openSync(file, fs.constants.O_RDONLY | fs.constants.O_DIRECT);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
    direct = false;
    fd = files.openSync(file, fs.constants.O_RDONLY);
  }
  const pread = (buf: Buffer, position: number) =>
    new Promise<number>((resolve, reject) => files.read(fd, buf, 0, buf.length, position, (err, n) => (err ? reject(err) : resolve(n))));
  return {
    get direct() {
      return direct;
    },
    size: () => files.fstatSync(fd).size,
    async read(buf, position) {
      try {
        return await pread(buf, position);
      } catch (err) {
        if (!direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        // The file system took O_DIRECT at open but not this read: go on through the cache.
        direct = false;
        files.closeSync(fd);
        fd = files.openSync(file, fs.constants.O_RDONLY);
        return pread(buf, position);
      }
    },
    close: () => files.closeSync(fd),
  };
}
