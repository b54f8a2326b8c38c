/**
 * The Volume conformance suite (test/engine/volume-conformance.ts) against instant restore's
 * hydrating volume: a disk served from a restore point of a real backup repository (a directory)
 * while the copier brings it in, slowly enough that the suite's requests meet chunks not copied
 * yet, which they fetch first.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { backupFile, IndexCache, Repository, WorkerPool } from '../../src/backup/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { EngineErrorCode, Store } from '../../src/engine/index.ts';
import { Hydrator } from '../../src/hydrate/hydrator.ts';
import { ChunkSource } from '../../src/hydrate/source.ts';
import { CopiedLog } from '../../src/hydrate/state.ts';
import { cleanup, makeTempDir, seededBytes } from '../helpers/index.ts';
import { rejectsWithCode, volumeConformance, type VolumeUnderTest } from '../engine/volume-conformance.ts';

after(cleanup);

const password = 'hydrating volume conformance';
const chunkSizeBytes = 64 * 1024;
/** The copier's rate: a chunk a second, so most requests of a test find chunks still missing. */
const copyBytesPerSecondMax = chunkSizeBytes;

let repoDir: string;
/** Image size → the restore point holding it and its bytes. */
const restorePoints = new Map<number, { id: string; image: Buffer }>();

before(() => {
  repoDir = makeTempDir('tessera-hydrate-volume-repo-');
});

/**
 * An image of `sizeBytes` that starts with a chunk of data, then a zero chunk (stored as none),
 * then chunks of data with zero blocks inside; backed up once per size.
 */
async function restorePoint(sizeBytes: number): Promise<{ id: string; image: Buffer }> {
  const known = restorePoints.get(sizeBytes);
  if (known) return known;
  const image = seededBytes(sizeBytes, 'image', sizeBytes);
  image.fill(0, chunkSizeBytes, 2 * chunkSizeBytes);
  for (let at = 2 * chunkSizeBytes; at < sizeBytes; at += 3 * 4096) image.fill(0, at, Math.min(sizeBytes, at + 4096));
  const file = join(makeTempDir('tessera-hydrate-volume-image-'), 'image.raw');
  writeFileSync(file, image);
  const backend = new DirBackend(repoDir);
  const repo = restorePoints.size === 0 ? await Repository.init(backend, password, { chunkSizeBytes, packSizeTargetBytes: 64 * 1024 }) : await Repository.open(backend, password);
  const cache = IndexCache.open(repo.id, makeTempDir('tessera-hydrate-volume-cache-'));
  const pool = new WorkerPool(repo.keys, { workers: 1 });
  try {
    const result = await backupFile({ repo, cache, pool }, file, { name: `image-${sizeBytes}` });
    const made = { id: result.id, image };
    restorePoints.set(sizeBytes, made);
    return made;
  } finally {
    await pool.close();
    await cache.close();
  }
}

/** A store with disk `d` being restored from the restore point of `sizeBytes`. */
async function openHydrating(sizeBytes: number): Promise<VolumeUnderTest & { hydrator: Hydrator }> {
  const { id, image } = await restorePoint(sizeBytes);
  const dir = makeTempDir('tessera-hydrate-volume-');
  const store = await Store.open({ dir: join(dir, 'store'), maintenanceIntervalMs: 0, applyDelayMs: 1 });
  await store.createDisk('d', sizeBytes);
  const source = await ChunkSource.open({ repo: repoDir, password, env: {} }, id, { cacheDir: join(dir, 'cache'), workers: 1 });
  const { log, chunks } = await CopiedLog.open(join(dir, 'state'), 'd', source.chunkCount);
  const hydrator = new Hydrator({ disk: 'd', source, volume: store.openVolume('d'), log, logged: chunks, limits: { copyBytesPerSecondMax } });
  hydrator.start(async () => {});
  return {
    hydrator,
    volume: hydrator.wrap(store.openVolume('d')),
    initial: Buffer.from(image),
    openHandle: () => hydrator.wrap(store.openVolume('d')),
    async dispose() {
      await hydrator.stop();
      await store.close();
    },
  };
}

volumeConformance('HydratingVolume', {
  lacks: {
    snapshots: 'a disk being restored takes no snapshot until its restore is done (InstantRestores.checkDiskChange)',
    resize: 'a disk being restored is not resized until its restore is done (InstantRestores.checkDiskChange)',
    // It does survive one; this factory does not yet rebuild store, copied log and hydrator together.
    crash: 'not built into this factory (store, copied log and hydrator would be rebuilt together); test/hydrate/instant-restore.test.ts kills a node mid-restore and resumes it',
  },
  open: openHydrating,
});

test('HydratingVolume a closed volume fetches nothing: it refuses before the hydrator is asked', async () => {
  const u = await openHydrating(4 * chunkSizeBytes);
  try {
    u.volume.close();
    await rejectsWithCode(() => u.volume.read(3 * chunkSizeBytes, 10), EngineErrorCode.CLOSED, 'read after close');
    await rejectsWithCode(() => u.volume.write(3 * chunkSizeBytes, Buffer.alloc(10)), EngineErrorCode.CLOSED, 'write after close');
    await rejectsWithCode(() => u.volume.trim(3 * chunkSizeBytes, 4096), EngineErrorCode.CLOSED, 'trim after close');
    // (The copier reads the repository meanwhile; only fetches for clients count here.)
    assert.equal(u.hydrator.progress().chunksFetchedForClients, 0, 'no chunk fetched for a closed volume');
  } finally {
    await u.dispose();
  }
});
