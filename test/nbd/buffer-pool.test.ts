/** The NBD server's pooled read and payload buffers: no reply ever carries another's bytes (the pool alone: test/flow/buffer-pool.test.ts). */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Store } from '../../src/engine/index.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { cleanup, makeTempDir, Rng, seededBytes } from '../helpers/index.ts';
import { NbdClient } from './client.ts';
import { storeProvider } from './harness.ts';

after(() => cleanup());

test('buffer pool: hundreds of concurrent reads on two connections each get exactly their own bytes', async () => {
  const store = await Store.open({ dir: makeTempDir('tessera-pool-') });
  const server = new NbdServer({ provider: storeProvider(store) });
  const target = await server.listenTcp({ host: '127.0.0.1', port: 0 });
  const size = 8 << 20;
  const content = seededBytes(7, 'pool', size);
  try {
    await store.createDisk('d', size);
    const clients = [await NbdClient.connect(target, { exportName: 'd' }), await NbdClient.connect(target, { exportName: 'd', structured: false })];
    await clients[0].write(0, content);
    const rng = new Rng(11);
    for (let round = 0; round < 5; round++) {
      const reads = Array.from({ length: 200 }, (_, i) => {
        const length = rng.range(1, 300 * 1024);
        const offset = rng.int(size - length + 1);
        return clients[i % 2].read(offset, length).then((got) => {
          assert.ok(got.equals(content.subarray(offset, offset + length)), `read ${offset}+${length} (round ${round})`);
        });
      });
      await Promise.all(reads);
    }
    for (const c of clients) await c.disconnect();
  } finally {
    await server.close();
    await store.close();
  }
});

test('buffer pool: concurrent large writes each land with their own bytes (payload buffers are reused only after the write)', async () => {
  const store = await Store.open({ dir: makeTempDir('tessera-pool-w-') });
  const server = new NbdServer({ provider: storeProvider(store) });
  const target = await server.listenTcp({ host: '127.0.0.1', port: 0 });
  const size = 16 << 20;
  const piece = 256 * 1024;
  try {
    await store.createDisk('d', size);
    const clients = [await NbdClient.connect(target, { exportName: 'd' }), await NbdClient.connect(target, { exportName: 'd' })];
    for (let round = 0; round < 3; round++) {
      const expected = seededBytes(round + 1, 'pool-writes', size);
      await Promise.all(
        Array.from({ length: size / piece }, (_, i) => clients[i % 2].write(i * piece, expected.subarray(i * piece, (i + 1) * piece))),
      );
      const got = await clients[0].read(0, size);
      assert.ok(got.equals(expected), `round ${round}: content after concurrent writes`);
    }
    for (const c of clients) await c.disconnect();
  } finally {
    await server.close();
    await store.close();
  }
});
