/**
 * Model-based test through real NBD connections to the real engine Store: seeded random sequences
 * of aligned and unaligned writes, zeroes, trims, reads, flushes and block status queries, issued
 * concurrently on two connections (one structured, one simple), checked byte-exactly against an
 * in-memory model. Also checks changed-since against the writes made after a snapshot.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Store } from '../../src/engine/index.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { CommandFlag } from '../../src/nbd/protocol.ts';
import { cleanup, makeTempDir, Rng, seededBytes, testSeed } from '../helpers/index.ts';
import { NbdClient, type Target } from './client.ts';
import { storeProvider } from './harness.ts';

const SIZE = 4 * 1024 * 1024;
const SECTOR = 512;
const BLOCK = 4096;

let store: Store;
let server: NbdServer;
let target: Target;

before(async () => {
  store = await Store.open({ dir: makeTempDir('tessera-nbd-store-') });
  server = new NbdServer({ provider: storeProvider(store) });
  target = await server.listenTcp({ host: '127.0.0.1', port: 0 });
});

after(async () => {
  await server.close();
  await store.close();
  await cleanup();
});

interface Op {
  kind: 'write' | 'zero' | 'trim' | 'read' | 'flush' | 'status';
  offset: number;
  length: number;
  flags: number;
}

/** A range: sometimes block-aligned, sometimes sector-aligned, sometimes any bytes. */
function randomRange(rng: Rng): { offset: number; length: number } {
  const unit = [1, SECTOR, BLOCK][rng.int(3)];
  const maxUnits = Math.floor((rng.int(4) === 0 ? 300 * 1024 : 20 * 1024) / unit) + 1;
  const length = rng.range(1, maxUnits) * unit;
  const offset = rng.int(Math.floor((SIZE - length) / unit) + 1) * unit;
  return { offset, length };
}

function randomOp(rng: Rng): Op {
  const roll = rng.int(100);
  const kind: Op['kind'] = roll < 35 ? 'write' : roll < 45 ? 'zero' : roll < 53 ? 'trim' : roll < 85 ? 'read' : roll < 90 ? 'flush' : 'status';
  if (kind === 'flush') return { kind, offset: 0, length: 0, flags: 0 };
  const { offset, length } = randomRange(rng);
  let flags = 0;
  if (kind === 'write' || kind === 'zero' || kind === 'trim') flags |= rng.int(4) === 0 ? CommandFlag.FUA : 0;
  if (kind === 'zero') flags |= (rng.int(2) ? CommandFlag.NO_HOLE : 0) | (rng.int(2) ? CommandFlag.FAST_ZERO : 0);
  return { kind, offset, length, flags };
}

