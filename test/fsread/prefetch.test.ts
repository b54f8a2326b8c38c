/**
 * ext prefetch: before a walk, the inode tables and the blocks of directories, long symlinks and
 * extent trees are read in a few large reads. The walk must then find (nearly) everything in
 * memory, and list exactly what it lists without the prefetch.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { openFilesystem, walk, type ByteSource, type ListedNode } from '../../src/fsread/index.ts';
import { bufferSource } from '../../src/fsread/source.ts';
import type { ReadHint } from '../../src/fsread/source.ts';
import { join } from 'node:path';
import { cleanup, makeTempDir, testSeed } from '../helpers/index.ts';
import { makeExtImage, makeTree } from '../helpers/fs-images.ts';

after(cleanup);

/** A source counting the reads that reach it, bulk (uncached) and piecemeal. */
function counting(source: ByteSource): ByteSource & { bulk: number; piecemeal: number } {
  const out = {
    sizeBytes: source.sizeBytes,
    bulk: 0,
    piecemeal: 0,
    read(offset: number, length: number, hint?: ReadHint) {
      if (hint?.uncached) out.bulk++;
      else out.piecemeal++;
      return source.read(offset, length);
    },
  };
  return out;
}

async function listing(source: ByteSource, prefetch: boolean): Promise<string[]> {
  const fs = (await openFilesystem(source))!;
  if (!prefetch) fs.prefetch = undefined;
  const out: string[] = [];
  await walk(fs, async (dir, entries: ListedNode[]) => {
    for (const e of entries) out.push(`/${[...dir, e.name].join('/')} ${e.type} ${e.sizeBytes} ${e.target ?? ''} ${e.extents?.join(',') ?? ''}`);
  });
  return out;
}

test('an ext4 walk after the prefetch reads almost nothing more, and lists the same', async (t) => {
  const dir = makeTempDir('tessera-prefetch-');
  const src = join(dir, 'tree');
  // Many directories, a big one (an htree with an extent tree), slow symlinks, sparse files.
  makeTree(src, testSeed(t), { symlinks: true, sparse: true, manyFiles: 3000, depth: 40 });
  const image = join(dir, 'fs.raw');
  await makeExtImage(image, src, 'ext4', '64M');
  const bytes = bufferSource(readFileSync(image));

  const plain = counting(bytes);
  const without = await listing(plain, false);
  const ahead = counting(bytes);
  const withPrefetch = await listing(ahead, true);
  assert.deepEqual(withPrefetch, without);
  t.diagnostic(`reads without prefetch: ${plain.piecemeal}; with: ${ahead.bulk} bulk, then ${ahead.piecemeal} piecemeal`);
  assert.ok(plain.piecemeal > 50, `the walk alone makes many small reads (${plain.piecemeal})`);
  // The superblock and group descriptors are read before the prefetch; the walk adds a few reads at most.
  assert.ok(ahead.piecemeal <= 16, `after the prefetch the walk read ${ahead.piecemeal} more times`);
  assert.ok(ahead.bulk < plain.piecemeal / 4, `${ahead.bulk} bulk reads replace ${plain.piecemeal} small ones`);
});
