/**
 * `disk import` in a cluster: the disk is created through the cluster (replicated as any new
 * disk) and written through its head, whichever node is asked; every replica's own copy then
 * reads as the source.
 */
import assert from 'node:assert/strict';
import { open } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import type { ClusterStatus, DiskInfo, ImportResult } from '../../src/api/client/index.ts';
import { assertFilesEqual, cleanup, makeTempDir, MiB, nbdcopy, seededBytes, startEtcd, TesseraNode, until } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

test('an import asked of a node that is not the head makes a replicated disk whose every copy equals the source', async () => {
  const ids = ['n1', 'n2'];
  const nodes = ids.map((id) => new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', '/import/'] }));
  for (const n of nodes) await n.start();
  try {
    await until(async () => (await nodes[0].cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 2, 30_000, 'two nodes up', 200);
    const dir = makeTempDir('tessera-cluster-import-');
    const src = join(dir, 'src.raw');
    const fh = await open(src, 'w');
    await fh.truncate(24 * MiB);
    for (const at of [0, 7 * MiB, 23 * MiB]) await fh.write(seededBytes(5, `at-${at}`, MiB), 0, MiB, at);
    await fh.close();

    // Both nodes are asked once: one of the imports runs at a node that is not the disk's head.
    const asked: string[] = [];
    for (const [i, n] of nodes.entries()) {
      const name = `imp${i}`;
      const r = await n.cliJson<ImportResult>(['disk', 'import', src, name, '--streams', '3']);
      assert.equal(r.sizeBytes, 24 * MiB);
      assert.equal(r.bytesCopied, 3 * MiB);
      const d = await n.cliJson<DiskInfo>(['disk', 'info', name]);
      assert.equal(d.replicas?.length, 2, 'replicated as any new disk of two nodes');
      asked.push(`${ids[i]}:${d.replicas![0].node}`);
      // A snapshot through the cluster; each node serves its own copy of it.
      await n.cliOk(['snap', 'create', name, 's']);
      for (const [j, m] of nodes.entries()) {
        const out = join(dir, `${name}-on-${j}.raw`);
        await nbdcopy(m.nbdUri(`${name}@s`), out);
        await assertFilesEqual(src, out, `${name}@s on ${ids[j]}`);
      }
    }
    // Placement spreads heads, so one import ran at a node that is not its disk's head.
    assert.ok(asked.some((a) => a.split(':')[0] !== a.split(':')[1]), `asked:head ${asked.join(' ')}`);
    // A refused import leaves no disk in the cluster.
    const r = await nodes[1].cli(['disk', 'import', join(dir, 'missing.raw'), 'gone']);
    assert.equal(r.code, 1);
    for (const n of nodes) assert.ok(!(await n.cliJson<DiskInfo[]>(['disk', 'list'])).some((d) => d.name === 'gone'));
  } finally {
    for (const n of nodes) await n.stop();
  }
});
