/**
 * A full file system (docs/engine.md, "Space, full drives and failing drives"), on real tmpfs
 * mounts: client writes stop at the full ratio with the reserve still free; deletes, snapshot
 * deletes and trims give space back without outside help; a store below its reserve does not
 * open; and when the file system itself fills up (nothing reserved), writes fail with
 * ENGINE_NO_SPACE, nothing flushed is lost and the store reopens.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { EngineError, Store, type Volume } from '../../src/engine/index.ts';
import { fillTo, freeBytes, mountLoop, mountTmpfs, until } from '../helpers/index.ts';

const MiB = 1 << 20;

function pattern(i: number): Buffer {
  const b = Buffer.alloc(MiB);
  for (let o = 0; o < MiB; o += 8) b.writeUInt32LE(i * 1_000_003 + o, o);
  return b;
}

/** Writes 1 MiB at a time from `from` on, flushing each, until a write is refused; returns the MiB written and the refusal. */
async function writeUntilRefused(v: Volume, from: number, limit: number): Promise<{ written: number[]; refusal: unknown }> {
  const written: number[] = [];
  for (let i = from; i < from + limit; i++) {
    try {
      await v.write(i * MiB, pattern(i));
      await v.flush();
      written.push(i);
    } catch (err) {
      return { written, refusal: err };
    }
  }
  return { written, refusal: null };
}

function assertNoSpace(err: unknown, what: string): asserts err is EngineError {
  assert.ok(err instanceof EngineError, `${what}: an EngineError, got ${String(err)}`);
  assert.equal(err.code, 'ENGINE_NO_SPACE', what);
}

for (const kind of ['tmpfs', 'ext4'] as const) {
test(`client writes stop at the full ratio with the reserve still free; deleting a disk whose data shares segments with another gives the space back at once (${kind})`, async (t) => {
  const mnt = kind === 'tmpfs' ? mountTmpfs(t, 64 * MiB) : mountLoop(t, 72 * MiB, 'ext4');
  const dir = path.join(mnt, 'store');
  // Maintenance only when asked for (a delete, a refused write): the periodic pass never comes.
  const store = await Store.open({ dir, segmentBytesMax: 4 * MiB, maintenanceIntervalMs: 3_600_000 });
  t.after(() => store.close());
  const space0 = store.space();
  assert.equal(space0.state, 'ok');
  assert.equal(space0.reserveBytes, Math.floor(space0.totalBytes / 10), 'a small file system keeps a tenth');
  // ext4 keeps 5 % for root: the node counts only what it may use.
  assert.ok(space0.freeBytes <= freeBytes(mnt) + MiB);

  // Two disks written in turn: every segment holds data of both.
  await store.createDisk('keep', 64 * MiB);
  await store.createDisk('fill', 64 * MiB);
  const keep = store.openVolume('keep');
  const fill = store.openVolume('fill');
  const kept: number[] = [];
  let refusal: unknown = null;
  for (let i = 0; i < 64 && refusal === null; i++) {
    try {
      // In quarters, in turn: every segment (a quarter of the reserve, 1.6 MiB here) holds both.
      for (let q = 0; q < 4; q++) {
        const part = (b: Buffer) => b.subarray(q * (MiB / 4), (q + 1) * (MiB / 4));
        await keep.write(i * MiB + q * (MiB / 4), part(pattern(i)));
        await fill.write(i * MiB + q * (MiB / 4), part(pattern(100 + i)));
      }
      kept.push(i);
      await store.flush();
    } catch (err) {
      refusal = err;
    }
  }
  assertNoSpace(refusal, 'a write past the full ratio');
  assert.match((refusal as Error).message, /The node is full: .* writes stop at 95%/);
  assert.ok(kept.length >= 20, `most of the usable space took writes (${kept.length} MiB on each disk)`);
  const full = store.space();
  assert.equal(full.state, 'full');
  assert.ok(freeBytes(mnt) >= full.reserveBytes, `the reserve is still free when writes stop (${freeBytes(mnt)} >= ${full.reserveBytes})`);
  // Metadata changes still work while full, and reads of everything written.
  await store.createSnapshot('keep', 'while-full');
  for (const i of kept) assert.ok((await keep.read(i * MiB, MiB)).equals(pattern(i)), `keep MiB ${i} reads back while full`);

  fill.close();
  const before = freeBytes(mnt);
  const rewrittenBefore = store.metrics().compactionRewrittenBytes;
  await store.deleteDisk('fill');
  // Half of every segment is dead: the pass copies the other half forward, segment by segment.
  await until(() => freeBytes(mnt) - before >= (kept.length / 2) * MiB, 20_000, `most of the deleted disk's ${kept.length} MiB back (${((freeBytes(mnt) - before) / MiB).toFixed(1)} MiB so far)`);
  assert.equal(store.space().state, 'ok');
  await until(() => store.metrics().compactionRewrittenBytes > rewrittenBefore, 20_000, 'the pass that copied the shared segments to end');
  await keep.write(63 * MiB, pattern(63));
  await keep.flush();
  for (const i of kept) assert.ok((await keep.read(i * MiB, MiB)).equals(pattern(i)), `keep MiB ${i} intact`);
  const snap = store.openVolume('keep', 'while-full');
  for (const i of kept) assert.ok((await snap.read(i * MiB, MiB)).equals(pattern(i)), `keep@while-full MiB ${i} intact`);
  snap.close();
  keep.close();
});
}

