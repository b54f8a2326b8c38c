/**
 * A failing drive (docs/engine.md, "A failing drive"), through a faulty drive under the write log
 * (test/helpers/faulty-files.ts): a write or sync the drive fails puts the store in the failing
 * state (ENGINE_IO for those requests and every write after, reads going on), never retried; a
 * failed read is ENGINE_IO for that request only; short writes and slow I/O lose nothing; a
 * crash tearing what was not synced keeps every acknowledged durable write and makes up no byte.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { EngineError, Store, type StoreOptions, type Volume } from '../../src/engine/index.ts';
import { cleanup, makeTempDir, Rng, seededBytes, testSeed, until } from '../helpers/index.ts';
import { FaultyFiles, systemError } from '../helpers/faulty-files.ts';
import { CrashModel } from './crash-model.ts';

after(cleanup);

const KiB = 1024;
const SIZE = 1 << 20;

function code(err: unknown): string {
  assert.ok(err instanceof EngineError, `an EngineError, got ${String(err)}`);
  return err.code;
}

const isIo = (e: unknown) => code(e) === 'ENGINE_IO';

/** Store options for these tests: small segments, nothing synced or applied but when asked. */
function options(dir: string, files: FaultyFiles): StoreOptions {
  return { dir, files, segmentBytesMax: 256 * KiB, maintenanceIntervalMs: 0, syncIntervalMs: 3_600_000, applyDelayMs: 1 };
}

/** Every change of a failing store is refused with ENGINE_IO; reads answer. */
async function assertRefusesChanges(store: Store, v: Volume): Promise<void> {
  await assert.rejects(v.write(0, Buffer.alloc(4096, 1)), isIo);
  await assert.rejects(v.write(100, Buffer.alloc(10, 1)), isIo);
  await assert.rejects(v.writeZeroes(8192, 4096), isIo);
  await assert.rejects(v.trim(8192, 4096), isIo);
  await assert.rejects(v.flush(), isIo);
  await assert.rejects(store.flush(), isIo);
  await assert.rejects(store.createDisk('other', SIZE), isIo);
  await assert.rejects(store.createSnapshot('d', 'later'), isIo);
  await assert.rejects(store.resizeDisk('d', 2 * SIZE), isIo);
  await assert.rejects(store.compact(), isIo);
  assert.equal((await v.read(0, 4096)).length, 4096);
}

test('EIO on a log write: the requests of that write get ENGINE_IO, the store is failing, reads go on, and what was flushed is there after a reopen', async (t) => {
  const files = new FaultyFiles({ seed: testSeed(t) });
  const dir = makeTempDir('tessera-failing-');
  const failures: string[] = [];
  let store = await Store.open({ ...options(dir, files), onDriveFailing: (h) => failures.push(h.error ?? '') });
  await store.createDisk('d', SIZE);
  let v = store.openVolume('d');
  const a = seededBytes(1, 'a', 256 * KiB);
  await v.write(0, a);
  await v.flush();
  // Acknowledged, not durable: still read back while the store runs.
  const b = seededBytes(1, 'b', 64 * KiB);
  await v.write(512 * KiB, b);

  files.plan({ writeErrorAt: 1 });
  const c = [0, 1, 2, 3].map((i) => v.write(768 * KiB + i * 8 * KiB, Buffer.alloc(8 * KiB, 0x40 + i)));
  const results = await Promise.allSettled(c);
  for (const r of results) {
    assert.equal(r.status, 'rejected', 'the writes of the failed batch fail');
    assert.ok(isIo(r.reason), `ENGINE_IO, got ${String(r.reason)}`);
    assert.match((r.reason as Error).message, /I\/O error while appending to the write log: EIO/);
  }
  const h = store.health();
  assert.equal(h.drive, 'failing');
  assert.match(h.error ?? '', /EIO/);
  assert.ok(typeof h.sinceMs === 'number' && Math.abs(h.sinceMs - Date.now()) < 60_000);
  assert.deepEqual(failures, [h.error], 'onDriveFailing is called once');
  // Nothing is written any more: not retried, not a segment rolled.
  const writesBefore = files.counts.writes;
  await assertRefusesChanges(store, v);
  assert.equal(files.counts.writes, writesBefore, 'a failing store writes nothing');
  assert.ok((await v.read(0, a.length)).equals(a));
  assert.ok((await v.read(512 * KiB, b.length)).equals(b));
  assert.equal(failures.length, 1);
  // Closing a failing store makes nothing durable and does not hang.
  v.close();
  await store.close();

  files.plan({});
  store = await Store.open(options(dir, files));
  try {
    assert.equal(store.health().drive, 'ok', 'a reopened store starts with the drive ok');
    v = store.openVolume('d');
    assert.ok((await v.read(0, a.length)).equals(a), 'flushed data is intact after a reopen');
    await v.write(768 * KiB, Buffer.alloc(4096, 9), { fua: true });
    assert.ok((await v.read(768 * KiB, 4096)).equals(Buffer.alloc(4096, 9)));
    v.close();
  } finally {
    await store.close();
  }
});

