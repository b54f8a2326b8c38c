import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  defaultReplicas, place, planChange, reservedBytesOf, type PlacementDisk, type PlacementNode,
} from '../../src/cluster/placement.ts';
import { rttFromRecords } from '../../src/cluster/rtt.ts';
import { ClusterError } from '../../src/cluster/errors.ts';
import type { FailureDomain } from '../../src/cluster/types.ts';
import { Rng, testSeed } from '../helpers/data.ts';

const TiB = 2 ** 40;
const GiB = 2 ** 30;

function node(id: string, over: Partial<PlacementNode> = {}): PlacementNode {
  return { id, zone: 'z', state: 'active', up: true, capacityBytes: TiB, usedBytes: 0, reservedBytes: 0, load: 0, ...over };
}

function disk(replicas: number, failureDomain: FailureDomain = 'node', chain: string[] = [], away: string[] = []): PlacementDisk {
  return {
    sizeBytes: 10 * GiB,
    policy: { replicas, failureDomain },
    chain: chain.map((n) => ({ node: n })),
    away: away.map((n) => ({ node: n })),
  };
}

function throwsCode(fn: () => unknown, code: string, message?: string): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof ClusterError, `not a ClusterError: ${String(err)}`);
    assert.equal(err.code, code);
    if (message !== undefined) assert.equal(err.message, message);
    return true;
  });
}

