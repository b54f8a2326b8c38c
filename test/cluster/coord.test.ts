/**
 * The coordination layer on a real etcd, in-process (docs/cluster.md, "etcd"): disk records by
 * compare-and-swap, owners under the lease, clusters under different prefixes apart, the cache
 * read in pages at one revision, through an etcd restart and a compaction, and the lease given
 * back by close().
 */
import assert from 'node:assert/strict';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { after, before, test } from 'node:test';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import { ClusterError, Coordinator } from '../../src/cluster/index.ts';
import type { DiskRecord } from '../../src/cluster/index.ts';
import { ClusterCache } from '../../src/cluster/coord/cache.ts';
import { EtcdClient } from '../../src/cluster/coord/etcd.ts';
import { Keys } from '../../src/cluster/coord/keys.ts';
import { Logger } from '../../src/observe/index.ts';
import { cleanup, freePort, startEtcd, until } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

let etcd: EtcdServer;
const open: Coordinator[] = [];
before(async () => {
  etcd = await startEtcd();
});
after(async () => {
  for (const c of open) await c.close();
  await cleanup();
});

/** A coordinator joined as `id` under `prefix` (through `url`, default etcd's own). */
async function member(id: string, prefix: string, rank = 0, url = etcd.url, loadPageKeys?: number): Promise<Coordinator> {
  const c = await Coordinator.connect({ etcd: [url], nodeId: id, prefix, leaseTtlS: 2, loadPageKeys });
  open.push(c);
  await c.join({ zone: 'default', api: `127.0.0.1:${id}`, nbd: '127.0.0.1:1', peer: '127.0.0.1:2', version: 'test', protocol: [1, 2], usage: () => ({ capacityBytes: 1000, usedBytes: 10, load: 0 }), rank: () => rank });
  return c;
}

const disk = (name: string, epoch = 1): DiskRecord => ({
  name,
  sizeBytes: 1 << 30,
  createdMs: Date.now(),
  origin: null,
  policy: { replicas: 2, failureDomain: 'node' },
  epoch,
  chain: [{ node: 'a1', state: 'healthy' }, { node: 'a2', state: 'healthy' }],
  away: [],
  sync: null,
});

const code = (c: string) => (err: unknown) => err instanceof ClusterError && err.code === c;

test('disk records change by compare-and-swap, every member sees them; owners are taken once, under the lease', async () => {
  const a = await member('a1', '/cas/');
  const b = await member('a2', '/cas/', 1);
  const rev = await a.createDisk(disk('vm1'));
  await assert.rejects(b.createDisk(disk('vm1')), code('CLUSTER_DISK_EXISTS'));
  await b.reach(rev);
  const seen = b.disk('vm1')!;
  assert.equal(seen.modRevision, rev);
  assert.equal(seen.record.epoch, 1);
  // Two writers from the same revision: one wins, the other gets CONFLICT.
  const won = await a.updateDisk(disk('vm1', 2), seen.modRevision);
  await assert.rejects(b.updateDisk(disk('vm1', 3), seen.modRevision), code('CLUSTER_CONFLICT'));
  await b.reach(won);
  assert.equal(b.disk('vm1')!.record.epoch, 2);
  const events: string[] = [];
  a.on('disk', (name, d) => events.push(`${name}:${d === null ? 'gone' : d.record.epoch}`));
  await assert.rejects(b.deleteDisk('vm1', seen.modRevision), code('CLUSTER_CONFLICT'));
  await a.reach(await b.deleteDisk('vm1', won));
  assert.equal(a.disk('vm1'), null);
  assert.deepEqual(events, ['vm1:gone']);

  const t1 = await a.takeOwner('vm2', 5);
  assert.deepEqual(t1, { taken: true, owner: { node: 'a1', epoch: 5 } });
  assert.deepEqual(await b.takeOwner('vm2', 6), { taken: false, owner: { node: 'a1', epoch: 5 } });
  // The owner key goes with its node's lease.
  await a.close();
  await until(() => b.cache.get('owners/vm2') === undefined, 10_000, 'the owner key gone with the lease', 50);
  assert.equal((await b.takeOwner('vm2', 6)).taken, true);
});

