/** Byte budgets: waiters in order, a request larger than the budget waits for it to be empty, never more held than given back. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ByteBudget } from '../../src/flow/index.ts';

test('byte budget serves waiters in order and lets one larger than the budget in alone', async () => {
  const b = new ByteBudget(100);
  await b.acquire(60);
  const order: string[] = [];
  const big = b.acquire(150).then(() => order.push('big'));
  const small = b.acquire(10).then(() => order.push('small'));
  assert.equal(b.tryAcquire(10), false, 'nothing jumps the queue, though 10 bytes would fit');
  await new Promise((resolve) => setImmediate(resolve));
  assert.deepEqual(order, [], 'the large request waits for the budget to be empty; the small one waits behind it');
  b.release(60);
  await big;
  assert.equal(b.inUse, 150);
  b.release(150);
  await small;
  assert.deepEqual(order, ['big', 'small']);
  assert.equal(b.inUse, 10);
  assert.equal(b.tryAcquire(90), true);
  assert.equal(b.tryAcquire(1), false);
  b.release(100);
  assert.throws(() => b.release(1), /released more bytes than acquired/);
});
