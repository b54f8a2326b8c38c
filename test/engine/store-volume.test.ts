/**
 * The Volume conformance suite (volume-conformance.ts) against the store's own volumes, with a
 * crash that loses what a power failure would: the write log goes through a faulty drive
 * (test/helpers/faulty-files.ts) that injects no fault but, at a crash, keeps of the log only
 * what an fdatasync covered, and of the rest each write whole, torn or not at all. (The index is
 * taken as it is: LMDB makes its own commits durable, and it only ever points at synced log bytes.)
 */
import { join } from 'node:path';
import { after, afterEach, beforeEach } from 'node:test';
import { Store, type Volume } from '../../src/engine/index.ts';
import { cleanup, makeTempDir, testSeed } from '../helpers/index.ts';
import { FaultyFiles } from '../helpers/faulty-files.ts';
import { volumeConformance } from './volume-conformance.ts';

after(cleanup);

/**
 * Each test's seed, printed before it runs, decides what a crash keeps of what was not synced
 * (which the suite allows either way). The suite takes the same seed for its own data, so
 * TESSERA_TEST_SEED replays both.
 */
let seed = 0;
const seedFromEnv = process.env.TESSERA_TEST_SEED;
beforeEach((t) => {
  seed = testSeed(t);
  process.env.TESSERA_TEST_SEED = String(seed);
});
afterEach(() => {
  if (seedFromEnv === undefined) delete process.env.TESSERA_TEST_SEED;
  else process.env.TESSERA_TEST_SEED = seedFromEnv;
});

const KiB = 1024;

volumeConformance('StoreVolume', {
  async open(sizeBytes) {
    const base = makeTempDir('tessera-store-volume-');
    // Small segments, so a test crosses several; records reach the index a millisecond after they
    // are durable (through the index writer's thread); nothing is synced but by flush and FUA.
    const files = new FaultyFiles({ seed });
    const options = { segmentBytesMax: 128 * KiB, maintenanceIntervalMs: 0, applyDelayMs: 1, syncIntervalMs: 3_600_000, files };
    const stores: Store[] = [];
    let n = 0;
    let store = await Store.open({ dir: join(base, `store${n}`), ...options });
    stores.push(store);
    await store.createDisk('d', sizeBytes);
    const volume: Volume = store.openVolume('d');
    return {
      volume,
      initial: Buffer.alloc(sizeBytes),
      openHandle: () => store.openVolume('d'),
      snapshot: async (name) => void (await store.createSnapshot('d', name)),
      openSnapshot: (name) => store.openVolume('d', name),
      resize: async (bytes) => void (await store.resizeDisk('d', bytes)),
      async crash() {
        const from = store.dir;
        const to = join(base, `store${++n}`);
        files.copyAfterPowerLoss(from, to);
        store = await Store.open({ dir: to, ...options });
        stores.push(store);
        return store.openVolume('d');
      },
      async dispose() {
        for (const s of stores) await s.close();
      },
    };
  },
});
