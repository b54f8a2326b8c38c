import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store, EngineError, type DamagedExtent, type ScrubReport } from '../../src/engine/index.ts';
import { rng, randInt } from './model.ts';
import { FaultyFiles } from '../helpers/faulty-files.ts';

const BS = 4096;

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-scrub-'));
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

/** 4 KiB that appear nowhere else: `tag` and the block number, repeated. */
function pattern(tag: string, block: number): Buffer {
  return Buffer.alloc(BS, `<${tag}:${block}>`);
}

/** Blocks of `tag` from `first` on, `count` of them, as one buffer (one write, one record). */
function patterns(tag: string, first: number, count: number): Buffer {
  return Buffer.concat(Array.from({ length: count }, (_, i) => pattern(tag, first + i)));
}

function segmentFiles(dir: string): string[] {
  const logDir = path.join(dir, 'log');
  return fs.readdirSync(logDir).filter((n) => n.endsWith('.seg')).sort().map((n) => path.join(logDir, n));
}

function segmentId(file: string): number {
  return Number(path.basename(file, '.seg'));
}

/** Where a block's data lies in the log: the segment file and offset holding `pattern(tag, block)`. */
function locate(dir: string, tag: string, block: number): { file: string; segment: number; offset: number } {
  const needle = pattern(tag, block);
  for (const file of segmentFiles(dir)) {
    const offset = fs.readFileSync(file).indexOf(needle);
    if (offset >= 0) return { file, segment: segmentId(file), offset };
  }
  assert.fail(`no data of ${tag}:${block} in the log`);
}

/** Flips one byte `at` bytes into a file. */
function flip(file: string, at: number): void {
  const fd = fs.openSync(file, 'r+');
  const b = Buffer.alloc(1);
  fs.readSync(fd, b, 0, 1, at);
  b[0] ^= 0xff;
  fs.writeSync(fd, b, 0, 1, at);
  fs.closeSync(fd);
}

/** Writes, flushes, and has the index absorb everything (scrub checks what the index holds). */
async function settle(s: Store): Promise<void> {
  await s.flush();
  await s.stats();
}

/** The extents without the fields a test does not fix, sorted. */
function views(r: ScrubReport): Array<Pick<DamagedExtent, 'disk' | 'offset' | 'length' | 'head' | 'snapshots' | 'reason'>> {
  return r.damaged.map(({ disk, offset, length, head, snapshots, reason }) => ({ disk, offset, length, head, snapshots, reason }));
}

function code(err: unknown): string {
  assert.ok(err instanceof EngineError, `an EngineError, got ${err}`);
  return err.code;
}

