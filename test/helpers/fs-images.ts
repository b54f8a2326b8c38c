/**
 * Filesystem images for the file-level restore tests: source trees made of real files (deep
 * directories, many files in one directory, symlinks, sparse files, unicode names), turned into
 * ext2/3/4 images by mkfs.ext* -d, FAT images by mkfs.vfat + mcopy, and partitioned disks by
 * sfdisk; and the real directory walk the catalogs are compared with.
 */
import { closeSync, lstatSync, mkdirSync, openSync, readdirSync, readlinkSync, symlinkSync, utimesSync, writeFileSync, writeSync, ftruncateSync } from 'node:fs';
import { join } from 'node:path';
import { Rng, requireTool, runOk, seededBytes } from './index.ts';

/** What a source tree holds besides plain files and directories. */
export interface TreeOptions {
  /** Symlinks (fast and slow); FAT has none. */
  symlinks: boolean;
  /** Sparse files with holes; a file larger than 4 GiB when `hugeSparse`. */
  sparse: boolean;
  hugeSparse?: boolean;
  /** Files in the one big directory (enough for an htree on ext with 4 KiB blocks). */
  manyFiles: number;
  /** Depth of the deep directory chain. */
  depth: number;
}

/** Writes a seeded tree of real files under `dir` (which must not exist). */
export function makeTree(dir: string, seed: number, o: TreeOptions): void {
  const rng = new Rng(seed);
  mkdirSync(dir);
  const file = (path: string, size: number) => writeFileSync(path, seededBytes(seed, path.slice(dir.length), size));
  // Sizes around block and cluster boundaries, and a few larger ones spanning chunks.
  const sizes = [0, 1, 511, 512, 513, 4095, 4096, 4097, 65536, 65537, 200_000, 1_000_003];
  sizes.forEach((size, i) => file(join(dir, `size-${i}.bin`), size));
  file(join(dir, 'small.txt'), 100);
  mkdirSync(join(dir, 'empty-dir'));
  let deep = join(dir, 'deep');
  mkdirSync(deep);
  for (let d = 0; d < o.depth; d++) {
    deep = join(deep, `level-${d}`);
    mkdirSync(deep);
    if (d % 5 === 0) file(join(deep, `at-${d}.txt`), 10 + rng.int(5000));
  }
  const many = join(dir, 'many');
  mkdirSync(many);
  for (let i = 0; i < o.manyFiles; i++) file(join(many, `file-with-a-longish-name-${String(i).padStart(5, '0')}.dat`), rng.int(3000));
  const uni = join(dir, 'ünïcødé ✓ dir');
  mkdirSync(uni);
  file(join(uni, 'Grüße aus Köln.txt'), 1234);
  file(join(uni, '日本語のファイル名.txt'), 77);
  file(join(uni, 'ελληνικά και ще.bin'), 5000);
  if (o.symlinks) {
    symlinkSync('small.txt', join(dir, 'fast-link'));
    symlinkSync('deep/' + Array.from({ length: 8 }, (_, i) => `level-${i}`).join('/') + '/far-away-target-name', join(dir, 'slow-link'));
    symlinkSync('../small.txt', join(uni, 'link ✓'));
  }
  if (o.sparse) {
    const sparse = (name: string, size: number, writes: number[]) => {
      const fd = openSync(join(dir, name), 'w');
      ftruncateSync(fd, size);
      for (const at of writes) writeSync(fd, seededBytes(seed, `${name}@${at}`, 5000), 0, 5000, at);
      closeSync(fd);
    };
    sparse('sparse.bin', 3 << 20, [0, 1 << 20, (3 << 20) - 5000]);
    sparse('hole-at-start.bin', 2 << 20, [(1 << 20) + 12345]);
    if (o.hugeSparse) sparse('huge-sparse.bin', 5 * 2 ** 30 + 4321, [100, 2 ** 32 + 8192, 5 * 2 ** 30 + 4321 - 5000]);
  }
  // Fixed times, some before 1980 would not fit FAT: keep them after 2000.
  utimesSync(join(dir, 'small.txt'), 1_000_000_000, 1_234_567_890);
}

/** One path of a tree as the comparison sees it. */
export interface TreeEntry {
  type: 'f' | 'd' | 'l';
  mode: number;
  uid: number;
  gid: number;
  sizeBytes: number;
  mtimeMs: number;
  target: string | null;
}

/** The real walk of a tree: path (from `/`) → entry. */
export function walkTree(dir: string): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  const visit = (abs: string, rel: string) => {
    for (const name of readdirSync(abs)) {
      const p = join(abs, name);
      const r = `${rel}/${name}`;
      const st = lstatSync(p);
      const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : 'f';
      out.set(r, { type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, sizeBytes: type === 'f' ? st.size : 0, mtimeMs: st.mtimeMs, target: type === 'l' ? readlinkSync(p) : null });
      if (type === 'd') visit(p, r);
    }
  };
  visit(dir, '');
  return out;
}

/** Makes an ext2/3/4 image of `src` with mkfs.`kind` -d and extra mkfs options. */
export async function makeExtImage(image: string, src: string, kind: 'ext2' | 'ext3' | 'ext4', size: string, options: string[] = []): Promise<void> {
  requireTool(`mkfs.${kind}`, 'e2fsprogs');
  await runOk(`mkfs.${kind}`, ['-q', '-F', ...options, '-d', src, image, size]);
}

/** Makes a FAT image of `src` (no symlinks) with mkfs.vfat and mcopy; times read as UTC. */
export async function makeFatImage(image: string, src: string, fatBits: 12 | 16 | 32, sizeKiB: number, options: string[] = []): Promise<void> {
  requireTool('mkfs.vfat', 'dosfstools');
  requireTool('mcopy', 'mtools');
  await runOk('mkfs.vfat', ['-C', '-F', String(fatBits), ...options, image, String(sizeKiB)]);
  const env = { ...process.env, TZ: 'UTC', LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', MTOOLS_SKIP_CHECK: '1' };
  const names = readdirSync(src).map((n) => join(src, n));
  await runOk('mcopy', ['-s', '-p', '-m', '-i', image, ...names, '::/'], { env });
}

/** Writes a disk image of `sizeBytes` with a partition table (sfdisk script) and copies partition images in. */
export async function makePartitionedImage(image: string, sizeBytes: number, script: string, parts: { image: string; startSector: number }[]): Promise<void> {
  requireTool('sfdisk', 'fdisk');
  const fd = openSync(image, 'w');
  ftruncateSync(fd, sizeBytes);
  closeSync(fd);
  await runOk('sfdisk', ['--no-reread', '--no-tell-kernel', '-q', image], { input: script });
  for (const p of parts) await runOk('dd', [`if=${p.image}`, `of=${image}`, 'bs=512', `seek=${p.startSector}`, 'conv=notrunc,sparse', 'status=none']);
}
