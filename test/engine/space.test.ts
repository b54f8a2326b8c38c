/**
 * The space guard's arithmetic (docs/engine.md, "The reserve and the thresholds"), over readings
 * the test sets; test/engine/full-disk.test.ts runs it against real file systems.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SpaceGuard, defaultReserveBytes, type FsReading } from '../../src/engine/space.ts';
import { EngineError } from '../../src/engine/index.ts';

const MiB = 1024 ** 2;
const GiB = 1024 ** 3;

test('the default reserve is the larger of 2 % and 1 GiB, at most a tenth of the file system', () => {
  assert.equal(defaultReserveBytes(320 * MiB), 32 * MiB);
  assert.equal(defaultReserveBytes(20 * GiB), GiB);
  assert.equal(defaultReserveBytes(1024 * GiB), Math.floor(1024 * GiB * 0.02));
  assert.equal(defaultReserveBytes(5 * GiB), 512 * MiB);
});

function guard(reading: FsReading, opts: { reserveBytes?: number; nearfullRatio?: number; fullRatio?: number } = {}) {
  let appended = 0;
  let reads = 0;
  const g = new SpaceGuard({ ...opts, read: () => (reads++, { ...reading }), appendedBytes: () => appended });
  return { g, reading, append: (n: number) => (appended += n), reads: () => reads };
}

const refusedNoSpace = (err: unknown) => err instanceof EngineError && err.code === 'ENGINE_NO_SPACE';

test('the state follows used ÷ usable; client writes stop at full, or where they would eat into the reserve', () => {
  // 1000 MiB, reserve 100 MiB: 900 usable; nearfull from 765 used, full from 855.
  const { g, reading, append } = guard({ totalBytes: 1000 * MiB, freeBytes: 600 * MiB }, { reserveBytes: 100 * MiB });
  assert.deepEqual({ ...g.figures(), usedRatio: Math.round(g.figures().usedRatio * 1000) / 1000 }, {
    state: 'ok', totalBytes: 1000 * MiB, freeBytes: 600 * MiB, reserveBytes: 100 * MiB, usableBytes: 900 * MiB, usedBytes: 400 * MiB, usedRatio: 0.444, nearfullRatio: 0.85, fullRatio: 0.95,
  });
  g.admitData(MiB);
  // What the store appends counts as used before the file system is read again.
  append(370 * MiB);
  assert.equal(g.figures().state, 'nearfull');
  g.admitData(MiB);
  append(90 * MiB);
  assert.equal(g.figures().state, 'full');
  let refusals = 0;
  g.onRefused = () => refusals++;
  // A refusal reads the file system again first; it says what the appends took.
  reading.freeBytes = 140 * MiB;
  assert.throws(() => g.admitData(4096), refusedNoSpace);
  assert.equal(refusals, 1, 'a refusal asks for a maintenance pass');
  // Trims and write-zeroes go on while full, down to half the reserve.
  g.admitZero();
  // Space freed (a delete): the next write reads the file system again and is admitted.
  reading.freeBytes = 300 * MiB;
  g.admitData(MiB);
  // A large write that would take free space below the reserve is refused even when not full.
  assert.throws(() => g.admitData(250 * MiB), refusedNoSpace);
});

test('trims and write-zeroes are refused only below half the reserve', () => {
  const { g } = guard({ totalBytes: 1000 * MiB, freeBytes: 49 * MiB }, { reserveBytes: 100 * MiB });
  assert.equal(g.figures().state, 'full');
  assert.throws(() => g.admitZero(), (err: unknown) => refusedNoSpace(err) && /half its reserve of 100 MiB/.test((err as Error).message));
});

test('below the reserve a store does not start; the message says what is free and what is needed', () => {
  assert.equal(guard({ totalBytes: 1000 * MiB, freeBytes: 100 * MiB }, { reserveBytes: 100 * MiB }).g.belowReserve(), null);
  assert.match(guard({ totalBytes: 320 * MiB, freeBytes: 10 * MiB }).g.belowReserve() ?? '', /has 10 MiB free of 320 MiB; a node needs its reserve of 32 MiB free to start/);
});

test('bad settings are refused', () => {
  const read = () => ({ totalBytes: GiB, freeBytes: GiB });
  const appendedBytes = () => 0;
  assert.throws(() => new SpaceGuard({ read, appendedBytes, nearfullRatio: 0.9, fullRatio: 0.8 }), /nearfull \(0.9\) <= full \(0.8\)/);
  assert.throws(() => new SpaceGuard({ read, appendedBytes, fullRatio: 1.5 }), /Space ratios/);
  assert.throws(() => new SpaceGuard({ read, appendedBytes, reserveBytes: -1 }), /whole number of bytes/);
});
