/**
 * A depth-first walk of a filesystem in catalog order (docs/backup.md, "File catalogs"): each
 * directory's listing, sorted by name, then its subdirectories in name order. Listings come out
 * ordered by path component by component, so a consumer can stream them.
 */
import { FsReadError, FsReadErrorCode } from './errors.ts';
import type { Filesystem, FsNode } from './types.ts';

/** An entry of a listing with, for regular files, where its bytes are. */
export interface ListedNode extends FsNode {
  /** Flat runs [fileOffset, volumeOffset, length, …] for regular files, else null. */
  extents: number[] | null;
}

/** Limits of a walk. */
export interface WalkLimits {
  /** Entries in all. Default 16 million. */
  entriesMax?: number;
  /** Directory depth. Default 1024. */
  depthMax?: number;
  /** Bytes of a path (UTF-8, from the filesystem's root). Default 4096. */
  pathBytesMax?: number;
}

/** Orders names by their UTF-8 bytes (code point order). */
export function compareNames(a: string, b: string): number {
  return a === b ? 0 : Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/**
 * Walks `fs` from its root, handing each directory's listing to `onListing` (path components from
 * the root; the root is []), in catalog order. A directory met a second time (a cycle in a damaged
 * image) is listed in its parent but not entered again. Returns the counts.
 */
export async function walk(
  fs: Filesystem,
  onListing: (dir: string[], entries: ListedNode[]) => Promise<void>,
  limits: WalkLimits = {},
): Promise<{ entries: number; fileBytes: number }> {
  const entriesMax = limits.entriesMax ?? 16_000_000;
  const depthMax = limits.depthMax ?? 1024;
  const pathBytesMax = limits.pathBytesMax ?? 4096;
  const seen = new Set<number>();
  const counts = { entries: 0, fileBytes: 0 };
  const visit = async (dir: FsNode, path: string[], pathBytes: number): Promise<void> => {
    seen.add(dir.ref);
    const nodes = (await fs.readDir(dir)).sort((a, b) => compareNames(a.name, b.name));
    const listed: ListedNode[] = [];
    for (let i = 0; i < nodes.length; i++) {
      const n = nodes[i];
      if (i > 0 && nodes[i - 1].name === n.name) throw new FsReadError(FsReadErrorCode.CORRUPT, `Directory /${path.join('/')} holds ${n.name} twice`);
      if (++counts.entries > entriesMax) throw new FsReadError(FsReadErrorCode.LIMIT, `More than ${entriesMax} entries`);
      const extents = n.type === 'f' ? await fs.extents(n) : null;
      if (n.type === 'f') counts.fileBytes += n.sizeBytes;
      listed.push({ ...n, extents });
    }
    await onListing(path, listed);
    for (const n of listed) {
      if (n.type !== 'd' || seen.has(n.ref)) continue;
      const bytes = pathBytes + 1 + Buffer.byteLength(n.name);
      if (path.length + 1 > depthMax) throw new FsReadError(FsReadErrorCode.LIMIT, `Directory /${path.join('/')} is nested more than ${depthMax} deep`);
      if (bytes > pathBytesMax) throw new FsReadError(FsReadErrorCode.LIMIT, `A path under /${path.join('/')} is longer than ${pathBytesMax} bytes`);
      await visit(n, [...path, n.name], bytes);
    }
  };
  await fs.prefetch?.();
  await visit(await fs.root(), [], 0);
  return counts;
}
