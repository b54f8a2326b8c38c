/**
 * A read-only FAT12/FAT16/FAT32 reader with long file names (VFAT). The FAT type follows from the
 * cluster count, as the specification says; cluster chains are checked for range and cycles.
 */
import { corrupt, FsReadError, FsReadErrorCode } from './errors.ts';
import { readAt, type ByteSource } from './source.ts';
import { limitsOf, pushRun, type Filesystem, type FsKind, type FsNode, type ReadLimits } from './types.ts';

/** FAT directories hold at most 65536 entries of 32 bytes. */
const dirEntriesFatMax = 65536;
const direntBytes = 32;
const Attr = { READ_ONLY: 0x01, VOLUME_ID: 0x08, DIRECTORY: 0x10, LFN: 0x0f } as const;
/** ref of the FAT12/16 fixed root directory (cluster numbers start at 2). */
const fixedRootRef = 0;

/** Whether the sector looks like a FAT boot sector (BPB fields within the specification's ranges). */
export function looksLikeFat(boot: Buffer): boolean {
  if (boot.length < 512 || boot.readUInt16LE(510) !== 0xaa55) return false;
  if (boot[0] !== 0xeb && boot[0] !== 0xe9) return false;
  const bps = boot.readUInt16LE(11);
  const spc = boot[13];
  const reserved = boot.readUInt16LE(14);
  const fats = boot[16];
  const media = boot[21];
  const fatSize = boot.readUInt16LE(22) || boot.readUInt32LE(36);
  const total = boot.readUInt16LE(19) || boot.readUInt32LE(32);
  return (
    [512, 1024, 2048, 4096].includes(bps) && spc > 0 && (spc & (spc - 1)) === 0 && reserved > 0 && fats >= 1 && fats <= 4 &&
    (media === 0xf0 || media >= 0xf8) && fatSize > 0 && total > 0
  );
}

/** Opens a FAT volume, or returns null when sector 0 is no FAT boot sector. */
export async function openFat(source: ByteSource, limits: ReadLimits = {}): Promise<FatFs | null> {
  if (source.sizeBytes < 512) return null;
  const boot = await readAt(source, 0, 512, 'FAT boot sector');
  if (!looksLikeFat(boot)) return null;
  return new FatFs(source, boot, limits);
}

function fatTime(date: number, time: number): number {
  const year = 1980 + (date >> 9);
  const month = ((date >> 5) & 15) - 1;
  const day = date & 31;
  if (date === 0 || month < 0 || month > 11 || day === 0) return 0;
  return Date.UTC(year, month, day, time >> 11, (time >> 5) & 63, (time & 31) * 2);
}

/** An open FAT volume. */
export class FatFs implements Filesystem {
  readonly kind: FsKind;
  readonly label: string;
  readonly uuid: string;
  private readonly source: ByteSource;
  private readonly limits: Required<ReadLimits>;
  private readonly sectorBytes: number;
  private readonly clusterBytes: number;
  private readonly fatOffset: number;
  private readonly fatBytes: number;
  private readonly rootOffset: number;
  private readonly rootEntries: number;
  private readonly dataOffset: number;
  private readonly clusterCount: number;
  private readonly rootCluster: number;
  private fat: Promise<Buffer> | null = null;

