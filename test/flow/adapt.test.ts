/**
 * The adaptive concurrency limiter against simulated I/O stages: a fake clock in 1 ms ticks,
 * requests sharing a throughput curve T(concurrency) (processor sharing), seeded noise. Nothing
 * here depends on the machine's speed.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AdaptiveLimiter, type AdaptiveLimiterOptions } from '../../src/flow/adapt.ts';
import { Rng, testSeed } from '../helpers/index.ts';

const requestBytes = 1 << 20;

interface Sim {
  /** Bytes per ms the stage moves with `c` requests in flight, at time `t` ms. */
  curve(c: number, t: number): number;
  /** Whether a request completing with `c` in flight fails (an overloaded server's 503). Default never. */
  fails?(c: number): boolean;
  /** Requests the caller has to offer at once. Default unbounded. */
  demand?: number;
  /** Simulated ms. */
  durationMs: number;
}

/** Runs a simulation; returns the limiter and its limit at every ms. */
function simulate(seed: number, options: Omit<AdaptiveLimiterOptions, 'now'>, sim: Sim): { limiter: AdaptiveLimiter; limits: number[] } {
  let t = 0;
  const rng = new Rng(seed);
  const limiter = new AdaptiveLimiter({ ...options, now: () => t });
  const active: { left: number; bytes: number }[] = [];
  const limits: number[] = [];
  for (; t < sim.durationMs; t++) {
    const n = active.length;
    if (n > 0) {
      const noise = 1 + (rng.int(4001) - 2000) / 100_000; // ±2%
      const each = (sim.curve(n, t) * noise) / n;
      for (let i = active.length - 1; i >= 0; i--) {
        active[i].left -= each;
        if (active[i].left <= 0) {
          limiter.release({ bytes: active[i].bytes, ok: !(sim.fails?.(n) ?? false) });
          active.splice(i, 1);
        }
      }
    }
    // Sizes from 0.5 to 1.5 MiB, so that completions do not come in lockstep batches.
    while (active.length < (sim.demand ?? Infinity) && limiter.tryAcquire()) {
      const bytes = requestBytes / 2 + rng.int(requestBytes);
      active.push({ left: bytes, bytes });
    }
    assert.ok(limiter.inFlight <= limiter.max, 'never more in flight than the bound');
    limits.push(limiter.limit);
  }
  return { limiter, limits };
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** Throughput rises linearly up to `knee` requests, then stays flat. */
const plateau = (knee: number) => (c: number) => Math.min(c, knee) * 50_000;

test('adaptive limiter climbs to the knee of a throughput curve and stays near it', (t) => {
  const seed = testSeed(t);
  const { limiter, limits } = simulate(seed, { min: 1, max: 64, initial: 2 }, { curve: plateau(12), durationMs: 60_000 });
  const late = mean(limits.slice(20_000));
  t.diagnostic(`mean limit after 20 s: ${late.toFixed(1)}; ${JSON.stringify(limiter.stats())}`);
  assert.ok(late >= 9 && late <= 18, `settles near the knee of 12, at ${late.toFixed(1)}`);
  assert.ok(limiter.stats().limitHigh <= 64 && limiter.stats().limitLow >= 1);
  assert.ok(limiter.stats().raised > 0 && limiter.stats().lowered > 0, 'it probed both ways');
});

test('adaptive limiter comes down to the best concurrency when more requests make the stage slower', (t) => {
  const seed = testSeed(t);
  // Best at 6; past it, each request more costs 2% of the best (an overloaded server).
  const curve = (c: number) => (c <= 6 ? c : Math.max(1, 6 - (c - 6) * 0.12)) * 50_000;
  const { limiter, limits } = simulate(seed, { min: 1, max: 64, initial: 24 }, { curve, durationMs: 90_000 });
  const late = mean(limits.slice(30_000));
  t.diagnostic(`mean limit after 30 s: ${late.toFixed(1)}; ${JSON.stringify(limiter.stats())}`);
  assert.ok(late >= 4 && late <= 9, `settles near 6, at ${late.toFixed(1)}`);
});

test('adaptive limiter halves its limit when requests fail and stays below where they start failing', (t) => {
  const seed = testSeed(t);
  const { limiter, limits } = simulate(seed, { min: 1, max: 64, initial: 4 }, { curve: plateau(1000), fails: (c) => c > 16, durationMs: 60_000 });
  const s = limiter.stats();
  t.diagnostic(JSON.stringify(s));
  assert.ok(s.errors > 0 && s.lowered > 0);
  const late = limits.slice(20_000);
  assert.ok(mean(late) <= 16, `mean limit ${mean(late).toFixed(1)} stays at or below 16`);
  assert.ok(mean(late) >= 6, `but not far below it: ${mean(late).toFixed(1)}`);
});

test('adaptive limiter does not raise a limit that demand never reaches', (t) => {
  const seed = testSeed(t);
  const { limiter } = simulate(seed, { min: 1, max: 64, initial: 2 }, { curve: plateau(100), demand: 3, durationMs: 30_000 });
  assert.ok(limiter.stats().limitHigh <= 4, `limit went up to ${limiter.stats().limitHigh} for a demand of 3`);
});

test('adaptive limiter follows a stage that gets slower: a knee moving from 24 down to 4', (t) => {
  const seed = testSeed(t);
  const curve = (c: number, at: number) => (at < 30_000 ? plateau(24)(c) : (c <= 4 ? c : Math.max(1, 4 - (c - 4) * 0.08)) * 50_000);
  const { limits } = simulate(seed, { min: 1, max: 64, initial: 2 }, { curve, durationMs: 90_000 });
  const before = mean(limits.slice(15_000, 30_000));
  const afterwards = mean(limits.slice(60_000));
  t.diagnostic(`mean limit ${before.toFixed(1)} before the change, ${afterwards.toFixed(1)} after`);
  assert.ok(before >= 18, `near 24 before: ${before.toFixed(1)}`);
  assert.ok(afterwards <= 8, `near 4 after: ${afterwards.toFixed(1)}`);
});

test('adaptive limiter never leaves its bounds, even when every step up pays', (t) => {
  const seed = testSeed(t);
  const { limiter, limits } = simulate(seed, { min: 3, max: 20, initial: 1 }, { curve: plateau(1000), durationMs: 30_000 });
  assert.equal(limits[0], 3, 'the initial limit is clamped to min');
  assert.ok(Math.max(...limits) === 20 && Math.min(...limits) >= 3);
  assert.ok(mean(limits.slice(10_000)) >= 18, 'it stays at the top but for probes down');
  assert.equal(limiter.stats().max, 20);
});

test('adaptive limiter serves waiters in order and gives cancelled slots to the next one', async () => {
  const limiter = new AdaptiveLimiter({ min: 1, max: 1 });
  await limiter.acquire();
  const order: number[] = [];
  const a = limiter.acquire().then(() => order.push(1));
  const b = limiter.acquire().then(() => order.push(2));
  assert.equal(limiter.tryAcquire(), false);
  limiter.release({ bytes: 1 });
  await a;
  limiter.cancel();
  await b;
  assert.deepEqual(order, [1, 2]);
  assert.equal(limiter.inFlight, 1);
});
