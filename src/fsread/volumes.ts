/**
 * What a disk image holds: a GPT or MBR partition table and its partitions, or one whole-disk
 * filesystem (docs/backup.md, "File catalogs"). 512-byte sectors.
 */
import { corrupt } from './errors.ts';
import { openExt } from './ext.ts';
import { looksLikeFat, openFat } from './fat.ts';
import { readAt, windowSource, type ByteSource } from './source.ts';
import type { Filesystem, ReadLimits } from './types.ts';

const sectorBytes = 512;
/** Partitions read at most (GPT entries, MBR logical partitions). */
export const partitionsMax = 128;
/** Extended partition types of an MBR. */
const extendedTypes = new Set([0x05, 0x0f, 0x85]);

/** One partition of a table. */
export interface Partition {
  /** 1-based, as Linux numbers them (GPT: entry index + 1; MBR: 1-4 primary, 5+ logical). */
  number: number;
  startBytes: number;
  sizeBytes: number;
  /** MBR type byte as two hex digits, or the GPT type GUID. */
  type: string;
  /** Set when the partition ran past the end of the image and was clipped. */
  clipped: boolean;
}

/** The layout of an image: a table with partitions, or none (a whole-disk filesystem or nothing). */
export interface DiskLayout {
  table: 'gpt' | 'mbr' | null;
  partitions: Partition[];
}

function guid(b: Buffer): string {
  const h = (from: number, to: number, le: boolean) => {
    const s = Buffer.from(b.subarray(from, to));
    if (le) s.reverse();
    return s.toString('hex');
  };
  return `${h(0, 4, true)}-${h(4, 6, true)}-${h(6, 8, true)}-${h(8, 10, false)}-${h(10, 16, false)}`;
}

function partition(source: ByteSource, number: number, startSector: number, sectors: number, type: string): Partition | null {
  const startBytes = startSector * sectorBytes;
  if (sectors <= 0 || startBytes >= source.sizeBytes) return null;
  const end = Math.min(source.sizeBytes, (startSector + sectors) * sectorBytes);
  return { number, startBytes, sizeBytes: end - startBytes, type, clipped: end < (startSector + sectors) * sectorBytes };
}

async function readGpt(source: ByteSource): Promise<Partition[] | null> {
  if (source.sizeBytes < 2 * sectorBytes) return null;
  const header = await readAt(source, sectorBytes, 92, 'GPT header');
  if (header.toString('latin1', 0, 8) !== 'EFI PART') return null;
  const entriesLba = Number(header.readBigUInt64LE(72));
  const count = header.readUInt32LE(80);
  const entryBytes = header.readUInt32LE(84);
  if (entryBytes < 128 || entryBytes > 4096 || entryBytes % 8 !== 0 || count > 4096 || !Number.isSafeInteger(entriesLba * sectorBytes)) throw corrupt('GPT header has a bad entry table');
  const n = Math.min(count, partitionsMax);
  const table = await readAt(source, entriesLba * sectorBytes, n * entryBytes, 'GPT entries');
  const out: Partition[] = [];
  for (let i = 0; i < n; i++) {
    const e = table.subarray(i * entryBytes, (i + 1) * entryBytes);
    if (e.subarray(0, 16).every((b) => b === 0)) continue;
    const first = Number(e.readBigUInt64LE(32));
    const last = Number(e.readBigUInt64LE(40));
    if (!Number.isSafeInteger(last * sectorBytes) || last < first) throw corrupt(`GPT entry ${i + 1} has a bad range`);
    const p = partition(source, i + 1, first, last - first + 1, guid(e.subarray(0, 16)));
    if (p !== null) out.push(p);
  }
  return out;
}

async function readMbr(source: ByteSource): Promise<Partition[] | null> {
  const mbr = await readAt(source, 0, sectorBytes, 'MBR');
  if (mbr.readUInt16LE(510) !== 0xaa55) return null;
  const entries = [0, 1, 2, 3].map((i) => {
    const e = mbr.subarray(446 + i * 16, 462 + i * 16);
    return { status: e[0], type: e[4], start: e.readUInt32LE(8), sectors: e.readUInt32LE(12) };
  });
  // A boot sector that is no MBR has garbage here: the status byte must be 0 or 0x80.
  if (entries.some((e) => e.status !== 0 && e.status !== 0x80) || entries.every((e) => e.type === 0)) return null;
  const out: Partition[] = [];
  let logical = 5;
  for (let i = 0; i < 4; i++) {
    const e = entries[i];
    if (e.type === 0 || e.sectors === 0) continue;
    if (!extendedTypes.has(e.type)) {
      const p = partition(source, i + 1, e.start, e.sectors, e.type.toString(16).padStart(2, '0'));
      if (p !== null) out.push(p);
      continue;
    }
    // Logical partitions: a chain of EBRs, each relative to the extended partition's start.
    const seen = new Set<number>();
    let ebr = e.start;
    while (ebr !== 0 && logical <= partitionsMax + 4) {
      if (seen.has(ebr)) throw corrupt('MBR: the chain of logical partitions loops');
      seen.add(ebr);
      if ((ebr + 1) * sectorBytes > source.sizeBytes) throw corrupt('MBR: a logical partition table lies past the end of the image');
      const b = await readAt(source, ebr * sectorBytes, sectorBytes, 'EBR');
      if (b.readUInt16LE(510) !== 0xaa55) throw corrupt(`MBR: the logical partition table at sector ${ebr} is damaged`);
      const type = b[446 + 4];
      const start = b.readUInt32LE(446 + 8);
      const sectors = b.readUInt32LE(446 + 12);
      if (type !== 0 && sectors > 0) {
        const p = partition(source, logical, ebr + start, sectors, type.toString(16).padStart(2, '0'));
        if (p !== null) out.push(p);
      }
      logical++;
      const nextType = b[462 + 4];
      ebr = nextType === 0 ? 0 : e.start + b.readUInt32LE(462 + 8);
    }
  }
  return out;
}

/**
 * The image's layout: GPT first; then a whole-disk ext or FAT filesystem; then an MBR. A
 * protective MBR without a readable GPT is an MBR with one partition of type ee.
 */
export async function readLayout(source: ByteSource): Promise<DiskLayout> {
  const gpt = await readGpt(source);
  if (gpt !== null) return { table: 'gpt', partitions: gpt };
  if (source.sizeBytes >= 2048 && (await readAt(source, 1024 + 56, 2, 'ext magic')).readUInt16LE(0) === 0xef53) return { table: null, partitions: [] };
  if (source.sizeBytes >= sectorBytes && looksLikeFat(await readAt(source, 0, sectorBytes, 'boot sector'))) return { table: null, partitions: [] };
  if (source.sizeBytes >= sectorBytes) {
    const mbr = await readMbr(source);
    if (mbr !== null) return { table: 'mbr', partitions: mbr };
  }
  return { table: null, partitions: [] };
}

/** Opens the filesystem of a volume: ext, then FAT; null when neither is recognised. */
export async function openFilesystem(source: ByteSource, limits: ReadLimits = {}): Promise<Filesystem | null> {
  return (await openExt(source, limits)) ?? (await openFat(source, limits));
}

/** The source of a partition. */
export function partitionSource(source: ByteSource, p: Partition): ByteSource {
  return windowSource(source, p.startBytes, p.sizeBytes);
}

