import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store, EngineError } from '../../src/engine/index.ts';
import { until } from '../helpers/wait.ts';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-store-'));
}

async function withStore(fn: (s: Store, dir: string) => Promise<void>, opts: { segmentBytesMax?: number } = {}): Promise<void> {
  const dir = tmp();
  const s = await Store.open({ dir, maintenanceIntervalMs: 0, ...opts });
  try {
    await fn(s, dir);
  } finally {
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function code(err: unknown): string {
  assert.ok(err instanceof EngineError, `an EngineError, got ${err}`);
  return err.code;
}

function duBytes(dir: string): number {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    if (e.isFile()) n += fs.statSync(path.join(e.parentPath, e.name)).blocks * 512;
  }
  return n;
}

test('store refuses bad names, bad sizes, duplicates and unknown objects with typed errors', async () => {
  await withStore(async (s) => {
    await assert.rejects(s.createDisk('', 4096), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.createDisk('a/b', 4096), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.createDisk('a@b', 4096), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.createDisk('a', 1000), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.createDisk('a', 0), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.createDisk('a', 2 ** 51), (e) => code(e) === 'ENGINE_INVALID');
    await s.createDisk('a', 1 << 20);
    await assert.rejects(s.createDisk('a', 1 << 20), (e) => code(e) === 'ENGINE_EXISTS');
    assert.throws(() => s.getDisk('nope'), (e) => code(e) === 'ENGINE_NOT_FOUND');
    await assert.rejects(s.createSnapshot('nope', 's'), (e) => code(e) === 'ENGINE_NOT_FOUND');
    await s.createSnapshot('a', 's');
    await assert.rejects(s.createSnapshot('a', 's'), (e) => code(e) === 'ENGINE_EXISTS');
    await assert.rejects(s.revertDisk('a', 'nope'), (e) => code(e) === 'ENGINE_NOT_FOUND');
    await assert.rejects(s.cloneDisk('a', 's', 'a'), (e) => code(e) === 'ENGINE_EXISTS');
    const snap = s.openVolume('a', 's');
    await assert.rejects(snap.write(0, Buffer.alloc(512)), (e) => code(e) === 'ENGINE_READ_ONLY');
    await assert.rejects(snap.trim(0, 512), (e) => code(e) === 'ENGINE_READ_ONLY');
    const v = s.openVolume('a');
    await assert.rejects(v.read((1 << 20) - 10, 11), (e) => code(e) === 'ENGINE_OUT_OF_RANGE');
    await assert.rejects(v.write(1 << 20, Buffer.alloc(1)), (e) => code(e) === 'ENGINE_OUT_OF_RANGE');
    await assert.rejects(v.read(-1, 1), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.deleteDisk('a'), (e) => code(e) === 'ENGINE_IN_USE');
    await assert.rejects(s.deleteSnapshot('a', 's'), (e) => code(e) === 'ENGINE_IN_USE');
    v.close();
    snap.close();
    await s.deleteDisk('a');
    assert.deepEqual(s.listDisks(), []);
  });
});

test('a 64 TiB disk is thin: space only for data written', async () => {
  await withStore(async (s, dir) => {
    const size = 64 * 2 ** 40;
    await s.createDisk('big', size);
    const v = s.openVolume('big');
    await v.write(0, Buffer.alloc(4096, 1));
    await v.write(size - 4096, Buffer.alloc(4096, 2));
    await v.write(size / 2 + 100, Buffer.from('middle'));
    await v.flush();
    assert.equal((await v.read(size - 4096, 4096)).every((x) => x === 2), true);
    assert.equal((await v.read(size / 2 + 100, 6)).toString(), 'middle');
    assert.equal((await v.read(12345678, 100)).every((x) => x === 0), true);
    const map = await v.blockStatus(0, size);
    assert.deepEqual(map.filter((e) => !e.hole).map((e) => [e.offset, e.length]), [[0, 4096], [size / 2, 4096], [size - 4096, 4096]]);
    assert.equal(s.getDisk('big').allocatedBytes, 3 * 4096);
    // Trimming the whole disk is cheap too: only blocks that hold data get a version.
    await v.trim(0, size);
    assert.equal(s.getDisk('big').allocatedBytes, 0);
    assert.ok(duBytes(dir) < 64 * 2 ** 20, `store uses ${duBytes(dir)} bytes`);
    v.close();
  });
});

test('allocated bytes follow every change, and an unchanged disk is not counted again', async () => {
  await withStore(async (s) => {
    const MiB = 1 << 20;
    // The count the map gives: blocks that hold data (not holes, not allocated zeroes).
    const fromMap = async (name: string): Promise<number> => {
      const v = s.openVolume(name);
      try {
        return (await v.blockStatus(0, s.getDisk(name).sizeBytes)).filter((e) => !e.zero).reduce((n, e) => n + e.length, 0);
      } finally {
        v.close();
      }
    };
    let scans = 0;
    // Every count walks the disk's chain through the read path's visible().
    const reader = (s as any).reader;
    const visible = reader.visible.bind(reader);
    reader.visible = (...args: unknown[]) => {
      scans++;
      return visible(...args);
    };
    const check = async (name: string, what: string): Promise<void> => {
      const expected = await fromMap(name);
      const before = scans;
      assert.equal(s.getDisk(name).allocatedBytes, expected, what);
      const counted = scans - before;
      assert.equal(s.getDisk(name).allocatedBytes, expected, `${what}, asked again`);
      assert.equal(scans - before, counted, `${what}: asked again, not counted again`);
    };
    await s.createDisk('d', 16 * MiB);
    await check('d', 'empty');
    const v = s.openVolume('d');
    await v.write(0, Buffer.alloc(3 * MiB, 1));
    await check('d', 'after a write');
    await v.write(8 * MiB + 100, Buffer.alloc(5000, 2));
    await check('d', 'after an unaligned write');
    await v.writeZeroes(MiB, MiB);
    await check('d', 'after write-zeroes');
    await v.trim(0, 512 * 1024);
    await check('d', 'after a trim');
    await v.flush();
    await s.createSnapshot('d', 'snap');
    await v.write(12 * MiB, Buffer.alloc(MiB, 3));
    await check('d', 'after a write past the snapshot');
    v.close();
    await s.cloneDisk('d', 'snap', 'c');
    await check('c', 'a clone');
    await s.revertDisk('d', 'snap');
    await check('d', 'after a revert');
    await s.resizeDisk('d', 2 * MiB);
    await check('d', 'after shrinking');
    await s.resizeDisk('d', 32 * MiB);
    await check('d', 'after growing');
    await s.deleteSnapshot('d', 'snap').catch(() => {}); // the clone may hold it
    await s.compact();
    await check('d', 'after compaction');
    await check('c', 'the clone after compaction');
    await s.deleteDisk('c');
    await s.createDisk('c', 4 * MiB);
    await check('c', 'a new disk of a deleted one\'s name');
  });
});

test('unaligned writes and zeroes are byte-exact', async () => {
  await withStore(async (s) => {
    await s.createDisk('d', 64 * 1024);
    const v = s.openVolume('d');
    const model = Buffer.alloc(64 * 1024);
    const ops: [number, number, number][] = [[1, 3, 0xaa], [4095, 2, 0xbb], [5000, 10000, 0xcc], [8191, 1, 0xdd], [0, 65536, 0x11], [100, 7, 0x22]];
    for (const [off, len, val] of ops) {
      await v.write(off, Buffer.alloc(len, val));
      model.fill(val, off, off + len);
    }
    await v.writeZeroes(10, 9000, { mayTrim: false });
    model.fill(0, 10, 9010);
    await v.trim(20000, 4097);
    model.fill(0, 20000, 24097);
    assert.ok((await v.read(0, 65536)).equals(model));
    // Concurrent partial writes to different sectors of one block all land.
    const writes = [];
    for (let i = 0; i < 8; i++) {
      writes.push(v.write(32768 + i * 512, Buffer.alloc(512, i + 1)));
      model.fill(i + 1, 32768 + i * 512, 32768 + (i + 1) * 512);
    }
    await Promise.all(writes);
    assert.ok((await v.read(0, 65536)).equals(model));
    v.close();
  });
});

test('snapshots, clones and revert see the right content; clones outlive their parents', async () => {
  await withStore(async (s) => {
    await s.createDisk('base', 1 << 20);
    const v = s.openVolume('base');
    await v.write(0, Buffer.alloc(8192, 1));
    await s.createSnapshot('base', 'one');
    await v.write(4096, Buffer.alloc(4096, 2));
    await s.createSnapshot('base', 'two');
    await v.write(0, Buffer.alloc(4096, 3));
    const c = await s.cloneDisk('base', 'one', 'copy');
    assert.equal(c.origin, 'base@one');
    const cv = s.openVolume('copy');
    assert.deepEqual([...(await cv.read(0, 8192)).subarray(4090, 4100)], [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]);
    await cv.write(0, Buffer.alloc(4096, 9));
    assert.equal((await v.read(0, 1))[0], 3, 'a clone write does not reach the parent');
    await s.revertDisk('base', 'one');
    assert.equal((await v.read(0, 1))[0], 1);
    assert.equal((await v.read(4096, 1))[0], 1);
    assert.deepEqual(s.getDisk('base').snapshots, ['one', 'two'], 'revert keeps every snapshot');
    const two = s.openVolume('base', 'two');
    assert.equal((await two.read(4096, 1))[0], 2);
    two.close();
    // The snapshot a clone was made from may go, and so may the parent disk: the clone keeps
    // what it reads.
    await s.deleteSnapshot('base', 'one');
    v.close();
    await s.deleteDisk('base');
    await s.compact();
    assert.equal((await cv.read(0, 1))[0], 9);
    assert.equal((await cv.read(4096, 1))[0], 1);
    cv.close();
  });
});

test('deleting a snapshot frees its space once compacted', async () => {
  await withStore(
    async (s) => {
      await s.createDisk('d', 16 << 20);
      const v = s.openVolume('d');
      const MiB = 1 << 20;
      for (let i = 0; i < 8; i++) await v.write(i * MiB, Buffer.alloc(MiB, 1));
      await s.createSnapshot('d', 'snap');
      for (let i = 0; i < 8; i++) await v.write(i * MiB, Buffer.alloc(MiB, 2));
      await s.compact();
      assert.equal((await s.stats()).liveBytes, 16 * MiB, 'the snapshot holds the old data');
      const before = (await s.stats()).logBytes;
      await s.deleteSnapshot('d', 'snap');
      const stats = await s.compact();
      assert.equal((await s.stats()).liveBytes, 8 * MiB);
      assert.ok(stats.bytesReclaimed >= 7 * MiB, `reclaimed ${stats.bytesReclaimed}`);
      assert.ok((await s.stats()).logBytes <= before - 7 * MiB, `log ${(await s.stats()).logBytes} was ${before}`);
      assert.ok((await v.read(0, 8 * MiB)).every((x) => x === 2));
      v.close();
    },
    { segmentBytesMax: 2 << 20 },
  );
});

test('deleting the newest snapshot of a line left by a revert frees what only it read', async () => {
  await withStore(async (s) => {
    const MiB = 1 << 20;
    await s.createDisk('d', 4 * MiB);
    const v = s.openVolume('d');
    await v.write(0, Buffer.alloc(MiB, 1));
    await s.createSnapshot('d', 'a');
    await v.write(0, Buffer.alloc(MiB, 2)); // read only by b once the disk is reverted to a
    await s.createSnapshot('d', 'b');
    await s.revertDisk('d', 'a');
    await s.compact();
    assert.equal((await s.stats()).liveBytes, 2 * MiB);
    await s.deleteSnapshot('d', 'b'); // no viewpoint above b on the old line: sweep what is newer than a
    await s.compact();
    assert.equal((await s.stats()).liveBytes, MiB);
    assert.ok((await v.read(0, MiB)).every((x) => x === 1));
    v.close();
  });
});

/** Writes 2048 blocks, then overwrites all but every 8th: the first segments are mostly dead. */
async function mostlyDeadSegments(s: Store): Promise<Buffer> {
  await s.createDisk('d', 8 << 20);
  const v = s.openVolume('d');
  const model = Buffer.alloc(8 << 20);
  for (let i = 0; i < 2048; i++) {
    const b = Buffer.alloc(4096, (i % 250) + 1);
    await v.write(i * 4096, b);
    b.copy(model, i * 4096);
  }
  for (let i = 0; i < 2048; i++) {
    if (i % 8 === 0) continue;
    const b = Buffer.alloc(4096, 255);
    await v.write(i * 4096, b);
    b.copy(model, i * 4096);
  }
  await v.flush();
  v.close();
  return model;
}

test('compaction rewrites the live part of mostly-dead segments and drops them', async () => {
  await withStore(
    async (s) => {
      const model = await mostlyDeadSegments(s);
      await new Promise((r) => setTimeout(r, 100)); // the index absorbs the synced log
      const before = await s.stats();
      assert.equal(before.liveBytes, 8 << 20);
      const stats = await s.compact();
      const after = await s.stats();
      assert.ok(stats.bytesRewritten > 0 || stats.segmentsRemoved > 0, JSON.stringify(stats));
      assert.ok(after.logBytes < before.logBytes, `log shrank: ${before.logBytes} → ${after.logBytes}`);
      const v = s.openVolume('d');
      assert.ok((await v.read(0, 8 << 20)).equals(model));
      v.close();
    },
    { segmentBytesMax: 1 << 20 },
  );
});

/** Reads a block every couple of milliseconds until `stop` is set; returns the reads done. */
async function keepBusy(s: Store, state: { stop: boolean }): Promise<number> {
  const v = s.openVolume('d');
  let n = 0;
  try {
    while (!state.stop) {
      await v.read((n % 2048) * 4096, 4096);
      n++;
      await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    v.close();
  }
  return n;
}

/**
 * A store with a background pass every 50 ms, quiet below 20 requests a second. `prepare` first
 * runs on the same directory opened without background passes (its dead space stays as made,
 * however slow the machine), and its result goes to `fn`.
 */
async function withMaintainedStore<T>(fn: (s: Store, busy: { stop: boolean }, prepared: T) => Promise<void>, prepare?: (s: Store) => Promise<T>): Promise<void> {
  const dir = tmp();
  let prepared = undefined as T;
  if (prepare !== undefined) {
    const plain = await Store.open({ dir, segmentBytesMax: 1 << 20, maintenanceIntervalMs: 0 });
    try {
      prepared = await prepare(plain);
    } finally {
      await plain.close();
    }
  }
  const s = await Store.open({ dir, segmentBytesMax: 1 << 20, maintenanceIntervalMs: 50, quietRequestsPerSecond: 20 });
  const busy = { stop: false };
  try {
    await fn(s, busy, prepared);
  } finally {
    busy.stop = true;
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

test('background compaction waits for a quiet store while dead space is under half the log', async () => {
  await withMaintainedStore(async (s, busy) => {
    const model = await mostlyDeadSegments(s);
    const reads = keepBusy(s, busy);
    const first = await s.stats();
    assert.ok(first.logBytes - first.liveBytes < first.logBytes / 2, `dead under half: ${JSON.stringify(first)}`);
    // About 25 passes run while the store is busy: none copies anything, so the log never shrinks.
    for (let i = 0; i < 25; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const now = await s.stats();
      assert.ok(now.logBytes >= first.logBytes, `no compaction while busy: ${first.logBytes} → ${now.logBytes}`);
    }
    busy.stop = true;
    assert.ok((await reads) > 100, 'the store was kept busy');
    await until(async () => (await s.stats()).logBytes < first.logBytes * 0.7, 15_000, 'the log to shrink once the store is quiet', 50);
    const v = s.openVolume('d');
    assert.ok((await v.read(0, 8 << 20)).equals(model));
    v.close();
  });
});

test('background compaction competes with requests once dead space piles up', async () => {
  await withMaintainedStore<Buffer>(
    async (s, busy, model) => {
      const reads = keepBusy(s, busy);
      const first = await s.stats();
      assert.ok(first.logBytes - first.liveBytes > (first.logBytes * 3) / 4, `dead over three quarters: ${JSON.stringify(first)}`);
      await until(async () => (await s.stats()).logBytes < first.logBytes / 2, 15_000, 'the log to shrink while the store is busy', 50);
      busy.stop = true;
      assert.ok((await reads) > 0);
      const v = s.openVolume('d');
      assert.ok((await v.read(0, 8 << 20)).equals(model));
      v.close();
    },
    async (s) => {
      // Eight rounds, round r writing the blocks whose index is r or more mod 8: every segment
      // keeps the blocks no later round writes, so none is wholly dead (those are dropped
      // without compaction), and 28 of the 36 MiB written are dead.
      await s.createDisk('d', 8 << 20);
      const v = s.openVolume('d');
      const model = Buffer.alloc(8 << 20);
      for (let r = 0; r < 8; r++) {
        for (let i = 0; i < 2048; i++) {
          if (i % 8 < r) continue;
          const b = Buffer.alloc(4096, ((i + r) % 250) + 1);
          await v.write(i * 4096, b);
          b.copy(model, i * 4096);
        }
      }
      await v.flush();
      v.close();
      return model;
    },
  );
});

test('compaction refuses to copy a live block whose record fails its checksum, and keeps its segment', async () => {
  await withStore(
    async (s, dir) => {
      const model = await mostlyDeadSegments(s);
      // Block 8 (filled with 9s) stays live in the first segment: damage one byte of it there.
      const seg = path.join(dir, 'log', '0000000001.seg');
      const bytes = fs.readFileSync(seg);
      const at = bytes.indexOf(Buffer.alloc(4096, 9));
      assert.ok(at > 0, 'block 8 is in the first segment');
      const fd = fs.openSync(seg, 'r+');
      fs.writeSync(fd, Buffer.from([0x77]), 0, 1, at + 100);
      fs.closeSync(fd);
      await assert.rejects(s.compact(), (e) => code(e) === 'ENGINE_CORRUPT' && /checksum/.test((e as Error).message));
      assert.ok(fs.existsSync(seg), 'the segment holding the damaged record stays');
      // A read of the damaged block fails its checksum (its record is that one block); every
      // other block still reads what was written.
      const v = s.openVolume('d');
      await assert.rejects(v.read(8 * 4096, 4096), (e) => code(e) === 'ENGINE_IO' && /checksum/.test((e as Error).message));
      const before = await v.read(0, 8 * 4096);
      const after = await v.read(9 * 4096, (8 << 20) - 9 * 4096);
      v.close();
      assert.ok(before.equals(model.subarray(0, 8 * 4096)));
      assert.ok(after.equals(model.subarray(9 * 4096)));
    },
    { segmentBytesMax: 1 << 20 },
  );
});

test('a dead segment left part-shrunk by a crash during its removal is dropped on reopen', async () => {
  const dir = tmp();
  const opts = { dir, maintenanceIntervalMs: 0, segmentBytesMax: 1 << 20 };
  let s = await Store.open(opts);
  try {
    await s.createDisk('d', 4 << 20);
    const v = s.openVolume('d');
    for (const fill of [1, 2]) for (let i = 0; i < 512; i++) await v.write(i * 4096, Buffer.alloc(4096, fill + (i % 100)));
    await v.flush();
    v.close();
    await s.close();
    // The first segment holds only the first pass, all overwritten since: it is dead. Cut it
    // short, as a crash between two of its removal's shrinking steps leaves it.
    const first = path.join(dir, 'log', '0000000001.seg');
    fs.truncateSync(first, Math.floor(fs.statSync(first).size / 3));
    s = await Store.open(opts);
    assert.ok(!fs.existsSync(first), 'the dead segment is gone');
    const v2 = s.openVolume('d');
    const got = await v2.read(0, 2 << 20);
    v2.close();
    for (let i = 0; i < 512; i++) assert.ok(got.subarray(i * 4096, (i + 1) * 4096).equals(Buffer.alloc(4096, 2 + (i % 100))), `block ${i}`);
    assert.equal((await s.stats()).liveBytes, 2 << 20);
  } finally {
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('changes since a snapshot are tracked per 512-byte sector', async () => {
  await withStore(async (s) => {
    await s.createDisk('d', 1 << 20);
    const v = s.openVolume('d');
    await v.write(0, Buffer.alloc(1 << 20, 1));
    await s.createSnapshot('d', 's');
    await v.write(4096 + 1024, Buffer.alloc(512, 2));
    await v.write(65536, Buffer.alloc(8192, 3));
    const changed = (await v.changedSince('s', 0, 1 << 20)).filter((e) => e.changed).map((e) => [e.offset, e.length]);
    assert.deepEqual(changed, [[5120, 512], [65536, 8192]]);
    // A later partial write to another sector of the same block adds to it.
    await v.write(4096, Buffer.alloc(10, 4));
    await new Promise((r) => setTimeout(r, 300)); // let the index absorb the log
    const again = (await v.changedSince('s', 0, 16384)).filter((e) => e.changed).map((e) => [e.offset, e.length]);
    assert.deepEqual(again, [[4096, 512], [5120, 512]]);
    v.close();
  });
});

test('changes between two snapshots of a wide sparse disk: only the versions between them count', async () => {
  await withStore(async (s) => {
    const GiB = 2 ** 30;
    await s.createDisk('d', 64 * GiB);
    const v = s.openVolume('d');
    // Written before the first snapshot, in chunks far apart: not changes.
    for (const at of [0, 5 * GiB, 40 * GiB + 4096]) await v.write(at, Buffer.alloc(8192, 1));
    await s.createSnapshot('d', 'a');
    await v.write(5 * GiB + 4096 + 1024, Buffer.alloc(512, 2)); // one sector of a block written before
    await v.write(5 * GiB + 4096 + 1024, Buffer.alloc(512, 3)); // and again
    await v.write(63 * GiB, Buffer.alloc(4096, 4)); // a chunk nothing was written to before
    await s.createSnapshot('d', 'b');
    await v.write(40 * GiB, Buffer.alloc(4096, 5)); // after b: not a change between a and b
    const expected = [[5 * GiB + 4096 + 1024, 512], [63 * GiB, 4096]];
    const changed = async () => {
      const b = s.openVolume('d', 'b');
      try {
        const out: number[][] = [];
        for (let at = 0; at < 64 * GiB; at += GiB) for (const e of await b.changedSince('a', at, GiB)) if (e.changed) out.push([e.offset, e.length]);
        return out;
      } finally {
        b.close();
      }
    };
    assert.deepEqual(await changed(), expected); // from the log records not yet in the index
    await s.stats(); // absorbs them into the index
    assert.deepEqual(await changed(), expected);
    const head = (await v.changedSince('b', 40 * GiB, GiB)).filter((e) => e.changed).map((e) => [e.offset, e.length]);
    assert.deepEqual(head, [[40 * GiB, 4096]]);
    v.close();
  });
});

test('recovery skips a failed record in mid-segment and keeps the records after it', async () => {
  const dir = tmp();
  try {
    let s = await Store.open({ dir, maintenanceIntervalMs: 0, syncIntervalMs: 60_000 });
    await s.createDisk('d', 1 << 20);
    let v = s.openVolume('d');
    await v.write(0, Buffer.alloc(4096, 1));
    await v.write(4096, Buffer.alloc(4096, 2));
    await v.write(8192, Buffer.alloc(4096, 3), { fua: true });
    v.close();
    // Crash before the index absorbed the log: reopen from a copy taken now.
    const copy = tmp();
    fs.cpSync(dir, copy, { recursive: true });
    await s.close();
    // Damage the second record's payload in the copy, as a failed write would leave it.
    const logDir = path.join(copy, 'log');
    const seg = path.join(logDir, fs.readdirSync(logDir).sort()[0]);
    const bytes = fs.readFileSync(seg);
    const second = 64 + (64 + 4096) + 64 + 100;
    bytes[second] ^= 0xff;
    fs.writeFileSync(seg, bytes);
    s = await Store.open({ dir: copy, maintenanceIntervalMs: 0 });
    assert.equal(s.recovery.recordsReplayed, 2);
    assert.equal(s.recovery.tornBytesDropped, 64 + 4096);
    v = s.openVolume('d');
    assert.equal((await v.read(0, 1))[0], 1);
    assert.equal((await v.read(4096, 1))[0], 0, 'the damaged record is not applied');
    assert.equal((await v.read(8192, 1))[0], 3, 'the record after it is');
    v.close();
    await s.close();
    fs.rmSync(copy, { recursive: true, force: true });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a reopened store replays only the log tail its index had not absorbed', async () => {
  const dir = tmp();
  try {
    let s = await Store.open({ dir, maintenanceIntervalMs: 0 });
    await s.createDisk('d', 64 << 20);
    let v = s.openVolume('d');
    for (let i = 0; i < 64; i++) await v.write(i << 20, Buffer.alloc(1 << 20, i + 1));
    v.close();
    await s.close();
    s = await Store.open({ dir, maintenanceIntervalMs: 0 });
    assert.equal(s.recovery.recordsReplayed, 0, 'a clean close leaves nothing to replay');
    // Restarts without writes leave no empty segments behind.
    const segments = (await s.stats()).segments;
    for (let i = 0; i < 3; i++) {
      await s.close();
      s = await Store.open({ dir, maintenanceIntervalMs: 0 });
    }
    assert.equal((await s.stats()).segments, segments);
    v = s.openVolume('d');
    for (let i = 0; i < 64; i++) assert.equal((await v.read(i << 20, 1))[0], i + 1);
    v.close();
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a torn record at the log tail is detected by its checksum and dropped on recovery', async () => {
  const dir = tmp();
  try {
    let s = await Store.open({ dir, maintenanceIntervalMs: 0, syncIntervalMs: 60_000 });
    await s.createDisk('d', 1 << 20);
    let v = s.openVolume('d');
    await v.write(0, Buffer.alloc(8192, 7), { fua: true });
    v.close();
    await s.close();
    // Append a copy of a valid record cut short, then garbage: what a crash mid-append leaves.
    const logDir = path.join(dir, 'log');
    const segs = fs.readdirSync(logDir).sort();
    const first = fs.readFileSync(path.join(logDir, segs[0]));
    const last = path.join(logDir, segs[segs.length - 1]);
    fs.appendFileSync(last, Buffer.concat([first.subarray(64, 64 + 64 + 5000), Buffer.from('garbage!')]));
    s = await Store.open({ dir, maintenanceIntervalMs: 0 });
    assert.equal(s.recovery.tornBytesDropped, 64 + 5000 + 8);
    v = s.openVolume('d');
    assert.ok((await v.read(0, 8192)).every((x) => x === 7));
    await v.write(8192, Buffer.alloc(4096, 8), { fua: true });
    assert.equal((await v.read(8192, 1))[0], 8);
    v.close();
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
