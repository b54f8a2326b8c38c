/**
 * What opening a store checks before it changes anything (docs/engine.md, "Recovery" and
 * "Read-only mode"): that the directory is a store this process may open as asked, and that the
 * log segments the index points into are all there and whole. What the file system refuses
 * becomes a typed error naming the path.
 */
import fs from 'node:fs';
import path from 'node:path';
import { EngineError, EngineErrorCode } from './errors.ts';
import { segmentName } from './log/write-log.ts';
import type { BlockIndex } from './index/block-index.ts';

/** The tag in `DIR/FORMAT`. */
export const formatTag = 'tessera-store/1';

/**
 * Read-write: makes the directory a store if it is none yet (FORMAT), after checking that this
 * process may write it. Read-only: checks that it is a store, creating nothing.
 */
export function checkStoreDir(dir: string, readOnly: boolean): void {
  const tagFile = path.join(dir, 'FORMAT');
  try {
    if (readOnly) {
      if (!fs.existsSync(dir)) throw new EngineError(EngineErrorCode.NOT_FOUND, `No store in ${dir}: the directory does not exist (a read-only open creates nothing)`);
      fs.accessSync(dir, fs.constants.R_OK | fs.constants.X_OK);
      if (!fs.existsSync(tagFile)) throw new EngineError(EngineErrorCode.NOT_FOUND, `${dir} is not a Tessera store: it has no FORMAT file (a read-only open creates nothing)`);
    } else {
      fs.mkdirSync(dir, { recursive: true });
      // Before anything is opened: on a read-only file system, or without permission, the first
      // write would fail somewhere in the middle with less to say.
      for (const d of [dir, path.join(dir, 'log'), path.join(dir, 'index')]) {
        if (d === dir || fs.existsSync(d)) fs.accessSync(d, fs.constants.R_OK | fs.constants.W_OK | fs.constants.X_OK);
      }
    }
    if (fs.existsSync(tagFile)) {
      const tag = fs.readFileSync(tagFile, 'utf8').trim();
      if (tag !== formatTag) throw new EngineError(EngineErrorCode.CORRUPT, `Unsupported store format "${tag}" in ${dir}`);
    } else {
      fs.writeFileSync(tagFile, formatTag + '\n');
    }
    if (readOnly && !fs.existsSync(path.join(dir, 'index'))) throw new EngineError(EngineErrorCode.CORRUPT, `The store in ${dir} has no index directory`);
  } catch (err) {
    throw openError(err, dir);
  }
}

/**
 * A failure to open the store's files as the error to throw: a read-only file system is
 * ENGINE_READ_ONLY, a permission denied ENGINE_ACCESS naming the path and who owns it; the rest
 * as it is. LMDB reports the errno as a number, without a path.
 */
export function openError(err: unknown, dir: string): unknown {
  if (err instanceof EngineError) return err;
  const e = err as { code?: unknown; path?: unknown } | null;
  const code = e?.code;
  if (code === 'EROFS' || code === 30) {
    return new EngineError(EngineErrorCode.READ_ONLY, `The file system of ${dir} is read-only: the store can only be opened read-only`, { cause: err });
  }
  if (code === 'EACCES' || code === 'EPERM' || code === 13 || code === 1) {
    const where = typeof e?.path === 'string' ? e.path : code === 13 || code === 1 ? path.join(dir, 'index') : dir;
    return new EngineError(EngineErrorCode.ACCESS, `Permission denied: ${where} (${owner(where)})`, { cause: err });
  }
  return err;
}

/** Who owns `file` (or the nearest directory above it that can be looked at), and who we are. */
function owner(file: string): string {
  const me = process.getuid !== undefined ? `this process runs as uid ${process.getuid()}` : 'this process';
  for (let p = file; ; p = path.dirname(p)) {
    try {
      const st = fs.statSync(p);
      return `${p} is owned by uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')}; ${me}`;
    } catch {
      if (path.dirname(p) === p) return me;
    }
  }
}

/**
 * The log segments the index points into that are missing or shorter than what the index has
 * absorbed from them, one sentence each (none: the log is whole as far as the index can tell).
 * A segment no live block is in is not looked at: nothing reads it. Only statted: nothing is
 * opened or changed.
 *
 * A segment's applied end (BlockIndex.segmentEnds, and the applied position for the segment it
 * is in) counts bytes that were made durable before the index took them, so a file shorter than
 * that was cut by something other than a crash. Records past the applied end (the tail recovery
 * replays) cannot be told from a crash's torn tail, and stores made before segmentEnds was kept
 * are checked only in the segment of the applied position.
 */
export function damagedSegments(index: BlockIndex, logDir: string): string[] {
  const problems: string[] = [];
  const applied = index.checkpoint().applied;
  for (const { key: id, value: live } of index.segments.getRange({})) {
    if (!(live > 0)) continue;
    const file = path.join(logDir, segmentName(id));
    let size: number;
    try {
      size = fs.statSync(file).size;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      problems.push(`${file} is missing; it holds ${sizeText(live)} of live data`);
      continue;
    }
    const end = Math.max(index.segmentEnds?.get(id) ?? 0, id === applied.segment ? applied.offset : 0);
    if (size < end) problems.push(`${file} is truncated: ${end - size} bytes are missing (the file has ${size}, the index took records up to byte ${end}); it holds ${sizeText(live)} of live data`);
  }
  return problems;
}

/** Bytes as a person reads them: 12 MiB, 4 KiB, 100 bytes. */
function sizeText(n: number): string {
  for (const [unit, bytes] of [['GiB', 2 ** 30], ['MiB', 2 ** 20], ['KiB', 2 ** 10]] as const) {
    if (n >= bytes) return `${Number((n / bytes).toFixed(1))} ${unit}`;
  }
  return `${n} bytes`;
}