test('EIO on fdatasync: the flush and FUA writes waiting for it get ENGINE_IO, the store is failing; a crash keeps what an earlier sync made durable', async (t) => {
  const files = new FaultyFiles({ seed: testSeed(t) });
  const base = makeTempDir('tessera-failing-');
  const store = await Store.open(options(path.join(base, 's0'), files));
  try {
    await store.createDisk('d', SIZE);
    const v = store.openVolume('d');
    const model = new CrashModel(SIZE);
    const a = seededBytes(2, 'a', 100 * KiB + 17);
    await v.write(3, a);
    model.write(3, a, 'acked');
    await v.flush();
    model.durable();

    files.plan({ syncErrorAt: 1 });
    const w1 = seededBytes(2, 'w1', 12 * KiB);
    const w2 = seededBytes(2, 'w2', 5000);
    const waiting = [v.write(200 * KiB, w1, { fua: true }), v.write(300 * KiB + 1, w2), v.flush()];
    const results = await Promise.allSettled(waiting);
    model.write(200 * KiB, w1, 'failed');
    model.write(300 * KiB + 1, w2, results[1].status === 'fulfilled' ? 'acked' : 'failed');
    assert.equal(results[0].status, 'rejected');
    assert.ok(isIo((results[0] as PromiseRejectedResult).reason));
    assert.equal(results[2].status, 'rejected');
    assert.ok(isIo((results[2] as PromiseRejectedResult).reason));
    assert.match(((results[2] as PromiseRejectedResult).reason as Error).message, /syncing the write log: EIO/);
    assert.equal(store.health().drive, 'failing');
    await assertRefusesChanges(store, v);
    // The sync is not tried again: what it was to cover is never taken as durable.
    const syncs = files.counts.syncs;
    await assert.rejects(v.flush(), isIo);
    assert.equal(files.counts.syncs, syncs);

    // Power lost: what the failed sync was to cover may be there or not; what an earlier sync covered is.
    files.plan({});
    files.copyAfterPowerLoss(store.dir, path.join(base, 's1'));
    const reopened = await Store.open(options(path.join(base, 's1'), files));
    try {
      const rv = reopened.openVolume('d');
      model.checkAfterCrash(await rv.read(0, SIZE), 'after a failed sync and a power loss');
      rv.close();
    } finally {
      await reopened.close();
    }
    v.close();
  } finally {
    await store.close();
  }
});

/**
 * Random writes (some FUA, some concurrent, aligned or not), zeroes, trims, flushes and reads
 * against the model; reads must return what was acknowledged. Concurrent writes go to separate
 * 64 KiB slots, so the model knows what each leaves.
 */
