/**
 * Restore point files kept in the index cache (Repository.readSnapshots with an ObjectCache):
 * a second listing reads no restore point file, a kept copy that no longer opens is read again,
 * a restore point deleted from the repository leaves the cache, and a damaged file is still
 * reported as damaged when no good copy was kept.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { IndexCache, Repository, WorkerPool, backupFile, format } from '../../src/backup/index.ts';
import type { ByteRange } from '../../src/objstore/index.ts';
import { cleanup, testSeed } from '../helpers/index.ts';
import { ForwardingBackend, join, makeTempDir, password, smallRepo, writeSeededImage } from './harness.ts';

after(cleanup);

/** Counts the reads of restore point files. */
class CountingBackend extends ForwardingBackend {
  snapshotGets = 0;
  protected override _get(path: string, range: ByteRange | undefined): Promise<Buffer> {
    if (path.startsWith(format.layout.snapshots)) this.snapshotGets++;
    return super._get(path, range);
  }
}

test('restore point files kept in the index cache: listed again without reading them, checked on every use, dropped once deleted', async () => {
  const seed = testSeed({ diagnostic: (m) => console.log(m) });
  const dir = makeTempDir('tessera-record-cache-');
  const backend = new CountingBackend(join(dir, 'repo'));
  const repo = await Repository.init(backend, password, smallRepo);
  const cache = IndexCache.open(repo.id, join(dir, 'cache'));
  const pool = new WorkerPool(repo.keys, { workers: 1 });
  try {
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      writeSeededImage(join(dir, `img${i}`), seed + i, { chunks: 4, chunkSizeBytes: smallRepo.chunkSizeBytes! });
      ids.push((await backupFile({ repo, cache, pool }, join(dir, `img${i}`), { name: `img${i}` })).id);
    }
    const names = (r: { snapshots: { snapshot: { name: string } }[] }) => r.snapshots.map((e) => e.snapshot.name);

    backend.snapshotGets = 0;
    assert.deepEqual(names(await repo.readSnapshots({ cache })), ['img0', 'img1', 'img2']);
    assert.equal(backend.snapshotGets, 3, 'the first listing reads every file');
    assert.deepEqual(names(await repo.readSnapshots({ cache })), ['img0', 'img1', 'img2']);
    assert.equal(backend.snapshotGets, 3, 'the second reads none');

    // A kept copy that does not match its name is not used: the file is read again.
    cache.updateObjectFiles(ids, [[ids[1], Buffer.from('not the file')]]);
    assert.deepEqual(names(await repo.readSnapshots({ cache })), ['img0', 'img1', 'img2']);
    assert.equal(backend.snapshotGets, 4);

    // Deleted from the repository: gone from the listing and from the cache.
    await backend.delete(format.layout.snapshots + ids[0]);
    assert.deepEqual(names(await repo.readSnapshots({ cache })), ['img1', 'img2']);
    assert.equal(cache.getObjectFile(ids[0]), undefined);

    // A damaged file is reported whenever no good copy is kept.
    const path = join(dir, 'repo', format.layout.snapshots + ids[2]);
    const bytes = readFileSync(path);
    bytes[40] ^= 0x5a;
    writeFileSync(path, bytes);
    cache.updateObjectFiles([ids[1]], []);
    const r = await repo.readSnapshots({ cache });
    assert.deepEqual(names(r), ['img1']);
    assert.deepEqual(r.damaged.map((d) => d.id), [ids[2]]);
    assert.equal(cache.getObjectFile(ids[2]), undefined, 'a damaged file is not kept');
  } finally {
    await pool.close();
    await cache.close();
  }
});
