/**
 * Changing where a disk lives, online (docs/cluster.md, "Failure, catch-up and rebuild",
 * "Drain"): real etcd, five real nodes. `disk set --replicas` grows and shrinks a disk; `node
 * drain` moves a node's replicas away and `node rm` forgets it; a node killed for good has its
 * replica rebuilt elsewhere after `--rebuild-delay`; the refusals say what is wrong. Data written
 * before each change reads back after it, and every replica's copy on disk ends the same.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { Store } from '../../src/engine/index.ts';
import type { ClusterStatus, DiskInfo } from '../../src/api/client/index.ts';
import { cleanup, makeTempDir, MiB, nbdcopy, startEtcd, TesseraNode, until, writeSeededFile, storeDigest, fileDigest } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);



test('disk set grows and shrinks a disk, node drain and node rm move a node out, a dead node is replaced after the rebuild delay', async () => {
  const ids = ['n1', 'n2', 'n3', 'n4', 'n5'];
  const nodes = new Map(ids.map((id) => [id, new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', '/placement-changes/', '--rebuild-delay', '2s'] })]));
  for (const n of nodes.values()) await n.start();
  const cli = nodes.get('n1')!;
  await until(async () => (await cli.cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 5, 30_000, 'five nodes up', 200);
  const info = (): Promise<DiskInfo> => cli.cliJson<DiskInfo>(['disk', 'info', 'vm1']);
  const healthy = async (count: number, without?: string): Promise<DiskInfo> => {
    let last: DiskInfo | null = null;
    await until(async () => {
      last = await info();
      const chain = last.replicas!.filter((r) => r.state !== 'stale');
      return chain.length === count && chain.every((r) => r.state === 'healthy') && (without === undefined || !last.replicas!.some((r) => r.node === without));
    }, 60_000, `${count} healthy replicas${without !== undefined ? ` without ${without}` : ''}`, 200);
    return last!;
  };

  // Refusals, one line each.
  const tooMany = await cli.cli(['disk', 'create', 'x', '--size', '1M', '--replicas', '6']);
  assert.notEqual(tooMany.code, 0);
  assert.match(tooMany.stderr, /--replicas must be a whole number from 1 to 5: got 6/);
  const unknown = await cli.cli(['node', 'drain', 'nope']);
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.stderr, /no node nope in the cluster/);
  const zones = await cli.cli(['disk', 'create', 'x', '--size', '1M', '--replicas', '2', '--failure-domain', 'zone']);
  assert.notEqual(zones.code, 0);
  assert.match(zones.stderr, /cannot place 2 replicas in distinct zones/);

  // Two replicas, written; grown to three: the new one copies everything in.
  const created = await cli.cliJson<DiskInfo>(['disk', 'create', 'vm1', '--size', String(32 * MiB), '--replicas', '2']);
  assert.equal(created.replicas!.length, 2);
  const dir = makeTempDir('tessera-placement-changes-');
  const data = join(dir, 'data.img');
  await writeSeededFile(data, 3, 'vm1', 32 * MiB);
  await nbdcopy(data, cli.nbdUri('vm1'));
  await cli.cliOk(['disk', 'set', 'vm1', '--replicas', '3']);
  const grown = await healthy(3);
  assert.deepEqual(grown.policy, { replicas: 3, failureDomain: 'node' });

  // Drain a replica's node: its replica moves; then it is forgotten.
  // The node the CLI talks to (n1) stays; the one drained and the one lost are others.
  const drained = grown.replicas!.find((r) => r.node !== 'n1')!.node;
  const refused = await cli.cli(['node', 'rm', drained]);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /is up and holds replicas of 1 disk\(s\) \(vm1\): drain it first/);
  await cli.cliOk(['node', 'drain', drained]);
  await healthy(3, drained);
  await nodes.get(drained)!.stop();
  await cli.cliOk(['node', 'rm', drained]);
  assert.ok(!(await cli.cliJson<ClusterStatus>(['cluster', 'status'])).nodes.some((n) => n.id === drained));
  nodes.delete(drained);

  // A replica's node dies for good: after the rebuild delay another node gets a new replica.
  const before = await info();
  const lost = before.replicas!.find((r) => r.node !== 'n1')!.node;
  await nodes.get(lost)!.kill('SIGKILL');
  // Healthy three again without it: a new replica copied in, and the one away forgotten past the delay.
  const rebuilt = await healthy(3, lost);
  assert.ok(rebuilt.epoch! > before.epoch!);
  await cli.cliOk(['node', 'rm', lost]);
  nodes.delete(lost);

  // Shrunk to two: the head stays.
  const head = (await info()).replicas![0].node;
  await cli.cliOk(['disk', 'set', 'vm1', '--replicas', '2']);
  const shrunk = await healthy(2);
  assert.equal(shrunk.replicas![0].node, head);

  const back = join(dir, 'back.img');
  await nbdcopy(cli.nbdUri('vm1'), back);
  assert.equal(fileDigest(back), fileDigest(data));
  const chain = shrunk.replicas!.map((r) => r.node);
  for (const n of nodes.values()) await n.stop();
  for (const id of chain) assert.equal(await storeDigest(nodes.get(id)!.dataDir, 'vm1'), fileDigest(data), `the copy on ${id}`);
  // A node that held a replica no more deletes its copy.
  const others = [...nodes.keys()].filter((id) => !chain.includes(id));
  for (const id of others) {
    const store = await Store.open({ dir: join(nodes.get(id)!.dataDir, 'store'), readOnly: true });
    try {
      assert.ok(!store.listDisks().some((d) => d.name === 'vm1'), `${id} still holds a copy of vm1`);
    } finally {
      await store.close();
    }
  }
});
