import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OrderQueue } from '../../../src/cluster/chain/order.ts';
import { RangeSet } from '../../../src/cluster/chain/ranges.ts';
import { compareIds, orderOf } from '../../../src/cluster/chain/ops.ts';
import type { ChainOp, OpMessage } from '../../../src/cluster/chain/ops.ts';
import { ChainReplica } from '../../../src/cluster/chain/replica.ts';
import { ClusterError, ClusterErrorCode } from '../../../src/cluster/errors.ts';
import { Rng, testSeed } from '../../helpers/index.ts';

test('RangeSet gaps are exactly the bytes no added range covers (seeded, against a byte map)', (t) => {
  const rng = new Rng(testSeed(t));
  for (let round = 0; round < 200; round++) {
    const set = new RangeSet();
    const covered = new Uint8Array(512);
    for (let i = rng.int(12); i > 0; i--) {
      const a = rng.int(512);
      const b = Math.min(512, a + rng.int(64));
      set.add(a, b);
      covered.fill(1, a, b);
    }
    const a = rng.int(512);
    const b = a + rng.int(512 - a + 1);
    const want: Array<[number, number]> = [];
    for (let x = a; x < b; x++) {
      if (covered[x]) continue;
      const last = want.at(-1);
      if (last !== undefined && last[1] === x) last[1] = x + 1;
      else want.push([x, x + 1]);
    }
    assert.deepEqual(set.gaps(a, b), want, `round ${round}: gaps(${a}, ${b})`);
  }
});

test('RangeSet merges touching and overlapping ranges', () => {
  const set = new RangeSet();
  set.add(10, 20);
  set.add(30, 40);
  set.add(20, 30);
  assert.equal(set.size, 1);
  assert.deepEqual(set.gaps(0, 50), [[0, 10], [40, 50]]);
});

test('OrderQueue runs overlapping ops in call order, others at once; a barrier waits for all and holds all', async () => {
  const q = new OrderQueue();
  const log: string[] = [];
  const gate = Promise.withResolvers<void>();
  const w1 = q.run(orderOf({ kind: 'write', offset: 0, data: Buffer.alloc(4096), fua: false }, 4096), async () => {
    await gate.promise;
    log.push('w1');
  });
  const w2 = q.run(orderOf({ kind: 'write', offset: 100, data: Buffer.alloc(10), fua: false }, 4096), async () => log.push('w2 (overlaps w1)'));
  const w3 = q.run(orderOf({ kind: 'write', offset: 8192, data: Buffer.alloc(4096), fua: false }, 4096), async () => log.push('w3 (apart)'));
  const snap = q.run(orderOf({ kind: 'snapshot', name: 's' }, 4096), async () => log.push('snapshot'));
  const w4 = q.run(orderOf({ kind: 'write', offset: 1 << 20, data: Buffer.alloc(4096), fua: false }, 4096), async () => log.push('w4 (after the snapshot)'));
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(log, ['w3 (apart)']);
  gate.resolve();
  await Promise.all([w1, w2, w3, snap, w4]);
  assert.deepEqual(log, ['w3 (apart)', 'w1', 'w2 (overlaps w1)', 'snapshot', 'w4 (after the snapshot)']);
  assert.equal(q.size, 0);
});

test('op ids compare by epoch, then n', () => {
  assert.ok(compareIds([2, 1], [1, 99]) > 0);
  assert.ok(compareIds([3, 4], [3, 5]) < 0);
  assert.equal(compareIds([3, 4], [3, 4]), 0);
});

/** A replica whose store applies when told, and whose forwards settle when told. */
function replicaWithGates(node: string): { replica: ChainReplica; applies: Array<() => void>; forwards: Array<{ msg: OpMessage; ok: () => void; fail: (err: Error) => void }> } {
  const applies: Array<() => void> = [];
  const forwards: Array<{ msg: OpMessage; ok: () => void; fail: (err: Error) => void }> = [];
  const replica = new ChainReplica({
    disk: 'd',
    node,
    store: { blockBytes: 4096, apply: () => new Promise<void>((resolve) => applies.push(resolve)), read: async () => Buffer.alloc(0) },
    transport: { forward: (_node, msg) => new Promise<void>((ok, fail) => forwards.push({ msg, ok, fail })) },
    limits: { retryMs: 1 },
  });
  return { replica, applies, forwards };
}

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));
const write = (offset: number): ChainOp => ({ kind: 'write', offset, data: Buffer.alloc(4096, 1), fua: false });

