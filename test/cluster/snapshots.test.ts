/**
 * Snapshots, clones, revert, trim, write-zeroes and changed-block tracking on a replicated disk
 * (docs/cluster.md, "Replication: the chain"): asked through any node, done at the head, and
 * the same on every replica: each node's own copy of a snapshot (`vm1@s1` is served from the
 * node's own store) and its changes since it agree, a clone is made on every replica from its own
 * snapshot, and the copies on disk end identical. Every snapshot carries one stamp of the head's
 * hybrid logical clock, the same in every replica's store (docs/cluster.md, "Time"), and every
 * node's log records carry its clock. A backup asked of any node runs at the head as a job that
 * every node lists.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { ApiClient, type BackupJob, type ClusterStatus, type DiskInfo, type NodeInfo, type SnapshotInfo } from '../../src/api/client/index.ts';
import { cleanup, makeTempDir, MiB, nbdcopy, nbdinfoMap, qemuIo, run, startEtcd, TesseraNode, tesseraBin, until, writeSeededFile, storeDigests, storedStamps, fileDigest } from '../helpers/index.ts';
import { cliEnv, openTestRepo } from '../backup/harness.ts';
import type { EtcdServer } from '../helpers/index.ts';

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

/** A new value of a node's clock (GET /node). */
async function clockOf(node: TesseraNode): Promise<bigint> {
  return BigInt((await node.cliJson<NodeInfo>(['node', 'info'])).hlc!);
}

