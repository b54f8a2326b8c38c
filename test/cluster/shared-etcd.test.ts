/**
 * Two clusters on one etcd under different prefixes (docs/cluster.md, "The cache"): a node's
 * watch sees only its own cluster's keys, while the other cluster's writes move etcd's
 * revision, which a node's cache takes up only at times of its own (a reload of its cache,
 * etcd's catch-up of a watch that fell behind or came back). A head whose cache is so ahead
 * sends its replicas a CONFIGURE with a revision they would reach only with the next change of
 * their own cluster's keys: they must answer at once all the same.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { MessageType, PeerPool } from '../../src/cluster/index.ts';
import type { ClusterRecord, DiskRecord, MemberRecord } from '../../src/cluster/index.ts';
import type { ClusterStatus, DiskInfo } from '../../src/api/client/index.ts';
import { cleanup, MiB, startEtcd, TesseraNode, until } from '../helpers/index.ts';

after(cleanup);

/** A POST of the API's, JSON in and out; fails unless `status` answers. */
async function post(node: TesseraNode, path: string, body: unknown, status: number): Promise<unknown> {
  const res = await fetch(`${node.api}/api/v1${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  assert.equal(res.status, status, text);
  return text === '' ? null : JSON.parse(text);
}

test('a replica takes a chain at once while another cluster on the same etcd writes', async () => {
  const etcd = await startEtcd();
  const other = new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', 'o1', '--lease-ttl', '3', '--etcd-prefix', '/shared-other/'] });
  const nodes = ['n1', 'n2', 'n3'].map((id) => new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', '/shared-this/'] }));
  for (const n of [other, ...nodes]) await n.start();
  await until(async () => (await nodes[0].cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);

  // The other cluster writes all along: disks created and deleted.
  let stop = false;
  let churned = 0;
  const churn = (async () => {
    while (!stop) {
      await post(other, '/disks', { name: `c${churned}`, sizeBytes: MiB }, 201);
      const res = await fetch(`${other.api}/api/v1/disks/c${churned}`, { method: 'DELETE' });
      assert.equal(res.status, 204, await res.text());
      churned++;
    }
  })();
  const direct = new Etcd3({ hosts: [etcd.url] });
  try {
    await until(() => churned >= 5, 30_000, 'the other cluster writing', 50);
    // Disks created meanwhile: each head configures two replicas.
    const tookMs: number[] = [];
    for (let i = 0; i < 3; i++) {
      const started = performance.now();
      const d = (await post(nodes[i], '/disks', { name: `vm${i}`, sizeBytes: 16 * MiB, replicas: 3 }, 201)) as DiskInfo;
      tookMs.push(performance.now() - started);
      assert.equal(d.replicas!.length, 3);
    }
    assert.ok(tookMs.every((ms) => ms < 3000), `disk creates took ${tookMs.map((ms) => Math.round(ms)).join(', ')} ms`);

    // What a head whose cache is ahead sends: a CONFIGURE of vm0's chain as its record stands,
    // at a revision the other cluster moved past every change of this one. (The test speaks the
    // peer protocol as the head would, with the cluster's secret from etcd.)
    await until(async () => churned >= 10, 30_000, 'the other cluster writing on', 50);
    const record = JSON.parse((await direct.get('/shared-this/disks/vm0').string())!) as DiskRecord;
    const cluster = JSON.parse((await direct.get('/shared-this/cluster').string())!) as ClusterRecord;
    const members = await direct.getAll().prefix('/shared-this/members/').strings();
    const peerOf = (id: string): string => (JSON.parse(members[`/shared-this/members/${id}`]) as MemberRecord).peer;
    const [head, ...replicas] = record.chain.map((e) => e.node);
    const pool = new PeerPool({ node: head, cluster: cluster.id, secret: Buffer.from(cluster.secret, 'base64'), resolve: peerOf });
    try {
      for (const replica of replicas) {
        const rev = Number((await direct.put('/shared-other/marker').value(replica)).header.revision);
        const started = performance.now();
        const res = await pool.request(replica, MessageType.CONFIGURE, { disk: 'vm0', epoch: record.epoch, rev, hlc: BigInt(Date.now()) << 16n, chain: record.chain.map((e) => e.node), sizeBytes: record.sizeBytes, catchingUp: [] });
        const ms = performance.now() - started;
        assert.ok(Array.isArray(res.body.lastId), `${replica} answers with the last op it took`);
        // Waiting for its own cluster's next change would take up to 5 s.
        assert.ok(ms < 2000, `${replica} answered a CONFIGURE at revision ${rev} in ${Math.round(ms)} ms`);
      }
    } finally {
      await pool.close();
    }
  } finally {
    stop = true;
    await churn;
    direct.close();
  }
  for (const n of [...nodes, other]) await n.stop();
});
