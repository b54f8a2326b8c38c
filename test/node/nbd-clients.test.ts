/**
 * libnbd's clients against a real node: nbdcopy both ways over TCP and the Unix socket, export
 * listing, the allocation map and the changed-block map of a snapshot.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  assertFilesEqual, makeTempDir, MiB, nbdcopy, nbdinfo, nbdinfoMap, qemuIo, Rng, useNode, testSeed, writeSeededFile, type MapExtent,
} from '../helpers/index.ts';

const node = useNode();
const dir = makeTempDir();

test('nbdcopy copies into an export and back byte for byte over TCP and the Unix socket', async (t) => {
  const seed = testSeed(t);
  const src = join(dir, 'copy-src.raw');
  await writeSeededFile(src, seed, 'nbdcopy', 32 * MiB);
  for (const [name, into, outOf] of [
    ['copy-tcp', (n: string) => node.nbdUri(n), (n: string) => node.nbdUri(n)],
    ['copy-unix', (n: string) => node.unixUri(n), (n: string) => node.unixUri(n)],
    ['copy-cross', (n: string) => node.nbdUri(n), (n: string) => node.unixUri(n)],
  ] as const) {
    await node.cliOk(['disk', 'create', name, '--size', '32M']);
    await nbdcopy(src, into(name), ['--flush']);
    const out = join(dir, `${name}.raw`);
    await nbdcopy(outOf(name), out);
    await assertFilesEqual(src, out, `${name}: image read back`);
  }
  // Export to export: the server is both source and destination.
  await node.cliOk(['disk', 'create', 'copy-e2e', '--size', '32M']);
  await nbdcopy(node.nbdUri('copy-tcp'), node.unixUri('copy-e2e'));
  const out = join(dir, 'copy-e2e.raw');
  await nbdcopy(node.nbdUri('copy-e2e'), out);
  await assertFilesEqual(src, out, 'export copied to export');
});

test('nbdinfo --list shows every disk and snapshot as an export', async () => {
  await node.cliOk(['disk', 'create', 'list-a', '--size', '1M']);
  await node.cliOk(['disk', 'create', 'list-b', '--size', '2M']);
  await node.cliOk(['snap', 'create', 'list-a', 'first']);
  const listing = JSON.parse(await nbdinfo(['--list', '--json', `nbd://${node.nbdHost}:${node.nbdPort}`])) as
    { exports: { 'export-name': string; 'export-size': number; is_read_only: boolean }[] };
  const byName = new Map(listing.exports.map((e) => [e['export-name'], e]));
  assert.equal(byName.get('list-a')?.['export-size'], 1 * MiB);
  assert.equal(byName.get('list-a')?.is_read_only, false);
  assert.equal(byName.get('list-b')?.['export-size'], 2 * MiB);
  assert.equal(byName.get('list-a@first')?.is_read_only, true, `exports: ${[...byName.keys()].join(', ')}`);
  const unix = await nbdinfo(['--list', `nbd+unix:///?socket=${node.socket}`]);
  assert.match(unix, /list-b/);
});

/** The extents of a map with the given type bit set, as [offset, length] pairs. */
function runsWith(map: MapExtent[], bit: number): [number, number][] {
  const out: [number, number][] = [];
  for (const e of map) {
    if ((e.type & bit) === 0) continue;
    const last = out.at(-1);
    if (last && last[0] + last[1] === e.offset) last[1] += e.length;
    else out.push([e.offset, e.length]);
  }
  return out;
}

/** Normalises a list of possibly overlapping [offset, length] ranges into sorted disjoint runs. */
function union(ranges: [number, number][]): [number, number][] {
  const sorted = [...ranges].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  for (const [off, len] of sorted) {
    const last = out.at(-1);
    if (last && off <= last[0] + last[1]) last[1] = Math.max(last[1], off + len - last[0]);
    else out.push([off, len]);
  }
  return out;
}

test('nbdinfo --map shows written extents as data and the rest as hole', async () => {
  await node.cliOk(['disk', 'create', 'map', '--size', '64M']);
  const w = await qemuIo(node.nbdUri('map'), ['write -P 1 1M 2M', 'write -P 2 10M 64k', 'write -P 3 63M 1M']);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  const map = await nbdinfoMap(node.nbdUri('map'));
  const total = map.reduce((n, e) => n + e.length, 0);
  assert.equal(total, 64 * MiB, 'the map covers the whole disk');
  // base:allocation: bit 0 = hole, bit 1 = zero. Data runs have neither.
  const data = map.filter((e) => (e.type & 1) === 0).map((e) => [e.offset, e.length]);
  assert.deepEqual(data, [[1 * MiB, 2 * MiB], [10 * MiB, 64 * 1024], [63 * MiB, 1 * MiB]]);
  for (const e of map.filter((x) => (x.type & 1) === 1)) assert.equal(e.type & 2, 2, `hole at ${e.offset} reads as zeroes`);
});

test('nbdinfo --map=tessera:changed-since:SNAP reports exactly the blocks written after the snapshot', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  await node.cliOk(['disk', 'create', 'cbt', '--size', '64M']);
  const before = await qemuIo(node.nbdUri('cbt'), ['write -P 7 0 8M', 'write -P 8 32M 4M']);
  assert.equal(before.code, 0, before.stdout + before.stderr);
  await node.cliOk(['snap', 'create', 'cbt', 'base']);
  const written: [number, number][] = [];
  const cmds: string[] = [];
  for (let i = 0; i < 12; i++) {
    // 4 KiB-aligned writes, both over data that existed at the snapshot and over holes.
    const length = 4096 * rng.range(1, 32);
    const offset = 4096 * rng.int((64 * MiB - length) / 4096 + 1);
    cmds.push(`write -P ${rng.range(1, 255)} ${offset} ${length}`);
    written.push([offset, length]);
  }
  const w = await qemuIo(node.nbdUri('cbt'), cmds);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  const expected = union(written);
  const changed = await nbdinfoMap(node.nbdUri('cbt'), 'tessera:changed-since:base');
  assert.equal(changed.reduce((n, e) => n + e.length, 0), 64 * MiB, 'the map covers the whole disk');
  assert.deepEqual(runsWith(changed, 1), expected, `writes: ${cmds.join('; ')}`);
  const alias = await nbdinfoMap(node.unixUri('cbt'), 'qemu:dirty-bitmap:base');
  assert.deepEqual(runsWith(alias, 1), expected, 'qemu:dirty-bitmap alias');
  // A snapshot taken now has nothing changed since it.
  await node.cliOk(['snap', 'create', 'cbt', 'now']);
  const none = await nbdinfoMap(node.nbdUri('cbt'), 'tessera:changed-since:now');
  assert.deepEqual(runsWith(none, 1), []);
});
