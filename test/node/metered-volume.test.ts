/**
 * The node's counting wrapper (src/node/metered-volume.ts) keeps the Volume contract: the
 * conformance suite runs through it over the in-memory volume, and once every handle is closed
 * nothing is left in flight or open in its disk's counters.
 */
import assert from 'node:assert/strict';
import { MeteredVolume } from '../../src/node/metered-volume.ts';
import { DiskIoStats } from '../../src/observe/index.ts';
import { volumeConformance } from '../engine/volume-conformance.ts';
import { MemoryStore } from '../nbd/memory-volume.ts';

volumeConformance('MeteredVolume', {
  lacks: { crash: 'it counts and delegates; the volume under it (here in memory) is what survives a crash or not' },
  async open(sizeBytes) {
    const store = new MemoryStore();
    store.createDisk('d', sizeBytes);
    const disks = new DiskIoStats();
    const stats = disks.of('d');
    const metered = (name: string) => new MeteredVolume(store.openExport(name), stats);
    return {
      volume: metered('d'),
      initial: Buffer.alloc(sizeBytes),
      openHandle: () => metered('d'),
      snapshot: async (name) => store.snapshot('d', name),
      openSnapshot: (name) => metered(`d@${name}`),
      resize: async (bytes) => store.resize('d', bytes),
      async dispose() {
        assert.equal(stats.inFlight, 0, 'every operation ended');
        assert.equal(stats.users, 0, 'every handle the suite opened was closed, each counted once');
      },
    };
  },
});
