/**
 * The data directory before a node uses it: there (created if missing, unless read-only), and
 * usable as asked. What the file system refuses is said in one line naming the directory, before
 * anything is written: a read-only file system suggests --read-only, a permission denied says
 * who owns the directory and who the node runs as.
 */
import { access, mkdir, stat } from 'node:fs/promises';
import { constants, statSync } from 'node:fs';
import { NodeError, NodeErrorCode } from './errors.ts';

/** Checks (read-write: creates) the data directory for a node that writes it, or only reads it. */
export async function checkDataDir(dir: string, opts: { readOnly: boolean }): Promise<void> {
  try {
    if (opts.readOnly) {
      await stat(dir);
      await access(dir, constants.R_OK | constants.X_OK);
    } else {
      await mkdir(dir, { recursive: true });
      await access(dir, constants.R_OK | constants.W_OK | constants.X_OK);
    }
  } catch (err) {
    throw dataDirError(err, dir, opts);
  }
}

/** A failure to use the data directory as the NodeError to start with, or `err` as it is. */
export function dataDirError(err: unknown, dir: string, opts: { readOnly: boolean }): unknown {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'EROFS':
      return new NodeError(NodeErrorCode.DATA_DIR, `the data directory ${dir} is on a read-only file system; start the node with --read-only to serve its disks read-only`, { cause: err });
    case 'EACCES':
    case 'EPERM':
      return new NodeError(NodeErrorCode.DATA_DIR, `permission denied: the node, running as uid ${process.getuid?.() ?? '?'}, may not ${opts.readOnly ? 'read' : 'write'} ${e.path ?? dir}${ownerOf(e.path ?? dir)}`, { cause: err });
    case 'ENOENT':
      if (opts.readOnly) return new NodeError(NodeErrorCode.DATA_DIR, `no data directory ${dir}: a read-only node serves an existing one`, { cause: err });
      return err;
    default:
      return err;
  }
}

/** ` (owned by uid U, mode 0700)` for a path that can be looked at, else nothing. */
function ownerOf(path: string): string {
  try {
    // Synchronous: an error message being made, once.
    const st = statSync(path);
    return ` (owned by uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  } catch {
    return '';
  }
}