  constructor(source: ByteSource, boot: Buffer, limits: ReadLimits) {
    this.source = source;
    this.limits = limitsOf(limits);
    this.sectorBytes = boot.readUInt16LE(11);
    this.clusterBytes = this.sectorBytes * boot[13];
    const reserved = boot.readUInt16LE(14);
    const fats = boot[16];
    this.rootEntries = boot.readUInt16LE(17);
    const total = boot.readUInt16LE(19) || boot.readUInt32LE(32);
    const fatSectors = boot.readUInt16LE(22) || boot.readUInt32LE(36);
    const rootSectors = Math.ceil((this.rootEntries * direntBytes) / this.sectorBytes);
    const dataSector = reserved + fats * fatSectors + rootSectors;
    if (dataSector >= total) throw corrupt('FAT: the boot sector leaves no data area');
    this.clusterCount = Math.floor((total - dataSector) / boot[13]);
    this.kind = this.clusterCount < 4085 ? 'fat12' : this.clusterCount < 65525 ? 'fat16' : 'fat32';
    this.fatOffset = reserved * this.sectorBytes;
    this.fatBytes = fatSectors * this.sectorBytes;
    this.rootOffset = (reserved + fats * fatSectors) * this.sectorBytes;
    this.dataOffset = dataSector * this.sectorBytes;
    const needed = this.kind === 'fat12' ? Math.ceil(((this.clusterCount + 2) * 3) / 2) : (this.clusterCount + 2) * (this.kind === 'fat16' ? 2 : 4);
    if (needed > this.fatBytes) throw corrupt(`FAT: the FAT of ${this.fatBytes} bytes is too small for ${this.clusterCount} clusters`);
    if (this.kind === 'fat32') {
      this.rootCluster = boot.readUInt32LE(44);
      this.label = boot.toString('latin1', 71, 82).trimEnd();
      this.uuid = boot.readUInt32LE(67).toString(16).padStart(8, '0');
      if (this.rootEntries !== 0) throw corrupt('FAT32 with a fixed root directory');
    } else {
      this.rootCluster = fixedRootRef;
      this.label = boot[38] === 0x29 ? boot.toString('latin1', 43, 54).trimEnd() : '';
      this.uuid = boot[38] === 0x29 ? boot.readUInt32LE(39).toString(16).padStart(8, '0') : '';
    }
    if (this.label === 'NO NAME') this.label = '';
  }

  private async table(): Promise<Buffer> {
    if (this.fat === null) {
      if (this.fatBytes > this.limits.fatBytesMax) throw new FsReadError(FsReadErrorCode.LIMIT, `FAT: the FAT is ${this.fatBytes} bytes, more than ${this.limits.fatBytesMax}`);
      this.fat = readAt(this.source, this.fatOffset, this.fatBytes, 'FAT');
    }
    return this.fat;
  }

  private next(fat: Buffer, cluster: number): number {
    if (this.kind === 'fat12') {
      const v = fat.readUInt16LE(Math.floor((cluster * 3) / 2));
      const n = cluster & 1 ? v >> 4 : v & 0xfff;
      return n >= 0xff7 ? -1 : n;
    }
    if (this.kind === 'fat16') {
      const n = fat.readUInt16LE(cluster * 2);
      return n >= 0xfff7 ? -1 : n;
    }
    const n = fat.readUInt32LE(cluster * 4) & 0x0fffffff;
    return n >= 0x0ffffff7 ? -1 : n;
  }

  /** The clusters of a chain, at most `max`; a chain that runs out of range or loops is FSREAD_CORRUPT. */
  private async chain(first: number, max: number, what: string): Promise<number[]> {
    const fat = await this.table();
    const out: number[] = [];
    let c = first;
    while (c !== -1 && out.length < max) {
      if (c < 2 || c >= this.clusterCount + 2) throw corrupt(`FAT: ${what} has cluster ${c} outside 2-${this.clusterCount + 1}`);
      out.push(c);
      // No chain is longer than the cluster count: a longer one is a cycle.
      if (out.length > this.clusterCount) throw corrupt(`FAT: ${what} has a cluster chain that loops`);
      c = this.next(fat, c);
      if (c === 0) throw corrupt(`FAT: ${what} has a chain running into a free cluster`);
    }
    return out;
  }

  private clusterOffset(c: number): number {
    const at = this.dataOffset + (c - 2) * this.clusterBytes;
    if (at + this.clusterBytes > this.source.sizeBytes) throw corrupt(`FAT: cluster ${c} lies past the end of the image`);
    return at;
  }

  async root(): Promise<FsNode> {
    return { name: '', type: 'd', mode: 0o755, uid: 0, gid: 0, sizeBytes: 0, mtimeMs: 0, target: null, ref: this.rootCluster };
  }

  private async dirBytes(ref: number): Promise<Buffer> {
    if (ref === fixedRootRef && this.kind !== 'fat32') return readAt(this.source, this.rootOffset, this.rootEntries * direntBytes, 'FAT root directory');
    const clustersMax = Math.ceil((dirEntriesFatMax * direntBytes) / this.clusterBytes);
    const clusters = await this.chain(ref, clustersMax + 1, `directory at cluster ${ref}`);
    if (clusters.length > clustersMax) throw new FsReadError(FsReadErrorCode.LIMIT, `FAT: directory at cluster ${ref} has more than ${dirEntriesFatMax} entries`);
    return Buffer.concat(await Promise.all(clusters.map((c) => readAt(this.source, this.clusterOffset(c), this.clusterBytes, 'FAT directory'))));
  }