describe('placement rules', () => {
  test('replicas outside 1..5 are invalid', () => {
    const nodes = [node('a'), node('b')];
    throwsCode(() => place({ nodes, disk: disk(7) }), 'CLUSTER_INVALID', 'replicas must be between 1 and 5: got 7');
    throwsCode(() => place({ nodes, disk: disk(0) }), 'CLUSTER_INVALID', 'replicas must be between 1 and 5: got 0');
    throwsCode(() => place({ nodes, disk: disk(2.5) }), 'CLUSTER_INVALID', 'replicas must be between 1 and 5: got 2.5');
    throwsCode(() => place({ nodes, disk: disk(1, 'rack' as FailureDomain) }), 'CLUSTER_INVALID', 'failure domain must be node or zone: got rack');
  });

  test('default replicas: 3, or the member count below 3', () => {
    assert.deepEqual([0, 1, 2, 3, 4, 1000].map(defaultReplicas), [1, 1, 2, 3, 3, 3]);
  });

  test('one replica per node; too few nodes is POLICY_UNMET naming them', () => {
    const nodes = [node('b'), node('a')];
    assert.deepEqual(place({ nodes, disk: disk(2) }).sort(), ['a', 'b']);
    throwsCode(() => place({ nodes, disk: disk(3) }), 'CLUSTER_POLICY_UNMET', 'cannot place 3 replicas on distinct nodes: the cluster has 2 nodes up and active (a, b)');
    throwsCode(() => place({ nodes: [], disk: disk(1) }), 'CLUSTER_POLICY_UNMET', 'cannot place 1 replicas on distinct nodes: the cluster has 0 nodes up and active');
  });

  test('zone failure domain: at most one replica per zone; the message names the zones up', () => {
    const nodes = [node('a1', { zone: 'a' }), node('a2', { zone: 'a' }), node('b1', { zone: 'b' }), node('c1', { zone: 'c', up: false })];
    const two = place({ nodes, disk: disk(2, 'zone') });
    assert.deepEqual(two.map((id) => id[0]).sort(), ['a', 'b']);
    throwsCode(
      () => place({ nodes, disk: disk(3, 'zone') }),
      'CLUSTER_POLICY_UNMET',
      'cannot place 3 replicas in distinct zones: the cluster has 2 zones up (a, b)',
    );
    // The same nodes with failure domain node: three distinct nodes are enough.
    assert.equal(place({ nodes, disk: disk(3, 'node') }).length, 3);
  });

  test('one zone up: the message says zone, singular', () => {
    const nodes = [node('a1', { zone: 'a' }), node('a2', { zone: 'a' })];
    throwsCode(() => place({ nodes, disk: disk(2, 'zone') }), 'CLUSTER_POLICY_UNMET', 'cannot place 2 replicas in distinct zones: the cluster has 1 zone up (a)');
  });

  test('only up, active members are eligible: down and draining nodes get nothing', () => {
    const nodes = [node('a'), node('b', { up: false }), node('c', { state: 'draining' }), node('d'), node('e')];
    assert.deepEqual(place({ nodes, disk: disk(3) }).sort(), ['a', 'd', 'e']);
    throwsCode(() => place({ nodes, disk: disk(4) }), 'CLUSTER_POLICY_UNMET', 'cannot place 4 replicas on distinct nodes: the cluster has 3 nodes up and active (a, d, e)');
  });

  test('choice: least used fraction after placing first (capacity counts)', () => {
    const nodes = [
      node('a', { usedBytes: 500 * GiB }), // ~49% of 1 TiB
      node('b', { capacityBytes: 4 * TiB, usedBytes: 1 * TiB }), // 25%
      node('c', { reservedBytes: 100 * GiB }), // ~10%
      node('d', { usedBytes: 10 * GiB, reservedBytes: 300 * GiB }), // reservation counts: ~29%
    ];
    assert.deepEqual(place({ nodes, disk: disk(3) }), ['c', 'b', 'd']);
  });

  test('the disk counts after placing: a big disk prefers the big node', () => {
    const nodes = [node('small', { capacityBytes: 100 * GiB }), node('big', { capacityBytes: 10 * TiB, usedBytes: 100 * GiB })];
    // Before placing, small is emptier (0% vs ~1%); after placing 90 GiB, small would be 90% full.
    assert.deepEqual(place({ nodes, disk: { ...disk(1), sizeBytes: 90 * GiB } }), ['big']);
  });

  test('ties: fills within FILL_STEP are equal; then least load, lowest RTT to the chosen nodes, a hash of disk and node', () => {
    // x is fuller than y, but by less than one step: x's lower load decides.
    assert.deepEqual(place({ nodes: [node('x', { usedBytes: 2 * GiB, load: 0 }), node('y', { load: 1 })], disk: { ...disk(1), sizeBytes: GiB } }), ['x']);
    const nodes = [node('a', { load: 5 }), node('b', { load: 0 }), node('c', { load: 1 }), node('d', { load: 1 }), node('e', { load: 9 })];
    assert.deepEqual(place({ nodes, disk: disk(3) }).slice(0, 1), ['b']);
    // Round trips from P/rtt/ records, each node its own zone here: node → zone → ms.
    const rtt = (records: Record<string, Record<string, number>>) => rttFromRecords(Object.fromEntries(Object.entries(records).map(([id, zones]) => [id, { zones }])), (id) => id);
    assert.deepEqual(place({ nodes, disk: disk(3), rttMs: rtt({ b: { c: 2.0, d: 0.2 }, c: {} }) }), ['b', 'd', 'c']);
    assert.deepEqual(place({ nodes, disk: disk(3), rttMs: rtt({ b: { c: 0.2, d: 2.0 } }) }), ['b', 'c', 'd']);
    // A measured pair wins over an unmeasured one; either side's record measures it.
    assert.deepEqual(place({ nodes, disk: disk(2), rttMs: rtt({ c: { b: 50 } }) }), ['b', 'c']);
    assert.deepEqual(place({ nodes, disk: disk(2), rttMs: rtt({ d: { b: 50 } }) }), ['b', 'd']);
    // Equal nodes: the disk's name decides, so disks spread over them rather than all taking the same.
    const equal = ['p', 'q', 'r', 's', 't', 'u'].map((id) => node(id));
    const heads = new Set(Array.from({ length: 60 }, (_, i) => place({ nodes: equal, disk: { ...disk(2), name: `vm${i}` } })[0]));
    assert.ok(heads.size >= 5, `60 disks took only ${heads.size} distinct heads`);
  });

  test('deterministic: the same input in any order gives the same answer', () => {
    const rng = new Rng(7);
    const nodes = Array.from({ length: 30 }, (_, i) => node(`n${i}`, { zone: `z${i % 5}`, usedBytes: rng.int(4) * GiB, load: rng.int(2) }));
    const first = place({ nodes, disk: disk(3, 'zone') });
    for (let i = 0; i < 20; i++) {
      const shuffled = [...nodes].sort(() => rng.next() - 0.5);
      assert.deepEqual(place({ nodes: shuffled, disk: disk(3, 'zone') }), first);
    }
  });
});