test('two clusters under different prefixes on one etcd do not see each other', async () => {
  const x = await member('same', '/x/');
  const y = await member('same', '/y/');
  assert.notEqual(x.clusterId, y.clusterId);
  assert.ok(!x.secret.equals(y.secret));
  // A watch sees only its prefix: y's cache passes x's write once y writes after it.
  await x.reach(await x.createDisk(disk('only-x')));
  await y.reach(await y.createDisk(disk('only-y')));
  await until(() => x.isController && y.isController, 10_000, 'each its own controller', 50);
  assert.deepEqual(x.nodes().map((n) => n.id), ['same']);
  assert.deepEqual(y.nodes().map((n) => n.id), ['same']);
  assert.equal(y.disk('only-x'), null);
  assert.deepEqual(y.disks().map((d) => d.record.name), ['only-y']);
  assert.equal(x.disk('only-y'), null);
  // A prefix is a directory: /x/ and /xy/ are apart too.
  const xy = await member('other', '/xy');
  assert.deepEqual(xy.nodes().map((n) => n.id), ['other']);
  assert.deepEqual(x.nodes().map((n) => n.id), ['same']);
});

test("a disk record is known current at a revision another prefix moved, with one range, not a change of the cluster's own keys", async () => {
  const a = await member('k1', '/keyrev/');
  const b = await member('k2', '/keyrev/', 1);
  await b.reach(await a.createDisk(disk('vm1')));
  const direct = new Etcd3({ hosts: [etcd.url] });
  try {
    for (let i = 0; i < 5; i++) await direct.put(`/keyrev-other/k${i}`).value('x');
    // a's cache takes etcd's newest revision (as after a reload, or a catch-up of its watch):
    // ahead of b's, which only a change of its own cluster's keys would move.
    await a.cache.load();
    assert.ok(a.revision > b.revision, `${a.revision} > ${b.revision}`);
    await assert.rejects(b.reach(a.revision, 300), /did not reach revision/);
    const ranges = b.requests.range;
    const started = performance.now();
    await b.reachDisk('vm1', a.revision, 5000);
    assert.ok(performance.now() - started < 1000, `reachDisk took ${Math.round(performance.now() - started)} ms`);
    assert.equal(b.requests.range, ranges + 1, 'one range');
    // A record changed or deleted in etcd is waited for until the watch brings it.
    const changed = await a.updateDisk(disk('vm1', 2), b.disk('vm1')!.modRevision);
    await b.reachDisk('vm1', changed, 5000);
    assert.equal(b.disk('vm1')!.record.epoch, 2);
    const deleted = await a.deleteDisk('vm1', changed);
    await b.reachDisk('vm1', deleted, 5000);
    assert.equal(b.disk('vm1'), null);
    // A disk neither knows: current at once.
    await b.reachDisk('nope', deleted + 1000, 5000);
  } finally {
    direct.close();
  }
});

test('the cache outlives an etcd restart: it serves meanwhile, resumes, and sees a change made after', async () => {
  const a = await member('r1', '/restart/');
  const b = await member('r2', '/restart/', 1);
  await until(() => a.isController, 10_000, 'r1 controller', 50);
  await etcd.kill();
  await until(() => !a.cache.following && !b.cache.following, 10_000, 'the watches broken', 50);
  // Served from the cache while etcd is away.
  assert.deepEqual(a.nodes().map((n) => [n.id, n.state]), [['r1', 'up'], ['r2', 'up']]);
  await assert.rejects(a.createDisk(disk('while-down')), code('CLUSTER_ETCD_UNAVAILABLE'));
  await etcd.start();
  await until(() => a.cache.following && b.cache.following, 30_000, 'the watches resumed', 100);
  const rev = await b.createDisk(disk('after'));
  await a.reach(rev);
  assert.equal(a.disk('after')!.record.name, 'after');
  // Both still members, one controller.
  await until(() => a.nodes().every((n) => n.state === 'up') && a.isController !== b.isController, 30_000, 'both up, one controller', 100);
});

/** A TCP relay to etcd that can be cut and restored on the same port: one client's etcd goes away while etcd stays. */
async function relay(target: number): Promise<{ url: string; cut(): Promise<void>; restore(): Promise<void> }> {
  const port = await freePort();
  const sockets = new Set<Socket>();
  let server: Server | null = null;
  const listen = () =>
    new Promise<void>((resolve) => {
      server = createServer((down) => {
        const up = createConnection({ host: '127.0.0.1', port: target });
        for (const s of [down, up]) {
          sockets.add(s);
          s.on('close', () => sockets.delete(s));
          s.on('error', () => {});
        }
        down.pipe(up).pipe(down);
      });
      server.listen(port, '127.0.0.1', () => resolve());
    });
  await listen();
  return {
    url: `http://127.0.0.1:${port}`,
    cut: async () => {
      const s = server!;
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        for (const c of sockets) c.destroy();
      });
    },
    restore: listen,
  };
}