  async readDir(dir: FsNode): Promise<FsNode[]> {
    const bytes = await this.dirBytes(dir.ref);
    const out: FsNode[] = [];
    let lfn: string[] = [];
    let lfnSum = -1;
    let lfnNext = 0;
    for (let at = 0; at + direntBytes <= bytes.length; at += direntBytes) {
      const e = bytes.subarray(at, at + direntBytes);
      if (e[0] === 0x00) break;
      if (e[0] === 0xe5) {
        lfn = [];
        continue;
      }
      const attr = e[11];
      if ((attr & 0x3f) === Attr.LFN) {
        const ord = e[0] & 0x3f;
        if (e[0] & 0x40) {
          lfn = new Array(ord).fill('');
          lfnSum = e[13];
          lfnNext = ord;
        }
        if (ord === 0 || ord !== lfnNext || e[13] !== lfnSum) {
          lfn = []; // a broken sequence: fall back to the short name
          lfnNext = -1;
          continue;
        }
        const units = Buffer.concat([e.subarray(1, 11), e.subarray(14, 26), e.subarray(28, 32)]);
        let text = '';
        for (let i = 0; i < 13; i++) {
          const u = units.readUInt16LE(i * 2);
          if (u === 0) break;
          text += String.fromCharCode(u);
        }
        lfn[ord - 1] = text;
        lfnNext = ord - 1;
        continue;
      }
      if (attr & Attr.VOLUME_ID) {
        lfn = [];
        continue;
      }
      const short = e.subarray(0, 11);
      let sum = 0;
      for (const b of short) sum = (((sum & 1) << 7) + (sum >> 1) + b) & 0xff;
      let name: string;
      if (lfn.length > 0 && lfnNext === 0 && sum === lfnSum) name = lfn.join('');
      else {
        const raw = Buffer.from(short);
        if (raw[0] === 0x05) raw[0] = 0xe5;
        let base = raw.toString('latin1', 0, 8).trimEnd();
        let ext = raw.toString('latin1', 8, 11).trimEnd();
        if (e[12] & 0x08) base = base.toLowerCase();
        if (e[12] & 0x10) ext = ext.toLowerCase();
        name = ext === '' ? base : `${base}.${ext}`;
      }
      lfn = [];
      if (name === '.' || name === '..') continue;
      if (name === '' || name.includes('/') || name.includes('\0')) throw corrupt(`FAT: directory at cluster ${dir.ref} has a bad name`);
      const isDir = (attr & Attr.DIRECTORY) !== 0;
      let cluster = e.readUInt16LE(26);
      if (this.kind === 'fat32') cluster += e.readUInt16LE(20) * 65536;
      if (isDir && cluster === 0) throw corrupt(`FAT: directory ${name} has no cluster`);
      out.push({
        name,
        type: isDir ? 'd' : 'f',
        mode: isDir ? 0o755 : attr & Attr.READ_ONLY ? 0o444 : 0o644,
        uid: 0,
        gid: 0,
        sizeBytes: isDir ? 0 : e.readUInt32LE(28),
        mtimeMs: fatTime(e.readUInt16LE(24), e.readUInt16LE(22)),
        target: null,
        ref: cluster,
      });
      if (out.length > this.limits.dirEntriesMax) throw new FsReadError(FsReadErrorCode.LIMIT, `FAT: directory at cluster ${dir.ref} has more than ${this.limits.dirEntriesMax} entries`);
    }
    return out;
  }

  async extents(file: FsNode): Promise<number[]> {
    const runs: number[] = [];
    if (file.sizeBytes === 0) return runs;
    const needed = Math.ceil(file.sizeBytes / this.clusterBytes);
    const clusters = await this.chain(file.ref, needed, `file ${file.name}`);
    if (clusters.length < needed) throw corrupt(`FAT: file ${file.name} has ${clusters.length} clusters for ${file.sizeBytes} bytes`);
    for (let i = 0; i < clusters.length; i++) {
      const at = i * this.clusterBytes;
      pushRun(runs, at, this.clusterOffset(clusters[i]), Math.min(this.clusterBytes, file.sizeBytes - at));
      if (runs.length / 3 > this.limits.extentsMax) throw new FsReadError(FsReadErrorCode.LIMIT, `FAT: file ${file.name} has more than ${this.limits.extentsMax} extents`);
    }
    return runs;
  }
}
