/**
 * A store opened read-only (docs/engine.md, "Read-only mode"), on a real read-only file system:
 * every disk and snapshot reads byte-exact, the log tail the index had not absorbed included (it
 * is read into the overlay); every change is refused with ENGINE_READ_ONLY; no file changes, not
 * even its time. Opened for writing there, the store says the file system is read-only. Its
 * volumes hold to the read-only Volume contract.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { EngineError, Store, type Volume } from '../../src/engine/index.ts';
import { cleanup, fillTo, makeTempDir, MiB, mountTmpfs, remount, seededBytes, treeState } from '../helpers/index.ts';
import { readOnlyVolumeConformance, touch } from './volume-conformance.ts';

after(cleanup);

const KiB = 1024;
/** The conformance disk: its last block partial. */
const confBytes = 200 * KiB + 1536;

/** A store as a `kill -9` left it, and what each of its disks and snapshots reads. */
interface Built {
  /** The store directory (a copy; tests copy it again). */
  dir: string;
  /** `disk` and `disk@snap` → its bytes. */
  contents: Map<string, Buffer>;
  /** Durable records the index had not absorbed. */
  tailRecords: number;
  /** The conformance disk's snapshot and what happened on its head since. */
  conf: { name: string; content: Buffer; written: Uint8Array; touched: Uint8Array };
}

/**
 * Writes disks, snapshots and a clone, has the index absorb part of it, leaves the rest as a
 * durable log tail, writes once more without a flush, and copies the directory as a `kill -9`
 * leaves it (the process's LMDB lock file left out) with that last record cut in half.
 */
async function build(): Promise<Built> {
  const src = join(makeTempDir('tessera-ro-src-'), 'store');
  // Nothing reaches the index unless asked (stats() absorbs the queue); nothing syncs on its own.
  const store = await Store.open({ dir: src, applyDelayMs: 3_600_000, syncIntervalMs: 3_600_000, maintenanceIntervalMs: 0, segmentBytesMax: 256 * KiB });
  const open: Volume[] = [];
  const vol = (disk: string): Volume => {
    const v = store.openVolume(disk);
    open.push(v);
    return v;
  };
  await store.createDisk('vm', 2 * MiB);
  await store.createDisk('conf', confBytes);
  const vm = vol('vm');
  const conf = vol('conf');
  await vm.write(0, seededBytes(1, 'vm', 2 * MiB));
  const confModel = seededBytes(1, 'conf', confBytes);
  await conf.write(0, confModel);
  await conf.trim(64 * KiB, 16 * KiB);
  confModel.fill(0, 64 * KiB, 80 * KiB);
  await store.createSnapshot('vm', 'base');
  await store.createSnapshot('conf', 's');
  const atSnap = Buffer.from(confModel);
  const written = new Uint8Array(Math.ceil(confBytes / 512));
  const touched = new Uint8Array(written.length);
  await store.cloneDisk('vm', 'base', 'vm-clone');
  const confWrite = async (offset: number, data: Buffer) => {
    await conf.write(offset, data);
    data.copy(confModel, offset);
    touch(written, offset, data.length);
    touch(touched, offset, data.length);
  };
  await confWrite(5000, seededBytes(1, 'c1', 9000));
  await store.stats(); // the index absorbs everything so far

  // The tail: writes, zeroes and trims of every kind, a snapshot among them.
  await vm.write(300 * KiB + 7, seededBytes(1, 'vm2', 100 * KiB));
  await vm.writeZeroes(MiB + 100, 8 * KiB, { mayTrim: false });
  await vm.trim(1536 * KiB, 64 * KiB);
  await store.createSnapshot('vm', 'later');
  await vm.write(0, seededBytes(1, 'vm3', 4 * KiB));
  const clone = vol('vm-clone');
  await clone.write(5000, seededBytes(1, 'clone', 10 * KiB));
  await confWrite(100 * KiB + 1, seededBytes(1, 'c2', 3 * KiB));
  await conf.writeZeroes(150 * KiB + 100, 600);
  confModel.fill(0, 150 * KiB + 100, 150 * KiB + 700);
  touch(touched, 150 * KiB + 100, 600);
  await conf.trim(confBytes - 1536, 1536);
  confModel.fill(0, confBytes - 1536);
  touch(touched, confBytes - 1536, 1536);
  await store.flush();
  const tailRecords = store.metrics().applyLagRecords;
  assert.ok(tailRecords >= 8, `a log tail the index has not absorbed: ${tailRecords} records`);

  const contents = new Map<string, Buffer>();
  for (const d of store.listDisks()) {
    for (const snap of [null, ...d.snapshots]) {
      const v = store.openVolume(d.name, snap);
      contents.set(snap === null ? d.name : `${d.name}@${snap}`, await v.read(0, v.sizeBytes));
      v.close();
    }
  }
  assert.ok(contents.get('conf')!.equals(confModel), 'the conformance disk reads as its model');

  // A last write never made durable: a kill -9 leaves it in the page cache; this one was cut.
  await vm.write(MiB, seededBytes(1, 'torn', 16 * KiB));
  const dir = join(makeTempDir('tessera-ro-built-'), 'store');
  fs.cpSync(src, dir, { recursive: true, filter: (p) => !p.endsWith('lock.mdb') });
  const segments = fs.readdirSync(join(dir, 'log')).sort();
  const newest = join(dir, 'log', segments.at(-1)!);
  fs.truncateSync(newest, fs.statSync(newest).size - 8 * KiB);
  for (const v of open) v.close();
  await store.close();
  return { dir, contents, tailRecords, conf: { name: 's', content: atSnap, written, touched } };
}