test('snapshots and their clock stamps, changes since, clone, revert, trim and write-zeroes of a replicated disk agree on every replica', async () => {
  const nodes = ['n1', 'n2', 'n3'].map((id) => new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', '/snapshots/'] }));
  for (const n of nodes) await n.start();
  await until(async () => (await nodes[0].cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);
  const size = 16 * MiB;
  const d = await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'vm1', '--size', String(size), '--replicas', '3']);
  const headId = d.replicas![0].node;
  const notHead = nodes[['n1', 'n2', 'n3'].findIndex((id) => id !== headId)];

  const dir = makeTempDir('tessera-cluster-snapshots-');
  const a = join(dir, 'a.img');
  await writeSeededFile(a, 11, 'a', size);
  await nbdcopy(a, nodes[1].nbdUri('vm1'));
  // A snapshot asked of a node that is not the head; the cluster's own sync snapshots stay hidden.
  // The head's clock stamps it: above a value the head's clock gave before, below one after.
  const head = nodes[['n1', 'n2', 'n3'].indexOf(headId)];
  const clockBefore = await clockOf(head);
  const created = await notHead.cliJson<SnapshotInfo>(['snap', 'create', 'vm1', 's1']);
  const clockAfter = await clockOf(head);
  const s1 = BigInt(created.hlc!);
  assert.ok(clockBefore < s1 && s1 < clockAfter, `the head's clock read ${clockBefore}, then s1 stamped ${s1}, then ${clockAfter}`);
  for (const n of nodes) assert.deepEqual((await n.cliJson<SnapshotInfo[]>(['snap', 'list', 'vm1'])).map((s) => [s.name, s.hlc]), [['s1', created.hlc]], `snap list through ${n.api}`);
  const refused = await notHead.cli(['snap', 'create', 'vm1', 'tessera-mine']);
  assert.notEqual(refused.code, 0);
  assert.match(refused.stderr, /starting with "tessera-" are the cluster's own/);
  for (const n of nodes) assert.deepEqual((await n.cliJson<DiskInfo>(['disk', 'info', 'vm1'])).snapshots, ['s1']);

  // Changes after it: a write, a trim, write-zeroes, through different nodes.
  const w = await qemuIo(nodes[2].nbdUri('vm1'), ['write -P 0x5a 1M 1M', 'write -z 6M 512k', 'discard 10M 2M']);
  assert.equal(w.code, 0, w.stdout + w.stderr);

  // Every node's own copy of the snapshot is the data of before, and their changes since it agree.
  for (const [i, n] of nodes.entries()) {
    const back = join(dir, `s1-${i}.img`);
    await nbdcopy(n.nbdUri('vm1@s1'), back);
    assert.equal(fileDigest(back), fileDigest(a), `node ${i + 1}'s copy of vm1@s1`);
  }
  const maps = await Promise.all(nodes.map((n) => nbdinfoMap(n.nbdUri('vm1'), 'tessera:changed-since:s1')));
  const changed = maps[0].filter((e) => e.type !== 0).map((e) => [e.offset, e.length]);
  assert.deepEqual(changed, [[1 * MiB, 1 * MiB], [6 * MiB, 512 * 1024], [10 * MiB, 2 * MiB]]);
  for (const m of maps.slice(1)) assert.deepEqual(m, maps[0]);

  // A clone of the snapshot, made on every replica from its own copy; independent of its origin.
  const clone = await nodes[2].cliJson<DiskInfo>(['disk', 'clone', 'vm1@s1', 'vm2']);
  assert.equal(clone.origin, 'vm1@s1');
  assert.deepEqual(clone.replicas!.map((r) => r.node).sort(), ['n1', 'n2', 'n3']);
  const c = await qemuIo(nodes[0].nbdUri('vm2'), ['write -P 0x77 0 64k']);
  assert.equal(c.code, 0, c.stdout + c.stderr);

  // Revert through a node: every replica goes back to the snapshot.
  await nodes[1].cliOk(['snap', 'revert', 'vm1', 's1']);
  const reverted = join(dir, 'reverted.img');
  await nbdcopy(nodes[2].nbdUri('vm1'), reverted);
  assert.equal(fileDigest(reverted), fileDigest(a));

  // A backup asked of a node that is not the head runs at the head; its snapshot is on every replica.
  const repo = join(dir, 'repo');
  const r = await openTestRepo(repo, { init: {} });
  await r.close();
  const env = { ...process.env, ...cliEnv(r.cacheDir) } as NodeJS.ProcessEnv;
  const backup = await run(tesseraBin, ['--api', notHead.api, 'backup', 'create', 'vm1', '--repo', repo, '--json'], { env, timeoutMs: 300_000 });
  assert.equal(backup.code, 0, backup.stderr);
  const [outcome] = JSON.parse(backup.stdout) as Array<{ name: string; source: { snapshot: string } }>;
  assert.equal(outcome.name, 'vm1');
  for (const n of nodes) assert.ok((await n.cliJson<DiskInfo>(['disk', 'info', 'vm1'])).snapshots.includes(outcome.source.snapshot), `the backup's snapshot through ${n.api}`);
  // Its job, at the head, is listed and found through every node.
  for (const n of nodes) {
    const jobs = await n.cliJson<BackupJob[]>(['backup', 'jobs']);
    assert.deepEqual(jobs.map((j) => [j.node, j.state, j.outcomes?.[0].id]), [[headId, 'done', (outcome as { id?: string }).id]], `backup jobs through ${n.api}`);
    assert.equal((await new ApiClient(n.api).getBackupJob(jobs[0].id)).node, headId);
  }

  for (const n of nodes) await n.stop();
  // Every replica's own record of every snapshot has the one stamp the head gave it: s1, the
  // backup's, the sync snapshots of both disks. (A sync snapshot deleted as the nodes stopped may
  // be gone from some stores only.)
  for (const disk of ['vm1', 'vm2']) {
    const stamps = await Promise.all(nodes.map((n) => storedStamps(n.dataDir, disk)));
    for (const name of new Set(stamps.flatMap((m) => [...m.keys()]))) {
      const seen = stamps.map((m) => m.get(name));
      const values = new Set(seen.filter((v) => v !== undefined));
      assert.equal(values.size, 1, `${disk}@${name} has one stamp on every replica that holds it: ${seen.join(', ')}`);
      assert.match(String([...values][0]), /^[1-9][0-9]{17,19}$/, `${disk}@${name} is stamped`);
    }
    assert.ok(stamps.some((m) => [...m.keys()].some((name) => name.startsWith('tessera-sync-'))), `${disk} has sync snapshots`);
    if (disk === 'vm1') {
      for (const [i, m] of stamps.entries()) {
        assert.equal(m.get('s1'), created.hlc, `vm1@s1 on node ${i + 1}`);
        assert.ok(m.get(outcome.source.snapshot) !== undefined, `the backup's snapshot on node ${i + 1}`);
      }
    }
  }
  // Each node's log: every record stamped with its clock, rising.
  for (const n of nodes) await n.logClock(n.api);
  const all = await Promise.all(nodes.map((n) => storeDigests(n.dataDir, ['vm1', 'vm2'])));
  for (const [i, got] of all.entries()) {
    assert.equal(got[0], all[0][0], `vm1 on node ${i + 1}`);
    assert.equal(got[1], all[0][1], `vm2 on node ${i + 1}`);
  }
  assert.equal(all[0][0], fileDigest(a));
  assert.notEqual(all[0][1], fileDigest(a), 'the clone took its own write');
});

test('a node that holds no replica of a disk lists its snapshots and shows its info as the head does', async () => {
  const ids = ['n1', 'n2', 'n3'];
  const nodes = ids.map((id) => new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', '/snapshots-no-copy/'] }));
  for (const n of nodes) await n.start();
  await until(async () => (await nodes[0].cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);
  const d = await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'solo', '--size', String(16 * MiB), '--replicas', '1']);
  const holder = nodes[ids.indexOf(d.replicas![0].node)];
  const [others, other2] = nodes.filter((n) => n !== holder);
  // Written and snapshotted through nodes that hold no copy.
  const w = await qemuIo(others.nbdUri('solo'), ['write -P 0x3c 1M 2M', 'flush']);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  const s1 = await other2.cliJson<SnapshotInfo>(['snap', 'create', 'solo', 's1']);
  const expected = await holder.cliJson<SnapshotInfo[]>(['snap', 'list', 'solo']);
  assert.deepEqual(expected.map((s) => [s.name, s.hlc]), [['s1', s1.hlc]]);
  const info = await holder.cliJson<DiskInfo>(['disk', 'info', 'solo']);
  assert.deepEqual(info.snapshots, ['s1']);
  assert.ok(info.allocatedBytes >= 2 * MiB, `the head's copy holds what was written: ${info.allocatedBytes}`);
  for (const n of [others, other2]) {
    assert.deepEqual(await n.cliJson<SnapshotInfo[]>(['snap', 'list', 'solo']), expected, `snap list through ${n.api}`);
    assert.deepEqual(await n.cliJson<DiskInfo>(['disk', 'info', 'solo']), info, `disk info through ${n.api}`);
    const missing = await n.cli(['snap', 'list', 'nope']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /No disk named "nope"/);
  }
  for (const n of nodes) await n.stop();
});
