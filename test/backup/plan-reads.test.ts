/** planRangeReads, the one range-read planner of restores and instant restores: grouping and its limits. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planRangeReads, type RangeReadLimits } from '../../src/backup/index.ts';
import { Rng, testSeed } from '../helpers/index.ts';

interface Blob {
  name: string;
  location: { offset: number; storedLength: number };
}

const blob = (name: string, offset: number, storedLength: number): Blob => ({ name, location: { offset, storedLength } });
const limits = (over: Partial<RangeReadLimits> = {}): RangeReadLimits => ({ gapBytesMax: 100, readBytesMax: 1000, blobsMax: 10, ...over });
/** Each read as [offset, length, names]. */
const shape = (reads: ReturnType<typeof planRangeReads<Blob>>) => reads.map((r) => [r.offset, r.length, r.blobs.map((b) => b.name).join('')]);

test('planRangeReads plans nothing for no blobs', () => {
  assert.deepEqual(planRangeReads('p', [], limits()), []);
});

test('planRangeReads sorts the blobs of a pack and reads neighbours together', () => {
  const blobs = [blob('c', 200, 50), blob('a', 0, 100), blob('b', 100, 100)];
  const reads = planRangeReads('pack1', blobs, limits());
  assert.deepEqual(shape(reads), [[0, 250, 'abc']]);
  assert.equal(reads[0].packIdHex, 'pack1');
  assert.deepEqual(blobs.map((b) => b.name), ['c', 'a', 'b'], 'the caller\'s array is left as it was');
});

test('planRangeReads reads through a gap of gapBytesMax and no larger', () => {
  assert.deepEqual(shape(planRangeReads('p', [blob('a', 0, 10), blob('b', 110, 10)], limits())), [[0, 120, 'ab']]);
  assert.deepEqual(shape(planRangeReads('p', [blob('a', 0, 10), blob('b', 111, 10)], limits())), [[0, 10, 'a'], [111, 10, 'b']]);
  assert.deepEqual(shape(planRangeReads('p', [blob('a', 0, 10), blob('b', 10, 10)], limits({ gapBytesMax: 0 }))), [[0, 20, 'ab']]);
});

test('planRangeReads keeps a read within readBytesMax; a larger blob is read by itself', () => {
  assert.deepEqual(shape(planRangeReads('p', [blob('a', 0, 500), blob('b', 500, 500)], limits())), [[0, 1000, 'ab']]);
  assert.deepEqual(shape(planRangeReads('p', [blob('a', 0, 500), blob('b', 500, 501)], limits())), [[0, 500, 'a'], [500, 501, 'b']]);
  assert.deepEqual(shape(planRangeReads('p', [blob('a', 0, 10), blob('b', 10, 5000), blob('c', 5010, 10)], limits())), [
    [0, 10, 'a'],
    [10, 5000, 'b'],
    [5010, 10, 'c'],
  ]);
});

test('planRangeReads puts at most blobsMax blobs in a read', () => {
  const blobs = ['a', 'b', 'c', 'd', 'e'].map((name, i) => blob(name, i * 10, 10));
  assert.deepEqual(shape(planRangeReads('p', blobs, limits({ blobsMax: 2 }))), [[0, 20, 'ab'], [20, 20, 'cd'], [40, 10, 'e']]);
  assert.deepEqual(shape(planRangeReads('p', blobs, limits({ blobsMax: 1 }))), blobs.map((b) => [b.location.offset, 10, b.name]));
});

test('planRangeReads covers overlapping blobs (a damaged index) in one read', () => {
  assert.deepEqual(shape(planRangeReads('p', [blob('a', 0, 100), blob('b', 10, 20)], limits())), [[0, 100, 'ab']]);
});

test('planRangeReads refuses limits that cannot plan anything', () => {
  assert.throws(() => planRangeReads('p', [], limits({ blobsMax: 0 })), assert.AssertionError);
  assert.throws(() => planRangeReads('p', [], limits({ readBytesMax: 0 })), assert.AssertionError);
});

test('planRangeReads of random packs: every blob read once, in order, within the limits', (t) => {
  const rng = new Rng(testSeed(t));
  for (let round = 0; round < 200; round++) {
    const l = limits({ gapBytesMax: rng.range(0, 200), readBytesMax: rng.range(1, 2000), blobsMax: rng.range(1, 8) });
    const blobs: Blob[] = [];
    let at = 0;
    for (let i = rng.range(0, 40); i > 0; i--) {
      at += rng.range(0, 300);
      const size = rng.range(1, 600);
      blobs.push(blob(`b${blobs.length},`, at, size));
      at += size;
    }
    const shuffled = [...blobs].sort(() => rng.next() - 0.5);
    const reads = planRangeReads('p', shuffled, l);
    assert.deepEqual(reads.flatMap((r) => r.blobs), blobs, `round ${round}: every blob once, in pack order`);
    for (const [i, r] of reads.entries()) {
      assert.ok(r.blobs.length >= 1 && r.blobs.length <= l.blobsMax, `round ${round}: blob count`);
      assert.ok(r.length <= l.readBytesMax || r.blobs.length === 1, `round ${round}: read size`);
      const first = r.blobs[0].location;
      const last = r.blobs.at(-1)!.location;
      assert.equal(r.offset, first.offset);
      assert.equal(r.offset + r.length, last.offset + last.storedLength, `round ${round}: the read ends with its last blob`);
      for (let j = 1; j < r.blobs.length; j++) {
        const prev = r.blobs[j - 1].location;
        assert.ok(r.blobs[j].location.offset - (prev.offset + prev.storedLength) <= l.gapBytesMax, `round ${round}: gap`);
      }
      if (i > 0) {
        const prev = reads[i - 1];
        assert.ok(r.offset >= prev.offset + prev.length, `round ${round}: reads do not overlap`);
        // As few reads as the limits allow: this read's first blob could not have joined the last.
        const joinable = r.offset - (prev.offset + prev.length) <= l.gapBytesMax && first.offset + first.storedLength - prev.offset <= l.readBytesMax && prev.blobs.length < l.blobsMax;
        assert.ok(!joinable, `round ${round}: read ${i} could have joined read ${i - 1}`);
      }
    }
  }
});
