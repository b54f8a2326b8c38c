/**
 * Deleting a replicated disk (docs/cluster.md, "How a node runs it"): every node up that held a
 * replica deletes its copy before `disk rm` answers; a copy a node cannot delete (an NBD client
 * of that node still has one of its snapshots open) is named in the answer, listed in that
 * node's `node info`, logged, and deleted once released, without anything else happening to the
 * disk's name. A node down while its disk is deleted deletes its copy when it comes back (the
 * copies it made are noted in DIR/cluster/copies); a disk it held before it joined stays.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { ClusterStatus, DiskInfo, NodeInfo } from '../../src/api/client/index.ts';
import { cleanup, MiB, qemuIo, requirePythonNbd, spawnTracked, startEtcd, TesseraNode, until } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

/** A libnbd client connected to `uri` until its stdin closes. */
function holdOpen(uri: string): { opened: Promise<void>; release: () => Promise<void> } {
  const script = 'import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nprint("open", flush=True)\nsys.stdin.read()\nh.shutdown()\n';
  const child = spawnTracked(requirePythonNbd(), ['-c', script, uri]);
  let out = '';
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const opened = new Promise<void>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (c: string) => {
      out += c;
      if (out.includes('open')) resolve();
    });
    void exited.then((code) => reject(new Error(`the client exited (${code}) before connecting: ${err}`)));
  });
  return {
    opened,
    release: async () => {
      child.stdin!.end();
      assert.equal(await exited, 0, err);
    },
  };
}

test('disk rm answers once every replica deleted its copy, or names the node whose copy is open; that copy goes once released', async () => {
  const ids = ['n1', 'n2', 'n3'];
  const nodes = ids.map((id) => new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', '/disk-delete/'] }));
  for (const n of nodes) await n.start();
  await until(async () => (await nodes[0].cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);
  const nodeInfo = (n: TesseraNode): Promise<NodeInfo> => n.cliJson<NodeInfo>(['node', 'info']);

  // A disk no client has open: every copy is gone when disk rm answers.
  await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'vm0', '--size', String(16 * MiB), '--replicas', '3']);
  assert.equal((await qemuIo(nodes[1].nbdUri('vm0'), ['write -P 0x11 0 1M'])).code, 0);
  for (const n of nodes) assert.equal((await nodeInfo(n)).disks, 1);
  await nodes[2].cliOk(['disk', 'rm', 'vm0']);
  for (const n of nodes) {
    const info = await nodeInfo(n);
    assert.equal(info.disks, 0, `no copy left on ${info.cluster!.node}`);
    assert.deepEqual(info.cluster!.copiesToDelete, []);
  }

  // A disk whose snapshot a client of a replica (not the head) reads.
  const d = await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'vm1', '--size', String(16 * MiB), '--replicas', '3']);
  assert.equal((await qemuIo(nodes[1].nbdUri('vm1'), ['write -P 0x22 0 1M'])).code, 0);
  await nodes[0].cliOk(['snap', 'create', 'vm1', 's1']);
  const replicaId = d.replicas![1].node;
  const replica = nodes[ids.indexOf(replicaId)];
  const client = holdOpen(replica.nbdUri('vm1@s1'));
  await client.opened;
  const asked = nodes.find((n) => n !== replica)!;
  const started = performance.now();
  const rm = await asked.cli(['disk', 'rm', 'vm1']);
  assert.notEqual(rm.code, 0);
  assert.match(rm.stderr, new RegExp(`Disk "vm1" is deleted from the cluster, but ${replicaId} still holds a copy \\(Disk "vm1" is in use by 1 open connection\\(s\\)\\); a node deletes its copy as soon as it can`));
  assert.ok(performance.now() - started < 8000, 'answered once the node said why, not after the wait for copies');
  const gone = await asked.cli(['disk', 'info', 'vm1']);
  assert.notEqual(gone.code, 0, 'the disk is gone from the cluster');
  const held = await nodeInfo(replica);
  assert.equal(held.disks, 1);
  assert.deepEqual(held.cluster!.copiesToDelete.map((c) => [c.disk, c.reason]), [['vm1', 'the disk was deleted']]);
  assert.match(held.cluster!.copiesToDelete[0].error ?? '', /in use by 1 open connection/);
  assert.match(await replica.cliOk(['node', 'info']), /Copies to delete: +vm1 \(the disk was deleted; Disk "vm1" is in use/);
  for (const n of nodes.filter((x) => x !== replica)) assert.equal((await nodeInfo(n)).disks, 0);
  assert.match(replica.logTail(), /disk vm1: its copy here is not deleted \(the disk was deleted\): Disk \\"vm1\\" is in use by 1 open connection\(s\); trying again every 2 s/);

  // Released: the node deletes it within a retry or two, and says so.
  await client.release();
  await until(async () => (await nodeInfo(replica)).disks === 0, 10_000, `${replicaId}'s copy deleted once released`, 200);
  assert.deepEqual((await nodeInfo(replica)).cluster!.copiesToDelete, []);
  assert.match(replica.logTail(), /disk vm1: its copy here is deleted \(the disk was deleted\), [0-9.]+ s after the first try/);

  // The name is free again: a new disk of it reads as zeroes everywhere.
  await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'vm1', '--size', String(16 * MiB), '--replicas', '3']);
  for (const n of nodes) {
    const r = await qemuIo(n.nbdUri('vm1'), ['read -P 0 0 1M'], { readOnly: true });
    assert.equal(r.code, 0, r.stdout + r.stderr);
  }
  for (const n of nodes) await n.stop();
});