async function workload(v: Volume, model: CrashModel, r: Rng, steps: number): Promise<void> {
  for (let step = 0; step < steps; step++) {
    const op = r.next();
    if (op < 0.35) {
      // A few writes at once, each in a slot of its own.
      const slots = new Set<number>();
      const n = r.range(1, 4);
      while (slots.size < n) slots.add(r.int(SIZE / (64 * KiB)));
      const writes = [...slots].map((slot) => {
        const length = r.next() < 0.5 ? 4096 * r.range(1, 8) : r.range(1, 30_000);
        const offset = slot * 64 * KiB + (r.next() < 0.5 ? 0 : r.int(64 * KiB - Math.min(length, 32 * KiB)));
        const data = Buffer.alloc(Math.min(length, 64 * KiB * (slot + 1) - offset), r.range(1, 255));
        // The step marks the write where there is room for it (a write may be 1 to 3 bytes).
        if (data.length >= 4) data.writeUInt32LE(step, 0);
        return { offset, data, fua: r.next() < 0.15 };
      });
      await Promise.all(writes.map((w) => v.write(w.offset, w.data, { fua: w.fua })));
      for (const w of writes) model.write(w.offset, w.data, 'acked');
      // A FUA write makes durable what was acknowledged before it; one among others may have
      // synced before they were appended (an unaligned write reads its edges first).
      if (writes.length === 1 && writes[0].fua) model.durable();
    } else if (op < 0.45) {
      const offset = r.int(SIZE - 1);
      const length = Math.min(r.range(1, 40_000), SIZE - offset);
      if (r.next() < 0.5) await v.writeZeroes(offset, length, { mayTrim: r.next() < 0.5 });
      else await v.trim(offset, length);
      model.zero(offset, length, 'acked');
    } else if (op < 0.55) {
      await v.flush();
      model.durable();
    } else {
      const offset = r.int(SIZE - 1);
      const length = Math.min(r.range(1, 70_000), SIZE - offset);
      const got = await v.read(offset, length);
      assert.ok(got.equals(model.current.subarray(offset, offset + length)), `read ${offset}+${length} at step ${step} returns what was acknowledged`);
    }
  }
}

/** Rounds of a workload, each ended by a power loss; the store reopened on what it left is checked against the model. */
async function crashRounds(files: FaultyFiles, r: Rng, rounds: number, steps: number): Promise<{ kept: number; torn: number; lost: number }> {
  const base = makeTempDir('tessera-failing-');
  const model = new CrashModel(SIZE);
  let store = await Store.open(options(path.join(base, 's0'), files));
  const stores = [store];
  try {
    await store.createDisk('d', SIZE);
    let v = store.openVolume('d');
    const tally = { kept: 0, torn: 0, lost: 0 };
    for (let round = 1; round <= rounds; round++) {
      await workload(v, model, r, steps);
      // Something not synced for the power loss to tear.
      for (let i = r.range(1, 3); i > 0; i--) {
        const data = Buffer.alloc(r.range(1, 12_000), r.range(1, 255));
        const offset = r.int(SIZE - data.length);
        await v.write(offset, data);
        model.write(offset, data, 'acked');
      }
      const to = path.join(base, `s${round}`);
      const fates = files.copyAfterPowerLoss(store.dir, to, { tear: r.next() < 0.5 ? 'any' : 'prefix' });
      tally.kept += fates.kept;
      tally.torn += fates.torn;
      tally.lost += fates.lost;
      v.close();
      store = await Store.open(options(to, files));
      stores.push(store);
      v = store.openVolume('d');
      model.checkAfterCrash(await v.read(0, SIZE), `round ${round}: after a power loss`);
    }
    v.close();
    return tally;
  } finally {
    for (const s of stores) await s.close();
  }
}

test('short writes are continued where they stopped: nothing is lost, and crashes keep what was made durable', async (t) => {
  const seed = testSeed(t);
  const files = new FaultyFiles({ seed, plan: { shortWriteProbability: 0.5 } });
  await crashRounds(files, new Rng(seed), 4, 60);
  assert.ok(files.counts.shortWrites > 20, `short writes happened (${files.counts.shortWrites})`);
});

test('slow I/O (writes, syncs and reads completing late and out of order) changes nothing', async (t) => {
  const seed = testSeed(t);
  const files = new FaultyFiles({ seed, plan: { slowProbability: 0.3, slowMsMax: 8 } });
  await crashRounds(files, new Rng(seed), 3, 50);
  assert.ok(files.counts.delays > 20, `delays happened (${files.counts.delays})`);
});

test('a power loss tearing what was not synced: every flushed or FUA write is there after the reopen, no byte anyone did not write', async (t) => {
  const seed = testSeed(t);
  const files = new FaultyFiles({ seed });
  const fates = await crashRounds(files, new Rng(seed), 8, 40);
  assert.ok(fates.torn > 0 && fates.lost > 0 && fates.kept > 0, `crashes kept, tore and lost writes: ${JSON.stringify(fates)}`);
});

