/** The rate limiter: takes average out at the rate, a pause earns at most the burst, a large take is waited out. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RateLimiter } from '../../src/flow/index.ts';

test('rate limiter: the burst is free, then every take waits as long as its units take at the rate', () => {
  let now = 0;
  const r = new RateLimiter({ perSecond: 1000, burst: 100, now: () => now });
  assert.equal(r.take(100), 0, 'the burst is there from the start');
  assert.equal(r.take(50), 50, '50 units owed at 1000/s: 50 ms');
  now += 50;
  assert.equal(r.take(0), 0, 'the debt is paid after 50 ms');
  assert.equal(r.take(1000), 1000, 'a take larger than the burst goes into debt, to be waited out');
  assert.equal(r.waits, 2);
});

test('rate limiter: a long pause earns the burst, no more; a sub-millisecond debt is carried, not slept', () => {
  let now = 0;
  const r = new RateLimiter({ perSecond: 1000, burst: 100, now: () => now });
  r.take(100);
  now += 60_000;
  assert.equal(r.take(100), 0);
  assert.equal(r.take(100), 100, 'a minute idle is not a minute of catching up');
  now += 100;
  assert.equal(r.take(0.5), 0, 'half a millisecond owed: go on');
  assert.equal(r.take(1), 1.5, 'the half millisecond is still owed');
});

test('rate limiter: takes through wait() average the rate over real time, and a signal cuts the wait short', async () => {
  const r = new RateLimiter({ perSecond: 100_000, burst: 1000 });
  const t0 = performance.now();
  for (let i = 0; i < 10; i++) await r.wait(2000);
  // 20,000 units at 100,000/s, less the burst: at least 190 ms (a slow machine only adds).
  assert.ok(performance.now() - t0 >= 185, `took ${performance.now() - t0} ms`);
  const ac = new AbortController();
  const waiting = r.wait(1_000_000, ac.signal);
  ac.abort();
  await assert.rejects(waiting, { name: 'AbortError' });
  assert.throws(() => new RateLimiter({ perSecond: 0 }), RangeError);
});
