import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { WorkerPool, format } from '../../src/backup/index.ts';
import { readPackHeader } from '../../src/backup/pack.ts';
import { sealBlob } from '../../src/backup/crypto.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import type { ObjectSink } from '../../src/objstore/index.ts';
import { PackWriter, type IndexedPack } from '../../src/backup/pack.ts';
import { cleanup, makeTempDir } from '../helpers/index.ts';

after(cleanup);

/** A directory backend whose packs take a while to store, like uploads over a slow network. */
class SlowBackend extends DirBackend {
  protected override _writeObject(dir: string): ObjectSink {
    const inner = super._writeObject(dir);
    return {
      ...inner,
      commit: async (path) => {
        await sleep(30);
        return inner.commit(path);
      },
    };
  }
}

test('PackWriter holds at most one open pack and uploadsMax uploads, however many adds are waiting', async () => {
  const keys = { encKey: randomBytes(32), idKey: randomBytes(32) };
  const backend = new SlowBackend(makeTempDir('tessera-pack-'));
  const pool = new WorkerPool(keys, { workers: 1 });
  const target = 64 * 1024;
  const blobBytes = 8 * 1024;
  let added = 0;
  let uploaded = 0;
  let heldMax = 0;
  const packs: IndexedPack[] = [];
  const writer = new PackWriter(
    {
      backend,
      pool,
      type: format.BlobType.DATA,
      onUploaded: async (p) => {
        packs.push(p);
        uploaded += p.blobs.reduce((n, b) => n + b[3], 0);
      },
    },
    { packSizeTargetBytes: target, uploadsMax: 2 },
  );
  try {
    // 40 adders at once, as the backup pipeline's chunk tasks are.
    await Promise.all(
      Array.from({ length: 40 }, async () => {
        for (let i = 0; i < 10; i++) {
          const blob = sealBlob(keys.encKey, randomBytes(blobBytes));
          const length = blob.sealed.length;
          await writer.add(randomBytes(32), blob);
          // Accepted: held by the writer until its pack is uploaded.
          added += length;
          heldMax = Math.max(heldMax, added - uploaded);
        }
      }),
    );
    await writer.flush();
    assert.equal(uploaded, added, 'every blob is in an uploaded pack');
    const sealedBytes = blobBytes + format.sealOverheadBytes;
    // The open pack (target plus one blob) and two uploads of that size.
    const bound = 3 * (target + sealedBytes);
    assert.ok(heldMax <= bound, `held ${heldMax} bytes at most, bound ${bound}`);
    for (const p of packs) {
      const entries = await readPackHeader(backend, keys, p.id.toString('hex'), p.size);
      assert.deepEqual(entries.map((e) => e.id), p.blobs.map((b) => b[5]));
    }
  } finally {
    await pool.close();
  }
});
