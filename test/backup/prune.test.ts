import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { backupFile, forget, prune, restoreToFile, verify, type SnapshotEntry, type Snapshot } from '../../src/backup/index.ts';
import { BackupWriter } from '../../src/backup/writer.ts';
import { applyPolicy, isoWeek } from '../../src/backup/prune.ts';
import { cleanup, testSeed } from '../helpers/index.ts';
import { assertSameFile, join, makeTempDir, openTestRepo, packBytes, smallRepo, writeSeededImage, type TestRepo } from './harness.ts';

after(cleanup);

const hour = 3_600_000;

/** A clock the test moves by hand. */
function manualClock(start = Date.UTC(2026, 0, 5, 12)): { now: () => number; advance(ms: number): void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

function entry(id: string, name: string, time: number): SnapshotEntry {
  return { id, snapshot: { name, time } as Snapshot };
}

test('forget policy keeps the newest N, one per day and one per ISO week, per name', () => {
  const day = 24 * hour;
  const t0 = Date.UTC(2026, 0, 5, 10); // a Monday
  const entries = [
    entry('a1', 'vm', t0), entry('a2', 'vm', t0 + hour), entry('a3', 'vm', t0 + day), entry('a4', 'vm', t0 + 8 * day),
    entry('a5', 'vm', t0 + 8 * day + hour), entry('b1', 'other', t0),
  ];
  const ids = (r: { kept: SnapshotEntry[] }) => r.kept.map((e) => e.id).sort();
  assert.deepEqual(ids(applyPolicy(entries, { keepLast: 1 })), ['a5', 'b1']);
  assert.deepEqual(ids(applyPolicy(entries, { keepDaily: 2 })), ['a3', 'a5', 'b1']);
  assert.deepEqual(ids(applyPolicy(entries, { keepWeekly: 2 })), ['a3', 'a5', 'b1']);
  assert.deepEqual(ids(applyPolicy(entries, { keepLast: 2, keepDaily: 3 })), ['a2', 'a3', 'a4', 'a5', 'b1']);
  assert.deepEqual(ids(applyPolicy(entries, { keepLast: 0 })), []);
  assert.throws(() => applyPolicy(entries, {}), /at least one of/);
  assert.equal(isoWeek(Date.UTC(2026, 0, 1)), '2026-W01');
  assert.equal(isoWeek(Date.UTC(2027, 0, 1)), '2026-W53');
  assert.equal(isoWeek(Date.UTC(2024, 11, 30)), '2025-W01');
});

test('forget by policy among some names only (a backup schedule\'s disks) leaves the restore points of other names alone', async (t) => {
  const { r, clock, images } = await setup(testSeed(t));
  try {
    const made: Record<string, string[]> = { vm: [], db: [], other: [] };
    for (let i = 0; i < 3; i++) {
      for (const name of Object.keys(made)) made[name].push((await backupFile(r, images[i % 2], { name })).id);
      clock.advance(hour);
    }
    const f = await forget(r.repo, { keepLast: 1 }, { names: ['vm', 'db'] });
    assert.deepEqual(f.kept.map((e) => e.id).sort(), [made.vm[2], made.db[2]].sort());
    assert.deepEqual(f.removed.map((e) => e.id).sort(), [...made.vm.slice(0, 2), ...made.db.slice(0, 2)].sort());
    const left = (await r.repo.readSnapshots()).snapshots.map((e) => e.id).sort();
    assert.deepEqual(left, [made.vm[2], made.db[2], ...made.other].sort(), 'the restore points of other names stay, all of them');
  } finally {
    await r.close();
  }
});

async function setup(seed: number): Promise<{ dir: string; r: TestRepo; clock: ReturnType<typeof manualClock>; images: string[] }> {
  const dir = makeTempDir('tessera-backup-prune-');
  const clock = manualClock();
  const r = await openTestRepo(join(dir, 'repo'), { init: smallRepo, now: clock.now });
  const images = [0, 1].map((i) => {
    const p = join(dir, `image-${i}`);
    writeSeededImage(p, seed + i, { chunks: 40, chunkSizeBytes: smallRepo.chunkSizeBytes! });
    return p;
  });
  return { dir, r, clock, images };
}

test('forget then two prunes after the grace period free the forgotten restore point and keep the others whole', async (t) => {
  const { dir, r, clock, images } = await setup(testSeed(t));
  try {
    await backupFile(r, images[0], { name: 'vm' });
    clock.advance(hour);
    const kept = await backupFile(r, images[1], { name: 'vm' });
    const before = await packBytes(r.dir);
    const f = await forget(r.repo, { keepLast: 1 });
    assert.deepEqual(f.kept.map((e) => e.id), [kept.id]);
    const first = await prune(r, { graceMs: hour });
    assert.ok(first.packsMarked > 0);
    assert.equal(first.packsDeleted, 0, 'the first run only marks');
    clock.advance(hour / 2);
    const early = await prune(r, { graceMs: hour });
    assert.equal(early.marksWaiting, 1, 'a mark younger than the grace period waits');
    assert.equal(early.packsDeleted, 0);
    clock.advance(hour);
    const second = await prune(r, { graceMs: hour });
    assert.equal(second.marksSwept, 1);
    assert.ok(second.packsDeleted > 0);
    const after = await packBytes(r.dir);
    assert.equal(before - after, second.bytesFreed);
    // What is left is about what a repository holding only the kept image takes (the images are
    // random, so a fixed share of `before` would depend on the seed).
    const solo = await openTestRepo(join(dir, 'solo'), { init: smallRepo, now: clock.now });
    await backupFile(solo, images[1], { name: 'vm' });
    const soloBytes = await packBytes(solo.dir);
    assert.ok(after <= soloBytes * 1.1, `left ${after} bytes; the kept image alone takes ${soloBytes} (before: ${before})`);
    const v = await verify(r, { readData: true });
    assert.deepEqual(v.faults, []);
    assert.equal(v.unindexedPacks, 0);
    assert.equal(v.indexFiles, 1, 'prune replaced the index files by one');
    const out = join(dir, 'out');
    await restoreToFile(r, kept.snapshot, out);
    assertSameFile(out, images[1]);
  } finally {
    await r.close();
  }
});

test('prune never deletes packs a backup that was running at the mark reuses: it waits for the writer, which lists the reused packs again', async (t) => {
  const { dir, r, clock, images } = await setup(testSeed(t));
  try {
    const old = await backupFile(r, images[0], { name: 'vm' });
    await forget(r.repo, { keepLast: 0 });
    // A backup starts before the mark: its marker is written and its cache synced, so it still
    // sees the packs of the forgotten restore point.
    const marker = await r.repo.startWriter();
    await r.cache.sync(r.repo);
    clock.advance(1000);
    const mark = await prune(r, { graceMs: 0 });
    assert.ok(mark.packsMarked > 0);
    clock.advance(1000);
    const waiting = await prune(r, { graceMs: 0 });
    assert.equal(waiting.marksWaiting, 1, 'a live writer older than the mark holds the sweep');
    assert.equal(waiting.packsDeleted, 0);

    // The running backup reuses every chunk of the forgotten restore point, through its cache.
    const w = new BackupWriter(r, readFileSync(images[0]).length);
    const image = readFileSync(images[0]);
    for (let i = 0; i < w.chunkCount; i++) {
      const buf = await w.allocChunk(i);
      image.copy(buf, 0, i * w.chunkSizeBytes, i * w.chunkSizeBytes + buf.length);
      w.putChunk(i, buf);
    }
    const reused = await w.finish({ kind: 'file', name: 'vm', source: { path: images[0] } });
    assert.equal(reused.snapshot.stats.chunksNew, 0);
    assert.equal(reused.snapshot.stats.chunksReused, old.snapshot.stats.chunksNew + old.snapshot.stats.chunksReused);
    await marker.stop();
    // The backup listed the marked packs it reused again: the restore point is whole at once,
    // for a client with a fresh cache too.
    const fresh = await openTestRepo(r.dir, { now: clock.now });
    try {
      assert.deepEqual((await verify(fresh, { readData: true })).faults, []);
      const early = join(dir, 'out-early');
      await restoreToFile(fresh, reused.snapshot, early);
      assertSameFile(early, images[0]);
    } finally {
      await fresh.close();
    }

    clock.advance(1000);
    const sweep = await prune(r, { graceMs: 0 });
    assert.equal(sweep.marksSwept, 1);
    assert.equal(sweep.packsDeleted, 0, 'the reused packs are kept');
    const v = await verify(r, { readData: true });
    assert.deepEqual(v.faults, []);
    const out = join(dir, 'out');
    await restoreToFile(r, reused.snapshot, out);
    assertSameFile(out, images[0]);
    // And nothing is marked while the restore point uses it.
    clock.advance(1000);
    const again = await prune(r, { graceMs: 0 });
    assert.equal(again.packsDeleted, 0);
  } finally {
    await r.close();
  }
});

test('a stale writer marker (dead backup) does not hold prune, and prune removes it', async (t) => {
  const { r, clock, images } = await setup(testSeed(t));
  try {
    await backupFile(r, images[0], { name: 'vm' });
    await forget(r.repo, { keepLast: 0 });
    await r.repo.startWriter(); // never stopped: as if its process died
    clock.advance(1000);
    await prune(r, { graceMs: 0 });
    clock.advance(31 * 60_000);
    const sweep = await prune(r, { graceMs: 0 });
    assert.equal(sweep.writersRemoved, 1);
    assert.equal(sweep.marksSwept, 1);
    assert.ok(sweep.packsDeleted > 0);
    assert.equal(await packBytes(r.dir), 0);
  } finally {
    await r.close();
  }
});

test('prune removes the temporary files of killed writers once older than the grace period and than every live writer', async (t) => {
  const { r, clock, images } = await setup(testSeed(t));
  try {
    const kept = await backupFile(r, images[0], { name: 'vm' });
    // What a put killed before its rename leaves: `.tmp-` and 16 hex digits, beside the object.
    const temp = (rel: string, ageMs: number, bytes = 1000): string => {
      const p = join(r.dir, rel);
      mkdirSync(join(p, '..'), { recursive: true });
      writeFileSync(p, Buffer.alloc(bytes, 7));
      const at = (clock.now() - ageMs) / 1000;
      utimesSync(p, at, at);
      return p;
    };
    const oldPack = temp('data/ab/.tmp-0123456789abcdef', 2 * hour, 5000);
    const oldIndex = temp('index/.tmp-00000000000000ff', 3 * hour);
    const young = temp('data/cd/.tmp-fedcba9876543210', 10 * 60_000);
    const notOurs = temp('data/ab/.keep-me', 5 * hour);
    const listed = (await r.repo.backend.listTemporaries()).map((x) => x.path).sort();
    assert.deepEqual(listed, ['data/ab/.tmp-0123456789abcdef', 'data/cd/.tmp-fedcba9876543210', 'index/.tmp-00000000000000ff']);
    await assert.rejects(r.repo.backend.deleteTemporary('data/ab/ab01'), /Bad temporary path/, 'an object is no temporary');

    const report = await prune(r, { graceMs: hour });
    assert.equal(report.temporariesRemoved, 2);
    assert.equal(report.temporaryBytesRemoved, 6000);
    assert.equal(existsSync(oldPack), false);
    assert.equal(existsSync(oldIndex), false);
    assert.equal(existsSync(young), true, 'younger than the grace period: a writer may be filling it');
    assert.equal(existsSync(notOurs), true, 'only the names puts make are removed');

    // A live writer may own what was written after it started, whatever the grace period.
    const marker = await r.repo.startWriter();
    const itsOwn = temp('data/ef/.tmp-1111111111111111', -1000);
    clock.advance(2000);
    const held = await prune(r, { graceMs: 0 });
    assert.equal(held.temporariesRemoved, 1, 'the one older than the live writer goes');
    assert.equal(existsSync(young), false);
    assert.equal(existsSync(itsOwn), true, 'a live writer started before it was written');
    await marker.stop();
    assert.equal((await prune(r, { graceMs: 0 })).temporariesRemoved, 1);
    assert.equal(existsSync(itsOwn), false);
    const v = await verify(r, { readData: true });
    assert.deepEqual(v.faults, []);
    assert.equal((await r.repo.readSnapshots()).snapshots[0].id, kept.id);
  } finally {
    await r.close();
  }
});

test('a sweep resurrects a marked pack that a restore point uses but no index lists', async (t) => {
  const { dir, r, clock, images } = await setup(testSeed(t));
  try {
    const old = await backupFile(r, images[0], { name: 'vm' });
    await forget(r.repo, { keepLast: 0 });
    clock.advance(1000);
    await prune(r, { graceMs: 0 });
    // As if a backup running at the mark had reused the packs and died before listing them
    // again, but after writing its restore point (the order a crash cannot produce, the worst case).
    const id = await r.repo.writeSnapshot({ ...old.snapshot, time: clock.now() });
    clock.advance(1000);
    const sweep = await prune(r, { graceMs: 0 });
    assert.ok(sweep.packsResurrected > 0);
    assert.equal(sweep.packsDeleted, 0);
    const fresh = await openTestRepo(r.dir, { now: clock.now });
    try {
      assert.deepEqual((await verify(fresh, { readData: true })).faults, []);
      const out = join(dir, 'out');
      await restoreToFile(fresh, (await fresh.repo.findSnapshot(id)).snapshot, out);
      assertSameFile(out, images[0]);
    } finally {
      await fresh.close();
    }
  } finally {
    await r.close();
  }
});
