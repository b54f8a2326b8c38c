/**
 * Group snapshots in a cluster (docs/cluster.md, "Group snapshots"): `POST /api/v1/snapshots`
 * through any node runs at the node that heads every disk of the group, puts the snapshot through
 * each disk's chain so every replica has it, and takes it at one cut across the disks: a writer
 * whose every write waits for the one before, alternating between two disks, finds in the
 * snapshots the writes 1..K and none after, on every replica. Disks with different heads are
 * refused, naming each disk's head, and nothing is taken.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import type { ClusterStatus, DiskInfo, SnapshotInfo } from '../../src/api/client/index.ts';
import { cleanup, fileDigest, makeTempDir, MiB, nbdcopy, requirePythonNbd, spawnTracked, startEtcd, TesseraNode, until } from '../helpers/index.ts';
import type { EtcdServer } from '../helpers/index.ts';

const writer = fileURLToPath(new URL('../helpers/groupwriter.py', import.meta.url));

let etcd: EtcdServer;
before(async () => {
  etcd = await startEtcd();
});
after(cleanup);

/** A POST of the API's: its status and JSON body. */
async function post(node: TesseraNode, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${node.api}/api/v1${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const text = await res.text();
  return { status: res.status, body: text === '' ? null : JSON.parse(text) };
}

/** The writes groupwriter.py left in an image of one of its disks (`first`: 1 for disk A, 2 for B). */
function writesIn(image: string, first: number): number[] {
  const data = readFileSync(image);
  const found: number[] = [];
  for (let block = 0; block * 4096 < data.length; block++) {
    const k = data.readBigUInt64LE(block * 4096);
    if (k === 0n) continue;
    assert.equal(Number(k), first + 2 * block, `block ${block} holds the write made there`);
    found.push(Number(k));
  }
  return found;
}

test('a group snapshot is taken through every chain at one cut across its disks; disks with different heads are refused', async () => {
  const ids = ['n1', 'n2', 'n3'];
  const nodes = ids.map((id) => new TesseraNode({ args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', '3', '--etcd-prefix', '/group-snapshots/'] }));
  for (const n of nodes) await n.start();
  await until(async () => (await nodes[0].cliJson<ClusterStatus>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 30_000, 'three nodes up', 200);
  const node = (id: string): TesseraNode => nodes[ids.indexOf(id)];

  // Two disks with one head (a clone is placed on its origin's chain), and one headed elsewhere
  // (its lease broken should placement have given it the same head).
  const a = 'vm1';
  const b = 'vm2';
  const c = 'vm3';
  const created = await nodes[0].cliJson<DiskInfo>(['disk', 'create', a, '--size', String(16 * MiB), '--replicas', '3']);
  await nodes[0].cliOk(['snap', 'create', a, 'base']);
  const clone = await nodes[0].cliJson<DiskInfo>(['disk', 'clone', `${a}@base`, b]);
  const head = created.replicas![0].node;
  assert.equal(clone.replicas![0].node, head);
  let third = await nodes[0].cliJson<DiskInfo>(['disk', 'create', c, '--size', String(16 * MiB), '--replicas', '3']);
  if (third.replicas![0].node === head) {
    await nodes[0].cliOk(['disk', 'lease', 'break', c]);
    await until(async () => (third = await nodes[0].cliJson<DiskInfo>(['disk', 'info', c])).replicas![0].node !== head, 30_000, `${c} headed elsewhere`, 100);
  }
  const headOf = new Map([[a, head], [b, head], [c, third.replicas![0].node]]);
  const [other, writing] = ids.filter((id) => id !== head).map(node);

  // Refused: different heads, naming each disk's head; nothing taken.
  const refused = await post(other, '/snapshots', { name: 'x', disks: [a, c] });
  assert.equal(refused.status, 409, JSON.stringify(refused.body));
  assert.equal(refused.body.error.code, 'POLICY_UNMET');
  assert.match(refused.body.error.message, new RegExp(`disks ${a}, ${c} have different heads \\((${head} heads ${a}; ${headOf.get(c)} heads ${c}|${headOf.get(c)} heads ${c}; ${head} heads ${a})\\)`));
  for (const d of [a, c]) assert.ok(!(await other.cliJson<SnapshotInfo[]>(['snap', 'list', d])).some((s) => s.name === 'x'), `no snapshot x of ${d}`);
  assert.equal((await post(other, '/snapshots', { name: 'tessera-x', disks: [a, b] })).status, 400);

  // A writer through the third node whose every write waits for the one before, alternating
  // between the two disks; the group snapshot asked of another node that is not their head.
  const count = 3000;
  const py = requirePythonNbd();
  const child = spawnTracked(py, [writer, writing.nbdUri(a), writing.nbdUri(b), String(count)]);
  let out = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => (out += chunk));
  let err = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  await until(() => /wrote (5|6|7|8|9)00\b/.test(out) || /done/.test(out), 120_000, 'the writer under way', 20);
  const made = await post(other, '/snapshots', { name: 'g', disks: [a, b] });
  assert.equal(made.status, 201, JSON.stringify(made.body));
  const snaps = made.body as SnapshotInfo[];
  assert.deepEqual(snaps.map((s) => [s.disk, s.name]), [[a, 'g'], [b, 'g']]);
  assert.ok(snaps.every((s) => /^[1-9][0-9]+$/.test(s.hlc ?? '')), 'stamped by the head');
  assert.equal(await exited, 0, err);
  assert.match(out, new RegExp(`done ${count}`));
  const again = await post(writing, '/snapshots', { name: 'g', disks: [a, b] });
  assert.equal(again.status, 409, JSON.stringify(again.body));
  assert.equal(again.body.error.code, 'EXISTS');

  // Every replica's own copy of the two snapshots (each node serves DISK@SNAP from its store):
  // the same bytes, and in them the writes 1..K, none missing, none after.
  const dir = makeTempDir('tessera-group-snapshots-');
  const digests: string[] = [];
  let cut = 0;
  for (const [i, n] of nodes.entries()) {
    const images = await Promise.all([a, b].map(async (d) => {
      const image = join(dir, `${d}-${i}.img`);
      await nbdcopy(n.nbdUri(`${d}@g`), image);
      return image;
    }));
    digests.push(images.map(fileDigest).join(' '));
    // vm2 is a clone of vm1@base, taken before any write: both start empty.
    const writes = [...writesIn(images[0], 1), ...writesIn(images[1], 2)].sort((x, y) => x - y);
    cut = writes.length;
    assert.deepEqual(writes, Array.from({ length: cut }, (_, j) => j + 1), `the writes in node ${ids[i]}'s copies are 1..${cut} without a gap`);
    for (const d of [a, b]) {
      const listed = await n.cliJson<SnapshotInfo[]>(['snap', 'list', d]);
      assert.deepEqual(listed.filter((s) => s.name === 'g').map((s) => s.hlc), [snaps.find((s) => s.disk === d)!.hlc], `${d} through ${ids[i]}`);
    }
  }
  assert.ok(cut >= 500 && cut < count, `the cut (${cut}) fell while the writer wrote`);
  assert.ok(digests.every((x) => x === digests[0]), 'every replica holds the same snapshots');

  for (const n of nodes) await n.stop();
});