describe('placement changes move only what must move', () => {
  // Fills 3% apart: more than FILL_STEP, so fill alone decides.
  const nodes = ['a', 'b', 'c', 'd', 'e'].map((id, i) => node(id, { usedBytes: (5 - i) * 30 * GiB }));

  test('an existing valid chain is kept as it is, in order', () => {
    assert.deepEqual(place({ nodes, disk: disk(3, 'node', ['a', 'c', 'b']) }), ['a', 'c', 'b']);
  });

  test('a lost node: only its replica moves; the next one becomes head if it was the head', () => {
    const lostC = nodes.map((n) => (n.id === 'c' ? { ...n, up: false } : n));
    assert.deepEqual(place({ nodes: lostC, disk: disk(3, 'node', ['a', 'c', 'b']) }), ['a', 'b', 'e']);
    const lostA = nodes.map((n) => (n.id === 'a' ? { ...n, up: false } : n));
    assert.deepEqual(place({ nodes: lostA, disk: disk(3, 'node', ['a', 'c', 'b']) }), ['c', 'b', 'e']);
    assert.deepEqual(planChange(['a', 'c', 'b'], ['c', 'b', 'e']), { keep: ['c', 'b'], add: ['e'], remove: ['a'] });
  });

  test('a returning away replica is preferred over a new node (catch-up, not a copy)', () => {
    assert.deepEqual(place({ nodes, disk: disk(3, 'node', ['a', 'b'], ['c']) }), ['a', 'b', 'c']);
    // Still down: a new node instead.
    const cDown = nodes.map((n) => (n.id === 'c' ? { ...n, up: false } : n));
    assert.deepEqual(place({ nodes: cDown, disk: disk(3, 'node', ['a', 'b'], ['c']) }), ['a', 'b', 'e']);
  });

  test('a drained node is replaced; the plan adds before the caller removes', () => {
    const drainB = nodes.map((n) => (n.id === 'b' ? { ...n, state: 'draining' as const } : n));
    const target = place({ nodes: drainB, disk: disk(3, 'node', ['a', 'b', 'c']) });
    assert.deepEqual(target, ['a', 'c', 'e']);
    assert.deepEqual(planChange(['a', 'b', 'c'], target), { keep: ['a', 'c'], add: ['e'], remove: ['b'] });
  });

  test('more replicas: the old ones stay, new ones go at the end', () => {
    assert.deepEqual(place({ nodes, disk: disk(5, 'node', ['c', 'a']) }), ['c', 'a', 'e', 'd', 'b']);
  });

  test('fewer replicas: the fullest nodes lose theirs, never the head', () => {
    // a is the fullest and the head: it stays; b and c, the next fullest, go.
    assert.deepEqual(place({ nodes, disk: disk(2, 'node', ['a', 'b', 'c', 'e']) }), ['a', 'e']);
    assert.deepEqual(place({ nodes, disk: disk(1, 'node', ['c', 'a', 'b']) }), ['c']);
  });

  test('a policy change to zones keeps the first replica of each zone', () => {
    const zoned = [node('a1', { zone: 'a' }), node('a2', { zone: 'a' }), node('b1', { zone: 'b' }), node('c1', { zone: 'c' })];
    assert.deepEqual(place({ nodes: zoned, disk: disk(3, 'zone', ['a1', 'a2', 'b1']) }), ['a1', 'b1', 'c1']);
  });

  test('a node that left the membership counts as lost', () => {
    assert.deepEqual(place({ nodes, disk: disk(3, 'node', ['gone', 'a', 'b']) }), ['a', 'b', 'e']);
  });
});

test('reservedBytesOf sums chain and away replicas per node', () => {
  const reserved = reservedBytesOf([
    { sizeBytes: 10, chain: [{ node: 'a' }, { node: 'b' }], away: [{ node: 'c' }] },
    { sizeBytes: 5, chain: [{ node: 'a' }], away: [] },
  ]);
  assert.deepEqual(Object.fromEntries(reserved), { a: 15, b: 10, c: 10 });
});

