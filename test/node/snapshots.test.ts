/**
 * Snapshots, clones, revert, resize and space reclamation on a real node, with content checked
 * byte for byte through NBD against an in-memory model of each disk.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';
import {
  assertFilesEqual, makeTempDir, MiB, nbdcopy, qemuImg, qemuIo, requirePythonNbd, runOk, seededBytes, startNode, useNode, tesseraBin, testSeed, writeSeededFile,
} from '../helpers/index.ts';

const node = useNode();
const dir = makeTempDir();

let pulls = 0;

/** Reads a whole export with nbdcopy. */
async function pull(uri: string): Promise<Buffer> {
  const path = join(dir, `pull-${pulls++}.raw`);
  await nbdcopy(uri, path);
  return readFile(path);
}

/** Writes `data` at `offset` of an export with qemu-io, and applies it to `model`. */
async function writeAt(uri: string, model: Buffer, offset: number, data: Buffer): Promise<void> {
  const file = join(dir, `chunk-${pulls++}.bin`);
  await writeFile(file, data);
  const r = await qemuIo(uri, [`write -s ${file} ${offset} ${data.length}`]);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  data.copy(model, offset);
}

function assertSame(actual: Buffer, expected: Buffer, what: string): void {
  assert.equal(actual.length, expected.length, `${what}: size`);
  if (actual.equals(expected)) return;
  let i = 0;
  while (actual[i] === expected[i]) i++;
  assert.fail(`${what}: first difference at byte ${i} (read ${actual[i]}, expected ${expected[i]})`);
}

interface DiskJson {
  name: string;
  sizeBytes: number;
  snapshots: string[];
  origin: string | null;
}

test('snapshots and clones keep their content while disks change, and revert restores it', async (t) => {
  const seed = testSeed(t);
  const size = 16 * MiB;
  await node.cliOk(['disk', 'create', 'd', '--size', '16M']);
  const a = join(dir, 'a.raw');
  await writeSeededFile(a, seed, 'a', size);
  await nbdcopy(a, node.nbdUri('d'), ['--flush']);
  const v1 = await readFile(a);
  await node.cliOk(['snap', 'create', 'd', 's1']);

  const v2 = Buffer.from(v1);
  await writeAt(node.nbdUri('d'), v2, 4 * MiB, seededBytes(seed, 'b', 4 * MiB));
  await node.cliOk(['snap', 'create', 'd', 's2']);

  const v3 = Buffer.from(v2);
  await writeAt(node.nbdUri('d'), v3, 0, seededBytes(seed, 'c', 1 * MiB));
  await writeAt(node.unixUri('d'), v3, 12_345, seededBytes(seed, 'c2', 7_777)); // unaligned, inside the last write
  await writeAt(node.nbdUri('d'), v3, 6 * MiB - 1000, seededBytes(seed, 'c3', 5000)); // across a snapshot-2 edge

  await node.cliOk(['disk', 'clone', 'd@s1', 'c1']);
  const c1 = Buffer.from(v1);
  await writeAt(node.nbdUri('c1'), c1, 8 * MiB + 3, seededBytes(seed, 'd', 2 * MiB));

  assertSame(await pull(node.nbdUri('d@s1')), v1, 'd@s1');
  assertSame(await pull(node.unixUri('d@s2')), v2, 'd@s2');
  assertSame(await pull(node.nbdUri('d')), v3, 'd');
  assertSame(await pull(node.nbdUri('c1')), c1, 'clone c1');

  const disks = await node.cliJson<DiskJson[]>(['disk', 'list']);
  const listed = new Map(disks.map((d) => [d.name, d]));
  assert.deepEqual(listed.get('d')?.snapshots, ['s1', 's2']);
  assert.equal(listed.get('c1')?.origin, 'd@s1');
  const snaps = await node.cliJson<{ name: string; disk: string; sizeBytes: number }[]>(['snap', 'list', 'd']);
  assert.deepEqual(snaps.map((s) => [s.name, s.disk, s.sizeBytes]), [['s1', 'd', size], ['s2', 'd', size]]);

  await node.cliOk(['snap', 'revert', 'd', 's1']);
  assertSame(await pull(node.nbdUri('d')), v1, 'd reverted to s1');
  assertSame(await pull(node.nbdUri('c1')), c1, 'clone c1 after its origin was reverted');
  // Whatever snapshots the revert kept still read as they did.
  const kept = (await node.cliJson<{ name: string }[]>(['snap', 'list', 'd'])).map((s) => s.name);
  assert.ok(kept.includes('s1'), 'the snapshot reverted to is kept');
  if (kept.includes('s2')) assertSame(await pull(node.nbdUri('d@s2')), v2, 'd@s2 after revert to s1');

  // The reverted disk is writable and the snapshot stays as it was.
  const v4 = Buffer.from(v1);
  await writeAt(node.nbdUri('d'), v4, 1 * MiB, seededBytes(seed, 'e', 64 * 1024));
  assertSame(await pull(node.nbdUri('d')), v4, 'd written after revert');
  assertSame(await pull(node.nbdUri('d@s1')), v1, 'd@s1 after the reverted disk was written');

  // Deleting the origin's snapshot leaves the clone intact.
  await node.cliOk(['snap', 'rm', 'd', 's1']);
  assertSame(await pull(node.nbdUri('c1')), c1, 'clone c1 after its snapshot was deleted');
  await node.cliOk(['disk', 'rm', 'd']);
  assertSame(await pull(node.nbdUri('c1')), c1, 'clone c1 after its origin was deleted');
  await node.restart();
  assertSame(await pull(node.nbdUri('c1')), c1, 'clone c1 after a restart');
});

