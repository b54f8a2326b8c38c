/**
 * A read-only ext2/ext3/ext4 reader: superblock, 32- and 64-bit group descriptors (meta_bg too),
 * inodes of any size, extent trees and the old block maps, inline data, linear directories (htree
 * directories read linearly), fast and slow symlinks. Every offset read from the image is checked
 * against the volume before use; loops are bounded by the limits and by visited sets.
 */
import { corrupt, FsReadError, FsReadErrorCode } from './errors.ts';
import { readAt, type ByteSource, type ReadHint } from './source.ts';
import { limitsOf, pushRun, type FileType, type Filesystem, type FsKind, type FsNode, type ReadLimits } from './types.ts';

/** Superblock offset and magic. */
const superblockOffset = 1024;
const extMagic = 0xef53;
const extentMagic = 0xf30a;
const xattrMagic = 0xea020000;
const rootIno = 2;
/** ext4 allows an extent tree of depth 5 at most. */
const extentDepthMax = 5;
/** Symlink targets are at most PATH_MAX. */
const targetBytesMax = 4096;

/** Incompatible features (s_feature_incompat). */
const Incompat = {
  FILETYPE: 0x2,
  RECOVER: 0x4,
  META_BG: 0x10,
  EXTENTS: 0x40,
  BIT64: 0x80,
  MMP: 0x100,
  FLEX_BG: 0x200,
  EA_INODE: 0x400,
  CSUM_SEED: 0x2000,
  LARGEDIR: 0x4000,
  INLINE_DATA: 0x8000,
  CASEFOLD: 0x20000,
} as const;
/** The incompat features this reader reads; any other one is FSREAD_UNSUPPORTED. */
const incompatRead = Object.values(Incompat).reduce((a, b) => a | b, 0);
/** What ext3 knows (as blkid decides ext2/3 versus ext4). */
const ext3Incompat = Incompat.FILETYPE | Incompat.RECOVER | Incompat.META_BG;
const ext3RoCompat = 0x1 | 0x2 | 0x4;
const compatHasJournal = 0x4;
const roCompatSparseSuper = 0x1;

/** Inode flags. */
const InodeFlag = { EXTENTS: 0x80000, INLINE_DATA: 0x10000000 } as const;
/** Group descriptor flag: the group's inode table was never initialised (no inode in use). */
const bgInodeUninit = 0x1;
/** Read-only features under which a group descriptor's count of unused inodes can be trusted. */
const roCompatGroupChecksums = 0x10 | 0x400;
/** Bytes prefetch() holds at most, and reads at once. */
const prefetchBytesMax = 256 << 20;
const prefetchReadBytesMax = 1 << 20;
const prefetchReadsMax = 8;
/** Blocks between two ranges that one prefetch read spans rather than making two. */
const prefetchGapBlocks = 16;

/**
 * A source with ranges read ahead held in memory: a read inside one is answered from it, any
 * other goes to the source underneath.
 */
class PrefetchedSource implements ByteSource {
  readonly sizeBytes: number;
  private readonly source: ByteSource;
  /** Held ranges, sorted by offset once loading ends. */
  private held: { offset: number; bytes: Buffer }[] = [];

  constructor(source: ByteSource) {
    this.source = source;
    this.sizeBytes = source.sizeBytes;
  }

  /** Reads [offset, offset + length) ranges, several at once, and holds them. */
  async load(ranges: [number, number][]): Promise<{ offset: number; bytes: Buffer }[]> {
    const loaded: { offset: number; bytes: Buffer }[] = [];
    let next = 0;
    const worker = async () => {
      while (next < ranges.length) {
        const [offset, length] = ranges[next++];
        loaded.push({ offset, bytes: await this.source.read(offset, length, { uncached: true }) });
      }
    };
    await Promise.all(Array.from({ length: prefetchReadsMax }, worker));
    this.held = this.held.concat(loaded).sort((a, b) => a.offset - b.offset);
    return loaded;
  }

