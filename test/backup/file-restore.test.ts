/**
 * File-level restore: images of real trees (ext2/3/4 with and without extents, 64bit, inline
 * data, 1 KiB blocks, files over 4 GiB; FAT12/16/32 with long names; MBR and GPT disks) are backed
 * up with backup file; the catalog must list exactly the source tree and every file must read
 * back byte-exact, through only the blobs it needs.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { Catalog, IndexCache, Repository, WorkerPool, backupFile, prune, readCatalogFile, verify, type CatalogEntry, type Snapshot } from '../../src/backup/index.ts';
import { BackupWriter } from '../../src/backup/writer.ts';
import { readPackHeader } from '../../src/backup/pack.ts';
import { type ByteRange } from '../../src/objstore/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { cleanup, testSeed } from '../helpers/index.ts';
import { makeExtImage, makeFatImage, makePartitionedImage, makeTree, walkTree, type TreeEntry } from '../helpers/fs-images.ts';
import { scanIndex, scanMap } from '../../src/backup/scan.ts';
import { assertFailure, cliBytes as cliBytesIn, cliEnv, join, makeTempDir, openTestRepo, password, smallRepo } from './harness.ts';

after(cleanup);

/** A directory backend that records every get. */
class CountingBackend extends DirBackend {
  gets: { path: string; range?: ByteRange }[] = [];
  override async get(path: string, range?: ByteRange): Promise<Buffer> {
    this.gets.push({ path, range });
    return super.get(path, range);
  }
}

interface Ctx {
  dir: string;
  cacheDir: string;
  backend: CountingBackend;
  repo: Repository;
  cache: IndexCache;
  pool: WorkerPool;
}

let ctx: Ctx;
let seed: number;
let work: string;

before(async () => {
  seed = testSeed({ diagnostic: (m) => console.log(`# ${m}`) });
  work = makeTempDir('tessera-file-restore-');
  const dir = join(work, 'repo');
  const backend = new CountingBackend(dir);
  const repo = await Repository.init(backend, password, { chunkSizeBytes: 64 * 1024, packSizeTargetBytes: 1 << 20 });
  const cacheDir = makeTempDir('tessera-backup-cache-');
  ctx = { dir, cacheDir, backend, repo, cache: IndexCache.open(repo.id, cacheDir), pool: new WorkerPool(repo.keys, { workers: 2 }) };
});

after(async () => {
  await ctx.pool.close();
  await ctx.cache.close();
});

/** Backs up an image and opens its catalog. */
async function backUp(image: string, name: string): Promise<{ id: string; snapshot: Snapshot; catalog: Catalog }> {
  const r = await backupFile(ctx, image, { name });
  assert.ok(r.snapshot.catalog !== null, 'the restore point has a catalog');
  const snap = await ctx.repo.readSnapshot(r.id);
  assert.ok(snap.catalog?.equals(r.snapshot.catalog!), 'the stored restore point names the catalog');
  await ctx.cache.sync(ctx.repo);
  return { id: r.id, snapshot: snap, catalog: await Catalog.open(ctx, snap, r.id) };
}

/** Every entry under `dir` of a catalog, by path relative to `dir`. */
async function catalogTree(cat: Catalog, dir: string): Promise<Map<string, CatalogEntry>> {
  const out = new Map<string, CatalogEntry>();
  const visit = async (path: string, rel: string) => {
    const listing = await cat.listing(path);
    assert.ok(listing !== null, `the catalog has a listing of ${path}`);
    for (const e of listing) {
      const p = path === '/' ? `/${e.name}` : `${path}/${e.name}`;
      out.set(`${rel}/${e.name}`, e);
      if (e.type === 'd') await visit(p, `${rel}/${e.name}`);
    }
  };
  await visit(dir, '');
  return out;
}

