/**
 * The file layer under the write log: every system call the log makes on its directory and
 * segment files goes through a LogFiles, so tests can put a faulty drive under a store
 * (test/helpers/faulty-files.ts: errors, short writes, delays, power loss). The signatures are
 * node:fs's own, callbacks and all, and the default is node:fs itself: the hot paths (a group
 * commit's writev on the loop, a read on the loop) cost one property load more than calling
 * node:fs directly, and no allocation.
 */
import fs from 'node:fs';

/** What the write log asks of the file system. Errors are Node.js system errors (`code`, `syscall`), thrown or passed to the callback. */
export interface LogFiles {
  /** Creates a directory and its parents; nothing if it exists. */
  mkdirSync(dir: string, opts: { recursive: true }): unknown;
  /** Names of a directory's entries. */
  readdirSync(dir: string): string[];
  /** Whether a path exists. */
  existsSync(path: string): boolean;
  /**
   * Opens a file: `r+` a segment, `wx+` a new segment, `r` a directory (to sync it) or a segment
   * of a log opened read-only; numeric flags only read-only, `O_RDONLY` with or without
   * `O_DIRECT` (the scrub's reader, log/segment-reader.ts).
   */
  openSync(path: string, flags: 'r+' | 'wx+' | 'r' | number): number;
  closeSync(fd: number): void;
  close(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
  /** The file's size (other fields unused). */
  fstatSync(fd: number): { size: number };
  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  read(fd: number, buf: Buffer, offset: number, length: number, position: number, cb: (err: NodeJS.ErrnoException | null, bytesRead: number) => void): void;
  /** Reads into `bufs` back to back from `position`; returns the bytes read. */
  readvSync(fd: number, bufs: readonly Buffer[], position: number): number;
  readv(fd: number, bufs: readonly Buffer[], position: number, cb: (err: NodeJS.ErrnoException | null, bytesRead: number) => void): void;
  writeSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number;
  /** Writes `bufs` back to back at `position`; may write fewer bytes than asked (a short write). */
  writevSync(fd: number, bufs: readonly Buffer[], position: number): number;
  writev(fd: number, bufs: readonly Buffer[], position: number, cb: (err: NodeJS.ErrnoException | null, bytesWritten: number) => void): void;
  fdatasyncSync(fd: number): void;
  fdatasync(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
  /** fsync: the log syncs its directory with it, so that a new segment's name is durable. */
  fsyncSync(fd: number): void;
  ftruncateSync(fd: number, length: number): void;
  ftruncate(fd: number, length: number, cb: (err: NodeJS.ErrnoException | null) => void): void;
  unlink(path: string, cb: (err: NodeJS.ErrnoException | null) => void): void;
  /** Removes a file; with `force`, a missing one is no error. */
  rmSync(path: string, opts?: { force?: boolean }): void;
}

/** The real file system (node:fs). */
export const nodeLogFiles: LogFiles = {
  mkdirSync: fs.mkdirSync,
  readdirSync: (dir) => fs.readdirSync(dir),
  existsSync: fs.existsSync,
  openSync: fs.openSync,
  closeSync: fs.closeSync,
  close: fs.close,
  fstatSync: fs.fstatSync,
  readSync: fs.readSync,
  read: fs.read,
  readvSync: fs.readvSync,
  readv: fs.readv,
  writeSync: fs.writeSync,
  writevSync: fs.writevSync,
  writev: fs.writev,
  fdatasyncSync: fs.fdatasyncSync,
  fdatasync: fs.fdatasync,
  fsyncSync: fs.fsyncSync,
  ftruncateSync: fs.ftruncateSync,
  ftruncate: fs.ftruncate,
  unlink: fs.unlink,
  rmSync: fs.rmSync,
};