function overlaps(a: Op, b: Op): boolean {
  if (a.kind === 'flush' || b.kind === 'flush') return false;
  return a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

test('store model: random operations through NBD match an in-memory model byte for byte', async (t) => {
  const seed = testSeed(t);
  for (let sequence = 0; sequence < 10; sequence++) {
    const rng = new Rng(seed + sequence);
    const name = `model-${sequence}`;
    await store.createDisk(name, SIZE);
    const model = Buffer.alloc(SIZE);
    const clients = [
      await NbdClient.connect(target, { exportName: name, metaContexts: ['base:allocation'] }),
      await NbdClient.connect(target, { exportName: name, structured: false }),
    ];
    const where = (i: number, op: Op) => `seed ${seed} sequence ${sequence} op ${i} ${op.kind} ${op.offset}+${op.length} flags ${op.flags}`;
    let done = 0;
    while (done < 200) {
      // A batch of requests on disjoint ranges runs concurrently: the model's order does not matter.
      const batch: Op[] = [];
      const size = rng.range(1, 8);
      while (batch.length < size) {
        const op = randomOp(rng);
        if (batch.some((b) => overlaps(b, op))) break;
        batch.push(op);
      }
      const before = Buffer.from(model);
      await Promise.all(
        batch.map(async (op, j) => {
          const i = done + j;
          const client = op.kind === 'status' ? clients[0] : clients[rng.int(2)];
          switch (op.kind) {
            case 'write': {
              const data = seededBytes(seed, `${sequence}:${i}`, op.length);
              await client.write(op.offset, data, op.flags);
              data.copy(model, op.offset);
              break;
            }
            case 'zero':
              await client.writeZeroes(op.offset, op.length, op.flags);
              model.fill(0, op.offset, op.offset + op.length);
              break;
            case 'trim':
              await client.trim(op.offset, op.length, op.flags);
              model.fill(0, op.offset, op.offset + op.length);
              break;
            case 'read': {
              const got = await client.read(op.offset, op.length);
              assert.ok(got.equals(before.subarray(op.offset, op.offset + op.length)), where(i, op));
              break;
            }
            case 'flush':
              await client.flush();
              break;
            case 'status': {
              const extents = (await client.blockStatus(op.offset, op.length)).get('base:allocation')!;
              let at = op.offset;
              for (const e of extents) {
                assert.ok(e.length > 0 && at + e.length <= op.offset + op.length, where(i, op));
                // Whatever reports ZERO must read as zeroes.
                if (e.flags & 2) assert.ok(before.subarray(at, at + e.length).every((b) => b === 0), `${where(i, op)} zero extent at ${at}`);
                at += e.length;
              }
              break;
            }
          }
        }),
      );
      done += batch.length;
    }
    const whole = await clients[1].read(0, SIZE);
    assert.ok(whole.equals(model), `seed ${seed} sequence ${sequence}: final contents`);
    for (const client of clients) await client.disconnect();
    await store.deleteDisk(name);
  }
});

test('store model: changed-since reports every sector written after the snapshot and nothing outside touched blocks', async (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  await store.createDisk('tracked', SIZE);
  const client = await NbdClient.connect(target, { exportName: 'tracked' });
  for (let i = 0; i < 20; i++) {
    const { offset, length } = randomRange(rng);
    await client.write(offset, seededBytes(seed, `before:${i}`, length));
  }
  await client.disconnect();
  await store.createSnapshot('tracked', 'base');
  const dirty = new Uint8Array(SIZE / SECTOR);
  const touched = new Uint8Array(SIZE / BLOCK);
  const after = await NbdClient.connect(target, {
    exportName: 'tracked',
    metaContexts: ['tessera:changed-since:base', 'qemu:dirty-bitmap:base'],
  });
  assert.equal(after.contexts.size, 2);
  for (let i = 0; i < 15; i++) {
    const { offset, length } = randomRange(rng);
    const zeroes = rng.int(3) === 0;
    if (zeroes) await after.writeZeroes(offset, length);
    else await after.write(offset, seededBytes(seed, `after:${i}`, length));
    // Zeroes over what was already zero may or may not count as a change; data always does.
    if (!zeroes) for (let s = Math.floor(offset / SECTOR); s * SECTOR < offset + length; s++) dirty[s] = 1;
    for (let b = Math.floor(offset / BLOCK); b * BLOCK < offset + length; b++) touched[b] = 1;
  }
  const changed = new Uint8Array(SIZE / SECTOR);
  for (const context of ['tessera:changed-since:base', 'qemu:dirty-bitmap:base']) {
    changed.fill(0);
    // Walk the whole disk the way clients do: ask again from where the last reply ended.
    let at = 0;
    while (at < SIZE) {
      const extents = (await after.blockStatus(at, SIZE - at)).get(context)!;
      for (const e of extents) {
        assert.equal(e.length % SECTOR, 0, 'sector-granular');
        if (e.flags & 1) changed.fill(1, at / SECTOR, (at + e.length) / SECTOR);
        at += e.length;
      }
    }
    for (let s = 0; s < dirty.length; s++) {
      if (dirty[s]) assert.equal(changed[s], 1, `seed ${seed} ${context}: sector ${s} written but not reported`);
      if (changed[s]) assert.equal(touched[Math.floor((s * SECTOR) / BLOCK)], 1, `seed ${seed} ${context}: sector ${s} reported but untouched`);
    }
  }
  await after.disconnect();
  // The snapshot export is read-only and reads the old contents.
  const snap = await NbdClient.connect(target, { exportName: 'tracked@base' });
  assert.ok(snap.transmissionFlags & 2, 'READ_ONLY flag');
  await assert.rejects(snap.write(0, Buffer.alloc(512)), (err: { errno?: number }) => err.errno === 1);
  await snap.disconnect();
});