test('deleting a snapshot and trimming give space back while full', async (t) => {
  const mnt = mountTmpfs(t, 64 * MiB);
  const dir = path.join(mnt, 'store');
  const store = await Store.open({ dir, segmentBytesMax: 4 * MiB, maintenanceIntervalMs: 3_600_000 });
  t.after(() => store.close());
  await store.createDisk('d', 128 * MiB);
  const v = store.openVolume('d');
  // 16 MiB under a snapshot, then overwritten: the snapshot holds the old data.
  for (let i = 0; i < 16; i++) await v.write(i * MiB, pattern(1000 + i));
  await store.createSnapshot('d', 'old');
  for (let i = 0; i < 16; i++) await v.write(i * MiB, pattern(i));
  await v.flush();
  const { written, refusal } = await writeUntilRefused(v, 16, 112);
  assertNoSpace(refusal, 'full');
  assert.equal(store.space().state, 'full');

  await store.deleteSnapshot('d', 'old');
  await until(() => store.space().state !== 'full', 10_000, 'the snapshot\'s space back');
  await v.write(127 * MiB, pattern(127));

  // Fill again with new blocks, then trim: the trimmed blocks stop being live and their segments go.
  const again = await writeUntilRefused(v, 16 + written.length, 127 - 16 - written.length);
  assertNoSpace(again.refusal, 'full again');
  assert.equal(store.space().state, 'full');
  await v.trim(0, 64 * MiB);
  await v.flush();
  const stats = await store.compact();
  assert.ok(stats.bytesReclaimed > 0, 'compaction after the trim reclaimed space');
  assert.equal(store.space().state, 'ok', `trimming half the disk left the node ok (${JSON.stringify(store.space())})`);
  await v.write(0, pattern(0));
  assert.ok((await v.read(0, MiB)).equals(pattern(0)));
  for (const i of [...written, ...again.written].filter((i) => i >= 64)) assert.ok((await v.read(i * MiB, MiB)).equals(pattern(i)), `MiB ${i}, not trimmed, intact`);
  assert.ok((await v.read(MiB, MiB)).every((b) => b === 0), 'trimmed MiB 1 reads as zeroes');
  v.close();
});

test('a store whose file system is below its reserve does not open, and says how much is free and needed', async (t) => {
  const mnt = mountTmpfs(t, 32 * MiB);
  const dir = path.join(mnt, 'store');
  const store = await Store.open({ dir });
  await store.createDisk('d', MiB);
  await store.close();
  const ballast = fillTo(mnt, MiB);
  await assert.rejects(Store.open({ dir }), (err: unknown) => {
    assertNoSpace(err, 'opening below the reserve');
    assert.match((err as Error).message, /has [\d.]+ MiB free of 32 MiB; a node needs its reserve of 3\.2 MiB free to start/);
    return true;
  });
  assert.deepEqual(fs.readdirSync(path.join(dir, 'log')).length, 1, 'nothing was written');
  fs.rmSync(ballast);
  const reopened = await Store.open({ dir });
  assert.deepEqual(reopened.listDisks().map((d) => d.name), ['d']);
  await reopened.close();
});

test('a file system filled by something else gives ENGINE_NO_SPACE; flushed data survives, the store reopens and takes writes once space is freed', async (t) => {
  const mnt = mountTmpfs(t, 24 * MiB);
  const dir = path.join(mnt, 'store');
  const ballast = path.join(mnt, 'ballast');
  // Ballast that a test can delete to free space again.
  fs.writeFileSync(ballast, Buffer.alloc(4 * MiB, 1));
  // Nothing reserved, no ratio: the file system itself runs out.
  const options = { dir, maintenanceIntervalMs: 0, segmentBytesMax: 4 * MiB, space: { reserveBytes: 0, nearfullRatio: 1, fullRatio: 1 } };
  let store = await Store.open(options);
  await store.createDisk('d', 64 * MiB);
  let v = store.openVolume('d', null);
  const { written: flushed, refusal: failure } = await writeUntilRefused(v, 0, 64);
  assertNoSpace(failure, 'writes into a full file system');
  assert.ok(flushed.length >= 4, `some writes fit before the file system filled (${flushed.length})`);
  // Let the background index apply run into the full disk too: it must not take the process down.
  await new Promise((r) => setTimeout(r, 1500));
  for (const i of flushed) assert.ok((await v.read(i * MiB, MiB)).equals(pattern(i)), `flushed MiB ${i} reads back while full`);

  fs.rmSync(ballast);
  v.close();
  await store.close();
  store = await Store.open(options);
  try {
    v = store.openVolume('d', null);
    for (const i of flushed) assert.ok((await v.read(i * MiB, MiB)).equals(pattern(i)), `flushed MiB ${i} intact after reopening`);
    // With space freed, writes work again.
    await v.write(63 * MiB, pattern(63));
    await v.flush();
    assert.ok((await v.read(63 * MiB, MiB)).equals(pattern(63)));
    v.close();
  } finally {
    await store.close();
  }
});

test('a full store takes writes again once its file system grows, without a restart', async (t) => {
  const mnt = mountTmpfs(t, 32 * MiB);
  const dir = path.join(mnt, 'store');
  const store = await Store.open({ dir, maintenanceIntervalMs: 3_600_000 });
  t.after(() => store.close());
  await store.createDisk('d', 128 * MiB);
  const v = store.openVolume('d');
  const { written, refusal } = await writeUntilRefused(v, 0, 128);
  assertNoSpace(refusal, 'full');
  assert.equal(store.space().state, 'full');
  // The administrator grows the file system (tmpfs grows in place).
  execFileSync('mount', ['-o', 'remount,size=96m', mnt]);
  await until(() => store.space().state === 'ok', 5000, 'the larger file system seen');
  const next = written.length;
  await v.write(next * MiB, pattern(next));
  await v.flush();
  for (const i of [...written, next]) assert.ok((await v.read(i * MiB, MiB)).equals(pattern(i)), `MiB ${i} reads back`);
  v.close();
});
