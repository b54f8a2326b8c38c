import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OrderQueue } from '../../../src/cluster/chain/order.ts';
import { RangeSet } from '../../../src/cluster/chain/ranges.ts';
import { compareIds, orderOf } from '../../../src/cluster/chain/ops.ts';
import { Rng, testSeed } from '../../helpers/index.ts';

test('RangeSet gaps are exactly the bytes no added range covers (seeded, against a byte map)', (t) => {
  const rng = new Rng(testSeed(t));
  for (let round = 0; round < 200; round++) {
    const set = new RangeSet();
    const covered = new Uint8Array(512);
    for (let i = rng.int(12); i > 0; i--) {
      const a = rng.int(512);
      const b = Math.min(512, a + rng.int(64));
      set.add(a, b);
      covered.fill(1, a, b);
    }
    const a = rng.int(512);
    const b = a + rng.int(512 - a + 1);
    const want: Array<[number, number]> = [];
    for (let x = a; x < b; x++) {
      if (covered[x]) continue;
      const last = want.at(-1);
      if (last !== undefined && last[1] === x) last[1] = x + 1;
      else want.push([x, x + 1]);
    }
    assert.deepEqual(set.gaps(a, b), want, `round ${round}: gaps(${a}, ${b})`);
  }
});

test('RangeSet merges touching and overlapping ranges', () => {
  const set = new RangeSet();
  set.add(10, 20);
  set.add(30, 40);
  set.add(20, 30);
  assert.equal(set.size, 1);
  assert.deepEqual(set.gaps(0, 50), [[0, 10], [40, 50]]);
});

test('OrderQueue runs overlapping ops in call order, others at once; a barrier waits for all and holds all', async () => {
  const q = new OrderQueue();
  const log: string[] = [];
  const gate = Promise.withResolvers<void>();
  const w1 = q.run(orderOf({ kind: 'write', offset: 0, data: Buffer.alloc(4096), fua: false }, 4096), async () => {
    await gate.promise;
    log.push('w1');
  });
  const w2 = q.run(orderOf({ kind: 'write', offset: 100, data: Buffer.alloc(10), fua: false }, 4096), async () => log.push('w2 (overlaps w1)'));
  const w3 = q.run(orderOf({ kind: 'write', offset: 8192, data: Buffer.alloc(4096), fua: false }, 4096), async () => log.push('w3 (apart)'));
  const snap = q.run(orderOf({ kind: 'snapshot', name: 's' }, 4096), async () => log.push('snapshot'));
  const w4 = q.run(orderOf({ kind: 'write', offset: 1 << 20, data: Buffer.alloc(4096), fua: false }, 4096), async () => log.push('w4 (after the snapshot)'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(log, ['w3 (apart)']);
  gate.resolve();
  await Promise.all([w1, w2, w3, snap, w4]);
  assert.deepEqual(log, ['w3 (apart)', 'w1', 'w2 (overlaps w1)', 'snapshot', 'w4 (after the snapshot)']);
  assert.equal(q.size, 0);
});

test('op ids compare by epoch, then n', () => {
  assert.ok(compareIds([2, 1], [1, 99]) > 0);
  assert.ok(compareIds([3, 4], [3, 5]) < 0);
  assert.equal(compareIds([3, 4], [3, 4]), 0);
});