test('placement property: random clusters and policies give a valid set or the right error', (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  for (let round = 0; round < 2000; round++) {
    const zoneCount = rng.range(1, 6);
    const nodes = Array.from({ length: rng.range(0, 9) }, (_, i) =>
      node(`n${i}`, {
        zone: `z${rng.int(zoneCount)}`,
        up: rng.next() < 0.8,
        state: rng.next() < 0.85 ? 'active' : 'draining',
        capacityBytes: rng.range(1, 8) * TiB,
        usedBytes: rng.int(1000) * GiB,
        reservedBytes: rng.int(1000) * GiB,
        load: rng.int(3),
      }),
    );
    const failureDomain: FailureDomain = rng.next() < 0.5 ? 'node' : 'zone';
    const replicas = rng.range(0, 6);
    const ids = nodes.map((n) => n.id).concat(['ghost']);
    const chain = [...new Set(Array.from({ length: rng.int(5) }, () => ids[rng.int(ids.length)]!))];
    const away = [...new Set(Array.from({ length: rng.int(2) }, () => ids[rng.int(ids.length)]!))].filter((id) => !chain.includes(id));
    const input = { nodes, disk: disk(replicas, failureDomain, chain, away) };
    const ctx = `seed ${seed} round ${round}: ${JSON.stringify({ replicas, failureDomain, chain, away, nodes: nodes.map((n) => [n.id, n.zone, n.up, n.state]) })}`;

    const ok = nodes.filter((n) => n.up && n.state === 'active');
    const domains = new Set(ok.map((n) => (failureDomain === 'zone' ? n.zone : n.id)));
    let result: string[];
    try {
      result = place(input);
    } catch (err) {
      assert.ok(err instanceof ClusterError, ctx);
      if (replicas < 1 || replicas > 5) assert.equal(err.code, 'CLUSTER_INVALID', ctx);
      else {
        assert.equal(err.code, 'CLUSTER_POLICY_UNMET', ctx);
        assert.ok(domains.size < replicas, ctx);
      }
      continue;
    }
    assert.ok(replicas >= 1 && replicas <= 5 && domains.size >= replicas, ctx);
    assert.equal(result.length, replicas, ctx);
    assert.equal(new Set(result).size, replicas, ctx);
    const byId = new Map(nodes.map((n) => [n.id, n]));
    const resultDomains = result.map((id) => {
      const n = byId.get(id);
      assert.ok(n && n.up && n.state === 'active', `${ctx}: ${id} not eligible`);
      return failureDomain === 'zone' ? n.zone : n.id;
    });
    assert.equal(new Set(resultDomains).size, replicas, `${ctx}: two replicas share a domain`);
    // Sticky: the eligible head stays head; every kept replica was eligible and in its own domain.
    const keepable: string[] = [];
    const seen = new Set<string>();
    for (const id of [...chain, ...away]) {
      const n = byId.get(id);
      if (!n || !n.up || n.state !== 'active') continue;
      const d = failureDomain === 'zone' ? n.zone : n.id;
      if (seen.has(d)) continue;
      seen.add(d);
      keepable.push(id);
    }
    const kept = keepable.filter((id) => result.includes(id));
    assert.equal(kept.length, Math.min(keepable.length, replicas), `${ctx}: moved a replica that could stay`);
    if (keepable.length > 0) assert.equal(result[0], keepable[0], `${ctx}: head changed`);
    // Deterministic.
    assert.deepEqual(place(input), result, ctx);
  }
});

test('a cluster losing a node: only that node\'s replicas move, and placing again changes nothing', () => {
  const rng = new Rng(11);
  const nodes = new Map(Array.from({ length: 24 }, (_, i) => [`n${i}`, node(`n${i}`, { zone: `z${i % 6}` })]));
  const disks: { sizeBytes: number; policy: { replicas: number; failureDomain: FailureDomain }; chain: { node: string }[]; away: { node: string }[] }[] = [];
  for (let i = 0; i < 300; i++) {
    const d = { sizeBytes: rng.range(1, 200) * GiB, policy: { replicas: 3, failureDomain: 'zone' as const }, chain: [] as { node: string }[], away: [] };
    const target = place({ nodes: [...nodes.values()], disk: d });
    d.chain = target.map((id) => ({ node: id }));
    for (const id of target) {
      const n = nodes.get(id)!;
      nodes.set(id, { ...n, reservedBytes: n.reservedBytes + d.sizeBytes });
    }
    disks.push(d);
  }
  // Sticky: nothing moves while nothing changes.
  for (const d of disks) assert.deepEqual(place({ nodes: [...nodes.values()], disk: d }), d.chain.map((e) => e.node));
  const lost = 'n5';
  nodes.set(lost, { ...nodes.get(lost)!, up: false });
  let moved = 0;
  for (const d of disks) {
    const before = d.chain.map((e) => e.node);
    const plan = planChange(before, place({ nodes: [...nodes.values()], disk: d }));
    if (before.includes(lost)) {
      assert.deepEqual(plan.remove, [lost]);
      assert.equal(plan.add.length, 1);
      moved++;
    } else {
      assert.deepEqual(plan, { keep: before, add: [], remove: [] });
    }
  }
  assert.ok(moved > 0);
});