/** Reads a file of the catalog and compares it, piece by piece, with the source file. */
async function assertSameBytes(snapshot: Snapshot, entry: CatalogEntry, source: string): Promise<void> {
  const fh = await open(source, 'r');
  try {
    let pos = 0;
    await readCatalogFile(ctx, snapshot, entry, async (bytes) => {
      const expected = Buffer.alloc(bytes.length);
      const { bytesRead } = await fh.read(expected, 0, bytes.length, pos);
      assert.equal(bytesRead, bytes.length, `${source}: more bytes than the file has at ${pos}`);
      if (!expected.equals(bytes)) assert.fail(`${source}: bytes differ in ${pos}-${pos + bytes.length}`);
      pos += bytes.length;
    });
    assert.equal(pos, (await fh.stat()).size, `${source}: length`);
  } finally {
    await fh.close();
  }
}

/**
 * Compares the catalog under `dir` with the real tree at `src`: same paths, types, sizes,
 * targets; ext also modes, owners and times to the second, FAT times to 2 s; then every file's bytes.
 */
async function assertCatalogMatches(cat: Catalog, snapshot: Snapshot, dir: string, src: string, fs: 'ext' | 'fat'): Promise<void> {
  const real = walkTree(src);
  const got = await catalogTree(cat, dir);
  if (fs === 'ext') {
    assert.equal(got.get('/lost+found')?.type, 'd', 'lost+found');
    got.delete('/lost+found');
  }
  assert.deepEqual([...got.keys()].sort(), [...real.keys()].sort(), 'the catalog lists exactly the source tree');
  for (const [path, r] of real) {
    const e = got.get(path)!;
    const what = `${dir} ${path}`;
    assert.equal(e.type, r.type, `type of ${what}`);
    if (r.type === 'f') assert.equal(e.sizeBytes, r.sizeBytes, `size of ${what}`);
    assert.equal(e.target, r.target, `target of ${what}`);
    if (fs === 'ext') {
      assert.deepEqual([e.mode, e.uid, e.gid], [r.mode, r.uid, r.gid], `mode and owner of ${what}`);
      assert.equal(Math.floor(e.mtimeMs / 1000), Math.floor(r.mtimeMs / 1000), `mtime of ${what}`);
    } else if (r.type === 'f') {
      assert.ok(Math.abs(e.mtimeMs - r.mtimeMs) <= 2000, `mtime of ${what}: ${e.mtimeMs} vs ${r.mtimeMs}`);
    }
  }
  for (const [path, r] of real) if (r.type === 'f') await assertSameBytes(snapshot, got.get(path)!, join(src, path));
}

/** The kind (0 data, 1 meta) of each pack of the repository. */
async function packKinds(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const o of await ctx.backend.list('data/')) {
    const hex = o.path.slice(o.path.lastIndexOf('/') + 1);
    const entries = await readPackHeader(ctx.backend, ctx.repo.keys, hex, o.sizeBytes);
    out.set(o.path, entries[0].type);
  }
  return out;
}

/** Runs the CLI in this process with a binary stdout. */
const cliBytes = (args: string[]) => cliBytesIn(args, cliEnv(ctx.cacheDir));