test('a read the drive fails gets ENGINE_IO naming the disk and offset, for that request only: the store is not failing', async (t) => {
  const files = new FaultyFiles({ seed: testSeed(t) });
  const dir = makeTempDir('tessera-failing-');
  const store = await Store.open(options(dir, files));
  try {
    await store.createDisk('d', SIZE);
    const v = store.openVolume('d');
    const a = seededBytes(3, 'a', 64 * KiB);
    await v.write(128 * KiB, a, { fua: true });
    files.plan({ readErrorAt: 1 });
    const err = await v.read(128 * KiB + 4096, 8192).then(() => null, (e: unknown) => e);
    assert.ok(err instanceof EngineError && err.code === 'ENGINE_IO', `ENGINE_IO, got ${String(err)}`);
    assert.match(err.message, /^Read of disk "d" failed at byte 135168: I\/O error while reading log segment \d+ at \d+: EIO/);
    assert.deepEqual(err.readFault, { disk: 'd', offset: 128 * KiB + 4096, checksum: false });
    assert.equal(store.health().drive, 'ok');
    assert.ok((await v.read(128 * KiB, a.length)).equals(a), 'the next read works');
    await v.write(0, Buffer.alloc(4096, 1), { fua: true });
    v.close();
  } finally {
    await store.close();
  }
});

test('a read of a segment cut short under the store, or of one gone (a store opened read-only), is ENGINE_IO for that read, not corrupt data', async (t) => {
  const files = new FaultyFiles({ seed: testSeed(t) });
  const dir = makeTempDir('tessera-failing-');
  let store = await Store.open({ ...options(dir, files), segmentBytesMax: 64 * KiB });
  // Blocks in three segments: the first is cut short, the second removed.
  await store.createDisk('d', SIZE);
  let v = store.openVolume('d');
  for (let i = 0; i < 3; i++) await v.write(i * 60 * KiB, Buffer.alloc(60 * KiB, 1 + i), { fua: true });
  const segs = fs.readdirSync(path.join(dir, 'log')).sort();
  assert.ok(segs.length >= 3);
  fs.truncateSync(path.join(dir, 'log', segs[0]!), 64 + 64 + 8192);
  const err = await v.read(0, 60 * KiB).then(() => null, (e: unknown) => e);
  assert.ok(err instanceof EngineError && err.code === 'ENGINE_IO', `ENGINE_IO, got ${String(err)}`);
  assert.match(err.message, /^Read of disk "d" failed at byte \d+: Short read in log segment 1 at \d+/);
  assert.equal(err.readFault?.disk, 'd');
  assert.ok((await v.read(0, 8192)).equals(Buffer.alloc(8192, 1)), 'what the segment still holds reads back');
  assert.ok((await v.read(60 * KiB, 60 * KiB)).equals(Buffer.alloc(60 * KiB, 2)));
  v.close();
  await store.close();

  // A store missing a segment opens only read-only (docs/engine.md, "Recovery").
  fs.rmSync(path.join(dir, 'log', segs[1]!));
  await assert.rejects(Store.open(options(dir, files)), (e) => code(e) === 'ENGINE_CORRUPT' && /is missing/.test((e as Error).message));
  store = await Store.open({ ...options(dir, files), readOnly: true });
  try {
    v = store.openVolume('d');
    const gone = await v.read(60 * KiB, 4096).then(() => null, (e: unknown) => e);
    assert.ok(gone instanceof EngineError && gone.code === 'ENGINE_IO', `ENGINE_IO, got ${String(gone)}`);
    assert.match(gone.message, /^Read of disk "d" failed at byte 61440: Log segment 2 is missing/);
    assert.ok((await v.read(120 * KiB, 60 * KiB)).equals(Buffer.alloc(60 * KiB, 3)));
    assert.equal(store.health().drive, 'ok');
    v.close();
  } finally {
    await store.close();
  }
});

/** A failure as lmdb-js reports one of the drive: the errno as a number, the C library's message. */
const lmdbEio = () => Object.assign(new Error('Input/output error'), { code: 5 });

