/**
 * A real node's hybrid logical clock (docs/cluster.md, "Time"): a single node without etcd has
 * one too; its snapshots and log records carry its values, and these never go backwards, across
 * a kill -9 and a restart with the system clock set back an hour (Debian's libfaketime preloaded
 * into the node, as `faketime -m --exclude-monotonic -f -1h` would).
 */
import assert from 'node:assert/strict';
import { globSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import type { NodeInfo, SnapshotInfo } from '../../src/api/client/index.ts';
import { cleanup, makeTempDir, requireTool, TesseraNode } from '../helpers/index.ts';

after(cleanup);

/**
 * The environment that runs a program with its wall clock `offset` away (`-1h`): the thread-safe
 * libfaketime (Node is multi-threaded), the monotonic clock left alone (Node's timers run on it).
 * Set in the node's environment rather than through the faketime command, which would run the
 * node as its child: the test kills the node itself.
 */
function fakeTimeEnv(offset: string): Record<string, string> {
  requireTool('faketime', 'faketime');
  const [lib] = globSync('/usr/lib/{*/,}faketime/libfaketimeMT.so.1');
  assert.ok(lib !== undefined, 'libfaketimeMT.so.1 of the Debian package libfaketime');
  return { LD_PRELOAD: lib, FAKETIME: offset, FAKETIME_DONT_FAKE_MONOTONIC: '1' };
}

async function clockOf(node: TesseraNode): Promise<bigint> {
  return BigInt((await node.cliJson<NodeInfo>(['node', 'info'])).hlc!);
}

test("a single node's clock stamps snapshots and log records, never backwards across kill -9 and a system clock set back an hour", { timeout: 180_000 }, async () => {
  const env = fakeTimeEnv('-1h');
  const dataDir = join(makeTempDir('tessera-hlc-'), 'data');

  // At debug the node logs every API request it answered: records between the snapshots.
  const args = ['--log-level', 'debug'];
  const first = new TesseraNode({ dataDir, args });
  await first.start();
  await first.cliOk(['disk', 'create', 'vm1', '--size', '4M']);
  const before = await clockOf(first);
  const s1 = await first.cliJson<SnapshotInfo>(['snap', 'create', 'vm1', 's1']);
  const s2 = await first.cliJson<SnapshotInfo>(['snap', 'create', 'vm1', 's2']);
  const afterSnaps = await clockOf(first);
  assert.ok(before < BigInt(s1.hlc!) && BigInt(s1.hlc!) < BigInt(s2.hlc!) && BigInt(s2.hlc!) < afterSnaps, `${before} < s1 ${s1.hlc} < s2 ${s2.hlc} < ${afterSnaps}`);
  assert.deepEqual((await first.cliJson<SnapshotInfo[]>(['snap', 'list', 'vm1'])).map((s) => s.hlc), [s1.hlc, s2.hlc]);
  await first.kill('SIGKILL');
  const firstLog = await first.logClock('before the kill');
  assert.ok(firstLog.first > 0n);
  assert.ok(firstLog.last > afterSnaps, `the records of the requests that took the snapshots are stamped after them: ${firstLog.last} > ${afterSnaps}`);

  // Started again an hour in the past.
  const second = new TesseraNode({ dataDir, args, env });
  await second.start();
  try {
    const s3 = await second.cliJson<SnapshotInfo>(['snap', 'create', 'vm1', 's3']);
    assert.ok(s3.createdMs < s2.createdMs - 3_500_000, `the node's wall clock is an hour back: s3 created ${s3.createdMs}, s2 ${s2.createdMs}`);
    assert.ok(BigInt(s3.hlc!) > afterSnaps, `s3's stamp ${s3.hlc} is above every value before the kill (${afterSnaps})`);
    const now = await clockOf(second);
    assert.ok(now > BigInt(s3.hlc!));
    const snaps = await second.cliJson<SnapshotInfo[]>(['snap', 'list', 'vm1']);
    assert.deepEqual(snaps.map((s) => [s.name, s.hlc]), [['s1', s1.hlc], ['s2', s2.hlc], ['s3', s3.hlc]], 'the stamps of before are kept');
    // By wall clock s3 is the oldest; by the clock it is the newest.
    assert.deepEqual(snaps.map((s) => s.name).sort((a, b) => snaps.find((x) => x.name === a)!.createdMs - snaps.find((x) => x.name === b)!.createdMs), ['s3', 's1', 's2']);
  } finally {
    await second.stop();
  }
  const secondLog = await second.logClock('after the restart');
  assert.ok(secondLog.first > firstLog.last, `the first record after the restart (${secondLog.first}) is above the last before the kill (${firstLog.last})`);
});
