/** Shared slots: page-aligned slots of one shared memory, handed out in order and only once until given back. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SharedSlots, directAlignBytes, isDirectAligned } from '../../src/flow/index.ts';

test('shared slots are 4 KiB-aligned views of one shared memory; a misaligned memory is not direct-aligned', () => {
  const slots = new SharedSlots(5000, 3);
  assert.equal(slots.slotBytes, 2 * directAlignBytes, 'rounded up to 4 KiB');
  assert.ok(slots.memory instanceof SharedArrayBuffer);
  for (let i = 0; i < 3; i++) {
    const v = slots.view(i, slots.slotBytes);
    assert.equal(v.buffer, slots.memory);
    assert.equal(v.byteOffset, slots.offsetOf(i));
    assert.ok(isDirectAligned(v));
  }
  assert.equal(isDirectAligned(slots.view(0, 5000)), false, 'a length off 4 KiB is not');
  assert.equal(isDirectAligned(Buffer.alloc(directAlignBytes)), false, 'memory not made here is not');
  const off = new SharedSlots(directAlignBytes, 2, 512);
  assert.equal(isDirectAligned(off.view(1, directAlignBytes)), false);
  assert.throws(() => slots.view(0, slots.slotBytes + 1), RangeError);
  assert.throws(() => new SharedSlots(0, 1), RangeError);
  assert.throws(() => slots.take(4), RangeError);
});

test('shared slots: take waits for enough free slots, waiters are served in order, and no slot is out twice', async () => {
  const slots = new SharedSlots(directAlignBytes, 4);
  const a = await slots.take(3);
  const order: string[] = [];
  const two = slots.take(2).then((s) => (order.push('two'), s));
  const one = slots.take(1).then((s) => (order.push('one'), s));
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(order, [], 'one slot is free, but the first waiter needs two and the second waits behind it');
  slots.give(a.slice(0, 1));
  const got2 = await two;
  slots.give(a.slice(1));
  const got1 = await one;
  assert.deepEqual(order, ['two', 'one']);
  const out = [...got2, ...got1];
  assert.equal(new Set(out).size, out.length, 'no slot handed out twice');
  assert.ok(out.every((i) => i >= 0 && i < 4));
});