test('a cache whose watch comes back after etcd compacted past its revision reloads everything, in pages', async () => {
  const r = await relay(Number(new URL(etcd.url).port));
  const a = await member('k1', '/compact/', 0, r.url, 2);
  const direct = new Etcd3({ hosts: etcd.url, faultHandling: { host: () => noop, global: noop } });
  try {
    const resumed: string[] = [];
    a.cache.on('resumed', (how) => resumed.push(how));
    await r.cut();
    await until(() => !a.cache.following, 10_000, 'the watch broken', 20);
    await direct.put('/compact/disks/vm9').value(JSON.stringify(disk('vm9')));
    const { header } = await direct.put('/compact/disks/vm9').value(JSON.stringify(disk('vm9', 2)));
    await direct.kv.compact({ revision: header.revision, physical: true });
    const ranges = a.requests.range;
    await r.restore();
    await until(() => a.disk('vm9')?.record.epoch === 2, 20_000, 'vm9 seen after the reload', 50);
    assert.ok(resumed.includes('reloaded'), `resumed: ${resumed.join(', ')}`);
    // Two keys a page (more ranges if a try failed while etcd came back).
    const keys = await direct.getAll().prefix('/compact/').count();
    assert.ok(keys >= 4 && a.requests.range - ranges >= Math.ceil(keys / 2), `${keys} keys, ranges of the reload: ${a.requests.range - ranges}`);
    assert.ok(a.revision >= Number(header.revision));
  } finally {
    direct.close();
    await a.close();
    await r.cut();
  }
});

test('the cache reads P/ in pages at one revision: what is written between pages comes with the watch', async () => {
  const direct = new Etcd3({ hosts: etcd.url, faultHandling: { host: () => noop, global: noop } });
  const client = await EtcdClient.open([etcd.url]);
  const cache = new ClusterCache({ etcd: client, keys: new Keys('/paged/'), log: Logger.silent(), pageKeys: 2 });
  try {
    for (let i = 1; i <= 9; i++) await direct.put(`/paged/disks/d${i}`).value(JSON.stringify(disk(`d${i}`)));
    // After the first page (d1, d2): a key ahead changed, one ahead deleted, one ahead and one behind added.
    const page = client.rangePage.bind(client);
    let pages = 0;
    let between = 0;
    client.rangePage = async (o) => {
      const p = await page(o);
      if (++pages === 1) {
        await direct.put('/paged/disks/d9').value(JSON.stringify(disk('d9', 2)));
        await direct.delete().key('/paged/disks/d5');
        await direct.put('/paged/disks/d55').value(JSON.stringify(disk('d55')));
        between = Number((await direct.put('/paged/disks/d0').value(JSON.stringify(disk('d0')))).header.revision);
      }
      return p;
    };
    await cache.load();
    assert.equal(pages, 5, '9 keys, 2 a page');
    assert.equal(client.requests.range, 5);
    const names = () => cache.under('disks/').map((e) => e.key.slice('disks/'.length));
    // The snapshot of the first page's revision: none of the writes made after it.
    assert.deepEqual(names(), ['d1', 'd2', 'd3', 'd4', 'd5', 'd6', 'd7', 'd8', 'd9']);
    assert.equal(cache.json<DiskRecord>('disks/d9')!.epoch, 1);
    assert.ok(cache.revision < between, `cache at ${cache.revision}, writes up to ${between}`);
    // The watch, from the revision after, brings them.
    cache.follow();
    await cache.reach(between);
    assert.deepEqual(names(), ['d0', 'd1', 'd2', 'd3', 'd4', 'd55', 'd6', 'd7', 'd8', 'd9']);
    assert.equal(cache.json<DiskRecord>('disks/d9')!.epoch, 2);
  } finally {
    await cache.close();
    client.close();
    direct.close();
  }
});

test('a page larger than the etcd client receives in one message is asked again with half as many keys', async () => {
  const direct = new Etcd3({ hosts: etcd.url, faultHandling: { host: () => noop, global: noop } });
  const client = await EtcdClient.open([etcd.url]);
  const cache = new ClusterCache({ etcd: client, keys: new Keys('/big/'), log: Logger.silent(), pageKeys: 8 });
  try {
    // Six values of 1 MiB (etcd takes up to 1.5 MiB a request): 6 MiB in one answer, over grpc-js's 4 MiB.
    const value = 'x'.repeat(2 ** 20);
    for (let i = 1; i <= 6; i++) await direct.put(`/big/blob/${i}`).value(value);
    await cache.load();
    assert.equal(cache.under('blob/').length, 6);
    assert.ok(cache.under('blob/').every((e) => e.text.length === value.length));
    // 8 keys (all six: 6 MiB) and 4 (4 MiB and their keys) refused; then pages of 2.
    assert.equal(client.requests.range, 5);
  } finally {
    await cache.close();
    client.close();
    await direct.delete().prefix('/big/');
    direct.close();
  }
});
