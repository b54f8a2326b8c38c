/**
 * A rolling upgrade (docs/cluster.md, "Versions"): one node speaks the peer protocol only up to
 * version 1 (`TESSERA_PEER_PROTOCOL_MAX=1`, as the previous release would), the others up to 2.
 * A disk replicated across all three works through every node, and the old node says in its
 * live record which versions it speaks. A snapshot's stamp, which came within version 2, goes
 * over links of version 1 as well: every replica records the head's.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { noop } from 'cockatiel';
import { Etcd3 } from 'etcd3';
import type { DiskInfo, SnapshotInfo } from '../../src/api/client/index.ts';
import { cleanup, makeTempDir, MiB, nbdcopy, startEtcd, storedStamps, TesseraNode, until, writeSeededFile } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

const digest = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

test('a node one protocol version older replicates with newer ones in one chain, written and read through every node', async () => {
  const prefix = '/upgrade/';
  const args = (id: string): string[] => ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', prefix];
  const nodes = [
    new TesseraNode({ args: args('n1') }),
    new TesseraNode({ args: args('n2') }),
    new TesseraNode({ args: args('old'), env: { TESSERA_PEER_PROTOCOL_MAX: '1' } }),
  ];
  for (const n of nodes) await n.start();
  await until(async () => (await nodes[0].cliJson<{ nodes: Array<{ state: string }> }>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);

  const etcdClient = new Etcd3({ hosts: etcd.url, faultHandling: { host: () => noop, global: noop } });
  try {
    const live = (id: string) => etcdClient.get(`${prefix}live/${id}`).json() as Promise<{ protocol: [number, number] }>;
    assert.deepEqual((await live('old')).protocol, [1, 1]);
    assert.deepEqual((await live('n1')).protocol, [1, 2]);
  } finally {
    etcdClient.close();
  }

  const dir = makeTempDir('tessera-upgrade-');
  const src = join(dir, 'src.img');
  await writeSeededFile(src, 7, 'upgrade', 16 * MiB);
  const stamped = new Map<string, string | null>();
  for (const [i, writer] of nodes.entries()) {
    const name = `d${i}`;
    const d = await nodes[0].cliJson<DiskInfo>(['disk', 'create', name, '--size', String(16 * MiB), '--replicas', '3']);
    assert.equal(d.replicas!.length, 3);
    await nbdcopy(src, writer.nbdUri(name));
    for (const reader of nodes) {
      const back = join(dir, `${name}-${reader === writer ? 'self' : 'other'}-${nodes.indexOf(reader)}.img`);
      await nbdcopy(reader.nbdUri(name), back);
      assert.equal(digest(back), digest(src), `${name} written through node ${i}, read through node ${nodes.indexOf(reader)}`);
    }
    const snap = await writer.cliJson<SnapshotInfo>(['snap', 'create', name, 'after-write']);
    assert.match(String(snap.hlc), /^[1-9][0-9]{17,19}$/, `${name}@after-write is stamped`);
    stamped.set(name, snap.hlc);
  }
  for (const n of nodes) await n.stop();
  for (const [name, hlc] of stamped) {
    const stamps = await Promise.all(nodes.map((n) => storedStamps(n.dataDir, name)));
    assert.deepEqual(stamps.map((m) => m.get('after-write')), [hlc, hlc, hlc], `${name}@after-write has the head's stamp on every replica`);
  }
});
