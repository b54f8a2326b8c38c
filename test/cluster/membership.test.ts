/**
 * Membership through a real etcd (docs/cluster.md, "Leases and liveness"): real nodes join, one
 * controller is elected, a node killed with -9 shows down within TTL + 2 s and the controller
 * moves, a restarted node comes back up; and the ways a start is refused.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { cleanup, makeTempDir, run, startEtcd, TesseraNode, tesseraBin, until } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';
import type { ClusterStatus } from '../../src/api/client/index.ts';

/** A short lease keeps the test fast; the bound below is the doc's TTL + 2 s. */
const ttlS = 3;

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

function clusterNode(id: string, extra: string[] = [], dataDir?: string): TesseraNode {
  return new TesseraNode({ dataDir, args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', String(ttlS), ...extra] });
}

async function status(node: TesseraNode): Promise<ClusterStatus> {
  return node.cliJson<ClusterStatus>(['cluster', 'status']);
}

test('three nodes join, one is controller; a node killed -9 is down within TTL + 2 s and the controller moves; restarted it is up again', async () => {
  const prefix = '/membership/';
  const nodes = ['n1', 'n2', 'n3'].map((id) => clusterNode(id, ['--etcd-prefix', prefix, '--zone', `z-${id}`]));
  for (const n of nodes) await n.start();
  await until(async () => {
    const s = await status(nodes[2]);
    return s.nodes.length === 3 && s.nodes.every((n) => n.state === 'up') && s.nodes.filter((n) => n.controller).length === 1;
  }, 30_000, 'three nodes up with one controller', 200);
  const s = await status(nodes[0]);
  assert.deepEqual(s.nodes.map((n) => [n.id, n.zone]), [['n1', 'z-n1'], ['n2', 'z-n2'], ['n3', 'z-n3']]);
  for (const [i, n] of s.nodes.entries()) {
    assert.equal(`http://${n.api}`, nodes[i].api);
    assert.equal(n.nbd, `${nodes[i].nbdHost}:${nodes[i].nbdPort}`);
    assert.match(n.peer ?? '', /^127\.0\.0\.1:\d+$/);
    assert.ok(n.capacityBytes > 0 && n.usedBytes >= 0);
  }
  // Every node answers the same.
  for (const n of nodes) assert.deepEqual((await status(n)).nodes.map((x) => [x.id, x.state, x.controller]), s.nodes.map((x) => [x.id, x.state, x.controller]));
  const text = await nodes[1].cliOk(['node', 'list']);
  assert.match(text, /^ID +STATE +CONTROLLER/);
  assert.match(text, /3 nodes, 3 up/);

  // Each node counts its etcd requests in its metrics; the controller says it is one.
  const metrics = await Promise.all(nodes.map(async (n) => (await fetch(`${n.api}/metrics`)).text()));
  for (const m of metrics) assert.match(m, /^tessera_etcd_requests_total\{kind="keepalive"\} [1-9]/m);
  assert.equal(metrics.filter((m) => /^tessera_cluster_controller 1$/m.test(m)).length, 1);

  // Placement is the controller's: a disk created through another node is created by the controller's API.
  const ctl = s.nodes.findIndex((n) => n.controller);
  const other = nodes[(ctl + 1) % 3];
  const created = (api: string) => /^tessera_api_requests_total\{method="POST",route="\/api\/v1\/disks",status="201"\} (\d+)$/m.exec(api)?.[1] ?? '0';
  await other.cliOk(['disk', 'create', 'placed', '--size', '16M', '--replicas', '2']);
  const counts = await Promise.all(nodes.map(async (n) => created(await (await fetch(`${n.api}/metrics`)).text())));
  assert.equal(counts[ctl], '1', `the controller created it: ${counts.join(', ')}`);
  await other.cliOk(['disk', 'rm', 'placed']);

  // Kill the controller: it is down within TTL + 2 s, and another takes over.
  const controller = s.nodes.find((n) => n.controller)!.id;
  const victim = nodes[s.nodes.findIndex((n) => n.id === controller)];
  const witness = nodes.find((n) => n !== victim)!;
  await victim.kill('SIGKILL');
  const killedMs = Date.now();
  await until(async () => (await status(witness)).nodes.find((n) => n.id === controller)!.state === 'down', (ttlS + 2) * 1000 + 5000, `${controller} down`, 100);
  const downAfterMs = Date.now() - killedMs;
  // The CLI's own start takes part of the poll; the bound is the doc's with a margin for it.
  assert.ok(downAfterMs <= (ttlS + 2) * 1000 + 2000, `down after ${downAfterMs} ms`);
  await until(async () => {
    const c = (await status(witness)).nodes.find((n) => n.controller);
    return c !== undefined && c.id !== controller;
  }, (ttlS + 2) * 1000 + 5000, 'a new controller', 100);

  await victim.start();
  await until(async () => (await status(witness)).nodes.every((n) => n.state === 'up'), 30_000, `${controller} up again`, 200);
  const after = await status(victim);
  assert.equal(after.nodes.filter((n) => n.controller).length, 1);

  // Each node puts its round trips as one value per zone: the two other nodes' zones (docs/cluster.md, "Round trips").
  const direct = new Etcd3({ hosts: etcd.url, faultHandling: { host: () => noop, global: noop } });
  try {
    const zonesOf = async (id: string): Promise<string> => {
      const text = await direct.get(`${prefix}rtt/${id}`).string();
      const zones = text === null ? {} : ((JSON.parse(text) as { zones?: Record<string, number> }).zones ?? {});
      return Object.entries(zones).filter(([, ms]) => typeof ms === 'number' && ms >= 0).map(([z]) => z).join(',');
    };
    const expected = { n1: 'z-n2,z-n3', n2: 'z-n1,z-n3', n3: 'z-n1,z-n2' };
    await until(async () => {
      for (const [id, zones] of Object.entries(expected)) if ((await zonesOf(id)) !== zones) return false;
      return true;
    }, 45_000, 'each node\'s round trips by zone in etcd', 500);
  } finally {
    direct.close();
  }
  for (const n of nodes) await n.stop();
  // A node that stops leaves at once (its lease revoked).
  const s2 = await run(tesseraBin, ['--api', nodes[0].api, 'cluster', 'status']);
  assert.notEqual(s2.code, 0);
});

test('a node paused past its lease shows down, and up again once it resumes', async () => {
  const prefix = '/pause/';
  const [sleeper, witness] = ['p1', 'p2'].map((id) => clusterNode(id, ['--etcd-prefix', prefix]));
  await sleeper.start();
  await witness.start();
  const state = async (): Promise<string | undefined> => (await status(witness)).nodes.find((n) => n.id === 'p1')?.state;
  await until(async () => (await state()) === 'up', 30_000, 'p1 up', 100);
  sleeper.signal('SIGSTOP');
  try {
    await until(async () => (await state()) === 'down', (ttlS + 2) * 1000 + 5000, 'p1 down while paused', 100);
  } finally {
    sleeper.signal('SIGCONT');
  }
  // It finds its lease gone, takes a new one and joins again.
  await until(async () => (await state()) === 'up', 30_000, 'p1 up after it resumed', 100);
  assert.equal((await status(sleeper)).nodes.filter((n) => n.controller).length, 1);
  await sleeper.stop();
  await witness.stop();
});

test('a node without etcd answers cluster status with itself alone', async () => {
  const node = new TesseraNode({});
  await node.start();
  const s = await status(node);
  assert.equal(s.nodes.length, 1);
  assert.deepEqual({ ...s.nodes[0], capacityBytes: 0, usedBytes: 0 }, { id: 'local', state: 'up', zone: 'default', api: node.api.replace('http://', ''), nbd: `${node.nbdHost}:${node.nbdPort}`, peer: null, controller: true, capacityBytes: 0, usedBytes: 0 });
  await node.stop();
});

/** Runs `tessera serve` expecting it to fail; returns its stderr. */
async function refused(args: string[], dataDir = join(makeTempDir('tessera-refused-'), 'data')): Promise<string> {
  const r = await run(tesseraBin, ['serve', '--data', dataDir, '--nbd-port', '0', '--api-port', '0', '--socket', join(dataDir, '..', 'nbd.sock'), ...args], { timeoutMs: 60_000 });
  assert.equal(r.code, 1, `exit ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.equal(r.stdout, '');
  return r.stderr;
}

test('a second live node with the same id is refused, naming where the first serves', async () => {
  const first = clusterNode('dup', ['--etcd-prefix', '/dup/']);
  await first.start();
  const err = await refused(['--etcd', etcd.url, '--node-id', 'dup', '--etcd-prefix', '/dup/', '--log-format', 'json']);
  assert.match(err, new RegExp(`node dup is already live in the cluster \\(api=${first.api.replace('http://', '').replace(/\./g, '\\.')}, since \\d{4}-`));
  await first.stop();
});

test('an unreachable etcd is one line naming the URL, exit 1', async () => {
  const url = 'http://127.0.0.1:9';
  const started = Date.now();
  const err = await refused(['--etcd', url, '--node-id', 'lonely', '--log-format', 'json']);
  assert.match(err, new RegExp(`cannot reach etcd at ${url.replace(/\./g, '\\.')}`));
  assert.ok(Date.now() - started < 30_000);
});

test('an invalid node id, and cluster options without --etcd, are refused', async () => {
  assert.match(await refused(['--etcd', etcd.url, '--node-id', 'bad/id', '--log-format', 'json']), /invalid node id 'bad\/id'/);
  const r = await run(tesseraBin, ['serve', '--node-id', 'n1']);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /--node-id is an option of cluster mode: give --etcd URL too/);
});

test('a data directory remembers its node id and cluster: another id or cluster is refused', async () => {
  const node = clusterNode('keeper', ['--etcd-prefix', '/identity/']);
  await node.start();
  await node.stop();
  const err = await refused(['--etcd', etcd.url, '--node-id', 'other', '--etcd-prefix', '/identity/', '--log-format', 'json'], node.dataDir);
  assert.match(err, /belongs to node keeper of cluster [0-9a-f-]+ \(etcd prefix \/identity\/\), not to node other/);
  // The same prefix wiped and made anew is another cluster.
  const client = new Etcd3({ hosts: etcd.url, faultHandling: { host: () => noop, global: noop } });
  await client.delete().prefix('/identity/');
  client.close();
  const other = clusterNode('somebody', ['--etcd-prefix', '/identity/']);
  await other.start();
  const err2 = await refused(['--etcd', etcd.url, '--node-id', 'keeper', '--etcd-prefix', '/identity/', '--log-format', 'json'], node.dataDir);
  assert.match(err2, /etcd at .* holds cluster [0-9a-f-]+ under that prefix/);
  await other.stop();
});

test('a cluster secret file is used by the first node and checked by the others', async () => {
  const dir = makeTempDir('tessera-secret-');
  const good = join(dir, 'good');
  const bad = join(dir, 'bad');
  writeFileSync(good, Buffer.alloc(32, 7).toString('base64') + '\n');
  writeFileSync(bad, Buffer.alloc(32, 8).toString('base64') + '\n');
  const first = clusterNode('s1', ['--etcd-prefix', '/secret/', '--cluster-secret-file', good]);
  await first.start();
  const second = clusterNode('s2', ['--etcd-prefix', '/secret/', '--cluster-secret-file', good]);
  await second.start();
  const err = await refused(['--etcd', etcd.url, '--node-id', 's3', '--etcd-prefix', '/secret/', '--cluster-secret-file', bad, '--log-format', 'json']);
  assert.match(err, /the cluster secret given does not match the secret of cluster/);
  await first.stop();
  await second.stop();
});
