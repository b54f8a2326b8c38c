import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store, EngineError } from '../../src/engine/index.ts';

async function withStore(fn: (s: Store, dir: string) => Promise<void>): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-group-'));
  const s = await Store.open({ dir, maintenanceIntervalMs: 0 });
  try {
    await fn(s, dir);
  } finally {
    await s.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function code(err: unknown): string {
  assert.ok(err instanceof EngineError, `an EngineError, got ${err}`);
  return err.code;
}

test('group snapshot takes every disk at one seq: a writer alternating between two disks is seen in step', async () => {
  await withStore(async (s) => {
    await s.createDisk('a', 1 << 20);
    await s.createDisk('b', 1 << 20);
    const va = s.openVolume('a');
    const vb = s.openVolume('b');
    // Writes a=k then b=k, each acknowledged before the next: any instant sees a == b or a == b + 1.
    let stop = false;
    const counter = (k: number) => {
      const buf = Buffer.alloc(4096);
      buf.writeUInt32LE(k);
      return buf;
    };
    const writer = (async () => {
      for (let k = 1; !stop; k++) {
        await va.write(0, counter(k));
        await vb.write(0, counter(k));
      }
    })();
    const taken: string[] = [];
    for (let i = 0; i < 20; i++) {
      await new Promise((r) => setTimeout(r, 2 + (i % 3)));
      const name = `g${i}`;
      const infos = await s.createSnapshots(['a', 'b'], name);
      assert.deepEqual(infos.map((x) => x.disk), ['a', 'b']);
      assert.equal(infos[0].seq, infos[1].seq, 'one seq for the whole group');
      assert.equal(infos[0].createdMs, infos[1].createdMs);
      taken.push(name);
    }
    stop = true;
    await writer;
    va.close();
    vb.close();
    let moved = 0;
    for (const name of taken) {
      const sa = s.openVolume('a', name);
      const sb = s.openVolume('b', name);
      const a = (await sa.read(0, 4)).readUInt32LE();
      const b = (await sb.read(0, 4)).readUInt32LE();
      sa.close();
      sb.close();
      assert.ok(a === b || a === b + 1, `snapshot ${name}: a=${a} b=${b} are not in step`);
      if (a > 0) moved++;
    }
    assert.ok(moved > 0, 'the writer ran while snapshots were taken');
  });
});

test('group snapshot refuses unknown, duplicate and already-snapshotted disks and creates nothing', async () => {
  await withStore(async (s, dir) => {
    await s.createDisk('a', 1 << 20);
    await s.createDisk('b', 1 << 20);
    await s.createSnapshot('b', 'taken');
    await assert.rejects(s.createSnapshots(['a', 'nope'], 'x'), (e) => code(e) === 'ENGINE_NOT_FOUND');
    await assert.rejects(s.createSnapshots(['a', 'a'], 'x'), (e) => code(e) === 'ENGINE_INVALID' && /named twice/.test((e as Error).message));
    await assert.rejects(s.createSnapshots([], 'x'), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.createSnapshots(['a', 'b'], 'bad/name'), (e) => code(e) === 'ENGINE_INVALID');
    await assert.rejects(s.createSnapshots(['a', 'b'], 'taken'), (e) => code(e) === 'ENGINE_EXISTS');
    assert.deepEqual(s.listSnapshots('a'), []);
    assert.deepEqual(s.listSnapshots('b').map((x) => x.name), ['taken']);

    await s.createSnapshots(['b', 'a'], 'both');
    await s.close();
    const again = await Store.open({ dir, maintenanceIntervalMs: 0 });
    try {
      assert.deepEqual(again.listSnapshots('a').map((x) => x.name), ['both'], 'durable across a reopen');
      assert.deepEqual(again.listSnapshots('b').map((x) => x.name), ['taken', 'both']);
      assert.equal(again.listSnapshots('a')[0].seq, again.listSnapshots('b')[1].seq);
    } finally {
      await again.close();
    }
  });
});
