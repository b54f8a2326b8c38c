/**
 * Crash consistency: a node killed with SIGKILL while clients write keeps every write that was
 * made durable (FUA, or completed before a completed FLUSH), and restarts into a consistent store.
 * The load and the check are test/helpers/crashload.py, a libnbd client.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  assertFilesEqual, crashload, startCrashWriter, makeTempDir, MiB, nbdcopy, qemuIo, requirePythonNbd, Rng, runOk, spawnTracked, startNode, useNode, tesseraBin, testSeed, writeSeededFile,
} from '../helpers/index.ts';

const blockBytes = 4096;

const node = useNode();
const dir = makeTempDir();


test('flushed and FUA writes survive repeated kill -9 of the node with writes in flight', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  const py = requirePythonNbd();
  const blocks = (64 * MiB) / blockBytes;
  await node.cliOk(['disk', 'create', 'tcp', '--size', '64M']);
  await node.cliOk(['disk', 'create', 'unix', '--size', '64M']);
  // A snapshot with known content that every crash must leave alone.
  const base = join(dir, 'base.raw');
  await writeSeededFile(base, seed, 'base', 64 * MiB);
  await nbdcopy(base, node.nbdUri('tcp'), ['--flush']);
  await node.cliOk(['snap', 'create', 'tcp', 'base']);
  // The crash model of that disk starts from its current content rather than zeroes.
  const stateTcp = join(dir, 'tcp.json');
  const stateUnix = join(dir, 'unix.json');
  await runOk(py, [crashload, 'init', node.nbdUri('tcp'), stateTcp, String(seed), String(blocks)]);

  for (let round = 1; round <= 4; round++) {
    const writers = [
      startCrashWriter(py, node.nbdUri('tcp'), stateTcp, seed + round, blocks),
      startCrashWriter(py, node.unixUri('unix'), stateUnix, seed + 100 + round, blocks),
    ];
    // Crash at a point defined by progress, not time: after some FLUSHes completed on both.
    const target = rng.range(2, 12);
    await Promise.all(writers.map((w) => w.flushed(target)));
    const killed = await node.kill('SIGKILL');
    assert.equal(killed.signal, 'SIGKILL');
    const summaries = await Promise.all(writers.map((w) => w.done()));
    t.diagnostic(`round ${round}: killed after ${target} flushes; writers: ${summaries.join(' ')}`);
    await node.restart();
    for (const [name, uri, state] of [['tcp', node.nbdUri('tcp'), stateTcp], ['unix', node.unixUri('unix'), stateUnix]] as const) {
      const verdict = await runOk(py, [crashload, 'verify', uri, state]).catch((err: Error) => assert.fail(`round ${round}, disk ${name}: ${err.message}\nnode log: ${node.logTail()}`));
      t.diagnostic(`round ${round}, disk ${name}: ${verdict.trim()}`);
    }
    const snaps = await node.cliJson<{ name: string }[]>(['snap', 'list', 'tcp']);
    assert.deepEqual(snaps.map((s) => s.name), ['base'], `round ${round}: snapshots after the crash`);
    const pulled = join(dir, 'base-pulled.raw');
    await nbdcopy(node.unixUri('tcp@base'), pulled);
    await assertFilesEqual(base, pulled, `round ${round}: the snapshot taken before the crashes`);
  }

  // The store still takes new disks, writes and snapshots.
  await node.cliOk(['disk', 'create', 'after', '--size', '8M']);
  const small = join(dir, 'small.raw');
  await writeSeededFile(small, seed, 'small', 8 * MiB);
  await nbdcopy(small, node.nbdUri('after'), ['--flush']);
  await node.cliOk(['snap', 'create', 'after', 'ok']);
  const back = join(dir, 'small-back.raw');
  await nbdcopy(node.nbdUri('after@ok'), back);
  await assertFilesEqual(small, back, 'a disk written after the crashes');
});

test('data copied with nbdcopy --flush survives an immediate kill -9', async (t) => {
  const seed = testSeed(t);
  const src = join(dir, 'flush-src.raw');
  await writeSeededFile(src, seed, 'flush', 48 * MiB);
  await node.cliOk(['disk', 'create', 'flushed', '--size', '48M']);
  for (let i = 0; i < 3; i++) {
    await nbdcopy(src, i % 2 === 0 ? node.nbdUri('flushed') : node.unixUri('flushed'), ['--flush']);
    await node.kill('SIGKILL');
    await node.restart();
    const back = join(dir, `flush-back-${i}.raw`);
    await nbdcopy(node.nbdUri('flushed'), back);
    await assertFilesEqual(src, back, `copy ${i} after kill -9`);
    // Change the source a little for the next round, so each round checks fresh data.
    await writeSeededFile(src, seed + i + 1, 'flush', 48 * MiB);
  }
});

test('disk and snapshot operations the CLI acknowledged survive kill -9', async () => {
  for (let i = 0; i < 3; i++) {
    const name = `meta${i}`;
    await node.cliOk(['disk', 'create', name, '--size', '4M']);
    const w = await qemuIo(node.nbdUri(name), ['write -P 0x33 0 64k']); // qemu-io flushes on exit
    assert.equal(w.code, 0, w.stdout + w.stderr);
    await node.cliOk(['snap', 'create', name, 's']);
    await node.kill('SIGKILL');
    await node.start();
    const disks = await node.cliJson<{ name: string; snapshots: string[] }[]>(['disk', 'list']);
    assert.deepEqual(disks.find((d) => d.name === name)?.snapshots, ['s'], `${name} and its snapshot after kill -9`);
    const snap = await qemuIo(node.nbdUri(`${name}@s`), ['read -P 0x33 0 64k', 'read -P 0 64k 3M'], { readOnly: true });
    assert.equal(snap.code, 0, snap.stdout + snap.stderr);
    const changed = await qemuIo(node.nbdUri(name), ['write -P 0x44 0 64k']);
    assert.equal(changed.code, 0, changed.stdout + changed.stderr);
    await node.cliOk(['snap', 'revert', name, 's']);
    await node.kill('SIGKILL');
    await node.start();
    const reverted = await qemuIo(node.nbdUri(name), ['read -P 0x33 0 64k'], { readOnly: true });
    assert.equal(reverted.code, 0, `revert after kill -9: ${reverted.stdout}${reverted.stderr}`);
    await node.cliOk(['disk', 'rm', name]);
    await node.kill('SIGKILL');
    await node.start();
    const left = await node.cliJson<{ name: string }[]>(['disk', 'list']);
    assert.equal(left.find((d) => d.name === name), undefined, `${name} stays deleted after kill -9`);
  }
});

test('kill -9 during compaction loses no data and a later compaction finishes the job', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  // A node of its own: 3 x 200 MiB over 256 MiB segments leaves, once the snapshot is deleted,
  // a sealed segment mostly dead that compaction rewrites and removes.
  const own = await startNode();
  const size = 200 * MiB;
  const a = join(dir, 'compact-a.raw');
  const b = join(dir, 'compact-b.raw');
  const out = join(dir, 'compact-out.raw');
  await writeSeededFile(a, seed, 'compact-a', size);
  await writeSeededFile(b, seed, 'compact-b', size);
  await own.cliOk(['disk', 'create', 'x', '--size', String(size)]);
  await own.cliOk(['disk', 'create', 'y', '--size', String(size)]);
  await nbdcopy(a, own.nbdUri('x'), ['--flush']);
  await nbdcopy(b, own.nbdUri('y'), ['--flush']);
  await own.cliOk(['snap', 'create', 'x', 's']);
  await nbdcopy(b, own.nbdUri('x'), ['--flush']);
  const full = await own.stats();
  await own.cliOk(['snap', 'rm', 'x', 's']);
  for (let round = 0; round < 3; round++) {
    const compact = spawnTracked(tesseraBin, ['--api', own.api, 'compact']);
    compact.stdin!.end();
    const exited = new Promise<void>((resolve) => compact.once('exit', () => resolve()));
    // The kill point varies with the seed; wherever it lands, nothing may be lost.
    await new Promise((resolve) => setTimeout(resolve, rng.range(0, 1500)));
    await own.kill('SIGKILL');
    await exited;
    await own.start();
    await nbdcopy(own.nbdUri('x'), out);
    await assertFilesEqual(b, out, `x after kill -9 during compaction (round ${round})`);
    await nbdcopy(own.unixUri('y'), out);
    await assertFilesEqual(b, out, `y after kill -9 during compaction (round ${round})`);
  }
  await own.cliOk(['compact']);
  const done = await own.stats();
  t.diagnostic(`before ${JSON.stringify(full)} after ${JSON.stringify(done)}`);
  assert.ok(done.logBytes <= full.logBytes - 150 * MiB, `the dead segment was reclaimed in the end: ${JSON.stringify(done)}`);
  assert.ok(done.liveBytes <= full.liveBytes - 150 * MiB, `the deleted snapshot's data is no longer live: ${JSON.stringify(done)}`);
  await nbdcopy(own.nbdUri('x'), out);
  await assertFilesEqual(b, out, 'x after the final compaction');
  await own.stop();
});
