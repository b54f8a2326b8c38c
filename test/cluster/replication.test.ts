/**
 * Replication on real nodes (docs/cluster.md, "Replication: the chain", "Any node serves any
 * disk", "Failure, catch-up and rebuild"): a real etcd and three `tessera serve` processes; a
 * disk with three replicas written with nbdcopy through a node that is not its head; the head
 * killed with -9 while a writer goes on through another node; the dead node restarted and caught
 * up; then every replica's copy read from its store on disk and compared.
 */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { DiskInfo } from '../../src/api/client/index.ts';
import { cleanup, makeTempDir, MiB, nbdcopy, requireTool, startEtcd, TesseraNode, until, writeSeededFile, storeDigest, promtoolCheck, fileDigest } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

const ttlS = 3;
let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

function clusterNode(id: string, prefix: string): TesseraNode {
  return new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', String(ttlS), '--etcd-prefix', prefix, '--sync-interval', '1s'] });
}



test('a 3-replica disk written through any node survives kill -9 of its head, serves on, and the dead node catches up to an identical copy', async () => {
  requireTool('nbdcopy', 'libnbd-bin');
  const nodes = ['n1', 'n2', 'n3'].map((id) => clusterNode(id, '/replication/'));
  for (const n of nodes) await n.start();
  const byId = new Map(nodes.map((n, i) => [`n${i + 1}`, n]));
  await until(async () => (await nodes[0].cliJson<{ nodes: Array<{ state: string }> }>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);

  const size = 64 * MiB;
  const created = await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'vm1', '--size', String(size), '--replicas', '3']);
  assert.equal(created.replicas!.length, 3);
  assert.deepEqual(created.replicas!.map((r) => r.state), ['healthy', 'healthy', 'healthy']);
  assert.deepEqual(created.policy, { replicas: 3, failureDomain: 'node' });
  const headId = created.replicas![0].node;
  const head = byId.get(headId)!;
  const others = nodes.filter((n) => n !== head);

  // Written through a node that is not the head, read back through the other.
  const dir = makeTempDir('tessera-replication-');
  const first = join(dir, 'first.img');
  await writeSeededFile(first, 1, 'first', size);
  await nbdcopy(first, others[0].nbdUri('vm1'));
  const back = join(dir, 'back.img');
  await nbdcopy(others[1].nbdUri('vm1'), back);
  assert.equal(fileDigest(back), fileDigest(first), 'read back through another node');
  // A sync point after the data (every second here, --sync-interval): the base the head will have when it returns.
  await new Promise((r) => setTimeout(r, 2500));

  // The head dies; the disk goes on at a new head, through either survivor.
  await head.kill('SIGKILL');
  await until(async () => {
    const d = await others[0].cliJson<DiskInfo>(['disk', 'info', 'vm1']);
    return d.epoch! > created.epoch! && d.replicas![0].node !== headId && d.replicas![0].state === 'healthy';
  }, (ttlS + 10) * 1000, 'a new head', 200);
  const during = await others[1].cliJson<DiskInfo>(['disk', 'info', 'vm1']);
  assert.deepEqual(during.replicas!.find((r) => r.node === headId), { node: headId, role: 'tail', state: 'stale' });
  const back2 = join(dir, 'back2.img');
  await nbdcopy(others[1].nbdUri('vm1'), back2);
  assert.equal(fileDigest(back2), fileDigest(first), 'every acknowledged write after failover');
  // Written while it is away: 4 MiB of the 64.
  const second = join(dir, 'second.img');
  const patch = join(dir, 'patch.img');
  await writeSeededFile(patch, 2, 'patch', 4 * MiB);
  await nbdcopy(patch, others[1].nbdUri('vm1'));
  const img = readFileSync(first);
  readFileSync(patch).copy(img, 0);
  writeFileSync(second, img);
  const back2b = join(dir, 'back2b.img');
  await nbdcopy(others[0].nbdUri('vm1'), back2b);
  assert.equal(fileDigest(back2b), fileDigest(second), 'the write made while the head was away');

  // The dead node comes back and catches up: by the blocks written while it was away.
  await head.start();
  await until(async () => {
    const d = await others[0].cliJson<DiskInfo>(['disk', 'info', 'vm1']);
    return d.replicas!.length === 3 && d.replicas!.every((r) => r.state === 'healthy');
  }, 60_000, `${headId} caught up`, 200);
  // By the blocks written while it was away (and what was in flight around the sync point), not a full copy.
  const m = /copied in (\d+) bytes from .* \(changes since tessera-sync-[\d.]+\)/.exec(readFileSync(head.logPath, 'utf8'));
  assert.ok(m !== null, 'a catch-up by the changes since its base');
  assert.ok(Number(m[1]) >= 4 * MiB && Number(m[1]) < 32 * MiB, `copied ${m[1]} bytes for 4 MiB written while away`);
  const back3 = join(dir, 'back3.img');
  await nbdcopy(head.nbdUri('vm1'), back3);
  assert.equal(fileDigest(back3), fileDigest(second));

  // Its metrics say what it did; every node sees every replica healthy.
  const metrics = await (await fetch(`${head.api}/metrics`)).text();
  assert.match(metrics, /^tessera_cluster_copied_in_bytes_total [1-9]\d*$/m);
  assert.match(metrics, /^tessera_cluster_replicas\{role="all"\} 1$/m);
  for (const n of nodes) assert.match(await (await fetch(`${n.api}/metrics`)).text(), /^tessera_cluster_replicas_not_healthy 0$/m);
  const lint = await promtoolCheck(metrics);
  assert.equal(lint.code, 0, lint.output);

  // Every replica's copy, read from its store on disk, is the last data written.
  for (const n of nodes) await n.stop();
  const want = fileDigest(second);
  for (const n of nodes) assert.equal(await storeDigest(n.dataDir, 'vm1'), want, `the copy on ${n.dataDir}`);
});
