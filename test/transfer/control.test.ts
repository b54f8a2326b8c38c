/**
 * The transfer's control loops in process, with a fake clock: the bandwidth estimator against
 * simulated links (its delivery rate, min RTT, startup and window), the pacing clock, and the
 * connection choice's rules.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ConnectionChooser, stallThresholdMs, type ChoiceInput } from '../../src/transfer/choose.ts';
import { BandwidthEstimator, PacingClock, PROBE_GAINS, STARTUP_GAIN, type SendStamp } from '../../src/transfer/estimate.ts';
import { LatencySplit } from '../../src/transfer/latency.ts';

/**
 * A link of `rate` bytes/s and `rttMs` round trip, the receiver holding each frame `holdMs`:
 * frames of `frame` bytes are sent as the estimator's pacing and window allow, for `ms`.
 */
function simulate(opts: { rate: number; rttMs: number; holdMs: number; ms: number; frame?: number }): BandwidthEstimator {
  let now = 0;
  const frame = opts.frame ?? 262144;
  const est = new BandwidthEstimator({ now: () => now, windowBytesMin: 4 * frame });
  const pacer = new PacingClock();
  let linkFreeAt = 0;
  const acks: { at: number; stamp: SendStamp }[] = [];
  for (; now < opts.ms; now += 0.1) {
    while (acks.length > 0 && acks[0].at <= now) est.onAck(acks.shift()!.stamp, opts.rttMs, opts.holdMs);
    while (est.inflightBytes < est.windowBytes && pacer.delayMs(now) === 0) {
      const stamp = est.onSend(frame);
      pacer.spend(frame, est.pacingRate, now, 2 * frame);
      // The bottleneck serializes frames; each arrives a round trip (and a hold) after it leaves it.
      linkFreeAt = Math.max(linkFreeAt, now) + (frame * 1000) / opts.rate;
      acks.push({ at: linkFreeAt + opts.rttMs + opts.holdMs, stamp });
      acks.sort((a, b) => a.at - b.at);
    }
  }
  return est;
}

test('estimator: a 100 MB/s link of 50 ms found within 10%, past startup, window about twice the BDP', () => {
  const est = simulate({ rate: 100e6, rttMs: 50, holdMs: 0, ms: 10_000 });
  assert.ok(Math.abs(est.bandwidth - 100e6) / 100e6 < 0.1, `bandwidth ${est.bandwidth}`);
  assert.equal(est.minRttMs, 50);
  assert.equal(est.state, 'probe');
  assert.ok(PROBE_GAINS.includes(est.pacingGain as (typeof PROBE_GAINS)[number]));
  const bdp = 100e6 * 0.05;
  assert.ok(est.windowBytes > 1.6 * bdp && est.windowBytes < 2.4 * bdp, `window ${est.windowBytes} vs BDP ${bdp}`);
});

test('estimator: the receiver\'s hold counts in the window, not in the network round trip', () => {
  const est = simulate({ rate: 50e6, rttMs: 10, holdMs: 30, ms: 10_000 });
  assert.equal(est.minRttMs, 10, 'min RTT is the network\'s');
  assert.ok(Math.abs(est.bandwidth - 50e6) / 50e6 < 0.1, `bandwidth ${est.bandwidth}`);
  assert.ok(est.bdpBytes > 0.9 * 50e6 * 0.04, `BDP over transit and hold: ${est.bdpBytes}`);
});

test('estimator: before any sample it does not pace, and startup paces at 2.89 × the estimate', () => {
  let now = 0;
  const est = new BandwidthEstimator({ now: () => now });
  assert.equal(est.pacingRate, Infinity);
  const a = est.onSend(1000);
  now = 10;
  est.onAck(a, 10);
  assert.equal(est.state, 'startup');
  assert.equal(est.pacingGain, STARTUP_GAIN);
  assert.ok(Math.abs(est.pacingRate - STARTUP_GAIN * est.bandwidth) < 1e-6);
  est.rateMax = 1000;
  assert.equal(est.pacingRate, 1000, 'a cap holds');
});