test('scrub reports a clean store clean: several disks, snapshots, clones, overwrites, after compaction and reopen', async () => {
  const dir = tmp();
  try {
    let s = await Store.open({ dir, maintenanceIntervalMs: 0, segmentBytesMax: 256 * 1024 });
    await s.createDisk('a', 4 << 20);
    await s.createDisk('b', (1 << 20) + 512);
    const a = s.openVolume('a');
    const b = s.openVolume('b');
    for (let i = 0; i < 64; i++) await a.write(i * BS, pattern('a', i));
    await a.write(100 * BS, patterns('a', 100, 16));
    await b.write(1000, Buffer.alloc(5000, 7));
    await b.write(1 << 20, Buffer.alloc(512, 9));
    await s.createSnapshot('a', 's1');
    for (let i = 0; i < 64; i += 2) await a.write(i * BS, pattern('a2', i));
    await a.trim(100 * BS, 4 * BS);
    await s.createSnapshot('a', 's2');
    await s.cloneDisk('a', 's1', 'c');
    const c = s.openVolume('c');
    await c.write(3 * BS, pattern('c', 3));
    for (let i = 0; i < 64; i++) await a.write(i * BS, pattern('a3', i));
    await s.deleteSnapshot('a', 's2');
    await settle(s);
    await s.compact();
    await a.close();
    await b.close();
    await c.close();
    const r = await s.scrub();
    assert.deepEqual(r.damaged, []);
    assert.equal(r.damagedBlocks, 0);
    assert.deepEqual(r.disks, ['a', 'b', 'c']);
    assert.ok(r.segments > 1, `read ${r.segments} segments`);
    assert.ok(r.records > 0 && r.bytesChecked > 0 && r.bytesRead >= r.bytesChecked, JSON.stringify(r));
    assert.equal(r.segmentsSkipped, 0);
    await s.close();
    s = await Store.open({ dir, maintenanceIntervalMs: 0, segmentBytesMax: 256 * 1024 });
    const again = await s.scrub();
    assert.deepEqual(again.damaged, []);
    assert.equal(again.records, r.records);
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scrub reports a damaged record whole, by disk and offset, with the snapshots and clones that see each block', async () => {
  await withStore(async (s, dir) => {
    await s.createDisk('a', 1 << 20);
    await s.createDisk('other', 1 << 20);
    const a = s.openVolume('a');
    await a.write(4 * BS, patterns('p', 4, 4)); // one record: blocks 4..7
    await a.write(20 * BS, pattern('q', 20));
    await s.openVolume('other').write(0, pattern('o', 0));
    await s.createSnapshot('a', 's1');
    await s.cloneDisk('a', 's1', 'c');
    await a.write(6 * BS, pattern('p2', 6)); // the head no longer reads block 6 of the record
    await s.createSnapshot('a', 's2');
    await settle(s);
    const at = locate(dir, 'p', 5);
    flip(at.file, at.offset + 100);
    const r = await s.scrub();
    const recordOffset = locate(dir, 'p', 4).offset - 64;
    assert.deepEqual(views(r), [
      { disk: 'a', offset: 4 * BS, length: 2 * BS, head: true, snapshots: ['s1', 's2'], reason: 'checksum' },
      { disk: 'a', offset: 6 * BS, length: BS, head: false, snapshots: ['s1'], reason: 'checksum' },
      { disk: 'a', offset: 7 * BS, length: BS, head: true, snapshots: ['s1', 's2'], reason: 'checksum' },
      { disk: 'c', offset: 4 * BS, length: 4 * BS, head: true, snapshots: [], reason: 'checksum' },
    ]);
    for (const e of r.damaged) {
      assert.equal(e.segment, at.segment);
      assert.equal(e.recordOffset, recordOffset);
    }
    assert.equal(r.damagedBlocks, 4, 'four versions, whoever reads them');
    // The block the clone wrote itself is its own; the parent's damage stays the parent's.
    await s.openVolume('c').write(5 * BS, pattern('c', 5));
    await settle(s);
    const after = await s.scrub({ disks: ['c'] });
    assert.deepEqual(views(after), [
      { disk: 'c', offset: 4 * BS, length: BS, head: true, snapshots: [], reason: 'checksum' },
      { disk: 'c', offset: 6 * BS, length: 2 * BS, head: true, snapshots: [], reason: 'checksum' },
    ]);
    assert.equal(after.damagedBlocks, 3);
  });
});

test('scrub does not report a damaged record nothing reads any more', async () => {
  await withStore(async (s, dir) => {
    await s.createDisk('a', 1 << 20);
    const a = s.openVolume('a');
    await a.write(9 * BS, pattern('dead', 9));
    await a.write(10 * BS, pattern('live', 10));
    await settle(s);
    await a.write(9 * BS, pattern('new', 9)); // overwritten, no snapshot between: the old version is dropped
    await settle(s);
    const at = locate(dir, 'dead', 9);
    flip(at.file, at.offset + 7);
    const r = await s.scrub();
    assert.deepEqual(r.damaged, []);
    assert.equal(r.records, 2, 'the two live records are checked, the dead one is not');
  });
});

test('scrub reports a damaged record header: the blocks it held, found through the index', async () => {
  await withStore(async (s, dir) => {
    await s.createDisk('a', 1 << 20);
    const a = s.openVolume('a');
    for (let i = 0; i < 8; i++) await a.write(i * BS, pattern('h', i));
    await settle(s);
    // A header's checksum fails: its payload length can no longer be trusted, so the records
    // after it are found by searching, and its blocks through the index. Sealed segments only
    // have their live counters to go by, so roll the log over first.
    for (let i = 0; i < 80; i++) await a.write(200 * BS + (i % 40) * BS, pattern('fill', i));
    await settle(s);
    const at = locate(dir, 'h', 3);
    flip(at.file, at.offset - 64 + 20); // blockCount of the header
    const r = await s.scrub();
    assert.deepEqual(views(r), [{ disk: 'a', offset: 3 * BS, length: BS, head: true, snapshots: [], reason: 'checksum' }]);
    assert.equal(r.damaged[0].recordOffset, at.offset - 64);
  }, { segmentBytesMax: 64 * 1024 });
});

/** Fills disk `d` with one-block records of `tag` over `blocks` blocks, in segments of 64 KiB. */
async function fill(s: Store, d: string, tag: string, blocks: number): Promise<void> {
  const v = s.openVolume(d);
  for (let i = 0; i < blocks; i++) await v.write(i * BS, pattern(tag, i));
  await v.close();
  await settle(s);
}

/** The blocks of `tag` whose data lies at or past `from` in `file`. */
function blocksFrom(file: string, tag: string, blocks: number, from: number): number[] {
  const bytes = fs.readFileSync(file);
  const out: number[] = [];
  for (let i = 0; i < blocks; i++) {
    const at = bytes.indexOf(pattern(tag, i));
    if (at >= 0 && at + BS > from) out.push(i);
  }
  return out;
}

test('scrub reports the blocks of a truncated sealed segment, while open and in a read-only open (a writable one refuses)', async () => {
  const dir = tmp();
  const opts = { dir, maintenanceIntervalMs: 0, segmentBytesMax: 64 * 1024 };
  try {
    let s = await Store.open(opts);
    await s.createDisk('t', 1 << 20);
    await s.createSnapshot('t', 'empty');
    await fill(s, 't', 'b', 60);
    await s.createSnapshot('t', 'full');
    const file = segmentFiles(dir)[1];
    const size = fs.statSync(file).size;
    // Cut in the middle of a record: that record is found by its header, the ones after it through the index.
    const cut = Math.floor(size / 2) + 1000;
    const lost = blocksFrom(file, 'b', 60, cut);
    assert.ok(lost.length >= 2, `blocks past the cut: ${lost}`);
    fs.truncateSync(file, cut);
    const expect = (r: ScrubReport) => {
      const got = r.damaged.flatMap((e) => {
        assert.equal(e.reason, 'truncated');
        assert.equal(e.segment, segmentId(file));
        assert.deepEqual([e.disk, e.head, e.snapshots], ['t', true, ['full']]);
        return Array.from({ length: e.length / BS }, (_, i) => e.offset / BS + i);
      });
      assert.deepEqual(got, lost);
      assert.equal(r.damagedBlocks, lost.length);
      assert.ok(r.damaged.some((e) => e.recordOffset !== null), 'the record cut in two is placed');
    };
    expect(await s.scrub());
    await s.close();
    await assert.rejects(Store.open(opts), (e) => code(e) === 'ENGINE_CORRUPT' && /truncated/.test((e as Error).message));
    s = await Store.open({ ...opts, readOnly: true });
    expect(await s.scrub());
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scrub reports the blocks of a missing segment, while open and in a read-only open (a writable one refuses)', async () => {
  const dir = tmp();
  const opts = { dir, maintenanceIntervalMs: 0, segmentBytesMax: 64 * 1024 };
  try {
    let s = await Store.open(opts);
    await s.createDisk('m', 1 << 20);
    await fill(s, 'm', 'b', 60);
    const file = segmentFiles(dir)[1];
    const lost = blocksFrom(file, 'b', 60, 0);
    fs.rmSync(file);
    const expect = (r: ScrubReport) => {
      assert.ok(r.damaged.every((e) => e.reason === 'missing-segment' && e.segment === segmentId(file) && e.recordOffset === null && e.head), JSON.stringify(r.damaged));
      assert.deepEqual(r.damaged.flatMap((e) => Array.from({ length: e.length / BS }, (_, i) => e.offset / BS + i)), lost);
    };
    expect(await s.scrub());
    await s.close();
    await assert.rejects(Store.open(opts), (e) => code(e) === 'ENGINE_CORRUPT' && /missing/.test((e as Error).message));
    s = await Store.open({ ...opts, readOnly: true });
    expect(await s.scrub());
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scrub of some disks checks and reports only theirs; unknown disks are refused', async () => {
  await withStore(async (s, dir) => {
    await s.createDisk('a', 1 << 20);
    await s.createDisk('b', 1 << 20);
    await s.openVolume('a').write(0, pattern('a', 0));
    await s.openVolume('b').write(0, pattern('b', 0));
    await s.createSnapshot('a', 'base');
    await s.cloneDisk('a', 'base', 'c');
    await settle(s);
    for (const [tag, block] of [['a', 0], ['b', 0]] as const) {
      const at = locate(dir, tag, block);
      flip(at.file, at.offset + 1);
    }
    const all = await s.scrub();
    assert.deepEqual(all.damaged.map((e) => e.disk), ['a', 'b', 'c']);
    const onlyB = await s.scrub({ disks: ['b'] });
    assert.deepEqual(onlyB.disks, ['b']);
    assert.deepEqual(views(onlyB), [{ disk: 'b', offset: 0, length: BS, head: true, snapshots: [], reason: 'checksum' }]);
    assert.equal(onlyB.records, 1);
    // A clone reads its parent's blocks: a scrub of the clone checks them.
    const onlyC = await s.scrub({ disks: ['c', 'c'] });
    assert.deepEqual(views(onlyC), [{ disk: 'c', offset: 0, length: BS, head: true, snapshots: [], reason: 'checksum' }]);
    await assert.rejects(s.scrub({ disks: ['a', 'nope'] }), (e) => code(e) === 'ENGINE_NOT_FOUND');
    await assert.rejects(s.scrub({ disks: [] }), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.scrub({ rateBytesPerSecond: 0 }), (e) => code(e) === 'ENGINE_INVALID');
  });
});

test('scrub stops when its signal aborts, and when the store closes', async () => {
  const dir = tmp();
  try {
    const s = await Store.open({ dir, maintenanceIntervalMs: 0, segmentBytesMax: 1 << 20 });
    await s.createDisk('a', 8 << 20);
    await s.openVolume('a').write(0, Buffer.alloc(4 << 20, 1));
    await settle(s);
    const ac = new AbortController();
    await assert.rejects(
      s.scrub({ signal: ac.signal, onProgress: (p) => p.bytesRead > 0 && ac.abort() }),
      (e) => (e as Error).name === 'AbortError',
    );
    await assert.rejects(s.scrub({ signal: AbortSignal.abort() }), (e) => (e as Error).name === 'AbortError');
    let progressed = 0;
    const slow = assert.rejects(
      s.scrub({ rateBytesPerSecond: 256 * 1024, onProgress: () => progressed++ }),
      (e) => code(e) === 'ENGINE_CLOSED',
    );
    while (progressed === 0) await new Promise((r) => setTimeout(r, 5));
    const t0 = performance.now();
    await s.close();
    assert.ok(performance.now() - t0 < 2000, 'close does not wait for the scrub to finish');
    await slow;
    await assert.rejects(s.scrub(), (e) => code(e) === 'ENGINE_CLOSED');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scrub keeps to its rate (a lower bound on its duration)', async () => {
  await withStore(async (s) => {
    await s.createDisk('a', 4 << 20);
    await s.openVolume('a').write(0, Buffer.alloc(3 << 20, 3));
    await settle(s);
    const fast = await s.scrub();
    const rate = 2 << 20;
    const r = await s.scrub({ rateBytesPerSecond: rate });
    assert.equal(r.bytesRead, fast.bytesRead);
    // A quarter second's burst is free; the rest is paid at the rate. A slow machine only adds.
    const floorMs = ((r.bytesRead - rate / 4 - (1 << 20)) / rate) * 1000;
    assert.ok(r.durationMs >= floorMs, `${r.bytesRead} bytes at ${rate}/s took ${r.durationMs} ms, at least ${floorMs} expected`);
  });
});

test('scrub skips a segment compaction removes under it, and reports nothing false', async () => {
  await withStore(async (s) => {
    await s.createDisk('a', 16 << 20);
    const a = s.openVolume('a');
    await a.write(0, Buffer.alloc(8 << 20, 1));
    await settle(s);
    // Most of the first segments dead: compaction copies the rest out and removes them.
    await a.write(0, Buffer.alloc(7 << 20, 2));
    await settle(s);
    let compaction: Promise<unknown> | null = null;
    const r = await s.scrub({
      rateBytesPerSecond: 8 << 20,
      onProgress: (p) => {
        if (compaction === null && p.bytesRead > 0) compaction = s.compact();
      },
    });
    await compaction;
    assert.deepEqual(r.damaged, []);
    assert.ok(r.segmentsSkipped >= 1, JSON.stringify(r));
    const after = await s.scrub();
    assert.deepEqual(after.damaged, []);
  }, { segmentBytesMax: 4 << 20 });
});

test('scrub under concurrent writes, snapshots, clones, deletes and background compaction reports nothing false', async () => {
  const seed = Number(process.env.TESSERA_TEST_SEED ?? Date.now() % 100_000);
  const r = rng(seed);
  const dir = tmp();
  const s = await Store.open({ dir, maintenanceIntervalMs: 20, syncIntervalMs: 5, applyDelayMs: 2, segmentBytesMax: 128 * 1024, quietRequestsPerSecond: 1e9 });
  try {
    const disks = ['a', 'b'];
    for (const d of disks) await s.createDisk(d, 1 << 20);
    let stop = false;
    let step = 0;
    const writer = (async () => {
      while (!stop) {
        step++;
        const d = disks[randInt(r, 0, disks.length)];
        const what = r();
        if (what < 0.8) {
          const v = s.openVolume(d);
          const blocks = randInt(r, 1, 9);
          await v.write(randInt(r, 0, 256 - blocks) * BS, Buffer.alloc(blocks * BS, randInt(r, 1, 255)));
          await v.close();
        } else if (what < 0.88) {
          const snaps = s.listSnapshots(d);
          if (snaps.length > 3) await s.deleteSnapshot(d, snaps[randInt(r, 0, snaps.length)].name);
          else await s.createSnapshot(d, `s${step}`);
        } else if (what < 0.92) {
          const snaps = s.listSnapshots(d);
          const clone = `c${step}`;
          if (snaps.length > 0 && s.listDisks().length < 6) {
            await s.cloneDisk(d, snaps[0].name, clone);
            disks.push(clone);
          }
        } else if (what < 0.95 && disks.length > 2) {
          const gone = disks.splice(randInt(r, 2, disks.length), 1)[0];
          await s.deleteDisk(gone);
        } else {
          await new Promise((resolve) => setTimeout(resolve, randInt(r, 0, 5)));
        }
      }
    })();
    try {
      const deadline = Date.now() + 20_000;
      let checked = 0;
      for (let i = 0; (step < 1000 || checked < 5) && Date.now() < deadline; i++) {
        // A scrub of a store with little in it may not wait for any I/O: let the writer in.
        await new Promise((resolve) => setImmediate(resolve));
        const report = await s.scrub();
        if (report.records > 0) checked++;
        assert.deepEqual(report.damaged, [], `seed ${seed} (TESSERA_TEST_SEED replays it): scrub ${i} after ${step} steps found ${JSON.stringify(report.damaged.slice(0, 3))}`);
      }
      assert.ok(checked >= 5, `seed ${seed}: ${checked} scrubs checked records in ${step} steps`);
    } finally {
      stop = true;
      await writer;
    }
    await settle(s);
    const last = await s.scrub();
    assert.deepEqual(last.damaged, [], `seed ${seed}`);
    assert.ok(last.records > 0, `seed ${seed}`);
  } finally {
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('scrub lists at most 10,000 damaged extents, and counts them all', async () => {
  await withStore(async (s, dir) => {
    await s.createDisk('many', 128 << 20);
    const v = s.openVolume('many');
    const n = 10_050;
    const writes: Promise<void>[] = [];
    for (let i = 0; i < n; i++) {
      writes.push(v.write(2 * i * BS, Buffer.alloc(BS, 1)));
      if (writes.length >= 64) await Promise.all(writes.splice(0));
    }
    await Promise.all(writes);
    await v.write(2 * n * BS, Buffer.alloc(BS, 2)); // the log's last record, in a segment of its own
    await settle(s);
    const [first] = segmentFiles(dir);
    assert.notEqual(first, segmentFiles(dir).at(-1));
    fs.rmSync(first);
    const r = await s.scrub();
    assert.equal(r.damagedBlocks, n);
    assert.equal(r.damagedExtents, n);
    assert.deepEqual(r.damagedDisks, ['many']);
    assert.equal(r.damaged.length, 10_000);
    assert.deepEqual(r.damaged.slice(0, 2).map((e) => [e.offset, e.length, e.reason]), [[0, BS, 'missing-segment'], [2 * BS, BS, 'missing-segment']]);
  }, { segmentBytesMax: 10_050 * (BS + 64) + 64 });
});

test('scrub reports what the drive fails to read as unreadable: a record whose payload read fails, and a stretch whose header read fails', async () => {
  const dir = tmp();
  // No read may fail by chance: the plan below names the one that does.
  const files = new FaultyFiles({ seed: 1 });
  const s = await Store.open({ dir, maintenanceIntervalMs: 0, files });
  try {
    await s.createDisk('a', 8 << 20);
    await s.createSnapshot('a', 'empty');
    const v = s.openVolume('a');
    await v.write(0, Buffer.alloc(2 << 20, 5)); // one record of 512 blocks, longer than a read of the scrub
    await v.write(4 << 20, pattern('x', 1024));
    await settle(s);
    // The scrub's second read: the first holds the record's header and first MiB, the second the rest of it.
    files.plan({ readErrorAt: 2 });
    const second = await s.scrub();
    assert.deepEqual(views(second), [{ disk: 'a', offset: 0, length: 2 << 20, head: true, snapshots: [], reason: 'unreadable' }]);
    assert.equal(second.damaged[0].recordOffset, 64);
    // The first read: no header can be read, so what the index points into the stretch is found through it.
    files.plan({ readErrorAt: 1 });
    const first = await s.scrub();
    assert.deepEqual(views(first), [{ disk: 'a', offset: 0, length: 2 << 20, head: true, snapshots: [], reason: 'unreadable' }]);
    assert.equal(first.damaged[0].recordOffset, null);
    files.plan({});
    assert.deepEqual((await s.scrub()).damaged, [], 'the drive reads again: clean');
  } finally {
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
