/**
 * The filesystem readers on damaged images: seeded random bytes written into the metadata a
 * clean read touches (superblocks, descriptors, inode tables, extent nodes, indirect blocks,
 * directories, FATs, partition tables). Every read must end, in bounded time, either with a
 * listing or with an FsReadError, and the catalog builder must record the damage, not throw.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { buildCatalog } from '../../src/backup/catalog.ts';
import { FsReadError, openFilesystem, partitionSource, readLayout, walk, type ByteSource } from '../../src/fsread/index.ts';
import { bufferSource } from '../../src/fsread/source.ts';
import { join } from 'node:path';
import { cleanup, makeTempDir, Rng, testSeed } from '../helpers/index.ts';
import { makeExtImage, makeFatImage, makePartitionedImage, makeTree } from '../helpers/fs-images.ts';

after(cleanup);

/** Reads everything a catalog reads: the layout, each volume's filesystem, the whole walk with extents. */
async function readAll(source: ByteSource): Promise<number> {
  const layout = await readLayout(source);
  const volumes = layout.table === null ? [source] : layout.partitions.map((p) => partitionSource(source, p));
  let entries = 0;
  for (const v of volumes) {
    const fs = await openFilesystem(v);
    if (fs !== null) entries += (await walk(fs, async () => {})).entries;
  }
  return entries;
}

/** A source that records the ranges read: [offset, length] pairs. */
function recording(bytes: Buffer): { source: ByteSource; ranges: [number, number][] } {
  const ranges: [number, number][] = [];
  const inner = bufferSource(bytes);
  return {
    ranges,
    source: {
      sizeBytes: inner.sizeBytes,
      read: (offset, length) => {
        ranges.push([offset, length]);
        return inner.read(offset, length);
      },
    },
  };
}

const deadlineMs = 10_000;

/** Runs `fn` and fails if it takes longer than the deadline (a hang). */
async function bounded<T>(fn: () => Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not end within ${deadlineMs} ms`)), deadlineMs);
  });
  try {
    return await Promise.race([fn(), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('filesystem readers on damaged images', () => {
  let seed: number;
  const images = new Map<string, Buffer>();

  before(async () => {
    seed = testSeed({ diagnostic: (m) => console.log(`# ${m}`) });
    const work = makeTempDir('tessera-fsread-corrupt-');
    const src = join(work, 'tree');
    makeTree(src, 42, { symlinks: true, sparse: true, manyFiles: 150, depth: 6 });
    const fatSrc = join(work, 'fat-tree');
    makeTree(fatSrc, 43, { symlinks: false, sparse: false, manyFiles: 150, depth: 6 });
    const make = async (name: string, fn: (path: string) => Promise<void>) => {
      const path = join(work, name);
      await fn(path);
      images.set(name, readFileSync(path));
    };
    await make('ext4', (p) => makeExtImage(p, src, 'ext4', '12M', ['-b', '4096']));
    await make('ext2-blockmap-1k', (p) => makeExtImage(p, src, 'ext2', '12M', ['-b', '1024']));
    await make('ext4-inline', (p) => makeExtImage(p, fatSrc, 'ext4', '12M', ['-O', 'inline_data', '-I', '256']));
    await make('fat12', (p) => makeFatImage(p, fatSrc, 12, 8000, ['-s', '4']));
    await make('fat32', (p) => makeFatImage(p, fatSrc, 32, 40000, ['-s', '1']));
    await make('mbr', async (p) => {
      const ext = join(work, 'p1.img');
      const fat = join(work, 'p5.img');
      await makeExtImage(ext, src, 'ext4', '12M');
      await makeFatImage(fat, fatSrc, 16, 8192, ['-s', '1']);
      const script = ['label: dos', 'start=2048, size=24576, type=83', 'start=28672, size=18432, type=5', 'start=30720, size=16384, type=6', ''].join('\n');
      await makePartitionedImage(p, 24 << 20, script, [
        { image: ext, startSector: 2048 },
        { image: fat, startSector: 30720 },
      ]);
    });
  });

  for (const name of ['ext4', 'ext2-blockmap-1k', 'ext4-inline', 'fat12', 'fat32', 'mbr']) {
    test(`${name}: random bytes in its metadata end with a listing or an FsReadError, within ${deadlineMs / 1000} s`, async () => {
      const clean = images.get(name)!;
      const rec = recording(clean);
      const entries = await readAll(rec.source);
      assert.ok(entries > 150, `the clean image reads whole (${entries} entries)`);
      const ranges = rec.ranges.filter(([, length]) => length > 0);
      const total = ranges.reduce((n, [, l]) => n + l, 0);
      const rng = new Rng(seed ^ name.length);
      const outcomes = { ok: 0, typed: 0 };
      const rounds = 120;
      const work = Buffer.from(clean);
      for (let round = 0; round < rounds; round++) {
        // Damage a copy made once, and undo each round's damage afterwards (images are tens of MiB).
        const bytes = work;
        const undo: [number, number][] = [];
        const flips = 1 + rng.int(rng.int(4) === 0 ? 64 : 8);
        for (let f = 0; f < flips; f++) {
          // A position in the read metadata, chosen uniformly over its bytes.
          let at = rng.int(total);
          let i = 0;
          while (at >= ranges[i][1]) at -= ranges[i++][1];
          const pos = ranges[i][0] + at;
          undo.push([pos, bytes[pos]]);
          const kind = rng.int(4);
          if (kind === 0) bytes[pos] = 0xff;
          else if (kind === 1) bytes[pos] = 0;
          else bytes[pos] = rng.int(256);
        }
        const what = `${name}, seed ${seed}, round ${round}`;
        try {
          await bounded(() => readAll(bufferSource(bytes)), what);
          outcomes.ok++;
        } catch (err) {
          if (!(err instanceof FsReadError)) assert.fail(`${what}: ${(err as Error)?.stack ?? String(err)}`);
          outcomes.typed++;
        }
        // The catalog builder records the damage in the volumes instead of throwing.
        const parts: Buffer[] = [];
        const built = await bounded(() => buildCatalog(bufferSource(bytes), async (plain) => (parts.push(plain), Buffer.alloc(32, parts.length))), what);
        assert.ok(built.root.volumes.length >= 1, what);
        for (const v of built.root.volumes) assert.ok(['ok', 'unrecognised', 'damaged'].includes(v.status), what);
        for (const [pos, value] of undo.reverse()) bytes[pos] = value;
      }
      assert.ok(work.equals(clean), 'every round started from the clean image');
      assert.equal(outcomes.ok + outcomes.typed, rounds);
      assert.ok(outcomes.typed > 0, `some damage is found (${JSON.stringify(outcomes)})`);
    });
  }

  test('truncated images are FsReadErrors too', async () => {
    for (const [name, clean] of images) {
      for (const fraction of [0.01, 0.1, 0.3, 0.6, 0.9]) {
        const cut = clean.subarray(0, Math.floor(clean.length * fraction));
        try {
          await bounded(() => readAll(bufferSource(cut)), `${name} cut at ${fraction}`);
        } catch (err) {
          if (!(err instanceof FsReadError)) assert.fail(`${name} cut at ${fraction}: ${(err as Error)?.stack ?? String(err)}`);
        }
      }
    }
  });
});
