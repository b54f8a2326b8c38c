/** qemu-io against a real node: byte-exact writes at any alignment, read-only snapshot exports. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { qemuIo, Rng, useNode, testSeed } from '../helpers/index.ts';

const node = useNode();

/** Splits a model buffer into runs of one byte value: the `read -P` checks that cover it. */
function runsOf(model: Buffer): { offset: number; length: number; value: number }[] {
  const runs: { offset: number; length: number; value: number }[] = [];
  let start = 0;
  for (let i = 1; i <= model.length; i++) {
    if (i === model.length || model[i] !== model[start]) {
      runs.push({ offset: start, length: i - start, value: model[start]! });
      start = i;
    }
  }
  return runs;
}

test('qemu-io writes, write-zeroes and discards at any alignment read back exactly, across connections', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  const regionBytes = 1024 * 1024;
  await node.cliOk(['disk', 'create', 'pattern', '--size', '4M']);
  const model = Buffer.alloc(regionBytes);
  const writes: string[] = [];
  for (let i = 0; i < 80; i++) {
    const aligned = rng.next() < 0.5;
    const unit = aligned ? 4096 : 1;
    const length = aligned ? unit * rng.range(1, 16) : rng.range(1, 70_000);
    const offset = unit * rng.int(Math.floor((regionBytes - length) / unit) + 1);
    const fua = rng.next() < 0.2 ? '-f ' : '';
    const op = rng.next();
    if (op < 0.7) {
      const value = rng.range(1, 255);
      writes.push(`write ${fua}-P ${value} ${offset} ${length}`);
      model.fill(value, offset, offset + length);
    } else {
      // Write-zeroes, with and without permission to unmap, and discard (trim): all read as zeroes.
      writes.push(op < 0.8 ? `write ${fua}-z ${offset} ${length}` : op < 0.9 ? `write ${fua}-z -u ${offset} ${length}` : `discard ${offset} ${length}`);
      model.fill(0, offset, offset + length);
    }
  }
  // Writes in several connections, reads in a fresh one: nothing may depend on a client cache.
  for (let i = 0; i < writes.length; i += 20) {
    const w = await qemuIo(node.nbdUri('pattern'), writes.slice(i, i + 20));
    assert.equal(w.code, 0, w.stdout + w.stderr);
  }
  const reads = runsOf(model).map((r) => `read -P ${r.value} ${r.offset} ${r.length}`);
  reads.push(`read -P 0 ${regionBytes} ${4 * 1024 * 1024 - regionBytes}`);
  const r = await qemuIo(node.unixUri('pattern'), reads, { readOnly: true });
  assert.doesNotMatch(r.stdout + r.stderr, /Pattern verification failed|error/i);
  assert.equal(r.code, 0, r.stdout + r.stderr);
});

test('qemu-io cannot write to a snapshot export, which keeps its content', async () => {
  await node.cliOk(['disk', 'create', 'ro', '--size', '8M']);
  const w = await qemuIo(node.nbdUri('ro'), ['write -P 0x11 0 1M']);
  assert.equal(w.code, 0, w.stdout + w.stderr);
  await node.cliOk(['snap', 'create', 'ro', 's1']);
  const denied = await qemuIo(node.nbdUri('ro@s1'), ['write -P 0x22 0 64k']);
  assert.notEqual(denied.code, 0, `a write to ro@s1 was accepted: ${denied.stdout}`);
  const denied4k = await qemuIo(node.unixUri('ro@s1'), ['write -P 0x22 4096 512']);
  assert.notEqual(denied4k.code, 0, `a write to ro@s1 over the Unix socket was accepted: ${denied4k.stdout}`);
  const check = await qemuIo(node.nbdUri('ro@s1'), ['read -P 0x11 0 1M', 'read -P 0 1M 7M'], { readOnly: true });
  assert.equal(check.code, 0, check.stdout + check.stderr);
  // The disk's head stays writable and diverges from the snapshot.
  const head = await qemuIo(node.nbdUri('ro'), ['write -P 0x33 0 64k', 'read -P 0x33 0 64k']);
  assert.equal(head.code, 0, head.stdout + head.stderr);
  const snap = await qemuIo(node.nbdUri('ro@s1'), ['read -P 0x11 0 64k'], { readOnly: true });
  assert.equal(snap.code, 0, snap.stdout + snap.stderr);
});
