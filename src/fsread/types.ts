/** What the filesystem readers return. */

/** File types: file, directory, symlink, char/block device, fifo, socket. */
export type FileType = 'f' | 'd' | 'l' | 'c' | 'b' | 'p' | 's';

/** Filesystems the readers recognise. */
export type FsKind = 'ext2' | 'ext3' | 'ext4' | 'fat12' | 'fat16' | 'fat32';

/** One file of a filesystem as a directory listing shows it. */
export interface FsNode {
  /** One path component (empty for the root). */
  name: string;
  type: FileType;
  /** Permission bits (mask 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  sizeBytes: number;
  /** ms since the epoch. */
  mtimeMs: number;
  /** Symlink target, else null. */
  target: string | null;
  /** The reader's handle of the file (an inode number, a first cluster); opaque to others. */
  readonly ref: number;
}

/** A read-only filesystem over a byte source. */
export interface Filesystem {
  readonly kind: FsKind;
  readonly label: string;
  readonly uuid: string;
  /** The root directory. */
  root(): Promise<FsNode>;
  /** The entries of a directory, without `.` and `..`, in on-disk order. */
  readDir(dir: FsNode): Promise<FsNode[]>;
  /**
   * Where a regular file's bytes are: a flat list [fileOffset, volumeOffset, length, …] in file
   * order, adjacent runs merged. Bytes no run covers are zeroes.
   */
  extents(file: FsNode): Promise<number[]>;
  /**
   * Optional: reads ahead, in a few large concurrent reads, the metadata a walk of the whole
   * filesystem will need (best effort; the walk reads whatever it does not find).
   */
  prefetch?(): Promise<void>;
}

/** Limits of the readers; exceeding one is FSREAD_LIMIT. */
export interface ReadLimits {
  /** Bytes of one directory. Default 256 MiB. */
  dirBytesMax?: number;
  /** Entries of one directory (FAT: 65536 by the format). Default 4 million. */
  dirEntriesMax?: number;
  /** Extent runs of one file. Default 1 million. */
  extentsMax?: number;
  /** Bytes of the FAT held in memory. Default 256 MiB. */
  fatBytesMax?: number;
}

/** The limits with defaults filled in. */
export function limitsOf(l: ReadLimits = {}): Required<ReadLimits> {
  return {
    dirBytesMax: l.dirBytesMax ?? 256 << 20,
    dirEntriesMax: l.dirEntriesMax ?? 4_000_000,
    extentsMax: l.extentsMax ?? 1_000_000,
    fatBytesMax: l.fatBytesMax ?? 256 << 20,
  };
}

/** Appends a run to a flat extent list, merging it with the last one when adjacent. */
export function pushRun(runs: number[], fileOffset: number, volumeOffset: number, length: number): void {
  if (length <= 0) return;
  const n = runs.length;
  if (n >= 3 && runs[n - 3] + runs[n - 1] === fileOffset && runs[n - 2] + runs[n - 1] === volumeOffset) {
    runs[n - 1] += length;
    return;
  }
  runs.push(fileOffset, volumeOffset, length);
}
