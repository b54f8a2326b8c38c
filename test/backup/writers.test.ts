/**
 * Writer markers (docs/backup.md, "Concurrency"): a disk backup's marker names its node snapshot,
 * and the live markers are read so that none is missed when a refresh replaces one mid-read.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Repository } from '../../src/backup/index.ts';
import { type ByteRange } from '../../src/objstore/index.ts';
import { cleanup } from '../helpers/index.ts';
import { ForwardingBackend, join, makeTempDir, openTestRepo, password, smallRepo } from './harness.ts';

after(cleanup);

test('liveWriters sees a marker that its refresh replaced between the listing of writers/ and its read', async () => {
  const dir = join(makeTempDir('tessera-writers-'), 'repo');
  const r = await openTestRepo(dir, { init: smallRepo });
  const stops: { stop(): Promise<void> }[] = [await r.repo.startWriter({ nodeSnapshot: 'backup-held' })];
  let refreshed = false;
  /** Replaces the first marker read, as its writer's refresh does: the new marker first, then the old one goes. */
  class RefreshedWhileRead extends ForwardingBackend {
    protected override async _get(path: string, range: ByteRange | undefined): Promise<Buffer> {
      if (!refreshed && path.startsWith('writers/')) {
        refreshed = true;
        stops.push(await r.repo.startWriter({ nodeSnapshot: 'backup-held' }));
        await this.inner.delete(path);
      }
      return this.inner.get(path, range);
    }
  }
  try {
    const reader = await Repository.open(new RefreshedWhileRead(dir), password);
    const live = await reader.liveWriters();
    assert.ok(refreshed, 'the marker was replaced while it was read');
    assert.deepEqual(live.map((m) => m.nodeSnapshot), ['backup-held'], 'the replacement is found');
    assert.equal((await reader.listWriters()).length, 1);
  } finally {
    for (const s of stops) await s.stop().catch(() => {});
    await r.close();
  }
  assert.deepEqual(await r.repo.liveWriters(), [], 'stopped writers leave no marker');
});
