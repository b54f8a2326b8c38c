/**
 * A full file system: writes fail with ENGINE_NO_SPACE, nothing flushed before is lost, the
 * process does not crash (the index apply runs in the background), and the store reopens.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { EngineError, Store } from '../../src/engine/index.ts';

const MiB = 1 << 20;

function pattern(i: number): Buffer {
  const b = Buffer.alloc(MiB);
  for (let o = 0; o < MiB; o += 8) b.writeUInt32LE(i * 1_000_003 + o, o);
  return b;
}

test('a full file system gives ENGINE_NO_SPACE; flushed data survives, the store reopens and takes writes once space is freed', async (t) => {
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tessera-test', mnt], { stdio: 'pipe' });
  } catch (err) {
    assert.fail(`this test mounts a 24 MiB tmpfs to fill it and needs root (or CAP_SYS_ADMIN): ${(err as Error).message}`);
  }
  t.after(() => {
    execFileSync('umount', [mnt]);
    fs.rmSync(mnt, { recursive: true, force: true });
  });
  const dir = path.join(mnt, 'store');
  const ballast = path.join(mnt, 'ballast');
  // Ballast that a test can delete to free space again.
  fs.writeFileSync(ballast, Buffer.alloc(4 * MiB, 1));

  let store = await Store.open({ dir, maintenanceIntervalMs: 0, segmentBytesMax: 4 * MiB });
  await store.createDisk('d', 64 * MiB);
  let v = store.openVolume('d', null);
  const flushed: number[] = [];
  let failure: unknown = null;
  for (let i = 0; i < 64 && failure === null; i++) {
    try {
      await v.write(i * MiB, pattern(i));
      await v.flush();
      flushed.push(i);
    } catch (err) {
      failure = err;
    }
  }
  assert.ok(failure instanceof EngineError, `writes into a full file system fail with an EngineError, got ${String(failure)}`);
  assert.equal(failure.code, 'ENGINE_NO_SPACE');
  assert.ok(flushed.length >= 4, `some writes fit before the file system filled (${flushed.length})`);
  // Let the background index apply run into the full disk too: it must not take the process down.
  await new Promise((r) => setTimeout(r, 1500));
  for (const i of flushed) assert.ok((await v.read(i * MiB, MiB)).equals(pattern(i)), `flushed MiB ${i} reads back while full`);

  fs.rmSync(ballast);
  v.close();
  await store.close();
  store = await Store.open({ dir, maintenanceIntervalMs: 0, segmentBytesMax: 4 * MiB });
  try {
    v = store.openVolume('d', null);
    for (const i of flushed) assert.ok((await v.read(i * MiB, MiB)).equals(pattern(i)), `flushed MiB ${i} intact after reopening`);
    // With space freed, writes work again.
    await v.write(63 * MiB, pattern(63));
    await v.flush();
    assert.ok((await v.read(63 * MiB, MiB)).equals(pattern(63)));
    v.close();
  } finally {
    await store.close();
  }
});
