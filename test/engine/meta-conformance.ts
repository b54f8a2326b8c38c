/**
 * The conformance suite of the engine's metadata store (src/engine/meta/): every backend —
 * embedded LMDB, in memory, later etcd — runs the same tests through metaConformance().
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EngineError } from '../../src/engine/errors.ts';
import type { BranchMeta, DiskMeta, MetaOp, MetaStore } from '../../src/engine/meta/meta-store.ts';

/** One backend under test. */
export interface MetaHarness {
  /** A fresh, empty store. */
  open(): Promise<MetaStore>;
  /** The same store as the last open() gave, opened again (backends that persist). */
  reopen?(): Promise<MetaStore>;
  /** Stores a raw value under a key, past validation, as damage would leave it. */
  damage(key: string, value: unknown): Promise<void>;
  /** Releases what open() took. */
  close(): Promise<void>;
}

function code(err: unknown): string {
  assert.ok(err instanceof EngineError, `an EngineError, got ${err}`);
  return err.code;
}

const disk = (name: string, branch: number, extra: Partial<DiskMeta> = {}): DiskMeta => ({
  name, branch, sizeBytes: 1 << 20, createdMs: 1_700_000_000_000, origin: null, snapshots: [], ...extra,
});
const branch = (id: number, parent: number | null = null, forkSeq = 0): BranchMeta => ({ id, parent, forkSeq });