describe('file-level restore from ext images', () => {
  let src: string;
  const trees = new Map<string, string>();

  before(() => {
    src = join(work, 'tree-ext');
    makeTree(src, seed, { symlinks: true, sparse: true, manyFiles: 600, depth: 40 });
    trees.set('plain', src);
    trees.set('huge', join(work, 'tree-ext-huge'));
    makeTree(trees.get('huge')!, seed + 10, { symlinks: true, sparse: true, hugeSparse: true, manyFiles: 20, depth: 3 });
    // mke2fs 1.47.0 -d with inline_data drops a sparse file's trailing hole (debugfs shows the
    // short size too), so that image is made of a tree without sparse files.
    trees.set('dense', join(work, 'tree-ext-dense'));
    makeTree(trees.get('dense')!, seed + 11, { symlinks: true, sparse: false, manyFiles: 600, depth: 10 });
  });

  const variants: { name: string; kind: 'ext2' | 'ext3' | 'ext4'; size: string; options: string[]; expect: string; tree: string }[] = [
    { name: 'ext4 with 64bit, 4 KiB blocks, extents, htree', kind: 'ext4', size: '96M', options: ['-b', '4096', '-O', '64bit'], expect: 'ext4', tree: 'plain' },
    { name: 'ext4 with a sparse file over 4 GiB', kind: 'ext4', size: '16M', options: [], expect: 'ext4', tree: 'huge' },
    { name: 'ext4 without extents (block maps to triple indirect), 1 KiB blocks, a file over 4 GiB', kind: 'ext4', size: '16M', options: ['-b', '1024', '-O', '^extent,^64bit,^flex_bg'], expect: 'ext4', tree: 'huge' },
    { name: 'ext4 with inline data', kind: 'ext4', size: '96M', options: ['-O', 'inline_data', '-I', '256'], expect: 'ext4', tree: 'dense' },
    { name: 'ext3', kind: 'ext3', size: '96M', options: [], expect: 'ext3', tree: 'plain' },
    { name: 'ext2 with 2 KiB blocks', kind: 'ext2', size: '96M', options: ['-b', '2048'], expect: 'ext2', tree: 'plain' },
  ];
  for (const v of variants) {
    test(`${v.name}: the catalog lists the source tree and every file reads back byte-exact`, async () => {
      const image = join(work, `${v.name.replace(/\W+/g, '-')}.img`);
      const src = trees.get(v.tree)!;
      await makeExtImage(image, src, v.kind, v.size, v.options);
      const { snapshot, catalog } = await backUp(image, 'ext');
      assert.equal(catalog.root.table, null);
      assert.equal(catalog.root.volumes.length, 1);
      const vol = catalog.root.volumes[0];
      assert.deepEqual([vol.path, vol.fs, vol.status, vol.error], ['/', v.expect, 'ok', null]);
      if (v.options.includes('inline_data')) {
        // Small files live in the inode: their extents point into the inode table, not past it.
        const small = await catalog.stat('/size-1.bin');
        assert.equal(small.extents!.length, 3);
      }
      await assertCatalogMatches(catalog, snapshot, '/', src, 'ext');
    });
  }

  test('cat of a small file reads the catalog, one map blob and one data blob; ls reads no data blob', async () => {
    const image = join(work, 'count.img');
    await makeExtImage(image, src, 'ext4', '96M');
    const { snapshot, catalog } = await backUp(image, 'count');
    const kinds = await packKinds();
    const dataGets = () => ctx.backend.gets.filter((g) => kinds.get(g.path) === 0).length;

    ctx.backend.gets = [];
    const cat = await Catalog.open(ctx, snapshot, 'x');
    const many = await cat.list('/many');
    assert.equal(many.entries.length, 600);
    await cat.list('/deep/level-0/level-1');
    assert.ok(ctx.backend.gets.length > 0);
    assert.equal(dataGets(), 0, 'ls reads no data blob');
    assert.ok(ctx.backend.gets.every((g) => g.range !== undefined && g.path.startsWith('data/')), 'only ranged blob reads');

    const entry = await catalog.stat('/small.txt');
    ctx.backend.gets = [];
    const got: Buffer[] = [];
    const r = await readCatalogFile(ctx, snapshot, entry, async (b) => void got.push(Buffer.from(b)));
    assert.ok(Buffer.concat(got).equals(await readFile(join(src, 'small.txt'))));
    assert.equal(r.chunksRead, 1);
    assert.equal(dataGets(), 1, 'one data blob');
    assert.equal(ctx.backend.gets.length, 2, 'the map blob and the data blob (the catalog was read already)');
    assert.ok(ctx.backend.gets.every((g) => g.range !== undefined && g.range.length < 80 * 1024), 'each read is one blob');
    assert.ok(snapshot.sizeBytes / snapshot.chunkSizeBytes > 1000, 'the image has many chunks');
  });

  test('CLI: backup ls (text, --long, --json), cat, restore-file, and one-line errors', async () => {
    const image = join(work, 'cli.img');
    await makeExtImage(image, src, 'ext4', '96M');
    const repoArgs = ['--repo', ctx.dir];
    const b = await cliBytes(['backup', 'file', image, '--name', 'cli', '--json', ...repoArgs]);
    assert.equal(b.code, 0, b.stderr);
    const id = JSON.parse(b.stdout.toString()).id as string;

    const ls = await cliBytes(['backup', 'ls', id.slice(0, 8), ...repoArgs]);
    assert.equal(ls.code, 0, ls.stderr);
    const names = walkTree(src);
    const top = [...names.keys()].filter((p) => p.lastIndexOf('/') === 0).map((p) => (names.get(p)!.type === 'd' ? `${p.slice(1)}/` : p.slice(1)));
    assert.deepEqual(ls.stdout.toString().trimEnd().split('\n').sort(), [...top, 'lost+found/'].sort());

    const long = (await cliBytes(['backup', 'ls', id, '/', '--long', ...repoArgs])).stdout.toString();
    assert.match(long, /^MODE +UID +GID +SIZE +MTIME +NAME\n/);
    assert.match(long, /\n-rw-r--r-- +0 +0 +100 +2009-02-13T23:31:30Z +small\.txt\n/);
    assert.match(long, /\nlrwxrwxrwx .* fast-link -> small\.txt\n/);
    const json = JSON.parse((await cliBytes(['backup', 'ls', id, '/ünïcødé ✓ dir', '--json', ...repoArgs])).stdout.toString());
    assert.deepEqual(json.map((e: { name: string }) => e.name), ['Grüße aus Köln.txt', 'link ✓', 'ελληνικά και ще.bin', '日本語のファイル名.txt']);
    assert.equal(json[0].path, '/ünïcødé ✓ dir/Grüße aus Köln.txt');
    assert.equal(json[0].sizeBytes, 1234);
    const one = JSON.parse((await cliBytes(['backup', 'ls', id, 'small.txt', '--json', ...repoArgs])).stdout.toString());
    assert.deepEqual([one.length, one[0].path], [1, '/small.txt']);

    const cat = await cliBytes(['backup', 'cat', id, '/size-11.bin', ...repoArgs]);
    assert.equal(cat.code, 0, cat.stderr);
    assert.ok(cat.stdout.equals(await readFile(join(src, 'size-11.bin'))));
    const empty = await cliBytes(['backup', 'cat', id, '/size-0.bin', ...repoArgs]);
    assert.deepEqual([empty.code, empty.stdout.length], [0, 0]);

    const fail = async (args: string[], code: number, pattern: RegExp) => {
      const o = await cliBytes([...args, ...repoArgs]);
      assertFailure({ code: o.code, stdout: o.stdout.toString(), stderr: o.stderr }, code, pattern);
    };
    await fail(['backup', 'cat', id, '/deep'], 1, /\/deep is a directory$/);
    await fail(['backup', 'cat', id, '/no/such/file'], 1, /No \/no\/such\/file in the catalog/);
    await fail(['backup', 'ls', id, '/nothing-here'], 1, /No \/nothing-here in the catalog/);
    await fail(['backup', 'cat', id, '/fast-link'], 1, /not a regular file \(a symlink to small\.txt\)/);
    await fail(['backup', 'ls', id, '/a/../b'], 2, /'\.\.' is not allowed/);
    await fail(['backup', 'restore-file', id, '/deep'], 2, /missing --to DIR/);

    // A restore point made without a catalog (as by older code).
    const w = new BackupWriter(ctx, 4096);
    await ctx.cache.sync(ctx.repo);
    w.putZero(0);
    const plain = await w.finish({ kind: 'file', name: 'no-catalog', source: { path: '/x' } });
    await fail(['backup', 'ls', plain.id], 1, new RegExp(`Restore point ${plain.id.slice(0, 8)} has no file catalog`));
    await fail(['backup', 'cat', plain.id, '/x'], 1, /has no file catalog/);

    // restore-file of a subtree and of a file: bytes, modes, times, symlinks.
    const to = makeTempDir('tessera-restore-file-');
    const rf = await cliBytes(['backup', 'restore-file', id, '/ünïcødé ✓ dir', '--to', to, ...repoArgs]);
    assert.equal(rf.code, 0, rf.stderr);
    assert.match(rf.stdout.toString(), /: 3 files \(.*\), 1 directories, 1 symlinks\n$/);
    const restored = walkTree(join(to, 'ünïcødé ✓ dir'));
    const original = walkTree(join(src, 'ünïcødé ✓ dir'));
    const strip = (m: Map<string, TreeEntry>) => new Map([...m].map(([k, v]) => [k, { ...v, mtimeMs: Math.floor(v.mtimeMs / 1000) }]));
    assert.deepEqual(strip(restored), strip(original));
    for (const [p, e] of original) if (e.type === 'f') assert.ok((await readFile(join(to, 'ünïcødé ✓ dir', p))).equals(await readFile(join(src, 'ünïcødé ✓ dir', p))));
    await fail(['backup', 'restore-file', id, '/ünïcødé ✓ dir', '--to', to], 1, /exists already/);
    const deep = await cliBytes(['backup', 'restore-file', id, '/deep', '--to', to, ...repoArgs]);
    assert.equal(deep.code, 0, deep.stderr);
    assert.deepEqual([...walkTree(join(to, 'deep')).keys()].sort(), [...walkTree(join(src, 'deep')).keys()].sort());
  });
});

