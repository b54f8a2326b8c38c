/**
 * Round trips as the cluster keeps them (docs/cluster.md, "Round trips"): the summary by zone a
 * node puts in `P/rtt/ID`, when it puts it, how placement and the controller's rank read it.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  controllerRank, parseRttRecord, rttChanged, rttFromRecords, rttPublishDue, summarizeRtt, zoneRtt, RttFilter,
  RTT_MEASURE_INTERVAL_MS, RTT_PUBLISH_INTERVAL_MIN_MS,
} from '../../src/cluster/rtt.ts';
import type { RttRecord } from '../../src/cluster/types.ts';
import { Rng, testSeed } from '../helpers/data.ts';

const zoneOfMap = (m: Record<string, string>) => (id: string): string | undefined => (Object.hasOwn(m, id) ? m[id] : undefined);
const rec = (zones: Record<string, number>): RttRecord => ({ zones });

describe('summarizeRtt', () => {
  test('one value per zone: the median of the peers measured there, rounded to 0.01 ms, zones in name order', () => {
    const zones = zoneOfMap({ a1: 'a', a2: 'a', a3: 'a', b1: 'b', b2: 'b', c1: 'c' });
    const s = summarizeRtt({ c1: 0.4567, b2: 0.3, a1: 0.1, a3: 9.0, b1: 0.5, a2: 0.12 }, zones);
    assert.deepEqual(s, { zones: { a: 0.12, b: 0.4, c: 0.46 } });
    assert.equal(JSON.stringify(s), '{"zones":{"a":0.12,"b":0.4,"c":0.46}}');
  });

  test('peers of no known zone and values that are not round trips are left out; any zone name is kept', () => {
    const zones = zoneOfMap({ p: '__proto__', q: 'constructor', r: 'r' });
    const s = summarizeRtt({ p: 0.2, q: 0.3, r: Number.NaN, x: 0.1 }, zones);
    assert.deepEqual(Object.keys(s.zones), ['__proto__', 'constructor']);
    assert.equal(zoneRtt(s, '__proto__'), 0.2);
    assert.equal(zoneRtt(s, 'constructor'), 0.3);
    assert.equal(zoneRtt(s, 'toString'), undefined);
    assert.deepEqual(parseRttRecord(JSON.stringify(s)), s);
  });

  test('a record of 50 zones is bounded by the zones, not by the nodes', () => {
    const zones: Record<string, string> = {};
    const measured: Record<string, number> = {};
    for (let i = 0; i < 1000; i++) {
      zones[`n${i}`] = `z${String(i % 50).padStart(2, '0')}`;
      measured[`n${i}`] = 0.3 + (i % 7) / 100;
    }
    const bytes = JSON.stringify(summarizeRtt(measured, zoneOfMap(zones))).length;
    assert.ok(bytes < 600, `${bytes} bytes`);
  });

  test('records of an older shape or malformed read as none', () => {
    assert.equal(parseRttRecord('{"n2":0.3}'), undefined);
    assert.equal(parseRttRecord('not json'), undefined);
    assert.equal(parseRttRecord('{"zones":[1]}'), undefined);
    assert.equal(zoneRtt(rec({ a: -1 }), 'a'), undefined);
  });
});

describe('when a node puts its summary', () => {
  const min = RTT_PUBLISH_INTERVAL_MIN_MS;

  test('at once when etcd holds none of it, or when a zone is new; never when nothing changed', () => {
    const next = rec({ a: 0.1, b: 0.3 });
    assert.equal(rttPublishDue({ published: null, next, lastPutMs: 0, nowMs: 1 }), true);
    assert.equal(rttPublishDue({ published: null, next: rec({}), lastPutMs: 0, nowMs: 1 }), false, 'nothing measured');
    assert.equal(rttPublishDue({ published: rec({ a: 0.1 }), next, lastPutMs: 0, nowMs: 1 }), true, 'zone b new');
    assert.equal(rttPublishDue({ published: next, next, lastPutMs: 0, nowMs: 10 * min }), false);
  });

  test('a change counts when a zone moved by more than 20% and more than 0.1 ms, or a zone went; then once 5 min passed since the last put', () => {
    const published = rec({ a: 0.1, b: 0.3, c: 2.0 });
    assert.equal(rttChanged(published, rec({ a: 0.19, b: 0.3, c: 2.0 })), false, '+90% but 0.09 ms');
    assert.equal(rttChanged(published, rec({ a: 0.1, b: 0.3, c: 2.35 })), false, '+0.35 ms but 17.5%');
    assert.equal(rttChanged(published, rec({ a: 0.1, b: 0.5, c: 2.0 })), true, 'b +67%, +0.2 ms');
    assert.equal(rttChanged(published, rec({ a: 0.1, b: 0.3, c: 1.5 })), true, 'c -25%, -0.5 ms');
    assert.equal(rttChanged(published, rec({ a: 0.1, b: 0.3 })), true, 'zone c went');
    const moved = rec({ a: 0.1, b: 0.5, c: 2.0 });
    assert.equal(rttPublishDue({ published, next: moved, lastPutMs: 1000, nowMs: 1000 + min - 1 }), false);
    assert.equal(rttPublishDue({ published, next: moved, lastPutMs: 1000, nowMs: 1000 + min }), true);
    assert.equal(rttPublishDue({ published, next: rec({ a: 0.1, b: 0.3 }), lastPutMs: 1000, nowMs: 1000 + min - 1 }), false, 'a zone gone waits too');
  });

  test('an hour of jittery pings of a steady network puts once, rarely twice; a link that slows is put within 5 min', (t) => {
    const rng = new Rng(testSeed(t));
    const zones: Record<string, string> = {};
    for (let i = 0; i < 60; i++) zones[`n${i}`] = `z${i % 6}`;
    const base = (id: string): number => (zones[id] === 'z0' ? 0.1 : 0.3 + Number(zones[id]!.slice(1)) / 10);
    const filter = new RttFilter();
    let published: RttRecord | null = null;
    let lastPutMs = -Infinity;
    const puts: number[] = [];
    const slowFromMs = 60 * 60_000;
    for (let nowMs = 0; nowMs < 2 * 60 * 60_000; nowMs += RTT_MEASURE_INTERVAL_MS) {
      // ±15% jitter on every ping, 5 ms more on 2% (a pause); from the second hour zone z3 is 1 ms further.
      const measured = Object.fromEntries(Object.keys(zones).map((id) => {
        const slow = nowMs >= slowFromMs && zones[id] === 'z3' ? 1 : 0;
        const pause = rng.next() < 0.02 ? 5 : 0;
        return [id, base(id) * (0.85 + 0.3 * rng.next()) + slow + pause];
      }));
      const next = summarizeRtt(filter.add(measured), zoneOfMap(zones));
      if (rttPublishDue({ published, next, lastPutMs, nowMs })) {
        published = next;
        lastPutMs = nowMs;
        puts.push(nowMs);
      }
    }
    const at = `puts at ${puts.map((t) => `${t / 60_000} min`).join(', ')}`;
    assert.equal(puts[0], 0);
    // Never two within 5 min; in the steady hour the first put, rarely one more (the medians drift
    // past 20% and 0.1 ms in ~1.5% of seeds): never the 120 a put every 30 s made.
    for (let i = 1; i < puts.length; i++) assert.ok(puts[i]! - puts[i - 1]! >= RTT_PUBLISH_INTERVAL_MIN_MS, at);
    assert.ok(puts.filter((t) => t < slowFromMs).length <= 3, at);
    // The slower link is put within 5 min.
    const after = puts.filter((t) => t >= slowFromMs);
    assert.ok(after.length >= 1 && after.length <= 3 && after[0]! - slowFromMs <= RTT_PUBLISH_INTERVAL_MIN_MS, at);
    assert.ok(Math.abs(zoneRtt(published!, 'z3')! - 1.6) < 0.1);
  });
});

describe('readers', () => {
  test('the round trip from a to b is a\'s value for b\'s zone, else b\'s for a\'s zone, else unmeasured', () => {
    const zones = zoneOfMap({ a1: 'a', a2: 'a', b1: 'b', c1: 'c' });
    const rtt = rttFromRecords({ a1: rec({ a: 0.1, b: 0.4 }), c1: rec({ a: 0.9 }) }, zones);
    assert.equal(rtt('a1', 'b1'), 0.4);
    assert.equal(rtt('a1', 'a2'), 0.1, 'within a zone every node counts alike');
    assert.equal(rtt('b1', 'a1'), 0.4, 'from the other side');
    assert.equal(rtt('a2', 'c1'), 0.9);
    assert.equal(rtt('b1', 'c1'), undefined);
    assert.equal(rtt('a1', 'nobody'), undefined);
    assert.equal(rttFromRecords({}, () => 'constructor')('constructor', 'toString'), undefined);
  });

  test('the controller\'s rank: how many nodes up have a lower mean round trip to the others; ties by id; 0 while none is known', () => {
    // z1 sits between z0 and z2: its nodes have the lowest mean.
    const up = [{ id: 'a', zone: 'z0' }, { id: 'b', zone: 'z1' }, { id: 'c', zone: 'z1' }, { id: 'd', zone: 'z2' }];
    const records: Record<string, RttRecord> = {
      a: rec({ z1: 0.3, z2: 1.0 }),
      b: rec({ z0: 0.3, z1: 0.1, z2: 0.3 }),
      c: rec({ z0: 0.3, z1: 0.1, z2: 0.3 }),
      d: rec({ z0: 1.0, z1: 0.3 }),
    };
    const rank = (me: string, r = records) => controllerRank({ me, up, records: r });
    assert.deepEqual(['a', 'b', 'c', 'd'].map((id) => rank(id)), [2, 0, 1, 3]);
    // A node down counts for no one.
    assert.equal(controllerRank({ me: 'a', up: up.filter((n) => n.id !== 'b' && n.id !== 'c'), records }), 0);
    // Nothing measured yet: 0, it campaigns at once. A record missing: read from the other side.
    assert.equal(rank('b', {}), 0);
    const { d: _, ...withoutD } = records;
    assert.deepEqual(['a', 'b', 'c', 'd'].map((id) => rank(id, withoutD)), [2, 0, 1, 3]);
    assert.equal(controllerRank({ me: 'x', up, records }), 0, 'not up');
  });
});