  read(offset: number, length: number, hint?: ReadHint): Promise<Buffer> {
    // The last held range starting at or before offset, if it covers the whole read.
    let lo = 0;
    let hi = this.held.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (this.held[mid].offset <= offset) lo = mid + 1;
      else hi = mid - 1;
    }
    const r = this.held[hi];
    if (r !== undefined && offset + length <= r.offset + r.bytes.length) return Promise.resolve(r.bytes.subarray(offset - r.offset, offset - r.offset + length));
    return this.source.read(offset, length, hint);
  }
}

/** Calls `add(block, count)` for the initialised extents of an extent node's leaf entries. */
function addExtents(node: Buffer, entries: number, sizeBlocks: number, add: (block: number, count: number) => void): void {
  for (let e = 0; e < entries && 24 + e * 12 <= node.length; e++) {
    const x = 12 + e * 12;
    const length = node.readUInt16LE(x + 4);
    if (length <= 32768) add(node.readUInt16LE(x + 6) * 2 ** 32 + node.readUInt32LE(x + 8), Math.min(length, sizeBlocks));
  }
}

/** Sorted block runs [block, count] merged into reads of at most prefetchReadBytesMax. */
function coalesce(runs: [number, number][], blockBytes: number): [number, number][] {
  runs.sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  const maxBlocks = Math.max(1, Math.floor(prefetchReadBytesMax / blockBytes));
  for (const [block, count] of runs) {
    const last = out.at(-1);
    const end = block + count;
    if (last !== undefined && block <= last[0] + last[1] + prefetchGapBlocks && end - last[0] <= maxBlocks) last[1] = Math.max(last[1], end - last[0]);
    else if (count > maxBlocks) for (let b = block; b < end; b += maxBlocks) out.push([b, Math.min(maxBlocks, end - b)]);
    else out.push([block, count]);
  }
  return out.map(([block, count]) => [block * blockBytes, count * blockBytes]);
}

/** The fields of an inode the catalog needs. */
interface Inode {
  ino: number;
  /** Volume offset of the inode. */
  offset: number;
  raw: Buffer;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtimeMs: number;
  flags: number;
  blocks: number;
  fileAcl: number;
}

function typeOfMode(mode: number): FileType | null {
  switch (mode & 0xf000) {
    case 0x8000:
      return 'f';
    case 0x4000:
      return 'd';
    case 0xa000:
      return 'l';
    case 0x2000:
      return 'c';
    case 0x6000:
      return 'b';
    case 0x1000:
      return 'p';
    case 0xc000:
      return 's';
    default:
      return null;
  }
}

function isPowerOf(n: number, base: number): boolean {
  while (n > 1 && n % base === 0) n /= base;
  return n === 1;
}

/** Opens an ext2/3/4 volume, or returns null when there is no ext superblock. */
export async function openExt(source: ByteSource, limits: ReadLimits = {}): Promise<ExtFs | null> {
  if (source.sizeBytes < superblockOffset + 1024) return null;
  const sb = await readAt(source, superblockOffset, 1024, 'ext superblock');
  if (sb.readUInt16LE(56) !== extMagic) return null;
  return new ExtFs(source, sb, limits);
}

/** An open ext2/3/4 volume. */
export class ExtFs implements Filesystem {
  readonly kind: FsKind;
  readonly label: string;
  readonly uuid: string;
  private readonly source: ByteSource;
  private readonly limits: Required<ReadLimits>;
  private readonly blockBytes: number;
  private readonly blocksCount: number;
  private readonly inodesCount: number;
  private readonly inodesPerGroup: number;
  private readonly blocksPerGroup: number;
  private readonly firstDataBlock: number;
  private readonly inodeBytes: number;
  private readonly descBytes: number;
  private readonly groupCount: number;
  private readonly firstMetaBg: number;
  private readonly incompat: number;
  private readonly roCompat: number;

  private readonly prefetched: PrefetchedSource;