let built: Built;
before(async () => {
  built = await build();
});

/** Every change a store offers, each expected to be refused. */
const changes: [string, (s: Store) => Promise<unknown>][] = [
  ['createDisk', (s) => s.createDisk('new', MiB)],
  ['deleteDisk', (s) => s.deleteDisk('vm-clone')],
  ['resizeDisk', (s) => s.resizeDisk('vm', 4 * MiB)],
  ['createSnapshot', (s) => s.createSnapshot('vm', 'new')],
  ['createSnapshots', (s) => s.createSnapshots(['vm', 'conf'], 'group')],
  ['deleteSnapshot', (s) => s.deleteSnapshot('vm', 'base')],
  ['revertDisk', (s) => s.revertDisk('vm', 'base')],
  ['cloneDisk', (s) => s.cloneDisk('vm', 'base', 'another')],
  ['compact', (s) => s.compact()],
];

/** Opens the store read-only and checks all of it: what it reads, what it refuses. */
async function checkReadOnly(dir: string): Promise<void> {
  const store = await Store.open({ dir, readOnly: true });
  try {
    assert.equal(store.readOnly, true);
    assert.deepEqual(store.damage, []);
    assert.equal(store.recovery.recordsReplayed, built.tailRecords, 'the log tail is read (into the overlay)');
    assert.ok(store.recovery.tornBytesDropped > 0, 'the torn record is counted (and left where it is)');
    assert.deepEqual(store.listDisks().map((d) => d.name), ['conf', 'vm', 'vm-clone']);
    for (const [name, want] of built.contents) {
      const [disk, snap] = name.split('@');
      const v = store.openVolume(disk, snap ?? null);
      assert.equal(v.readOnly, true, `${name} is read-only`);
      assert.ok((await v.read(0, v.sizeBytes)).equals(want), `${name} reads byte-exact`);
      v.close();
    }
    for (const [what, change] of changes) {
      await assert.rejects(change(store), (err: unknown) => {
        assert.ok(err instanceof EngineError, `${what}: an EngineError, got ${String(err)}`);
        assert.equal(err.code, 'ENGINE_READ_ONLY', `${what}: ${err.message}`);
        assert.match(err.message, /is open read-only/);
        return true;
      });
    }
    const v = store.openVolume('vm');
    await assert.rejects(v.write(0, Buffer.alloc(4096)), { code: 'ENGINE_READ_ONLY', message: /Disk "vm" is read-only: its store is open read-only/ });
    await assert.rejects(v.writeZeroes(0, 4096), { code: 'ENGINE_READ_ONLY' });
    await assert.rejects(v.trim(0, 4096), { code: 'ENGINE_READ_ONLY' });
    await v.flush();
    v.close();
    await store.flush();
    const stats = await store.stats();
    assert.ok(stats.segments >= 2 && stats.liveBytes > 0, `space figures: ${JSON.stringify(stats)}`);
    assert.equal(store.metrics().applyLagRecords, 0, 'nothing is appended or applied');
    // Nothing changed, so everything reads as before.
    const again = store.openVolume('vm', 'later');
    assert.ok((await again.read(0, again.sizeBytes)).equals(built.contents.get('vm@later')!));
    again.close();
  } finally {
    await store.close();
  }
}

