/** Latency profiles, the emulated device and the deadline queue (docs/latency.md). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { builtinProfile, builtinProfileNames, checkLatencyProfile, DelayQueue, expectedLatency, LatencyDevice, seededRandom } from '../../src/flow/index.ts';
import type { LatencyProfile } from '../../src/flow/index.ts';
import { testSeed } from '../helpers/index.ts';

const fixed = (us: number) => ({ medianUs: us, p99Us: us });

test('latency profiles: the built-in ones pass the gate; a malformed one gets the rule it broke', () => {
  for (const name of builtinProfileNames) {
    const check = checkLatencyProfile(builtinProfile(name));
    assert.ok(check.ok, name);
  }
  assert.equal(builtinProfile('floppy'), null);
  const good = { name: 'san', parallel: 4, read: fixed(500), write: { medianUs: 800, p99Us: 3000 } };
  assert.deepEqual(checkLatencyProfile(good), { ok: true, profile: good });
  const cases: Array<[unknown, RegExp]> = [
    [[], /is a JSON object/],
    [{ ...good, color: 'red' }, /unknown field 'color'/],
    [{ ...good, name: 'none' }, /may not be named 'none'/],
    [{ ...good, name: 'a b' }, /field 'name'/],
    [{ ...good, parallel: 0 }, /field 'parallel' must be a whole number from 1 to 1024/],
    [{ ...good, parallel: 2.5 }, /field 'parallel'/],
    [{ ...good, read: undefined }, /field 'read' must be an object/],
    [{ ...good, read: { medianUs: 100, p99Us: 50 } }, /'read.p99Us' \(50\) must be at least 'read.medianUs' \(100\)/],
    [{ ...good, write: { medianUs: -1, p99Us: 5 } }, /'write.medianUs' must be a number/],
    [{ ...good, flush: { medianUs: 1, p99Us: 2, p999Us: 3 } }, /unknown field 'flush.p999Us'/],
    [{ ...good, bytesPerSecond: 0 }, /'bytesPerSecond'/],
  ];
  for (const [value, rule] of cases) {
    const check = checkLatencyProfile(value);
    assert.equal(check.ok, false, JSON.stringify(value));
    assert.match((check as { error: string }).error, rule);
  }
});

test('latency device: service times have the profile\'s median and p99', (t) => {
  const seed = testSeed(t);
  const profile: LatencyProfile = { name: 'x', parallel: 1024, read: { medianUs: 100, p99Us: 400 }, write: fixed(30) };
  const device = new LatencyDevice(profile, seededRandom(seed));
  const n = 40_000;
  const times = Array.from({ length: n }, (_, i) => device.serviceUs('read', i * 8192, 4096, false)).sort((a, b) => a - b);
  assert.ok(Math.abs(times[n / 2]! / 100 - 1) < 0.04, `median ${times[n / 2]}`);
  assert.ok(Math.abs(times[Math.floor(n * 0.99)]! / 400 - 1) < 0.1, `p99 ${times[Math.floor(n * 0.99)]}`);
  assert.ok(times[n - 1]! <= 4000, 'draws are cut at 10× the p99');
  assert.equal(device.serviceUs('write', 1, 4096, false), 30);
});

test('latency device: requests beyond its parallelism wait for a slot; sequential, transfer and FUA costs add as modelled', () => {
  const profile: LatencyProfile = { name: 'x', parallel: 2, read: fixed(1000), write: fixed(1000), sequential: fixed(100), flush: fixed(500), bytesPerSecond: 1e9 };
  const d = new LatencyDevice(profile, seededRandom(1));
  // Two slots: the first two start at once, the third waits for the first to end.
  assert.equal(d.admit(0, 'read', 0, 0), 1);
  assert.equal(d.admit(0, 'read', 10_000, 0), 1);
  assert.equal(d.admit(0, 'read', 50_000, 0), 2);
  // Where the last one ended: sequential. 1 MB at 1 GB/s: 1 ms more.
  assert.equal(d.admit(10, 'write', 50_000, 0), 10.1);
  assert.equal(d.admit(20, 'write', 0, 1e6), 21 + 1);
  // FUA: the write and a flush.
  assert.equal(d.admit(30, 'write', 5e6, 0, true), 31.5);
  assert.equal(d.admit(40, 'flush', 0, 0), 40.5);
  // A request about to be refused (no count for an offset or length) leaves no slot busy until NaN.
  assert.equal(d.admit(50, 'read', Number.NaN, Number.NaN), 51);
  assert.equal(d.admit(60, 'read', 7e6, 0), 61);
});

test('expected latency: a device of one slot at queue depth 16 makes each request wait for the 15 ahead of it', () => {
  const profile: LatencyProfile = { name: 'x', parallel: 1, read: fixed(1000), write: fixed(1000) };
  assert.deepEqual(expectedLatency(profile, { op: 'read', queueDepth: 1, length: 0 }), { medianUs: 1000, p99Us: 1000 });
  const deep = expectedLatency(profile, { op: 'read', queueDepth: 16, length: 0 });
  assert.ok(Math.abs(deep.medianUs - 16_000) < 1, `median ${deep.medianUs}`);
  const nvme = builtinProfile('nvme')!;
  const q1 = expectedLatency(nvme, { op: 'read', queueDepth: 1, length: 4096 });
  const q16 = expectedLatency(nvme, { op: 'read', queueDepth: 16, length: 4096 });
  assert.ok(Math.abs(q16.medianUs / q1.medianUs - 1) < 0.05, 'a deep queue: 16 at once wait for nothing');
});

test('delay queue: waits end no sooner than their deadlines, in deadline order, many at once on one timer', async () => {
  const q = new DelayQueue();
  // Every deadline still ahead once all are asked (a passed one resolves at once, out of turn).
  const now = performance.now() + 50;
  const order: number[] = [];
  const lateUs: number[] = [];
  // Deadlines 15 µs apart over 30 ms, asked out of order.
  const deadlines = Array.from({ length: 2000 }, (_, i) => ((i * 7919) % 2000) * 0.015 + 0.05);
  // A deadline already passed when asked (a loaded machine can take that long to ask them all)
  // resolves at once, out of turn: the order holds for the others.
  const aheadWhenAsked = new Set<number>();
  await Promise.all(deadlines.map(async (ms, i) => {
    if (performance.now() < now + ms - 0.01) aheadWhenAsked.add(i);
    await q.until(now + ms);
    const t = performance.now();
    lateUs.push((t - (now + ms)) * 1000);
    order.push(i);
  }));
  assert.equal(q.size, 0);
  assert.ok(Math.min(...lateUs) >= -10, `none ends more than 10 µs early: ${Math.min(...lateUs)} µs`);
  const inTurn = order.filter((i) => aheadWhenAsked.has(i));
  assert.ok(inTurn.length > 1000, `most were asked ahead of their deadlines: ${inTurn.length}`);
  for (let k = 1; k < inTurn.length; k++) assert.ok(deadlines[inTurn[k]!]! >= deadlines[inTurn[k - 1]!]!, 'released in deadline order');
  // A passed deadline resolves at once; releaseAll lets every waiter go.
  await q.until(performance.now() - 1);
  const held = q.until(performance.now() + 60_000);
  assert.equal(q.size, 1);
  q.releaseAll();
  await held;
  assert.equal(q.size, 0);
});
