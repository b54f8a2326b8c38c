/**
 * The store format fixture (test/fixtures/store-v1, made by test/fixtures/make-store-v1.ts):
 * every later version must open it and read every disk and snapshot byte-exact as its manifest
 * (test/fixtures/store-v1.json) records. Opening it replays a log tail the index had not absorbed
 * and drops a torn record. The tests work on copies; the fixture itself is never modified.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, test } from 'node:test';
import { Store } from '../../src/engine/index.ts';
import { cleanup, makeTempDir, seededBytes } from '../helpers/index.ts';
import { storeContents, type StoreContents } from './store-contents.ts';

after(cleanup);

const fixture = fileURLToPath(new URL('../fixtures/store-v1', import.meta.url));
const manifest = JSON.parse(fs.readFileSync(fileURLToPath(new URL('../fixtures/store-v1.json', import.meta.url)), 'utf8')) as StoreContents & { format: string };
/** The options the fixture was made with (any later version must also open it with its own defaults). */
const options = { maintenanceIntervalMs: 0 };

/** Every file of a directory tree → the SHA-256 of its bytes. */
function treeDigest(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { recursive: true, withFileTypes: true })) {
    if (!e.isFile()) continue;
    const p = join(e.parentPath, e.name);
    out[p.slice(dir.length + 1)] = createHash('sha256').update(fs.readFileSync(p)).digest('hex');
  }
  return out;
}

/** A fresh copy of the fixture to open. */
function copyOfFixture(): string {
  const dir = join(makeTempDir('tessera-store-v1-'), 'store');
  fs.cpSync(fixture, dir, { recursive: true });
  return dir;
}

const fixtureFiles = treeDigest(fixture);
after(() => assert.deepEqual(treeDigest(fixture), fixtureFiles, 'the fixture itself is never modified'));

test('store format 1 fixture: holds what the manifest says, a log tail and a torn record', () => {
  assert.equal(manifest.format, 'tessera-store/1');
  assert.equal(fs.readFileSync(join(fixture, 'FORMAT'), 'utf8'), 'tessera-store/1\n');
  const segments = Object.keys(fixtureFiles).filter((p) => p.startsWith('log/'));
  assert.ok(segments.length >= 4, `data in several log segments: ${segments.join(', ')}`);
  assert.ok(!Object.keys(fixtureFiles).includes('index/lock.mdb'), 'no LMDB lock file (a crash leaves one; it belongs to the process that ran)');
  assert.ok(manifest.recovery.recordsReplayed > 0 && manifest.recovery.tornBytesDropped > 0, 'opening it replays a tail and drops a torn record');
  const bytes = fs.readdirSync(fixture, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).reduce((n, e) => n + fs.statSync(join(e.parentPath, e.name)).size, 0);
  assert.ok(bytes < 1024 * 1024, `the fixture stays small: ${bytes} bytes`);
});

test('store format 1 fixture: opens with recovery, every disk and snapshot reads byte-exact', async () => {
  const store = await Store.open({ dir: copyOfFixture(), ...options });
  try {
    assert.deepEqual(await storeContents(store), { recovery: manifest.recovery, disks: manifest.disks, snapshots: manifest.snapshots });
  } finally {
    await store.close();
  }
});

test('store format 1 fixture: opens read-only and reads the same, the tail from the overlay, changing no file', async () => {
  const dir = copyOfFixture();
  const before = treeDigest(dir);
  const store = await Store.open({ dir, readOnly: true, ...options });
  try {
    assert.equal(store.readOnly, true);
    assert.deepEqual(store.damage, []);
    // The same records read (into the overlay, not the index), the same torn bytes (left where they are).
    assert.deepEqual(await storeContents(store), { recovery: manifest.recovery, disks: manifest.disks, snapshots: manifest.snapshots });
    await assert.rejects(store.createDisk('new', 1 << 20), { code: 'ENGINE_READ_ONLY' });
  } finally {
    await store.close();
  }
  // LMDB's lock file is made where it can be (it is the readers' table, no data); nothing else.
  const after = treeDigest(dir);
  delete after['index/lock.mdb'];
  assert.deepEqual(after, before, 'a read-only open changes no file of the store');
});

test('store format 1 fixture: a copy takes writes, snapshots and clones, and opens again with them', async () => {
  const dir = copyOfFixture();
  // With a clock (a node has one): the new snapshot is stamped, those of before show none.
  let store = await Store.open({ dir, ...options, hlc: () => 117047296000000005n });
  const data = seededBytes(1, 'after the fixture', 10_000);
  try {
    for (const d of manifest.disks) {
      const v = store.openVolume(d.name);
      await v.write(d.sizeBytes - data.length - 3, data);
      v.close();
    }
    assert.equal((await store.createSnapshot('vm1', 'after')).hlc, '117047296000000005');
    await store.cloneDisk('vm1', 'base', 'vm1-base-again');
  } finally {
    await store.close();
  }
  store = await Store.open({ dir, ...options });
  try {
    const now = await storeContents(store);
    assert.deepEqual(now.recovery, { recordsReplayed: 0, tornBytesDropped: 0 }, 'a clean close leaves nothing to replay');
    for (const s of manifest.snapshots) assert.equal(store.listSnapshots(s.disk).find((x) => x.name === s.name)!.hlc, null, `${s.disk}@${s.name} was taken before stamps`);
    assert.equal(store.listSnapshots('vm1').find((x) => x.name === 'after')!.hlc, '117047296000000005');
    // The snapshots of before are untouched; the clone reads as the snapshot it came from.
    for (const s of manifest.snapshots) assert.deepEqual(now.snapshots.find((x) => x.disk === s.disk && x.name === s.name), s);
    const base = manifest.snapshots.find((s) => s.disk === 'vm1' && s.name === 'base')!;
    assert.equal(now.disks.find((d) => d.name === 'vm1-base-again')!.digest, base.digest);
    for (const d of manifest.disks) {
      const v = store.openVolume(d.name);
      assert.deepEqual(await v.read(d.sizeBytes - data.length - 3, data.length), data, `the write to ${d.name} after a reopen`);
      v.close();
      assert.notEqual(now.disks.find((x) => x.name === d.name)!.digest, d.digest, `${d.name} changed`);
    }
  } finally {
    await store.close();
  }
});