test('an index transaction the drive fails puts the store in the failing state; it is not tried again', async (t) => {
  const files = new FaultyFiles({ seed: testSeed(t) });
  const dir = makeTempDir('tessera-failing-');
  const store = await Store.open(options(dir, files));
  try {
    await store.createDisk('d', SIZE);
    const v = store.openVolume('d');
    const a = seededBytes(4, 'a', 32 * KiB);
    await v.write(0, a, { fua: true });
    // The index's own transactions (metadata, zeroes, sweeps) on this thread.
    const index = (store as unknown as { index: { root: { transactionSync: (fn: () => void) => void } } }).index;
    const real = index.root.transactionSync;
    let tries = 0;
    index.root.transactionSync = () => {
      tries++;
      throw lmdbEio();
    };
    await assert.rejects(store.createDisk('e', SIZE), (e) => isIo(e) && /updating the block index: Input\/output error/.test((e as Error).message));
    assert.equal(store.health().drive, 'failing');
    assert.match(store.health().error ?? '', /block index/);
    await assertRefusesChanges(store, v);
    assert.equal(tries, 1, 'the index is not written again');
    assert.ok((await v.read(0, a.length)).equals(a));
    index.root.transactionSync = real;
    v.close();
  } finally {
    await store.close();
  }
});

test('a batch the index writer thread fails for the drive puts the store in the failing state; reads go on from the log', async (t) => {
  const files = new FaultyFiles({ seed: testSeed(t) });
  const dir = makeTempDir('tessera-failing-');
  let store = await Store.open(options(dir, files));
  try {
    await store.createDisk('d', SIZE);
    const v = store.openVolume('d');
    const applier = (store as unknown as { applier: { writer: { write: () => Promise<void> } } }).applier;
    let tries = 0;
    applier.writer.write = () => {
      tries++;
      return Promise.reject(lmdbEio());
    };
    const a = seededBytes(5, 'a', 48 * KiB);
    await v.write(0, a, { fua: true });
    await until(() => store.health().drive === 'failing', 2000, 'the failed batch to put the store in the failing state');
    await assert.rejects(v.write(0, Buffer.alloc(4096)), isIo);
    await new Promise((resolve) => setTimeout(resolve, 1200));
    assert.equal(tries, 1, 'the batch is not tried again');
    assert.ok((await v.read(0, a.length)).equals(a), 'durable records the index did not take read back');
    v.close();
    await store.close();
    // The next open replays them.
    store = await Store.open(options(dir, files));
    const rv = store.openVolume('d');
    assert.ok((await rv.read(0, a.length)).equals(a));
    rv.close();
  } finally {
    await store.close();
  }
});

test('ENOSPC from the drive is a full file system, not a failing one: those writes get ENGINE_NO_SPACE, later ones work', async (t) => {
  const files = new FaultyFiles({ seed: testSeed(t) });
  const dir = makeTempDir('tessera-failing-');
  let store = await Store.open(options(dir, files));
  try {
    await store.createDisk('d', SIZE);
    let v = store.openVolume('d');
    await v.write(0, Buffer.alloc(8192, 1), { fua: true });
    await store.stats(); // the index has the write: its checkpoint's next seq is the one after it
    files.plan({ writeErrorAt: 1, writeErrorCode: 'ENOSPC' });
    await assert.rejects(v.write(4096, Buffer.alloc(4096, 2)), (e) => code(e) === 'ENGINE_NO_SPACE');
    assert.equal(store.health().drive, 'ok');
    files.plan({ syncErrorAt: 1, syncErrorCode: 'ENOSPC' });
    await assert.rejects(v.flush(), (e) => code(e) === 'ENGINE_NO_SPACE');
    assert.equal(store.health().drive, 'ok');
    files.plan({});
    await v.flush();
    // The refused write took a seq; a snapshot taken now must not see a write made after a reopen.
    await store.createSnapshot('d', 's');
    v.close();
    await store.close();
    store = await Store.open(options(dir, files));
    v = store.openVolume('d');
    await v.write(4096, Buffer.alloc(4096, 3), { fua: true });
    const snap = store.openVolume('d', 's');
    assert.ok((await snap.read(0, 8192)).equals(Buffer.alloc(8192, 1)), 'the snapshot holds what it held');
    assert.ok((await v.read(4096, 4096)).equals(Buffer.alloc(4096, 3)));
    snap.close();
    v.close();
  } finally {
    await store.close();
  }
});