  constructor(source: ByteSource, sb: Buffer, limits: ReadLimits) {
    this.source = this.prefetched = new PrefetchedSource(source);
    this.limits = limitsOf(limits);
    const logBlock = sb.readUInt32LE(24);
    if (logBlock > 6) throw corrupt(`ext superblock: block size 2^${10 + logBlock} is out of range`);
    this.blockBytes = 1024 << logBlock;
    this.incompat = sb.readUInt32LE(96);
    this.roCompat = sb.readUInt32LE(100);
    const compat = sb.readUInt32LE(92);
    const unknown = this.incompat & ~incompatRead;
    if (unknown !== 0) throw new FsReadError(FsReadErrorCode.UNSUPPORTED, `ext: incompatible features 0x${unknown.toString(16)} are not read by Tessera`);
    const is64 = (this.incompat & Incompat.BIT64) !== 0;
    this.blocksCount = sb.readUInt32LE(4) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
    this.inodesCount = sb.readUInt32LE(0);
    this.firstDataBlock = sb.readUInt32LE(20);
    this.blocksPerGroup = sb.readUInt32LE(32);
    this.inodesPerGroup = sb.readUInt32LE(40);
    const rev = sb.readUInt32LE(76);
    this.inodeBytes = rev >= 1 ? sb.readUInt16LE(88) : 128;
    this.descBytes = is64 ? sb.readUInt16LE(254) || 32 : 32;
    this.firstMetaBg = sb.readUInt32LE(260);
    const ok =
      this.blocksPerGroup > 0 && this.blocksPerGroup <= this.blockBytes * 8 && this.inodesPerGroup > 0 && this.inodesPerGroup <= this.blockBytes * 8 &&
      this.inodeBytes >= 128 && this.inodeBytes <= this.blockBytes && (this.inodeBytes & (this.inodeBytes - 1)) === 0 &&
      this.descBytes >= 32 && this.descBytes <= 1024 && (this.descBytes & (this.descBytes - 1)) === 0 &&
      this.firstDataBlock < this.blocksCount && this.inodesCount >= rootIno && this.blocksCount > 0;
    if (!ok) throw corrupt('ext superblock: inconsistent geometry');
    this.groupCount = Math.ceil((this.blocksCount - this.firstDataBlock) / this.blocksPerGroup);
    if (this.inodesCount > this.groupCount * this.inodesPerGroup) throw corrupt('ext superblock: more inodes than groups hold');
    this.label = sb.subarray(120, 136).toString('utf8').replace(/\0.*$/s, '');
    this.uuid = formatUuid(sb.subarray(104, 120));
    const ext3 = (this.incompat & ~ext3Incompat) === 0 && (this.roCompat & ~ext3RoCompat) === 0;
    this.kind = !ext3 ? 'ext4' : (compat & compatHasJournal) !== 0 ? 'ext3' : 'ext2';
  }

  private hasSuper(group: number): boolean {
    if ((this.roCompat & roCompatSparseSuper) === 0 || group <= 1) return true;
    return isPowerOf(group, 3) || isPowerOf(group, 5) || isPowerOf(group, 7);
  }

  /** Volume offset of block `block`, checked: `count` blocks from it lie in the filesystem and the volume. */
  private blockOffset(block: number, count: number, what: string): number {
    if (!Number.isSafeInteger(block) || block < this.firstDataBlock || count < 0 || block + count > this.blocksCount) {
      throw corrupt(`ext: ${what} points at block ${block} (+${count}) outside the filesystem of ${this.blocksCount} blocks`);
    }
    const offset = block * this.blockBytes;
    if (offset + count * this.blockBytes > this.source.sizeBytes) throw corrupt(`ext: ${what} at block ${block} lies past the end of the image`);
    return offset;
  }

  /** Group descriptors read so far (a few bytes each; at most one per group). */
  private readonly descriptors = new Map<number, Buffer>();
  /** Inodes of the last directory read, for the extents() calls of a walk that follow. */
  private recent = new Map<number, Inode>();

  private async groupDescriptor(group: number): Promise<Buffer> {
    const known = this.descriptors.get(group);
    if (known !== undefined) return known;
    const desc = await this.readGroupDescriptor(group);
    this.descriptors.set(group, desc);
    return desc;
  }

