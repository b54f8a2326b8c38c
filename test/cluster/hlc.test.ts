import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import {
  encodeHlc, fileBoundStore, formatHlc, Hlc, hlcLogical, hlcWallMs, parseHlc, HLC_LOGICAL_MAX, type HlcBoundStore,
} from '../../src/cluster/hlc.ts';
import { ClusterError } from '../../src/cluster/errors.ts';
import { cleanup, makeTempDir } from '../helpers/process.ts';

after(cleanup);

/** A bound store in memory that records what it was asked to do. */
class MemoryStore implements HlcBoundStore {
  bound: number | null = null;
  syncSaves: number[] = [];
  asyncSaves: number[] = [];
  load() {
    return this.bound;
  }
  saveSync(boundMs: number) {
    this.syncSaves.push(boundMs);
    this.bound = Math.max(this.bound ?? -1, boundMs);
  }
  async save(boundMs: number) {
    this.asyncSaves.push(boundMs);
    this.bound = Math.max(this.bound ?? -1, boundMs);
  }
}

function clock(startMs: number) {
  const c = { ms: startMs, read: () => c.ms };
  return c;
}

describe('HLC encoding', () => {
  test('wall << 16 | logical, and its decimal JSON form round-trips', () => {
    const ts = encodeHlc(1786000000000, 5);
    assert.equal(ts, (1786000000000n << 16n) | 5n);
    assert.equal(hlcWallMs(ts), 1786000000000);
    assert.equal(hlcLogical(ts), 5);
    assert.equal(formatHlc(ts), '117047296000000005');
    assert.equal(parseHlc(formatHlc(ts)), ts);
    assert.equal(parseHlc('18446744073709551615'), (1n << 64n) - 1n);
    for (const bad of ['', '-1', '01', '1.5', '18446744073709551616', ' 1', '1e3']) {
      assert.throws(() => parseHlc(bad), (err: unknown) => err instanceof ClusterError && err.code === 'CLUSTER_INVALID', bad);
    }
  });
});

