/**
 * Failure under load (docs/cluster.md, "What each failure costs"): a real etcd, four real nodes,
 * a disk with three replicas and a libnbd writer (test/helpers/crashload.py) that records every
 * write a FLUSH or FUA acknowledged, writing through the fourth node (not a replica: it survives
 * every kill). Round by round the head, then the middle, then the tail is killed with -9 while the
 * writer goes on; every acknowledged write must be there, the writer must make progress after the
 * failover, and the killed node, restarted, catches up. Then etcd itself is killed and restarted
 * under load. At the end every replica's copy, read from its store on disk, is the same.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { DiskInfo } from '../../src/api/client/index.ts';
import { cleanup, makeTempDir, MiB, requirePythonNbd, runOk, crashload, startCrashWriter, startEtcd, TesseraNode, testSeed, until, storeDigest } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

const ttlS = 3;
const blockBytes = 4096;

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);



test('kill -9 of the head, a middle and the tail under a flushing writer loses no acknowledged write; etcd killed under load stops nothing; the replicas end identical', async (t) => {
  const seed = testSeed(t);
  const py = requirePythonNbd();
  const ids = ['n1', 'n2', 'n3', 'n4'];
  const nodes = new Map(ids.map((id) => [id, new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', String(ttlS), '--etcd-prefix', '/failover/'] })]));
  for (const n of nodes.values()) await n.start();
  const any = (): TesseraNode => [...nodes.values()].find((n) => n.running)!;
  await until(async () => (await any().cliJson<{ nodes: Array<{ state: string }> }>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 4, 30_000, 'four nodes up', 200);

  const size = 32 * MiB;
  const blocks = size / blockBytes;
  const created = await nodes.get('n1')!.cliJson<DiskInfo>(['disk', 'create', 'vm1', '--size', String(size), '--replicas', '3']);
  const replicaIds = created.replicas!.map((r) => r.node);
  const gatewayId = ids.find((id) => !replicaIds.includes(id))!;
  const gateway = nodes.get(gatewayId)!;
  const info = (): Promise<DiskInfo> => gateway.cliJson<DiskInfo>(['disk', 'info', 'vm1']);
  const dir = makeTempDir('tessera-failover-');
  const state = join(dir, 'vm1.json');

  for (const role of ['head', 'middle', 'tail'] as const) {
    const before = await info();
    const victimId = before.replicas!.find((r) => r.role === role)!.node;
    const victim = nodes.get(victimId)!;
    const writer = startCrashWriter(py, gateway.nbdUri('vm1'), state, seed + before.epoch!, blocks, { seconds: 12, maxOps: 100_000_000 });
    await writer.flushed(3);
    await victim.kill('SIGKILL');
    const atKill = writer.flushes;
    // The writer goes on through the new chain: more FLUSHes complete after the failover.
    await until(() => writer.flushes >= atKill + 3, 60_000, `flushes after ${role} ${victimId} was killed`, 100);
    const summary = await writer.done();
    const verdict = await runOk(py, [crashload, 'verify', gateway.nbdUri('vm1'), state]).catch((err: Error) => assert.fail(`after the ${role} was killed: ${err.message}`));
    t.diagnostic(`${role} ${victimId} killed after ${atKill} flushes; writer: ${summary}; ${verdict.trim()}`);
    const during = await info();
    assert.ok(during.epoch! > before.epoch!, `a new epoch after the ${role} was lost`);
    assert.equal(during.replicas!.find((r) => r.node === victimId)?.state, 'stale');
    // Back, it catches up, and the disk has its three healthy replicas again.
    await victim.start();
    await until(async () => {
      const d = await info();
      return d.replicas!.length === 3 && d.replicas!.every((r) => r.state === 'healthy');
    }, 60_000, `${victimId} caught up`, 200);
  }

  // etcd dies under load: I/O on the existing chain goes on; etcd comes back, nothing lost.
  const writer = startCrashWriter(py, gateway.nbdUri('vm1'), state, seed + 1000, blocks, { seconds: 12, maxOps: 100_000_000 });
  await writer.flushed(3);
  await etcd.kill();
  const atKill = writer.flushes;
  await until(() => writer.flushes >= atKill + 5, 60_000, 'flushes while etcd is down', 100);
  await etcd.start();
  await writer.done();
  await runOk(py, [crashload, 'verify', gateway.nbdUri('vm1'), state]);
  await until(async () => (await gateway.cliJson<{ nodes: Array<{ state: string }> }>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 4, 60_000, 'four nodes up after etcd returned', 200);
  const last = await info();
  assert.ok(last.replicas!.every((r) => r.state === 'healthy'), JSON.stringify(last.replicas));

  // Every replica's copy on disk is the same.
  const chain = last.replicas!.map((r) => r.node);
  for (const n of nodes.values()) await n.stop();
  const digests = await Promise.all(chain.map((id) => storeDigest(nodes.get(id)!.dataDir, 'vm1')));
  assert.equal(new Set(digests).size, 1, `replicas differ: ${chain.map((id, i) => `${id} ${digests[i].slice(0, 12)}`).join(', ')}`);
});