  private async readGroupDescriptor(group: number): Promise<Buffer> {
    const perBlock = this.blockBytes / this.descBytes;
    let block: number;
    if ((this.incompat & Incompat.META_BG) === 0 || group < this.firstMetaBg * perBlock) {
      block = this.firstDataBlock + 1 + Math.floor(group / perBlock);
    } else {
      const first = Math.floor(group / perBlock) * perBlock;
      block = this.firstDataBlock + first * this.blocksPerGroup + (this.hasSuper(first) ? 1 : 0);
    }
    const at = this.blockOffset(block, 1, `group descriptor ${group}`) + (group % perBlock) * this.descBytes;
    return readAt(this.source, at, this.descBytes, `group descriptor ${group}`);
  }

  private async readInode(ino: number): Promise<Inode> {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.inodesCount) throw corrupt(`ext: inode ${ino} is out of range (1-${this.inodesCount})`);
    const group = Math.floor((ino - 1) / this.inodesPerGroup);
    const index = (ino - 1) % this.inodesPerGroup;
    const desc = await this.groupDescriptor(group);
    const table = desc.readUInt32LE(8) + (this.descBytes >= 64 ? desc.readUInt32LE(0x28) * 2 ** 32 : 0);
    const tableBlocks = Math.ceil((this.inodesPerGroup * this.inodeBytes) / this.blockBytes);
    const offset = this.blockOffset(table, tableBlocks, `inode table of group ${group}`) + index * this.inodeBytes;
    const raw = await readAt(this.source, offset, this.inodeBytes, `inode ${ino}`);
    const mode = raw.readUInt16LE(0);
    let seconds = raw.readInt32LE(16);
    let nanos = 0;
    const extra = this.inodeBytes > 128 ? raw.readUInt16LE(128) : 0;
    if (extra >= 12 && 128 + extra <= this.inodeBytes) {
      const mtimeExtra = raw.readUInt32LE(136);
      seconds += (mtimeExtra & 3) * 2 ** 32;
      nanos = mtimeExtra >>> 2;
    }
    return {
      ino,
      offset,
      raw,
      mode,
      uid: raw.readUInt16LE(2) | (raw.readUInt16LE(120) << 16),
      gid: raw.readUInt16LE(24) | (raw.readUInt16LE(122) << 16),
      size: raw.readUInt32LE(4) + raw.readUInt32LE(108) * 2 ** 32,
      mtimeMs: seconds * 1000 + Math.floor(nanos / 1e6),
      flags: raw.readUInt32LE(32),
      blocks: raw.readUInt32LE(28) + raw.readUInt16LE(116) * 2 ** 32,
      fileAcl: raw.readUInt32LE(104) + raw.readUInt16LE(118) * 2 ** 32,
    };
  }

  private checkSize(inode: Inode): void {
    if (!Number.isSafeInteger(inode.size)) throw corrupt(`ext: inode ${inode.ino} has an impossible size`);
  }

  /** Where an inode's bytes are: flat runs [fileOffset, volumeOffset, length, …]. */
  private async dataRuns(inode: Inode): Promise<number[]> {
    this.checkSize(inode);
    const runs: number[] = [];
    const size = inode.size;
    const add = (fileOffset: number, volumeOffset: number, length: number) => {
      if (fileOffset >= size) return;
      pushRun(runs, fileOffset, volumeOffset, Math.min(length, size - fileOffset));
      if (runs.length / 3 > this.limits.extentsMax) throw new FsReadError(FsReadErrorCode.LIMIT, `ext: inode ${inode.ino} has more than ${this.limits.extentsMax} extents`);
    };
    if ((inode.flags & InodeFlag.INLINE_DATA) !== 0) {
      this.inlineRuns(inode, add);
    } else if ((inode.flags & InodeFlag.EXTENTS) !== 0) {
      await this.extentRuns(inode, add);
    } else {
      await this.blockMapRuns(inode, add);
    }
    return runs;
  }

  private inlineRuns(inode: Inode, add: (f: number, v: number, l: number) => void): void {
    add(0, inode.offset + 40, 60);
    if (inode.size <= 60) return;
    const value = this.inlineXattr(inode);
    if (value === null) throw corrupt(`ext: inode ${inode.ino} has inline data of ${inode.size} bytes but no system.data attribute`);
    add(60, inode.offset + value.at, value.length);
    if (60 + value.length < inode.size) throw corrupt(`ext: inode ${inode.ino} has inline data shorter than its size`);
  }

  /** The `system.data` extended attribute in the inode body: its offset in the inode and length. */
  private inlineXattr(inode: Inode): { at: number; length: number } | null {
    const raw = inode.raw;
    const extra = raw.length > 128 ? raw.readUInt16LE(128) : 0;
    const header = 128 + extra;
    if (extra === 0 || header + 4 > raw.length || raw.readUInt32LE(header) !== xattrMagic) return null;
    const first = header + 4;
    let at = first;
    while (at + 16 <= raw.length && raw.readUInt32LE(at) !== 0) {
      const nameLength = raw[at];
      const nameIndex = raw[at + 1];
      const valueOffset = raw.readUInt16LE(at + 2);
      const valueSize = raw.readUInt32LE(at + 8);
      if (at + 16 + nameLength > raw.length) throw corrupt(`ext: inode ${inode.ino} has a damaged extended attribute`);
      if (nameIndex === 7 && raw.toString('latin1', at + 16, at + 16 + nameLength) === 'data') {
        if (first + valueOffset + valueSize > raw.length) throw corrupt(`ext: inode ${inode.ino} has inline data past its end`);
        return { at: first + valueOffset, length: valueSize };
      }
      at += (16 + nameLength + 3) & ~3;
    }
    return null;
  }

  private async extentRuns(inode: Inode, add: (f: number, v: number, l: number) => void): Promise<void> {
    const bs = this.blockBytes;
    const visited = new Set<number>();
    let nextLogical = 0;
    const walk = async (node: Buffer, expectedDepth: number | null, where: string): Promise<void> => {
      if (node.length < 12 || node.readUInt16LE(0) !== extentMagic) throw corrupt(`ext: inode ${inode.ino}: bad extent header in ${where}`);
      const entries = node.readUInt16LE(2);
      const max = node.readUInt16LE(4);
      const depth = node.readUInt16LE(6);
      if (depth > extentDepthMax || (expectedDepth !== null && depth !== expectedDepth)) throw corrupt(`ext: inode ${inode.ino}: extent node of depth ${depth} in ${where}`);
      if (entries > max || 12 + max * 12 > node.length) throw corrupt(`ext: inode ${inode.ino}: extent node with ${entries} of ${max} entries in ${where}`);
      for (let i = 0; i < entries; i++) {
        const e = 12 + i * 12;
        const logical = node.readUInt32LE(e);
        if (logical < nextLogical) throw corrupt(`ext: inode ${inode.ino}: extents out of order in ${where}`);
        if (depth === 0) {
          const raw = node.readUInt16LE(e + 4);
          const unwritten = raw > 32768;
          const length = unwritten ? raw - 32768 : raw;
          const physical = node.readUInt16LE(e + 6) * 2 ** 32 + node.readUInt32LE(e + 8);
          if (length === 0) throw corrupt(`ext: inode ${inode.ino}: empty extent in ${where}`);
          const offset = this.blockOffset(physical, length, `inode ${inode.ino}'s extent`);
          nextLogical = logical + length;
          if (!unwritten) add(logical * bs, offset, length * bs); // unwritten extents read as zeroes
        } else {
          const child = node.readUInt16LE(e + 8) * 2 ** 32 + node.readUInt32LE(e + 4);
          if (visited.has(child)) throw corrupt(`ext: inode ${inode.ino}: extent node at block ${child} is referenced twice`);
          visited.add(child);
          const offset = this.blockOffset(child, 1, `inode ${inode.ino}'s extent node`);
          await walk(await readAt(this.source, offset, bs, 'extent node'), depth - 1, `block ${child}`);
        }
      }
    };
    await walk(inode.raw.subarray(40, 100), null, 'the inode');
  }

  private async blockMapRuns(inode: Inode, add: (f: number, v: number, l: number) => void): Promise<void> {
    const bs = this.blockBytes;
    const perBlock = bs / 4;
    const blocks = Math.ceil(inode.size / bs);
    const iblock = inode.raw.subarray(40, 100);
    const leaf = (logical: number, block: number) => add(logical * bs, this.blockOffset(block, 1, `inode ${inode.ino}'s block map`), bs);
    for (let i = 0; i < 12 && i < blocks; i++) {
      const b = iblock.readUInt32LE(i * 4);
      if (b !== 0) leaf(i, b);
    }
    const indirect = async (block: number, level: number, first: number): Promise<void> => {
      if (block === 0 || first >= blocks) return;
      const ptrs = await readAt(this.source, this.blockOffset(block, 1, `inode ${inode.ino}'s indirect block`), bs, 'indirect block');
      const span = perBlock ** (level - 1);
      for (let k = 0; k < perBlock; k++) {
        const childFirst = first + k * span;
        if (childFirst >= blocks) break;
        const child = ptrs.readUInt32LE(k * 4);
        if (child === 0) continue;
        if (level === 1) leaf(childFirst, child);
        else await indirect(child, level - 1, childFirst);
      }
    };
    let first = 12;
    for (let level = 1; level <= 3; level++) {
      await indirect(iblock.readUInt32LE((11 + level) * 4), level, first);
      first += perBlock ** level;
    }
  }

  /** Reads a whole (small) file by its runs, holes as zeroes. */
  private async readRuns(runs: number[], size: number, what: string): Promise<Buffer> {
    const out = Buffer.alloc(size);
    for (let i = 0; i < runs.length; i += 3) (await readAt(this.source, runs[i + 1], runs[i + 2], what)).copy(out, runs[i]);
    return out;
  }

  private async symlinkTarget(inode: Inode): Promise<string> {
    this.checkSize(inode);
    if (inode.size > targetBytesMax) throw corrupt(`ext: symlink inode ${inode.ino} has a target of ${inode.size} bytes`);
    const eaBlocks = inode.fileAcl !== 0 ? this.blockBytes / 512 : 0;
    const fast = (inode.flags & (InodeFlag.EXTENTS | InodeFlag.INLINE_DATA)) === 0 && inode.blocks - eaBlocks <= 0 && inode.size < 60;
    const bytes = fast ? inode.raw.subarray(40, 40 + inode.size) : await this.readRuns(await this.dataRuns(inode), inode.size, `symlink ${inode.ino}`);
    return bytes.toString('utf8');
  }

  private async node(ino: number, name: string): Promise<FsNode> {
    const inode = await this.readInode(ino);
    this.recent.set(ino, inode);
    const type = typeOfMode(inode.mode);
    if (type === null) throw corrupt(`ext: inode ${ino} (${name || '/'}) has an unknown file type 0x${inode.mode.toString(16)}`);
    this.checkSize(inode);
    return {
      name,
      type,
      mode: inode.mode & 0o7777,
      uid: inode.uid,
      gid: inode.gid,
      sizeBytes: inode.size,
      mtimeMs: inode.mtimeMs,
      target: type === 'l' ? await this.symlinkTarget(inode) : null,
      ref: ino,
    };
  }

  /**
   * Reads ahead what a walk of the whole volume needs, in large concurrent reads: the used part
   * of every inode table, then the blocks of every directory those tables hold (depth-0 extent
   * trees and direct blocks; the rest is left to the walk). A walk reads metadata one piece at a
   * time, and directory blocks lie scattered over the volume next to their files; through a node
   * each such read is a request. Best effort: a damaged descriptor or inode is skipped here and
   * reported by the walk as it would be without this. At most prefetchBytesMax are held.
   */
  async prefetch(): Promise<void> {
    let budget = prefetchBytesMax;
    /** Adds a block run to `list` if it lies in the volume and fits what is left of the budget. */
    const into = (list: [number, number][]) => (block: number, count: number) => {
      if (count <= 0 || !this.holds(block, count) || count * this.blockBytes > budget) return;
      budget -= count * this.blockBytes;
      list.push([block, count]);
    };
    const tables: [number, number][] = [];
    for (let g = 0; g < this.groupCount; g++) {
      let desc: Buffer;
      try {
        desc = await this.groupDescriptor(g);
      } catch {
        return;
      }
      let used = this.inodesPerGroup;
      if ((this.roCompat & roCompatGroupChecksums) !== 0) {
        if ((desc.readUInt16LE(0x12) & bgInodeUninit) !== 0) continue;
        const unused = desc.readUInt16LE(0x1c) + (this.descBytes >= 64 ? desc.readUInt16LE(0x32) * 65536 : 0);
        used = Math.max(0, used - unused);
      }
      const table = desc.readUInt32LE(8) + (this.descBytes >= 64 ? desc.readUInt32LE(0x28) * 2 ** 32 : 0);
      into(tables)(table, Math.ceil((used * this.inodeBytes) / this.blockBytes));
    }
    const metadata: [number, number][] = [];
    const add = into(metadata);
    const dirLeaves: { block: number; sizeBlocks: number }[] = [];
    // A read that fails here fails again, and is reported, when the walk makes it.
    const loaded = await this.prefetched.load(coalesce(tables, this.blockBytes)).catch(() => null);
    for (const { bytes } of loaded ?? []) {
      for (let at = 0; at + this.inodeBytes <= bytes.length; at += this.inodeBytes) {
        const raw = bytes.subarray(at, at + this.inodeBytes);
        if (raw.readUInt16LE(26) === 0) continue; // not in use
        const type = typeOfMode(raw.readUInt16LE(0));
        const flags = raw.readUInt32LE(32);
        const size = raw.readUInt32LE(4);
        const sizeBlocks = Math.ceil(size / this.blockBytes);
        // Directories: their blocks. Long symlinks: their target's block. Files with an extent
        // tree deeper than the inode: its first level. Block-mapped files need nothing more.
        if ((flags & InodeFlag.INLINE_DATA) !== 0 || !(type === 'd' || type === 'f' || (type === 'l' && size >= 60))) continue;
        if ((flags & InodeFlag.EXTENTS) === 0) {
          if (type !== 'f') for (let k = 0; k < Math.min(12, sizeBlocks); k++) add(raw.readUInt32LE(40 + 4 * k), 1);
          continue;
        }
        if (raw.readUInt16LE(40) !== extentMagic) continue;
        const depth = raw.readUInt16LE(46);
        const entries = Math.min(raw.readUInt16LE(42), 4);
        if (depth === 0) {
          if (type !== 'f') addExtents(raw.subarray(40, 100), entries, sizeBlocks, add); // a file's extents are all in the inode
          continue;
        }
        for (let e = 0; e < entries; e++) {
          const x = 52 + e * 12;
          const block = raw.readUInt16LE(x + 8) * 2 ** 32 + raw.readUInt32LE(x + 4); // an index or leaf block
          add(block, 1);
          if (type === 'd' && depth === 1) dirLeaves.push({ block, sizeBlocks });
        }
      }
    }
    await this.prefetched.load(coalesce(metadata, this.blockBytes)).catch(() => null);
    // Directories big enough for an extent tree: their blocks, from the leaves just read.
    const leafBlocks: [number, number][] = [];
    for (const { block, sizeBlocks } of dirLeaves) {
      const node = await readAt(this.prefetched, block * this.blockBytes, this.blockBytes, 'extent node').catch(() => null);
      if (node === null || node.readUInt16LE(0) !== extentMagic || node.readUInt16LE(6) !== 0) continue;
      addExtents(node, Math.min(node.readUInt16LE(2), Math.floor((this.blockBytes - 12) / 12)), sizeBlocks, into(leafBlocks));
    }
    await this.prefetched.load(coalesce(leafBlocks, this.blockBytes)).catch(() => null);
  }

  /** Whether `count` blocks from `block` lie in the filesystem and the volume. */
  private holds(block: number, count: number): boolean {
    return Number.isSafeInteger(block) && block >= this.firstDataBlock && block + count <= this.blocksCount && (block + count) * this.blockBytes <= this.source.sizeBytes;
  }

  async root(): Promise<FsNode> {
    const root = await this.node(rootIno, '');
    if (root.type !== 'd') throw corrupt('ext: the root inode is not a directory');
    return root;
  }

  async readDir(dir: FsNode): Promise<FsNode[]> {
    const inode = await this.readInode(dir.ref);
    if (typeOfMode(inode.mode) !== 'd') throw corrupt(`ext: inode ${dir.ref} is not a directory`);
    this.checkSize(inode);
    if (inode.size > this.limits.dirBytesMax) throw new FsReadError(FsReadErrorCode.LIMIT, `ext: directory inode ${dir.ref} is ${inode.size} bytes, more than ${this.limits.dirBytesMax}`);
    const found: { ino: number; name: string }[] = [];
    const parse = (buf: Buffer, what: string) => {
      let at = 0;
      while (at + 8 <= buf.length) {
        const ino = buf.readUInt32LE(at);
        let rec = buf.readUInt16LE(at + 4);
        if (this.blockBytes === 65536 && (rec === 0 || rec === 65535)) rec = 65536;
        const nameLength = buf[at + 6];
        if (rec < 8 || rec % 4 !== 0 || at + rec > buf.length || 8 + nameLength > rec) throw corrupt(`ext: directory inode ${dir.ref} has a damaged entry in ${what}`);
        if (ino !== 0 && nameLength > 0) {
          const raw = buf.subarray(at + 8, at + 8 + nameLength);
          const name = raw.toString('utf8');
          if (name !== '.' && name !== '..') {
            if (raw.includes(0x2f) || raw.includes(0)) throw corrupt(`ext: directory inode ${dir.ref} has a name with '/' or NUL`);
            found.push({ ino, name });
            if (found.length > this.limits.dirEntriesMax) throw new FsReadError(FsReadErrorCode.LIMIT, `ext: directory inode ${dir.ref} has more than ${this.limits.dirEntriesMax} entries`);
          }
        }
        at += rec;
      }
    };
    if ((inode.flags & InodeFlag.INLINE_DATA) !== 0) {
      // Inline directory: the parent's inode number, then entries in i_block and in system.data.
      parse(inode.raw.subarray(44, 100), 'inline data');
      const value = this.inlineXattr(inode);
      if (value !== null && value.length > 0) parse(inode.raw.subarray(value.at, value.at + value.length), 'inline data');
    } else {
      const runs = await this.dataRuns(inode);
      const bs = this.blockBytes;
      for (let i = 0; i < runs.length; i += 3) {
        if (runs[i] % bs !== 0 || runs[i + 2] % bs !== 0) throw corrupt(`ext: directory inode ${dir.ref} has a partial block`);
        // Large runs are read a megabyte at a time; entries never cross a block.
        for (let done = 0; done < runs[i + 2]; done += 1 << 20) {
          const length = Math.min(1 << 20, runs[i + 2] - done);
          const bytes = await readAt(this.source, runs[i + 1] + done, length, `directory inode ${dir.ref}`);
          for (let b = 0; b < length; b += bs) parse(bytes.subarray(b, b + bs), `block ${(runs[i] + done + b) / bs}`);
        }
      }
    }
    const out: FsNode[] = [];
    this.recent = new Map();
    for (const f of found) out.push(await this.node(f.ino, f.name));
    return out;
  }

  async extents(file: FsNode): Promise<number[]> {
    const inode = this.recent.get(file.ref) ?? (await this.readInode(file.ref));
    if (typeOfMode(inode.mode) !== 'f') throw corrupt(`ext: inode ${file.ref} is not a regular file`);
    return this.dataRuns(inode);
  }
}

function formatUuid(b: Buffer): string {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