describe('HLC with a controlled clock', () => {
  test('now() is strictly increasing, also when the system clock goes back', () => {
    const wall = clock(10_000_000);
    const hlc = Hlc.open({ store: new MemoryStore(), wallMs: wall.read });
    const seen: bigint[] = [hlc.now(), hlc.now()];
    assert.equal(hlcWallMs(seen[0]!), 10_000_000);
    assert.equal(hlcLogical(seen[1]!), 1);
    wall.ms += 5;
    seen.push(hlc.now());
    assert.deepEqual([hlcWallMs(seen[2]!), hlcLogical(seen[2]!)], [10_000_005, 0]);
    wall.ms -= 3_600_000; // set back an hour
    for (let i = 0; i < 100; i++) seen.push(hlc.now());
    wall.ms += 3_600_000 + 1; // and forward again past where it was
    seen.push(hlc.now());
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i]! > seen[i - 1]!, `value ${i} did not increase`);
    assert.deepEqual([hlcWallMs(seen.at(-1)!), hlcLogical(seen.at(-1)!)], [10_000_006, 0]);
  });

  test('logical overflow carries into the wall part', () => {
    const wall = clock(2_000_000);
    const hlc = Hlc.open({ store: new MemoryStore(), wallMs: wall.read });
    let last = hlc.now();
    for (let i = 0; i < HLC_LOGICAL_MAX; i++) last = hlc.now();
    assert.deepEqual([hlcWallMs(last), hlcLogical(last)], [2_000_000, HLC_LOGICAL_MAX]);
    const next = hlc.now();
    assert.deepEqual([hlcWallMs(next), hlcLogical(next)], [2_000_001, 0]);
    assert.ok(next > last);
    // The wall clock catching up continues from there, not below.
    wall.ms = 2_000_001;
    const caught = hlc.now();
    assert.deepEqual([hlcWallMs(caught), hlcLogical(caught)], [2_000_001, 1]);
  });

  test('update() merges a remote value: the result is above it and above every local one', () => {
    const wall = clock(3_000_000);
    const hlc = Hlc.open({ store: new MemoryStore(), wallMs: wall.read });
    const local = hlc.now();
    // Remote ahead: take its wall, logical + 1.
    const r1 = encodeHlc(3_000_500, 7);
    const u1 = hlc.update(r1);
    assert.deepEqual([hlcWallMs(u1), hlcLogical(u1)], [3_000_500, 8]);
    assert.ok(u1 > r1 && u1 > local);
    // Remote on the same wall as ours with a higher logical: max + 1.
    const u2 = hlc.update(encodeHlc(3_000_500, 20));
    assert.deepEqual([hlcWallMs(u2), hlcLogical(u2)], [3_000_500, 21]);
    // Remote behind: ours goes on.
    const u3 = hlc.update(encodeHlc(1_000, 0));
    assert.deepEqual([hlcWallMs(u3), hlcLogical(u3)], [3_000_500, 22]);
    // now() after an update stays above it.
    assert.ok(hlc.now() > u3);
    // Physical clock ahead of everything: it wins with logical 0.
    wall.ms = 3_001_000;
    const u4 = hlc.update(encodeHlc(3_000_900, 3));
    assert.deepEqual([hlcWallMs(u4), hlcLogical(u4)], [3_001_000, 0]);
    assert.equal(hlc.last(), u4);
  });

  test('update() refuses a value more than maxAheadMs ahead, and leaves the clock as it was', () => {
    const wall = clock(4_000_000);
    const hlc = Hlc.open({ store: new MemoryStore(), wallMs: wall.read, maxAheadMs: 60_000 });
    const before = hlc.now();
    assert.ok(hlc.update(encodeHlc(4_060_000, 0)) > before);
    assert.throws(
      () => hlc.update(encodeHlc(4_060_000 + 60_001, 0)),
      (err: unknown) => err instanceof ClusterError && err.code === 'CLUSTER_CLOCK_SKEW' && err.message === "a peer's clock is 60001 ms ahead of ours (at most 60000 ms accepted)",
    );
    assert.equal(hlcWallMs(hlc.now()), 4_060_000);
    assert.throws(() => hlc.update(-1n), (err: unknown) => err instanceof ClusterError && err.code === 'CLUSTER_INVALID');
    assert.throws(() => hlc.update(1n << 64n), (err: unknown) => err instanceof ClusterError && err.code === 'CLUSTER_INVALID');
  });

  test('the bound is persisted a window ahead: once at open, then in the background, blocking only past it', async () => {
    const wall = clock(5_000_000);
    const store = new MemoryStore();
    const hlc = Hlc.open({ store, wallMs: wall.read, windowMs: 10_000 });
    assert.deepEqual(store.syncSaves, [5_010_000]);
    // Within the first half window: nothing written.
    wall.ms += 4_999;
    hlc.now();
    assert.deepEqual(store.asyncSaves, []);
    // Past half the window: a write ahead in the background.
    wall.ms += 2;
    hlc.now();
    assert.deepEqual(store.asyncSaves, [5_015_001]);
    await hlc.idle();
    wall.ms += 9_000; // 5_014_001: under the new bound, past its half: another one.
    hlc.now();
    await hlc.idle();
    assert.deepEqual(store.asyncSaves, [5_015_001, 5_024_001]);
    assert.deepEqual(store.syncSaves, [5_010_000]);
    // A jump past the bound (a remote value far ahead) writes before the value is handed out.
    const u = hlc.update(encodeHlc(5_100_000, 0));
    assert.equal(store.syncSaves.at(-1), 5_110_000);
    assert.ok(hlcWallMs(u) <= store.bound!);
  });

  test('a reopened clock starts above the persisted bound, whatever the system clock says', () => {
    const wall = clock(6_000_000);
    const store = new MemoryStore();
    const first = Hlc.open({ store, wallMs: wall.read, windowMs: 10_000 });
    let last = 0n;
    for (let i = 0; i < 1000; i++) last = first.now();
    // "kill -9": the object is dropped; the clock is set back an hour.
    wall.ms -= 3_600_000;
    const second = Hlc.open({ store, wallMs: wall.read, windowMs: 10_000 });
    const next = second.now();
    assert.ok(next > last);
    assert.deepEqual([hlcWallMs(next), hlcLogical(next)], [6_010_001, 0]);
    assert.ok(hlcWallMs(next) <= store.bound!);
  });
});

describe('HLC bound file', () => {
  test('DIR/cluster/hlc holds the bound; a damaged file refuses to open', async () => {
    const dir = join(makeTempDir('hlc-'), 'cluster');
    mkdirSync(dir);
    const path = join(dir, 'hlc');
    const store = fileBoundStore(path);
    assert.equal(store.load(), null);
    const wall = clock(7_000_000);
    const hlc = Hlc.open({ store, wallMs: wall.read, windowMs: 10_000 });
    assert.equal(readFileSync(path, 'utf8'), '7010000\n');
    wall.ms += 6_000;
    hlc.now();
    await hlc.idle();
    assert.equal(readFileSync(path, 'utf8'), '7016000\n');
    // A background save that would land after a higher synchronous one is dropped.
    const raced = fileBoundStore(path);
    raced.load();
    const pending = raced.save(7_020_000);
    raced.saveSync(7_030_000);
    await pending;
    assert.equal(readFileSync(path, 'utf8'), '7030000\n');

    writeFileSync(path, '70160');
    assert.throws(() => fileBoundStore(path).load(), (err: unknown) => err instanceof ClusterError && err.code === 'CLUSTER_INVALID' && err.message.includes('is damaged'));
  });
});