test('a node down while its disk is deleted deletes its copy when it comes back; a disk it held before joining stays', async () => {
  const ids = ['n1', 'n2', 'n3'];
  const prefix = ['--etcd-prefix', '/disk-delete-down/'];
  // n3 held a disk of its own before it joined the cluster.
  const before = new TesseraNode({});
  await before.start();
  await before.cliOk(['disk', 'create', 'mine', '--size', String(4 * MiB)]);
  await before.stop();
  const nodes = ids.map((id) => new TesseraNode({ dataDir: id === 'n3' ? before.dataDir : undefined, args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', ...prefix] }));
  for (const n of nodes) await n.start();
  const up = async (count: number) => (await nodes[0].cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === count;
  await until(() => up(3), 30_000, 'three nodes up', 200);
  const nodeInfo = (n: TesseraNode): Promise<NodeInfo> => n.cliJson<NodeInfo>(['node', 'info']);
  await nodes[0].cliJson<DiskInfo>(['disk', 'create', 'vm9', '--size', String(16 * MiB), '--replicas', '3']);
  assert.equal((await qemuIo(nodes[0].nbdUri('vm9'), ['write -P 0x33 0 1M'])).code, 0);
  assert.equal((await nodeInfo(nodes[2])).disks, 2, 'its own disk and its copy of vm9');

  await nodes[2].kill('SIGKILL');
  await until(() => up(2), 15_000, 'n3 down', 200);
  await nodes[0].cliOk(['disk', 'rm', 'vm9']);
  for (const n of nodes.slice(0, 2)) assert.equal((await nodeInfo(n)).disks, 0);

  await nodes[2].start();
  await until(async () => (await nodeInfo(nodes[2])).disks === 1, 15_000, "n3's copy of vm9 deleted once it is back", 200);
  assert.match(nodes[2].logTail(), /disk vm9: its copy here is deleted \(the disk was deleted\)/);
  // What is left is its own disk, untouched across the start.
  await nodes[2].restart();
  await until(() => up(3), 30_000, 'n3 up again', 200);
  assert.equal((await nodeInfo(nodes[2])).disks, 1);
  for (const n of nodes) await n.stop();
});
