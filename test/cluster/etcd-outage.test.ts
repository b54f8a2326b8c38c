/**
 * Real nodes through an etcd outage longer than their lease (docs/cluster.md, "The cache"):
 * they keep running and answering from their cache, come back when etcd does, and all see a
 * node that joins after the restart.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { cleanup, startEtcd, TesseraNode, until } from '../helpers/index.ts';
import type { ClusterStatus } from '../../src/api/client/index.ts';

after(cleanup);

test('nodes outlive an etcd kill -9 and restart, and see a node that joins after it', async () => {
  const etcd = await startEtcd();
  const ttlS = 3;
  const node = (id: string): TesseraNode => new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', String(ttlS)] });
  const nodes = ['o1', 'o2', 'o3'].map(node);
  for (const n of nodes) await n.start();
  const status = (n: TesseraNode): Promise<ClusterStatus> => n.cliJson<ClusterStatus>(['cluster', 'status']);
  const allUp = async (n: TesseraNode, count: number): Promise<boolean> => {
    const s = await status(n);
    return s.nodes.length === count && s.nodes.every((x) => x.state === 'up') && s.nodes.filter((x) => x.controller).length === 1;
  };
  await until(async () => allUp(nodes[0], 3), 30_000, 'three up', 200);

  await etcd.kill();
  // Longer than the lease: each node gives its lease up for lost and joins again once etcd is back.
  await new Promise((resolve) => setTimeout(resolve, 2 * ttlS * 1000 + 1000));
  for (const n of nodes) {
    const s = await status(n);
    assert.deepEqual(s.nodes.map((x) => x.id), ['o1', 'o2', 'o3'], 'served from the cache');
  }
  await etcd.start();
  await until(async () => (await Promise.all(nodes.map((n) => allUp(n, 3)))).every(Boolean), 60_000, 'three up after the restart', 250);

  const late = node('o4');
  await late.start();
  await until(async () => (await Promise.all([...nodes, late].map((n) => allUp(n, 4)))).every(Boolean), 30_000, 'o4 seen by all', 250);
  for (const n of [...nodes, late]) await n.stop();
  await etcd.stop();
});