describe('file-level restore from FAT images', () => {
  let src: string;
  before(() => {
    src = join(work, 'tree-fat');
    makeTree(src, seed + 1, { symlinks: false, sparse: false, manyFiles: 300, depth: 12 });
  });

  const variants: { bits: 12 | 16 | 32; sizeKiB: number; options: string[] }[] = [
    { bits: 12, sizeKiB: 16000, options: ['-s', '8'] },
    { bits: 16, sizeKiB: 32768, options: [] },
    { bits: 32, sizeKiB: 66000, options: ['-s', '1'] },
  ];
  for (const v of variants) {
    test(`FAT${v.bits} with long names: the catalog lists the source tree and every file reads back byte-exact`, async () => {
      const image = join(work, `fat${v.bits}.img`);
      await makeFatImage(image, src, v.bits, v.sizeKiB, v.options);
      const { snapshot, catalog } = await backUp(image, `fat${v.bits}`);
      const vol = catalog.root.volumes[0];
      assert.deepEqual([catalog.root.table, vol.path, vol.fs, vol.status], [null, '/', `fat${v.bits}`, 'ok']);
      await assertCatalogMatches(catalog, snapshot, '/', src, 'fat');
    });
  }
});

describe('file-level restore from partitioned disks', () => {
  test('an MBR disk with ext4 (primary) and FAT16 (logical) partitions: /p1 and /p5', async () => {
    const srcA = join(work, 'tree-mbr-a');
    const srcB = join(work, 'tree-mbr-b');
    makeTree(srcA, seed + 2, { symlinks: true, sparse: true, manyFiles: 50, depth: 5 });
    makeTree(srcB, seed + 3, { symlinks: false, sparse: false, manyFiles: 50, depth: 5 });
    const ext = join(work, 'mbr-p1.img');
    const fat = join(work, 'mbr-p5.img');
    await makeExtImage(ext, srcA, 'ext4', '24M');
    await makeFatImage(fat, srcB, 16, 20 * 1024);
    const mib = 2048; // sectors
    const script = ['label: dos', `start=${mib}, size=${24 * mib}, type=83`, `start=${26 * mib}, size=${22 * mib}, type=5`, `start=${27 * mib}, size=${20 * mib}, type=6`, ''].join('\n');
    const disk = join(work, 'mbr.img');
    await makePartitionedImage(disk, 50 << 20, script, [
      { image: ext, startSector: mib },
      { image: fat, startSector: 27 * mib },
    ]);
    const { snapshot, catalog } = await backUp(disk, 'mbr');
    assert.equal(catalog.root.table, 'mbr');
    assert.deepEqual(
      catalog.root.volumes.map((v) => [v.path, v.fs, v.status, v.partition?.startBytes, v.partition?.type]),
      [
        ['/p1', 'ext4', 'ok', 1 << 20, '83'],
        ['/p5', 'fat16', 'ok', 27 << 20, '06'],
      ],
    );
    assert.deepEqual((await catalog.list('/')).entries.map((e) => [e.name, e.type]), [['p1', 'd'], ['p5', 'd']]);
    await assertCatalogMatches(catalog, snapshot, '/p1', srcA, 'ext');
    await assertCatalogMatches(catalog, snapshot, '/p5', srcB, 'fat');
  });

  test('a GPT disk with an ext2 partition and an unformatted one', async () => {
    const src = join(work, 'tree-gpt');
    makeTree(src, seed + 4, { symlinks: true, sparse: true, manyFiles: 20, depth: 3 });
    const ext = join(work, 'gpt-p2.img');
    await makeExtImage(ext, src, 'ext2', '16M');
    const mib = 2048;
    const script = ['label: gpt', `start=${mib}, size=${4 * mib}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4`, `start=${6 * mib}, size=${16 * mib}`, ''].join('\n');
    const disk = join(work, 'gpt.img');
    await makePartitionedImage(disk, 24 << 20, script, [{ image: ext, startSector: 6 * mib }]);
    const { snapshot, catalog } = await backUp(disk, 'gpt');
    assert.equal(catalog.root.table, 'gpt');
    assert.deepEqual(catalog.root.volumes.map((v) => [v.path, v.fs, v.status]), [['/p1', null, 'unrecognised'], ['/p2', 'ext2', 'ok']]);
    await assertCatalogMatches(catalog, snapshot, '/p2', src, 'ext');
    const id = (await ctx.repo.listSnapshots()).find((e) => e.snapshot.name === 'gpt')!.id;
    const ls = await cliBytes(['backup', 'ls', id, '/p1', '--repo', ctx.dir]);
    assert.equal(ls.code, 0, ls.stderr);
    assert.equal(ls.stdout.length, 0);
    assert.match(ls.stderr, /^tessera: note: partition 1 holds no filesystem Tessera reads/);
  });

  test('an image with no filesystem has a catalog that says so', async () => {
    const image = join(work, 'random.img');
    writeFileSync(image, Buffer.alloc(256 * 1024, 0x5a));
    const { catalog } = await backUp(image, 'nofs');
    assert.deepEqual(catalog.root.volumes.map((v) => [v.path, v.fs, v.status]), [['/', null, 'unrecognised']]);
    assert.deepEqual((await catalog.list('/')).entries, []);
  });
});

