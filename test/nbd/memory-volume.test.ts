/** The Volume conformance suite against the NBD tests' in-memory volume (memory-volume.ts). */
import { volumeConformance } from '../engine/volume-conformance.ts';
import { MemoryStore } from './memory-volume.ts';

volumeConformance('MemoryVolume', {
  lacks: { crash: 'it keeps everything in memory, which no crash survives; the NBD tests check that FUA and flush reach it (fuaLog, flushes)' },
  async open(sizeBytes) {
    const store = new MemoryStore();
    store.createDisk('d', sizeBytes);
    return {
      volume: store.openExport('d'),
      initial: Buffer.alloc(sizeBytes),
      openHandle: () => store.openExport('d'),
      snapshot: async (name) => store.snapshot('d', name),
      openSnapshot: (name) => store.openExport(`d@${name}`),
      resize: async (bytes) => store.resize('d', bytes),
      async dispose() {},
    };
  },
});