test('a store on a read-only file system opens read-only, reads every disk and snapshot byte-exact with its log tail, refuses every change and changes no file', async (t) => {
  const mnt = mountTmpfs(t, 64 * MiB);
  const dir = join(mnt, 'store');
  fs.cpSync(built.dir, dir, { recursive: true });
  remount(mnt, 'ro');
  const before = treeState(mnt);
  await checkReadOnly(dir);
  // Opened for writing, it says why it cannot be.
  await assert.rejects(Store.open({ dir }), (err: unknown) => {
    assert.ok(err instanceof EngineError, String(err));
    assert.equal(err.code, 'ENGINE_READ_ONLY');
    assert.equal(err.message, `The file system of ${dir} is read-only: the store can only be opened read-only`);
    return true;
  });
  assert.deepEqual(treeState(mnt), before, 'no file or directory changed, not even its time');
  // Every file is let go of, but the index's data file: lmdb-js closes an environment only if it
  // could open its data file for writing (it tracks environments so), which a read-only file
  // system does not allow; it stays mapped until the process ends (docs/engine.md).
  assert.deepEqual(openFilesUnder(mnt), [join(dir, 'index', 'data.mdb')]);
  // Read-write again, the store recovers its tail as usual and reads the same.
  remount(mnt, 'rw');
  const store = await Store.open({ dir, maintenanceIntervalMs: 0 });
  try {
    assert.equal(store.recovery.recordsReplayed, built.tailRecords);
    for (const [name, want] of built.contents) {
      const [disk, snap] = name.split('@');
      const v = store.openVolume(disk, snap ?? null);
      assert.ok((await v.read(0, v.sizeBytes)).equals(want), `${name} after a read-write open`);
      v.close();
    }
  } finally {
    await store.close();
  }
});

/** Files under `dir` this process has open. */
function openFilesUnder(dir: string): string[] {
  const out = new Set<string>();
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      const p = fs.readlinkSync(`/proc/self/fd/${fd}`);
      if (p.startsWith(dir + '/')) out.add(p);
    } catch {
      // Closed meanwhile (the directory's own descriptor).
    }
  }
  return [...out].sort();
}

test('a read-only open of a writable store writes nothing to it (but LMDB\'s lock file)', async () => {
  const dir = join(makeTempDir('tessera-ro-rw-'), 'store');
  fs.cpSync(built.dir, dir, { recursive: true });
  // The lock file is LMDB's table of readers, made where it can be; it holds no data.
  const skip = (p: string) => p === join('index', 'lock.mdb') || p === 'index';
  const before = treeState(dir, skip);
  await checkReadOnly(dir);
  assert.deepEqual(treeState(dir, skip), before);
  assert.deepEqual(openFilesUnder(dir), [], 'every file is closed');
});

test('a store whose file system is below its reserve, which does not open for writing, opens read-only and reads', async (t) => {
  const mnt = mountTmpfs(t, 32 * MiB);
  const dir = join(mnt, 'store');
  fs.cpSync(built.dir, dir, { recursive: true });
  fillTo(mnt, MiB);
  await assert.rejects(Store.open({ dir }), { code: 'ENGINE_NO_SPACE' });
  const store = await Store.open({ dir, readOnly: true });
  try {
    const v = store.openVolume('vm', 'later');
    assert.ok((await v.read(0, v.sizeBytes)).equals(built.contents.get('vm@later')!));
    v.close();
  } finally {
    await store.close();
  }
});

test('a read-only open creates nothing: a directory that is not a store is refused', async () => {
  const base = makeTempDir('tessera-ro-none-');
  const missing = join(base, 'nothing-here');
  await assert.rejects(Store.open({ dir: missing, readOnly: true }), { code: 'ENGINE_NOT_FOUND', message: `No store in ${missing}: the directory does not exist (a read-only open creates nothing)` });
  assert.equal(fs.existsSync(missing), false);
  const empty = join(base, 'empty');
  fs.mkdirSync(empty);
  await assert.rejects(Store.open({ dir: empty, readOnly: true }), { code: 'ENGINE_NOT_FOUND', message: `${empty} is not a Tessera store: it has no FORMAT file (a read-only open creates nothing)` });
  assert.deepEqual(fs.readdirSync(empty), []);
});

readOnlyVolumeConformance('StoreVolume of a read-only store', {
  async open() {
    const dir = join(makeTempDir('tessera-ro-conf-'), 'store');
    fs.cpSync(built.dir, dir, { recursive: true });
    const store = await Store.open({ dir, readOnly: true });
    return {
      volume: store.openVolume('conf'),
      content: built.contents.get('conf')!,
      openHandle: () => store.openVolume('conf'),
      snapshot: built.conf,
      dispose: () => store.close(),
    };
  },
});