describe('file catalogs under prune and verify', () => {
  test('a restore point references its catalog root and parts: prune keeps them, verify checks them', async () => {
    const src = join(work, 'tree-prune');
    makeTree(src, seed + 5, { symlinks: true, sparse: false, manyFiles: 3000, depth: 3 });
    const image = join(work, 'prune.img');
    await makeExtImage(image, src, 'ext4', '64M');
    const r = await openTestRepo(join(work, 'prune-repo'), { init: smallRepo });
    try {
      const b = await backupFile(r, image, { name: 'prune' });
      await r.cache.sync(r.repo);
      const cat = await Catalog.open(r, b.snapshot, b.id);
      assert.ok(cat.root.parts.length >= 2, `a large directory spans parts (${cat.root.parts.length})`);
      const scan = await scanMap(r.repo, r.pool, await scanIndex(r.repo), b.snapshot);
      assert.deepEqual(scan.faults, []);
      for (const id of [b.snapshot.catalog!, ...cat.root.parts.map((p) => p.id)]) assert.ok(scan.blobs.has(id.toString('hex')), `catalog blob ${id.toString('hex')} is referenced`);

      // Two prunes with no grace: a mark, then its sweep; nothing of the restore point goes.
      await prune(r, { graceMs: 0 });
      await prune(r, { graceMs: 0 });
      const report = await verify(r, { readData: true });
      assert.deepEqual(report.faults, []);
      const fresh = await openTestRepo(r.dir, {});
      try {
        await fresh.cache.sync(fresh.repo);
        const again = await Catalog.open(fresh, b.snapshot, b.id);
        assert.equal((await again.list('/many')).entries.length, 3000);
        const entry = await again.stat('/many/file-with-a-longish-name-02999.dat');
        const got: Buffer[] = [];
        await readCatalogFile(fresh, b.snapshot, entry, async (bytes) => void got.push(Buffer.from(bytes)));
        assert.ok(Buffer.concat(got).equals(await readFile(join(src, 'many/file-with-a-longish-name-02999.dat'))));
      } finally {
        await fresh.close();
      }
    } finally {
      await r.close();
    }
  });
});
