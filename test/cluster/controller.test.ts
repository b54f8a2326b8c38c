/**
 * The controller's pure decisions (src/cluster/controller.ts): a replica on a node that is down
 * leaves the chain for `away`, comes back copying in (catching up from its base) with the epoch
 * it re-entered at, the head moves only when it must; a lost replica is rebuilt elsewhere once
 * the delay has passed, marked with the epoch it entered at.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { chainAfter, rebalance } from '../../src/cluster/controller.ts';
import type { PlacementNode } from '../../src/cluster/placement.ts';
import type { DiskRecord } from '../../src/cluster/types.ts';

const record = (over: Partial<DiskRecord> = {}): DiskRecord => ({
  name: 'vm1',
  sizeBytes: 1 << 30,
  createdMs: 0,
  origin: null,
  policy: { replicas: 3, failureDomain: 'node' },
  epoch: 4,
  chain: [{ node: 'a', state: 'healthy' }, { node: 'b', state: 'healthy' }, { node: 'c', state: 'healthy' }],
  away: [],
  sync: 'tessera-sync-4',
  ...over,
});

const node = (id: string, up = true): PlacementNode => ({ id, zone: id, state: 'active', up, capacityBytes: 1 << 40, usedBytes: 0, reservedBytes: 0, load: 0 });

test('a replica down leaves for away with the sync point as its base, the head moving only when it is the one down', () => {
  const r = record();
  assert.equal(chainAfter(r, new Set(['a', 'b', 'c']), 1000), null);
  const tailDown = chainAfter(r, new Set(['a', 'b']), 1000)!;
  assert.equal(tailDown.epoch, 5);
  assert.deepEqual(tailDown.chain.map((e) => e.node), ['a', 'b']);
  assert.deepEqual(tailDown.away, [{ node: 'c', base: 'tessera-sync-4', sinceMs: 1000 }]);
  const headDown = chainAfter(r, new Set(['b', 'c']), 1000)!;
  assert.deepEqual(headDown.chain.map((e) => e.node), ['b', 'c']);
  // The last healthy replica stays, down or not: its return must find it the head.
  const alone = record({ chain: [{ node: 'a', state: 'healthy' }] });
  assert.equal(chainAfter(alone, new Set(), 1000), null);
});

test('a replica back catches up from its base, marked with the epoch it re-entered at; one that left while copying in keeps its old base', () => {
  const away = record({ epoch: 5, chain: [{ node: 'a', state: 'healthy' }, { node: 'b', state: 'healthy' }], away: [{ node: 'c', base: 'tessera-sync-4', sinceMs: 1000 }] });
  const back = chainAfter(away, new Set(['a', 'b', 'c']), 2000)!;
  assert.equal(back.epoch, 6);
  assert.deepEqual(back.chain, [{ node: 'a', state: 'healthy' }, { node: 'b', state: 'healthy' }, { node: 'c', state: 'catching-up', base: 'tessera-sync-4', since: 6 }]);
  assert.deepEqual(back.away, []);
  // Down again while copying in: away with the base it had (what it copied since is not whole),
  // and back at a later epoch, so a node that missed the records in between sees it left.
  const downAgain = chainAfter(back, new Set(['a', 'b']), 3000)!;
  assert.deepEqual(downAgain.away, [{ node: 'c', base: 'tessera-sync-4', sinceMs: 3000 }]);
  const backAgain = chainAfter(downAgain, new Set(['a', 'b', 'c']), 4000)!;
  assert.equal(backAgain.chain.at(-1)!.since, 8);
  // Without a base it rebuilds from nothing.
  const noBase = chainAfter(record({ epoch: 5, chain: [{ node: 'a', state: 'healthy' }], away: [{ node: 'c', base: null, sinceMs: 0 }] }), new Set(['a', 'c']), 1)!;
  assert.deepEqual(noBase.chain.at(-1), { node: 'c', state: 'rebuilding', since: 6 });
});

test('a replica away past the rebuild delay is replaced elsewhere, the new one marked with its epoch', () => {
  const r = record({ epoch: 5, chain: [{ node: 'a', state: 'healthy' }, { node: 'b', state: 'healthy' }], away: [{ node: 'c', base: 'tessera-sync-4', sinceMs: 0 }] });
  const nodes = [node('a'), node('b'), node('c', false), node('d')];
  assert.equal(rebalance(r, nodes, undefined, 30_000, 60_000), null, 'within the delay: wait for c');
  const after = rebalance(r, nodes, undefined, 61_000, 60_000)!;
  assert.equal(after.epoch, 6);
  assert.deepEqual(after.chain.at(-1), { node: 'd', state: 'rebuilding', since: 6 });
  assert.deepEqual(after.away, []);
});