/** Registers the suite for one backend. */
export function metaConformance(name: string, harness: MetaHarness): void {
  const withStore = async (fn: (m: MetaStore) => Promise<void>) => {
    const m = await harness.open();
    try {
      await fn(m);
    } finally {
      await harness.close();
    }
  };

  test(`${name}: a new store holds nothing and hands out branch 1 first`, () =>
    withStore(async (m) => {
      assert.deepEqual(await m.load(), { disks: [], branches: [], branchNext: 1 });
      assert.equal(await m.getDisk('none'), null);
    }));

  test(`${name}: a commit stores disks, snapshots, branches and the counter, read back equal`, () =>
    withStore(async (m) => {
      // s1 carries a clock value (the largest there is), s0 none, as a snapshot of before stamps.
      const a = disk('a', 1, { snapshots: [{ name: 's0', branch: 1, seq: 0, sizeBytes: 512, createdMs: 5 }, { name: 's1', branch: 1, seq: 41, sizeBytes: 1 << 20, createdMs: 6, hlc: '18446744073709551615' }] });
      const b = disk('b', 2, { origin: 'a@s1', sizeBytes: 2 ** 50 });
      await m.commit([{ op: 'putBranch', branch: branch(1) }, { op: 'putDisk', disk: a }, { op: 'setBranchNext', value: 2 }]);
      await m.commit([{ op: 'putBranch', branch: branch(2, 1, 41) }, { op: 'putDisk', disk: b }, { op: 'setBranchNext', value: 3 }]);
      const got = await m.load();
      assert.deepEqual(got.disks.sort((x, y) => x.name.localeCompare(y.name)), [a, b]);
      assert.deepEqual(got.branches.sort((x, y) => x.id - y.id), [branch(1), branch(2, 1, 41)]);
      assert.equal(got.branchNext, 3);
      assert.deepEqual(await m.getDisk('b'), b);
    }));

  test(`${name}: what is stored is a copy: changing the objects given or read back changes nothing`, () =>
    withStore(async (m) => {
      const a = disk('a', 1);
      await m.commit([{ op: 'putDisk', disk: a }]);
      a.sizeBytes = 4096;
      a.snapshots.push({ name: 'later', branch: 1, seq: 3, sizeBytes: 512, createdMs: 1 });
      const read = (await m.getDisk('a'))!;
      assert.equal(read.sizeBytes, 1 << 20);
      assert.deepEqual(read.snapshots, []);
      read.branch = 99;
      assert.equal((await m.load()).disks[0].branch, 1);
    }));

  test(`${name}: a put replaces, a delete removes, deleting what is not there is no error`, () =>
    withStore(async (m) => {
      await m.commit([{ op: 'putDisk', disk: disk('a', 1) }, { op: 'putBranch', branch: branch(1) }, { op: 'putBranch', branch: branch(7, 1, 3) }]);
      await m.commit([{ op: 'putDisk', disk: disk('a', 7, { sizeBytes: 4096 }) }]);
      assert.deepEqual(await m.getDisk('a'), disk('a', 7, { sizeBytes: 4096 }));
      await m.commit([{ op: 'deleteDisk', name: 'a' }, { op: 'deleteBranch', id: 1 }]);
      await m.commit([{ op: 'deleteDisk', name: 'never' }]);
      await m.commit([{ op: 'deleteBranch', id: 12345 }]);
      const got = await m.load();
      assert.deepEqual(got.disks, []);
      assert.deepEqual(got.branches, [branch(7, 1, 3)]);
    }));

  test(`${name}: every name the engine allows is listed, whatever it sorts next to`, () =>
    withStore(async (m) => {
      const names = ['a', 'a.b', 'a-b', 'a_b', 'A', '0', 'z'.repeat(128), 'b'];
      await m.commit(names.map((n, i) => ({ op: 'putDisk', disk: disk(n, i + 1) }) as MetaOp));
      const ids = [1, 2, 9, 10, 11, 100, 2 ** 32 - 1];
      await m.commit(ids.map((id) => ({ op: 'putBranch', branch: branch(id) }) as MetaOp));
      const got = await m.load();
      assert.deepEqual(got.disks.map((d) => d.name).sort(), [...names].sort());
      assert.deepEqual(got.branches.map((b) => b.id).sort((x, y) => x - y), ids);
    }));

  test(`${name}: invalid names, sizes and structures are refused, and nothing of their commit is made`, () =>
    withStore(async (m) => {
      await m.commit([{ op: 'putDisk', disk: disk('keep', 1) }]);
      const bad: [string, MetaOp][] = [
        ['an empty name', { op: 'putDisk', disk: disk('', 1) }],
        ['a name with a slash', { op: 'putDisk', disk: disk('a/b', 1) }],
        ['a name with @', { op: 'putDisk', disk: disk('a@b', 1) }],
        ['a name of 129 characters', { op: 'putDisk', disk: disk('x'.repeat(129), 1) }],
        ['a size not a multiple of 512', { op: 'putDisk', disk: disk('d', 1, { sizeBytes: 1000 }) }],
        ['a size of 0', { op: 'putDisk', disk: disk('d', 1, { sizeBytes: 0 }) }],
        ['a size over 1 PiB', { op: 'putDisk', disk: disk('d', 1, { sizeBytes: 2 ** 50 + 512 }) }],
        ['branch 0', { op: 'putDisk', disk: disk('d', 0) }],
        ['an origin that is not DISK@SNAP', { op: 'putDisk', disk: disk('d', 1, { origin: 'nope' }) }],
        ['snapshots that are not a list', { op: 'putDisk', disk: disk('d', 1, { snapshots: {} as never }) }],
        ['a snapshot named twice', { op: 'putDisk', disk: disk('d', 1, { snapshots: [{ name: 's', branch: 1, seq: 1, sizeBytes: 512, createdMs: 1 }, { name: 's', branch: 1, seq: 2, sizeBytes: 512, createdMs: 1 }] }) }],
        ['a snapshot with a negative seq', { op: 'putDisk', disk: disk('d', 1, { snapshots: [{ name: 's', branch: 1, seq: -1, sizeBytes: 512, createdMs: 1 }] }) }],
        ['a snapshot with a bad name', { op: 'putDisk', disk: disk('d', 1, { snapshots: [{ name: '.s', branch: 1, seq: 1, sizeBytes: 512, createdMs: 1 }] }) }],
        ...['-1', '012', '18446744073709551616', '1e3', ''].map((hlc): [string, MetaOp] => [`a snapshot with clock value ${JSON.stringify(hlc)}`, { op: 'putDisk', disk: disk('d', 1, { snapshots: [{ name: 's', branch: 1, seq: 1, sizeBytes: 512, createdMs: 1, hlc }] }) }]),
        ['a snapshot with a clock value as a number', { op: 'putDisk', disk: disk('d', 1, { snapshots: [{ name: 's', branch: 1, seq: 1, sizeBytes: 512, createdMs: 1, hlc: 7 as never }] }) }],
        ['a branch id of 0', { op: 'putBranch', branch: branch(0) }],
        ['a branch its own parent', { op: 'putBranch', branch: branch(3, 3, 1) }],
        ['a fresh branch forked somewhere', { op: 'putBranch', branch: branch(3, null, 5) }],
        ['a fractional fork seq', { op: 'putBranch', branch: branch(3, 1, 1.5) }],
        ['a counter of 0', { op: 'setBranchNext', value: 0 }],
        ['deleting a bad disk name', { op: 'deleteDisk', name: '' }],
        ['deleting branch -1', { op: 'deleteBranch', id: -1 }],
        ['an unknown operation', { op: 'rename' } as unknown as MetaOp],
      ];
      for (const [what, op] of bad) {
        await assert.rejects(m.commit([{ op: 'putDisk', disk: disk('other', 2) }, op]), (e) => code(e) === 'ENGINE_INVALID', what);
      }
      await assert.rejects(m.commit([]), (e) => code(e) === 'ENGINE_INVALID', 'an empty commit');
      await assert.rejects(m.commit([{ op: 'putDisk', disk: disk('two', 1) }, { op: 'deleteDisk', name: 'two' }]), (e) => code(e) === 'ENGINE_INVALID', 'one key twice');
      await assert.rejects(m.getDisk('a/b'), (e) => code(e) === 'ENGINE_INVALID', 'reading a bad name');
      const got = await m.load();
      assert.deepEqual(got.disks, [disk('keep', 1)], 'the valid parts of refused commits were not made');
      assert.deepEqual(got.branches, []);
    }));

  test(`${name}: damaged records are reported as ENGINE_CORRUPT when read`, async () => {
    const cases: [string, unknown][] = [
      ['disk/a', { name: 'a', branch: 'one', sizeBytes: 512, createdMs: 1, origin: null, snapshots: [] }],
      ['disk/a', { ...disk('b', 1) }],
      ['disk/a', 'not a record'],
      ['disk/a', disk('a', 1, { snapshots: [{ name: 's', branch: 1, seq: 1, sizeBytes: 512, createdMs: 1, hlc: 'soon' }] })],
      ['branch/4', branch(5)],
      ['branchNext', -3],
    ];
    for (const [key, value] of cases) {
      await withStore(async (m) => {
        await harness.damage(key, value);
        await assert.rejects(m.load(), (e) => code(e) === 'ENGINE_CORRUPT', `${key} = ${JSON.stringify(value)}`);
      });
    }
  });

  if (harness.reopen) {
    const reopen = harness.reopen;
    test(`${name}: what was committed is there after a reopen`, async () => {
      let m = await harness.open();
      try {
        await m.commit([{ op: 'putBranch', branch: branch(1) }, { op: 'putDisk', disk: disk('a', 1) }, { op: 'setBranchNext', value: 2 }]);
        await m.commit([{ op: 'putDisk', disk: disk('gone', 1) }]);
        await m.commit([{ op: 'deleteDisk', name: 'gone' }]);
        m = await reopen();
        assert.deepEqual(await m.load(), { disks: [disk('a', 1)], branches: [branch(1)], branchNext: 2 });
      } finally {
        await harness.close();
      }
    });
  }
}
