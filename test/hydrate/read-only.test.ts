/**
 * Instant restores on a node that runs read-only (docs/backup.md, "Instant restore"): unfinished
 * restores are loaded but nothing is written to their state directory (not even for a restore
 * whose disk is gone), their disks are refused (their data is incomplete), and no restore starts,
 * resumes or is cancelled.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Store } from '../../src/engine/index.ts';
import { InstantRestores } from '../../src/hydrate/index.ts';
import { cleanup, makeTempDir, treeState } from '../helpers/index.ts';

after(cleanup);

test('a read-only node loads unfinished instant restores without writing, refuses their disks, and starts, resumes or cancels none', async () => {
  const base = makeTempDir('tessera-hydrate-ro-');
  const storeDir = join(base, 'store');
  let store = await Store.open({ dir: storeDir, maintenanceIntervalMs: 0 });
  const disk = await store.createDisk('r', 1 << 20);
  await store.close();
  const dir = join(base, 'instant-restore');
  fs.mkdirSync(dir);
  const state = { version: 1, repo: '/nowhere', snapshot: 'ab'.repeat(32), imageBytes: 1 << 20, chunkSizeBytes: 65536, startedMs: disk.createdMs - 1 };
  // One whose disk exists, one made before its disk was (no creation time yet), one whose disk is gone.
  fs.writeFileSync(join(dir, 'r.json'), JSON.stringify({ ...state, disk: 'r', diskCreatedMs: disk.createdMs }) + '\n');
  fs.writeFileSync(join(dir, 'gone.json'), JSON.stringify({ ...state, disk: 'gone', diskCreatedMs: null }) + '\n');
  const before = treeState(dir);

  store = await Store.open({ dir: storeDir, readOnly: true });
  const lines: string[] = [];
  const restores = await InstantRestores.open({ store, dir, cacheDir: join(base, 'cache'), log: (m) => lines.push(m), readOnly: true });
  try {
    assert.deepEqual(restores.list().map((i) => [i.disk, i.state]), [['r', 'needs-password']]);
    assert.deepEqual(lines, [
      'hydrate: gone: leaving an unfinished instant restore whose disk is gone',
      'hydrate: r: unfinished instant restore; the node runs read-only, so the disk is refused (its data is incomplete)',
    ]);
    assert.throws(() => restores.openExport('r'), {
      code: 'HYDRATE_NEEDS_PASSWORD',
      message: 'Disk "r" cannot be opened yet: its instant restore is unfinished and the node runs read-only (its data is incomplete until the restore resumes)',
    });
    const refusal = { code: 'ENGINE_READ_ONLY', message: 'The node runs read-only: instant restores do not start, resume or cancel' };
    await assert.rejects(restores.start({ disk: 'new', repo: '/nowhere', snapshot: 'ab', password: 'x', env: {} }), refusal);
    await assert.rejects(restores.resume('r', { password: 'x', env: {} }), refusal);
    await assert.rejects(restores.cancel('r'), refusal);
  } finally {
    await restores.close();
    await store.close();
  }
  assert.deepEqual(treeState(dir), before, 'no state file was written or removed');
  assert.equal(fs.existsSync(join(base, 'cache')), false, 'no cache was made');
});
