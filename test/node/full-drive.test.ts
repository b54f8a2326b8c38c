/**
 * A node on a small real file system (a tmpfs the test mounts), used as a new user would: one disk
 * holds data, a second is written until the node is full. Writes are refused (NBD ENOSPC, API 507)
 * with the reserve still free; the node says so in node info, disk list, the metrics and its log;
 * killed with SIGKILL while full it starts again and serves reads; deleting the second disk gives
 * the space back and writes work again; started on a file system below its reserve it refuses,
 * saying how much is free and needed.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { assertFilesEqual, fillTo, freeBytes, makeTempDir, MiB, mountTmpfs, nbdcopy, qemuIo, startNode, until, writeSeededFile, type TesseraNode } from '../helpers/index.ts';

interface NodeSpace {
  state: 'ok' | 'nearfull' | 'full';
  freeBytes: number;
  reserveBytes: number;
  usedRatio: number;
}

async function space(node: TesseraNode): Promise<NodeSpace> {
  return (await node.cliJson<{ space: NodeSpace }>(['node', 'info'])).space;
}

test('a node filled up refuses writes with its reserve free, survives kill -9 while full, and takes writes again once a disk is deleted', async (t) => {
  const mnt = mountTmpfs(t, 160 * MiB);
  const tmp = makeTempDir();
  const node = await startNode({ dataDir: join(mnt, 'data') });
  t.after(() => node.stop());

  // The first disk: 32 MiB of known data, flushed.
  const keepData = join(tmp, 'keep.img');
  await writeSeededFile(keepData, 18, 'keep', 32 * MiB);
  await node.cliOk(['disk', 'create', 'keep', '--size', '32M']);
  await nbdcopy(keepData, node.nbdUri('keep'), ['--flush']);
  assert.equal((await space(node)).state, 'ok');

  // The second disk, written until refused: qemu-io reports the NBD error.
  await node.cliOk(['disk', 'create', 'fill', '--size', '256M']);
  // In 1 MiB requests, as a guest's page cache writes back: the one that finds the node full fails.
  const w = await qemuIo(node.nbdUri('fill'), [...Array.from({ length: 200 }, (_, i) => `write -P 0x5a ${i}M 1M`), 'flush']);
  assert.match(w.stdout + w.stderr, /No space left on device/, `the write past the full ratio fails with ENOSPC: ${w.stdout} ${w.stderr}`);
  const full = await space(node);
  assert.equal(full.state, 'full');
  assert.ok(freeBytes(mnt) >= full.reserveBytes, `the reserve is still free (${freeBytes(mnt)} >= ${full.reserveBytes})`);

  // The API refuses a write with 507 NO_SPACE.
  const put = await fetch(`${node.api}/api/v1/disks/fill/data?offset=0`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(1 * MiB, 7) });
  assert.equal(put.status, 507);
  assert.equal(((await put.json()) as { error: { code: string } }).error.code, 'NO_SPACE');
  // disk list warns, the metrics say full, the log said so.
  const list = await node.cli(['disk', 'list']);
  assert.equal(list.code, 0);
  assert.match(list.stderr, /warning: the node is full: \d+% of its usable space used/);
  const metrics = await (await fetch(`${node.api}/metrics`)).text();
  assert.match(metrics, /^tessera_space_state\{state="full"\} 1$/m);
  assert.match(metrics, /^tessera_space_reserve_bytes \d+/m);
  await until(() => /space full: /.test(readFileSync(node.logPath, 'utf8')), 5000, 'the log line at full');

  // Killed while full, the node starts again and serves the first disk's data.
  await node.kill('SIGKILL');
  await node.start();
  const back = join(tmp, 'back.img');
  await nbdcopy(node.nbdUri('keep'), back);
  await assertFilesEqual(keepData, back, 'keep after kill -9 while full');
  assert.equal((await space(node)).state, 'full', 'still full after the restart');
  const refused = await qemuIo(node.nbdUri('keep'), ['write -P 0x11 0 1M']);
  assert.match(refused.stdout + refused.stderr, /No space left on device/);

  // Deleting the second disk gives its space back, with no help from outside.
  await node.cliOk(['disk', 'rm', 'fill']);
  await until(async () => (await space(node)).state === 'ok', 20_000, 'the space of the deleted disk back');
  const ok = await qemuIo(node.nbdUri('keep'), ['write -P 0x11 0 1M', 'flush', 'read -P 0x11 0 1M']);
  assert.equal(ok.code, 0, `writes work again: ${ok.stdout} ${ok.stderr}`);
  await until(() => /space ok: /.test(readFileSync(node.logPath, 'utf8')), 5000, 'the log line back at ok');
});

test('a node whose file system is below its reserve does not start, and says how much is free and needed', async (t) => {
  const mnt = mountTmpfs(t, 64 * MiB);
  const node = await startNode({ dataDir: join(mnt, 'data') });
  await node.cliOk(['disk', 'create', 'd', '--size', '8M']);
  await node.stop();
  const ballast = fillTo(mnt, 2 * MiB);
  await assert.rejects(node.start(), (err: Error) => {
    assert.match(err.message, /cannot start the node: Cannot open the store in .*: the file system has [\d.]+ MiB free of 64 MiB; a node needs its reserve of 6\.4 MiB free to start/);
    assert.match(err.message, /--reserve SIZE sets the reserve; --read-only serves every disk read-only/);
    return true;
  });
  // A smaller reserve is the user's call.
  const small = await startNode({ dataDir: join(mnt, 'data'), args: ['--reserve', '1M'] });
  assert.equal((await small.cliJson<{ name: string }[]>(['disk', 'list'])).map((d) => d.name).join(), 'd');
  await small.stop();
  (await import('node:fs')).rmSync(ballast);
  await node.start();
  await node.stop();
});
