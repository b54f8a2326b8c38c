/**
 * The node's latency wrapper (src/node/latency-volume.ts): it keeps the Volume contract (the
 * conformance suite through it, over the in-memory volume, with a small random profile), holds
 * each reply until its emulated device would have ended the request (flushes and FUA writes
 * included, metadata queries never), and takes a profile set or removed at the next request.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatencyVolume } from '../../src/node/latency-volume.ts';
import { DelayQueue, LatencyDevice } from '../../src/flow/index.ts';
import type { LatencyProfile } from '../../src/flow/index.ts';
import { volumeConformance } from '../engine/volume-conformance.ts';
import { MemoryStore } from '../nbd/memory-volume.ts';

const queue = new DelayQueue();
const fixed = (us: number) => ({ medianUs: us, p99Us: us });

volumeConformance('LatencyVolume', {
  lacks: { crash: 'it delays and delegates; the volume under it (here in memory) is what survives a crash or not' },
  async open(sizeBytes) {
    const store = new MemoryStore();
    store.createDisk('d', sizeBytes);
    const device = new LatencyDevice({ name: 'quick', parallel: 4, read: { medianUs: 20, p99Us: 200 }, write: { medianUs: 20, p99Us: 300 }, sequential: fixed(5), flush: fixed(50) });
    const delayed = (name: string) => new LatencyVolume(store.openExport(name), { device: () => device, queue });
    return {
      volume: delayed('d'),
      initial: Buffer.alloc(sizeBytes),
      openHandle: () => delayed('d'),
      snapshot: async (name) => store.snapshot('d', name),
      openSnapshot: (name) => delayed(`d@${name}`),
      resize: async (bytes) => store.resize('d', bytes),
      async dispose() {},
    };
  },
});

test('latency volume: replies wait for the emulated device (FUA adds a flush, metadata queries do not wait); a profile set or removed applies at the next request', async () => {
  const store = new MemoryStore();
  store.createDisk('d', 1 << 20);
  const profile: LatencyProfile = { name: 'slow', parallel: 1, read: fixed(20_000), write: fixed(30_000), flush: fixed(10_000) };
  let device: LatencyDevice | null = null;
  const v = new LatencyVolume(store.openExport('d'), { device: () => device, queue });
  const took = async (fn: () => Promise<unknown>): Promise<number> => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  assert.ok((await took(() => v.read(0, 4096))) < 15, 'no profile: the store\'s own speed');
  device = new LatencyDevice(profile);
  assert.ok((await took(() => v.read(0, 4096))) >= 19.9);
  assert.ok((await took(() => v.write(8192, Buffer.alloc(4096, 1)))) >= 29.9);
  assert.ok((await took(() => v.write(65536, Buffer.alloc(4096, 2), { fua: true }))) >= 39.9, 'FUA: the write and a flush');
  assert.ok((await took(() => v.flush())) >= 9.9);
  assert.ok((await took(() => v.trim(0, 4096))) >= 29.9);
  assert.ok((await took(() => v.writeZeroes(0, 4096))) >= 29.9);
  assert.ok((await took(() => v.blockStatus(0, 1 << 20))) < 15, 'metadata is not the device\'s I/O');
  // One slot: two reads at once end one after the other.
  assert.ok((await took(() => Promise.all([v.read(0, 512), v.read(1 << 19, 512)]))) >= 39.9, 'the second waits for the first');
  assert.deepEqual(await v.read(8192, 4), Buffer.alloc(4, 1), 'the data is the store\'s');
  device = null;
  assert.ok((await took(() => v.read(0, 4096))) < 15, 'removed: at the next request');
  v.close();
});
