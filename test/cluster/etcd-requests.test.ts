/**
 * The table "etcd requests per operation" of docs/cluster.md, counted: what a node's start costs,
 * and its steady state over whole keep-alive periods.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Coordinator, etcdRequestKinds } from '../../src/cluster/index.ts';
import type { EtcdRequestCounts } from '../../src/cluster/index.ts';
import { cleanup, startEtcd, until } from '../helpers/index.ts';

after(cleanup);

const zero = (): EtcdRequestCounts => Object.fromEntries(etcdRequestKinds.map((k) => [k, 0])) as EtcdRequestCounts;
const diff = (a: Readonly<EtcdRequestCounts>, b: Readonly<EtcdRequestCounts>): EtcdRequestCounts => Object.fromEntries(etcdRequestKinds.map((k) => [k, a[k] - b[k]])) as EtcdRequestCounts;

test('a start costs 1 range a page of P/, 1 lease grant, 1 txn, 1 watch and 1 campaign (the first node 1 txn more); the steady state 1 keep-alive per TTL/3 and 1 put per live interval', async () => {
  const etcd = await startEtcd();
  const ttlS = 3;
  const liveIntervalMs = 2000;
  const started: Coordinator[] = [];
  try {
    for (const id of ['c1', 'c2']) {
      const c = await Coordinator.connect({ etcd: [etcd.url], nodeId: id, prefix: '/count/', leaseTtlS: ttlS, liveIntervalMs });
      started.push(c);
      await c.join({ zone: 'default', api: 'h:1', nbd: 'h:2', peer: 'h:3', version: 'test', protocol: [1, 2], usage: () => ({ capacityBytes: 1, usedBytes: 0, load: 0 }) });
      await until(() => c.requests.election === 1 && c.requests.watch === 1, 10_000, `${id} campaigned and watching`, 20);
    }
    const [first, second] = started;
    // The keep-alive loop fires its first at once; the start is measured without it.
    const startOf = (c: Coordinator): EtcdRequestCounts => ({ ...c.requests, keepalive: 0 });
    assert.deepEqual(startOf(second), { ...zero(), range: 1, 'lease-grant': 1, txn: 1, watch: 1, election: 1 });
    assert.deepEqual(startOf(first), { ...zero(), range: 1, 'lease-grant': 1, txn: 2, watch: 1, election: 1 });

    // Steady state over 6 keep-alive periods (6 s): 6 keep-alives (±1 at the edges), 3 live puts (±1), nothing else.
    const periods = 6;
    const before = { ...second.requests };
    await new Promise((resolve) => setTimeout(resolve, (periods * ttlS * 1000) / 3));
    const d = diff(second.requests, before);
    assert.ok(Math.abs(d.keepalive - periods) <= 1, `keep-alives: ${d.keepalive}`);
    const puts = (periods * ttlS * 1000) / 3 / liveIntervalMs;
    assert.ok(Math.abs(d.put - puts) <= 1, `puts: ${d.put}`);
    assert.deepEqual({ ...d, keepalive: 0, put: 0 }, zero());
    // Scaled to the defaults (TTL 10 s, live every 30 s): per node per minute.
    const perMinute = { keepalive: 60 / (10 / 3), put: 60 / 30 };
    assert.deepEqual(perMinute, { keepalive: 18, put: 2 });

    // P/ read 2 keys a page: cluster, 2 members, 2 live keys and 2 election keys take 4 ranges.
    const third = await Coordinator.connect({ etcd: [etcd.url], nodeId: 'c3', prefix: '/count/', leaseTtlS: ttlS, liveIntervalMs, loadPageKeys: 2 });
    started.push(third);
    assert.deepEqual(third.nodes().map((n) => [n.id, n.state]), [['c1', 'up'], ['c2', 'up']]);
    assert.equal(third.controller, 'c1');
    assert.deepEqual({ ...third.requests, watch: 0 }, { ...zero(), range: 4 });
  } finally {
    for (const c of started) await c.close();
    await etcd.stop();
  }
});