test('a write\'s data is released once applied, acknowledged downstream and no forward holds it; once, and never before', async () => {
  const { replica, applies, forwards } = replicaWithGates('a');
  replica.configure({ epoch: 1, chain: ['a', 'b'] });
  let released = 0;
  const done = replica.submit(write(0), { release: () => released++ });
  await tick();
  assert.equal(forwards.length, 1);
  forwards[0].ok();
  await tick();
  assert.equal(released, 0, 'not while the local apply runs');
  applies[0]();
  await done;
  assert.equal(released, 1);

  // Acknowledged by a resend while the first forward is still out (the link to b was replaced):
  // done for the client, but the data stays held until that first forward lets go of it.
  const second = replica.submit(write(4096), { release: () => released++ });
  await tick();
  replica.configure({ epoch: 2, chain: ['a', 'c'] });
  await tick();
  assert.equal(forwards.length, 3, 'resent to c');
  forwards[2].ok();
  applies[1]();
  await second;
  assert.equal(released, 1, 'the forward to b still holds the data');
  forwards[1].fail(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, 'b went away'));
  await tick();
  assert.equal(released, 2);
});

test('a write refused, or received twice, is released at once; a failed one once its forward settles', async () => {
  const { replica, applies, forwards } = replicaWithGates('b');
  replica.configure({ epoch: 3, chain: ['a', 'b', 'c'] });
  let released = 0;
  const release = (): void => void released++;
  const msg = (n: number, prev: number | null, restart: boolean): OpMessage => ({ disk: 'd', epoch: 3, id: [3, n], prev: prev === null ? null : [3, prev], restart, op: write(0) });
  await assert.rejects(replica.receive({ ...msg(1, null, true), epoch: 2 }, release), /older/);
  assert.equal(released, 1, 'refused: at once');
  const first = replica.receive(msg(1, null, true), release);
  const again = replica.receive(msg(1, null, true), release);
  assert.equal(released, 2, 'the duplicate: at once; the first is held');
  await tick();
  replica.fence('a test');
  await assert.rejects(first, /fenced/);
  await assert.rejects(again, /fenced/);
  assert.equal(released, 2, 'failed, but the apply and the forward still hold it');
  applies[0]();
  await tick();
  assert.equal(released, 2);
  forwards[0].fail(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, 'gone'));
  await tick();
  assert.equal(released, 3);
});

test('a hold keeps every op but its own out of the stream until released, so its ops stand at one point; fencing lets the held go', async () => {
  const { replica, forwards } = replicaWithGates('a');
  replica.configure({ epoch: 1, chain: ['a', 'b'] });
  const before = replica.submit(write(0));
  const hold = replica.hold();
  assert.throws(() => replica.hold(), /one hold at a time/);
  const held = [replica.submit(write(4096)), replica.submit({ kind: 'snapshot', name: 'sync' }, { internal: true })];
  let taken = false;
  const own = replica.submit({ kind: 'snapshot', name: 'g' }, { hold, taken: () => (taken = true) });
  await tick();
  assert.ok(taken, 'the hold\'s own op has its id');
  assert.deepEqual(forwards.map((f) => f.msg.id), [[1, 1], [1, 2]], 'the op before the hold, then the hold\'s own; nothing held');
  hold.release();
  await tick();
  assert.deepEqual(forwards.map((f) => f.msg.op.kind), ['write', 'snapshot', 'write', 'snapshot'], 'the held ops after it, in order');
  replica.fence('a test');
  await Promise.allSettled([before, own, ...held]);

  // Fenced while holding: the ops held are let go, and fail.
  const { replica: r2 } = replicaWithGates('a');
  r2.configure({ epoch: 1, chain: ['a', 'b'] });
  r2.hold();
  const waiting = r2.submit(write(0));
  await tick();
  r2.fence('a test');
  await assert.rejects(waiting, /fenced/);
});
