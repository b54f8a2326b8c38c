/** Pooled buffers: size classes, reuse, and the bound on idle bytes (the NBD server's use of them: test/nbd/buffer-pool.test.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { BufferPool } from '../../src/flow/index.ts';

test('buffer pool hands out power-of-two classes, reuses returned buffers and bounds idle bytes', () => {
  const pool = new BufferPool({ pooledBytesMax: 3 * 65536 });
  const a = pool.take(1);
  assert.equal(a.length, 4096);
  const b = pool.take(65536);
  const c = pool.take(65537);
  assert.equal(b.length, 65536);
  assert.equal(c.length, 131072);
  pool.give(b);
  assert.equal(pool.pooledBytes, 65536);
  assert.equal(pool.take(40000), b, 'a returned buffer of the class is reused');
  assert.equal(pool.pooledBytes, 0);
  pool.give(c);
  pool.give(b);
  assert.equal(pool.pooledBytes, 3 * 65536);
  pool.give(pool.take(1 << 20).fill(1));
  assert.equal(pool.pooledBytes, 3 * 65536, 'a buffer over the bound is dropped, not kept');
  assert.throws(() => pool.give(Buffer.alloc(5000)), /only buffers from take/);
});

test('buffer pool with shared: hands out shared memory, which comes back like any other', () => {
  const pool = new BufferPool({ pooledBytesMax: 1 << 20, shared: true });
  const a = pool.take(10_000);
  assert.equal(a.length, 16384);
  assert.ok(a.buffer instanceof SharedArrayBuffer);
  pool.give(a);
  assert.equal(pool.take(9000), a);
});