test('pacing clock: spaces sends by size over rate, and a pause earns no more than 2 frames of burst', () => {
  const p = new PacingClock();
  const burst = (at: number): number => {
    let n = 0;
    while (p.delayMs(at) === 0 && n < 100) {
      p.spend(1000, 1e6, at, 2000);
      n++;
    }
    return n;
  };
  assert.equal(burst(0), 3, 'the frame due and 2 of slack');
  assert.equal(p.delayMs(0), 1, 'then one each 1000 bytes / 1 MB/s');
  assert.equal(burst(1), 1);
  assert.equal(burst(1000), 3, 'a second idle earns the same 2 frames, no more');
  p.spend(1000, Infinity, 2000, 2000);
  assert.equal(p.delayMs(2000), 0, 'no rate: no pacing');
});

const clean: ChoiceInput = { transitP50Ms: 50, holdP50Ms: 1, frames: 100, stalls: 0, rateBytesPerSecond: 100e6 };

test('choice: fewer connections for a slow receiver or a lossy link, more while clean; a step that did not pay is undone', () => {
  const c = new ConnectionChooser(8, 4);
  assert.deepEqual(c.decide({ ...clean, holdP50Ms: 40, transitP50Ms: 5 }), { active: 3, reason: 'the receiver is slow (hold 40.0 ms, transit 5.0 ms)' });
  // The step down kept the rate: the receiver is still slow, down again.
  assert.equal(c.decide({ ...clean, holdP50Ms: 40, transitP50Ms: 5 }).active, 2);
  // This step cost 20% of the rate: undone, then held.
  assert.deepEqual(c.decide({ ...clean, holdP50Ms: 40, transitP50Ms: 5, rateBytesPerSecond: 80e6 }), { active: 3, reason: 'the step down cost delivery rate: undone' });
  for (let i = 0; i < 4; i++) assert.equal(c.decide(clean).active, 3, 'held');
  assert.deepEqual(c.decide(clean), { active: 4, reason: 'the link is clean and the receiver keeps up' });
  assert.equal(c.decide({ ...clean, rateBytesPerSecond: 120e6 }).active, 5, 'the step up paid: up again');
  assert.deepEqual(c.decide({ ...clean, stalls: 10, rateBytesPerSecond: 130e6 }), { active: 4, reason: 'the link stalls (10 of 100 frames)' });
  assert.equal(c.low, 2);
  assert.equal(c.high, 5);
});

test('choice: a hold within 5 ms is not a slow receiver; too few frames decide nothing; bounds hold', () => {
  const c = new ConnectionChooser(2);
  assert.equal(c.decide({ ...clean, holdP50Ms: 4, transitP50Ms: 0.1 }).reason, null, 'at the top, clean: nothing to do');
  assert.equal(c.decide({ ...clean, frames: 3, stalls: 3 }).reason, null);
  const one = new ConnectionChooser(1);
  assert.deepEqual(one.decide({ ...clean, stalls: 50 }), { active: 1, reason: null });
  assert.equal(stallThresholdMs(50, 60), 220);
  assert.equal(stallThresholdMs(0.1, 2), 14);
});

test('latency split: percentiles and histograms of transit and hold; intervals count stalls against their median', () => {
  const split = new LatencySplit();
  for (let i = 1; i <= 100; i++) split.add(i === 100 ? 500 : 10, 2);
  const figures = split.takeInterval((p50) => stallThresholdMs(1, p50));
  assert.deepEqual(figures, { frames: 100, transitP50Ms: 10, holdP50Ms: 2, stalls: 1 });
  assert.equal(split.takeInterval(() => 0).frames, 0, 'a new interval');
  const { transitMs, holdMs } = split.summary();
  assert.equal(transitMs.p50, 10);
  assert.equal(transitMs.max, 500);
  assert.equal(holdMs.p99, 2);
  const h = split.histograms({ transfer: 'x' });
  assert.equal(h.transit.count, 100);
  assert.equal(Array.from(h.hold.counts).reduce((a, b) => a + b, 0), 100);
  assert.equal(h.hold.counts[h.hold.bounds.indexOf(0.0025)], 100, 'a 2 ms hold in the 2.5 ms bucket');
});