test('resize grows a disk with zeroes and a shrink drops the data past the new end', async () => {
  await node.cliOk(['disk', 'create', 'r', '--size', '4M']);
  let io = await qemuIo(node.nbdUri('r'), ['write -P 0x11 0 4M']);
  assert.equal(io.code, 0, io.stdout + io.stderr);
  await node.cliOk(['disk', 'resize', 'r', '--size', '8M']);
  const info = JSON.parse(await qemuImg(['info', '--output=json', node.nbdUri('r')])) as { 'virtual-size': number };
  assert.equal(info['virtual-size'], 8 * MiB);
  io = await qemuIo(node.nbdUri('r'), ['read -P 0x11 0 4M', 'read -P 0 4M 4M', 'write -P 0x22 7M 1M'], {});
  assert.equal(io.code, 0, io.stdout + io.stderr);
  await node.cliOk(['snap', 'create', 'r', 'big']);
  await node.cliOk(['disk', 'resize', 'r', '--size', '2M']);
  await node.cliOk(['disk', 'resize', 'r', '--size', '8M']);
  io = await qemuIo(node.nbdUri('r'), ['read -P 0x11 0 2M', 'read -P 0 2M 6M'], { readOnly: true });
  assert.equal(io.code, 0, `data past a shrink must not come back: ${io.stdout}${io.stderr}`);
  io = await qemuIo(node.nbdUri('r@big'), ['read -P 0x11 0 4M', 'read -P 0 4M 3M', 'read -P 0x22 7M 1M'], { readOnly: true });
  assert.equal(io.code, 0, `the snapshot keeps its size and data: ${io.stdout}${io.stderr}`);
  const disk = (await node.cliJson<DiskJson[]>(['disk', 'list'])).find((d) => d.name === 'r');
  assert.equal(disk?.sizeBytes, 8 * MiB);
});

test('deleting a snapshot or a disk and compacting reclaims log space', async (t) => {
  const seed = testSeed(t);
  // A node of its own, so its space figures are this test's alone. Default 256 MiB segments:
  // 2 x 320 MiB written fills more than two, and the first holds only overwritten data.
  const space = await startNode();
  const size = 320 * MiB;
  await space.cliOk(['disk', 'create', 'big', '--size', String(size)]);
  const first = join(dir, 'first.raw');
  const second = join(dir, 'second.raw');
  await writeSeededFile(first, seed, 'first', size);
  await writeSeededFile(second, seed, 'second', size);
  await nbdcopy(first, space.nbdUri('big'), ['--flush']);
  await space.cliOk(['snap', 'create', 'big', 'old']);
  await nbdcopy(second, space.nbdUri('big'), ['--flush']);
  const full = await space.stats();
  assert.ok(full.liveBytes >= 2 * size, `both versions are live: ${JSON.stringify(full)}`);
  assert.ok(full.logBytes >= 2 * size, `both versions are in the log: ${JSON.stringify(full)}`);

  await space.cliOk(['snap', 'rm', 'big', 'old']);
  await space.cliOk(['compact']);
  const compacted = await space.stats();
  t.diagnostic(`before ${JSON.stringify(full)} after ${JSON.stringify(compacted)}`);
  assert.ok(compacted.liveBytes <= full.liveBytes - size, `the old version is no longer live: ${JSON.stringify(compacted)}`);
  // A sealed segment is a little under 256 MiB (it is sealed before a record would overflow it).
  assert.ok(compacted.logBytes <= full.logBytes - 200 * MiB, `at least one segment was reclaimed: ${JSON.stringify(compacted)}`);
  const back = join(dir, 'back.raw');
  await nbdcopy(space.nbdUri('big'), back);
  await assertFilesEqual(second, back, 'the disk after compaction');
  await space.restart();
  await nbdcopy(space.unixUri('big'), back);
  await assertFilesEqual(second, back, 'the disk after compaction and a restart');

  await space.cliOk(['disk', 'rm', 'big']);
  await space.cliOk(['compact']);
  const empty = await space.stats();
  assert.equal(empty.liveBytes, 0, `nothing is live once the only disk is gone: ${JSON.stringify(empty)}`);
  assert.ok(empty.logBytes <= 256 * MiB, `only the active segment may remain: ${JSON.stringify(empty)}`);
  await space.stop();
});

test('a snapshot taken under write load holds one point in time between its request and its reply', async (t) => {
  const seed = testSeed(t);
  const py = requirePythonNbd();
  const crashload = fileURLToPath(new URL('../helpers/crashload.py', import.meta.url));
  for (const [i, transport] of (['tcp', 'unix'] as const).entries()) {
    const name = `live-${transport}`;
    await node.cliOk(['disk', 'create', name, '--size', '32M']);
    const head = transport === 'tcp' ? node.nbdUri(name) : node.unixUri(name);
    const snap = transport === 'tcp' ? node.nbdUri(`${name}@live`) : node.unixUri(`${name}@live`);
    // The load client runs the snapshot command itself, so it knows which writes had completed
    // before the request and which were issued after the reply.
    const command = JSON.stringify([tesseraBin, '--api', node.api, 'snap', 'create', name, 'live']);
    const verdict = await runOk(py, [crashload, 'snapshot', head, snap, String(seed + i), String((32 * MiB) / 4096), command]);
    t.diagnostic(`${transport}: ${verdict.trim()}`);
  }
});
