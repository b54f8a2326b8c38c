import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { after, test } from 'node:test';
import { backupFile, restoreToFile, verify } from '../../src/backup/index.ts';
import { fileURLToPath } from 'node:url';
import { cleanup, requireTool, runOk, testSeed } from '../helpers/index.ts';
import { assertSameFile, cli, cliEnv, join, makeTempDir, openTestRepo, packBytes, smallRepo, tessera, writeSeededImage } from './harness.ts';

after(cleanup);

test('backup file then restore gives back every byte of seeded images with holes, zero and repeated chunks', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-backup-rt-');
  const r = await openTestRepo(join(dir, 'repo'), { init: smallRepo });
  try {
    for (let round = 0; round < 4; round++) {
      const image = join(dir, `image-${round}`);
      writeSeededImage(image, seed + round, { chunks: 40 + round * 17, chunkSizeBytes: smallRepo.chunkSizeBytes!, tailCutBytes: round === 1 ? 0 : 1000 * round + 1 });
      const b = await backupFile(r, image, { name: `img${round}`, inFlightBytesMax: 256 * 1024 });
      const out = join(dir, `restored-${round}`);
      await restoreToFile(r, b.snapshot, out, { readsMax: 3, inFlightBytesMax: 512 * 1024, gapBytesMax: round * 64 * 1024 });
      assertSameFile(out, image);
      const s = b.snapshot.stats;
      assert.equal(s.chunksNew + s.chunksReused + s.chunksZero, Math.ceil(statSync(image).size / smallRepo.chunkSizeBytes!));
      // Zero chunks are holes in the restored file: it allocates no more than the data it holds.
      const st = statSync(out);
      assert.ok(st.blocks * 512 <= (s.chunksNew + s.chunksReused) * smallRepo.chunkSizeBytes! + 8192, `restored file allocates ${st.blocks * 512} bytes`);
    }
    const report = await verify(r, { readData: true });
    assert.deepEqual(report.faults, []);
    assert.equal(report.restorePoints, 4);
  } finally {
    await r.close();
  }
});

test('backup file of an unchanged image stores nothing new; a changed chunk stores about one chunk', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-backup-dedup-');
  const r = await openTestRepo(join(dir, 'repo'), { init: smallRepo });
  try {
    const image = join(dir, 'image');
    writeSeededImage(image, seed, { chunks: 64, chunkSizeBytes: smallRepo.chunkSizeBytes! });
    const first = await backupFile(r, image, { name: 'img' });
    const bytesAfterFirst = await packBytes(r.dir);
    const second = await backupFile(r, image, { name: 'img' });
    assert.equal(second.snapshot.stats.chunksNew, 0);
    assert.equal(second.snapshot.stats.bytesStored, 0);
    assert.equal(second.snapshot.stats.chunksReused, first.snapshot.stats.chunksNew + first.snapshot.stats.chunksReused);
    assert.equal(await packBytes(r.dir), bytesAfterFirst, 'no pack was added');
    assert.deepEqual(second.snapshot.map, first.snapshot.map, 'the same map blobs');

    // Overwrite one chunk with new random bytes: one data blob and one map blob are new.
    const { openSync, writeSync, closeSync } = await import('node:fs');
    const fd = openSync(image, 'r+');
    writeSync(fd, Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7 + seed) & 255)), 0, 4096, 5 * smallRepo.chunkSizeBytes! + 100);
    closeSync(fd);
    const third = await backupFile(r, image, { name: 'img' });
    assert.equal(third.snapshot.stats.chunksNew, 1);
    assert.ok((await packBytes(r.dir)) - bytesAfterFirst < 2 * smallRepo.chunkSizeBytes!, 'about one chunk and one map blob added');
    const out = join(dir, 'restored');
    await restoreToFile(r, third.snapshot, out);
    assertSameFile(out, image);
  } finally {
    await r.close();
  }
});

test('two concurrent backup file runs into one repository both restore exactly and verify clean', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-backup-conc-');
  const repoDir = join(dir, 'repo');
  const cacheDir = makeTempDir('tessera-backup-cache-');
  const env = cliEnv(cacheDir);
  assert.equal((await cli(['backup', 'init', '--repo', repoDir, '--chunk-size', '64K'], env)).code, 0);
  // Overlapping content: the two images share about half their chunks.
  const a = join(dir, 'a');
  const b = join(dir, 'b');
  writeSeededImage(a, seed, { chunks: 300, chunkSizeBytes: 64 * 1024 });
  writeSeededImage(b, seed, { chunks: 300, chunkSizeBytes: 64 * 1024, tailCutBytes: 5 });
  const { openSync, writeSync, closeSync } = await import('node:fs');
  const fd = openSync(b, 'r+');
  for (let i = 0; i < 300; i += 2) writeSync(fd, Buffer.from(`changed ${i}`), 0, 9, i * 64 * 1024);
  closeSync(fd);
  // Separate caches, as on two hosts, and one shared: both must work.
  const [ra, rb] = await Promise.all([
    tessera(['backup', 'file', a, '--repo', repoDir, '--name', 'a', '--json'], env),
    tessera(['backup', 'file', b, '--repo', repoDir, '--name', 'b', '--json'], cliEnv(makeTempDir('tessera-backup-cache-'))),
  ]);
  assert.equal(ra.code, 0, ra.stderr);
  assert.equal(rb.code, 0, rb.stderr);
  const ids = [JSON.parse(ra.stdout).id as string, JSON.parse(rb.stdout).id as string];
  const v = await cli(['backup', 'verify', '--repo', repoDir, '--read-data'], env);
  assert.equal(v.code, 0, v.stdout + v.stderr);
  for (const [i, image] of [a, b].entries()) {
    const out = join(dir, `out-${i}`);
    const o = await cli(['backup', 'restore', ids[i], '--repo', repoDir, '--to-file', out], env);
    assert.equal(o.code, 0, o.stderr);
    assertSameFile(out, image);
  }
});

test('an ext4 image made by mkfs.ext4 -d from real files restores byte-exact and checks clean with e2fsck', async () => {
  const mkfs = requireTool('mkfs.ext4', 'e2fsprogs');
  const fsck = requireTool('e2fsck', 'e2fsprogs');
  const dir = makeTempDir('tessera-backup-ext4-');
  const image = join(dir, 'ext4.img');
  const source = fileURLToPath(new URL('../../src', import.meta.url));
  await runOk('truncate', ['-s', '48M', image]);
  await runOk(mkfs, ['-q', '-F', '-d', source, image]);
  const r = await openTestRepo(join(dir, 'repo'), { init: { chunkSizeBytes: 256 * 1024 } });
  try {
    const b = await backupFile(r, image, { name: 'ext4' });
    assert.ok(b.snapshot.stats.chunksZero > 0, 'the free space of the filesystem is zero chunks');
    assert.ok(b.snapshot.stats.bytesStored < b.snapshot.stats.bytesNew, 'source text compresses');
    const out = join(dir, 'restored.img');
    await restoreToFile(r, b.snapshot, out);
    assertSameFile(out, image);
    await runOk(fsck, ['-f', '-n', out]);
  } finally {
    await r.close();
  }
});
