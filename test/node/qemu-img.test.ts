/** qemu-img against a real node: image info, byte-exact conversion in and out, thin allocation map. */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import { assertFilesEqual, makeTempDir, MiB, qemuImg, qemuIo, runOk, useNode, testSeed, writeSeededFile } from '../helpers/index.ts';

const node = useNode();
const dir = makeTempDir();

test('qemu-img info reports the size of a disk export', async () => {
  await node.cliOk(['disk', 'create', 'info', '--size', '48M']);
  const info = JSON.parse(await qemuImg(['info', '--output=json', node.nbdUri('info')])) as { 'virtual-size': number; format: string };
  assert.equal(info['virtual-size'], 48 * MiB);
  assert.equal(info.format, 'raw');
});

test('qemu-img convert -n copies a raw file into an export and back byte for byte', async (t) => {
  const seed = testSeed(t);
  const src = join(dir, 'convert-src.raw');
  // Random data with a hole in the middle, so both data and zero runs cross the wire.
  await writeSeededFile(src, seed, 'convert', 40 * MiB);
  await runOk('truncate', ['-s', String(64 * MiB), src]);
  await runOk('dd', ['if=/dev/zero', `of=${src}`, 'bs=1M', 'seek=8', 'count=4', 'conv=notrunc', 'status=none']);
  await node.cliOk(['disk', 'create', 'convert', '--size', '64M']);
  await qemuImg(['convert', '-n', '-f', 'raw', '-O', 'raw', src, node.nbdUri('convert')]);
  await qemuImg(['compare', '-f', 'raw', '-F', 'raw', src, node.nbdUri('convert')]);
  const back = join(dir, 'convert-back.raw');
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', node.nbdUri('convert'), back]);
  await assertFilesEqual(src, back, 'image converted out of the export');
  // The same data through the Unix socket.
  const backUnix = join(dir, 'convert-back-unix.raw');
  await qemuImg(['convert', '-f', 'raw', '-O', 'raw', node.unixUri('convert'), backUnix]);
  await assertFilesEqual(src, backUnix, 'image converted out over the Unix socket');
});

test('qemu-img map shows a thin disk as holes except where it was written', async () => {
  await node.cliOk(['disk', 'create', 'thin', '--size', '64M']);
  const r = await qemuIo(node.nbdUri('thin'), ['write -P 0x5a 8M 1M', 'write -P 0xa5 40M 256k']);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  const map = JSON.parse(await qemuImg(['map', '--output=json', '-f', 'raw', node.nbdUri('thin')])) as
    { start: number; length: number; data: boolean; zero: boolean }[];
  const data = map.filter((e) => e.data).map((e) => [e.start, e.length]);
  assert.deepEqual(data, [[8 * MiB, 1 * MiB], [40 * MiB, 256 * 1024]]);
  for (const e of map.filter((x) => !x.data)) assert.equal(e.zero, true, `unwritten extent at ${e.start} reads as zeroes`);
  const covered = map.reduce((n, e) => n + e.length, 0);
  assert.equal(covered, 64 * MiB);
});
