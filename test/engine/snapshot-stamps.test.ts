/**
 * Snapshots stamped with the node's hybrid logical clock (docs/engine.md, "LMDB databases";
 * docs/cluster.md, "Time"): a store given a clock stamps each snapshot with a new value, a group
 * snapshot with one value for every disk; a stamp given is recorded as given; a store without a
 * clock, and every snapshot of before stamps, shows none.
 */
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { EngineError, Store } from '../../src/engine/index.ts';
import { cleanup, makeTempDir } from '../helpers/index.ts';

after(cleanup);

/** A clock that counts up from `start`, and what it handed out. */
function counter(start: bigint): { read: () => bigint; handed: bigint[] } {
  const handed: bigint[] = [];
  let next = start;
  return {
    handed,
    read: () => {
      handed.push(next);
      return next++;
    },
  };
}

test('a store with a clock stamps each snapshot, a group with one value, and keeps the stamps across a reopen', async () => {
  const dir = makeTempDir('tessera-stamps-');
  const clock = counter(117047296000000005n);
  let store = await Store.open({ dir, maintenanceIntervalMs: 0, hlc: clock.read });
  try {
    await store.createDisk('a', 1 << 20);
    await store.createDisk('b', 1 << 20);
    const s1 = await store.createSnapshot('a', 's1');
    assert.equal(s1.hlc, '117047296000000005');
    const group = await store.createSnapshots(['a', 'b'], 'g');
    assert.deepEqual(group.map((s) => s.hlc), ['117047296000000006', '117047296000000006'], 'one value for the whole group');
    assert.equal(clock.handed.length, 2, 'one clock value a snapshot call');
    // A stamp given (a replica records its head's) is recorded as given; null records none.
    assert.equal((await store.createSnapshot('b', 'given', { hlc: 5n })).hlc, '5');
    assert.equal((await store.createSnapshot('b', 'none', { hlc: null })).hlc, null);
    assert.equal(clock.handed.length, 2, 'the clock is not read for a snapshot given its stamp');
    for (const hlc of [-1n, 2n ** 64n]) {
      await assert.rejects(store.createSnapshot('b', 'bad', { hlc }), (err) => err instanceof EngineError && err.code === 'ENGINE_INVALID' && /clock value/.test(err.message));
    }
    assert.deepEqual(store.listSnapshots('b').map((s) => s.name), ['g', 'given', 'none'], 'nothing taken with a bad stamp');
  } finally {
    await store.close();
  }
  // Reopened without a clock: the stamps are the store's, not the clock's.
  store = await Store.open({ dir, maintenanceIntervalMs: 0 });
  try {
    assert.deepEqual(store.listSnapshots('a').map((s) => [s.name, s.hlc]), [['s1', '117047296000000005'], ['g', '117047296000000006']]);
    assert.deepEqual(store.listSnapshots('b').map((s) => [s.name, s.hlc]), [['g', '117047296000000006'], ['given', '5'], ['none', null]]);
    // Without a clock a snapshot carries none.
    assert.equal((await store.createSnapshot('a', 'plain')).hlc, null);
  } finally {
    await store.close();
  }
});
