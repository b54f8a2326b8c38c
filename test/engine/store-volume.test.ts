/**
 * The Volume conformance suite (volume-conformance.ts) against the store's own volumes, with a
 * crash that loses what a power failure would: every byte of a log segment that no fdatasync
 * covered. (The index is taken as it is: LMDB makes its own commits durable, and it only ever
 * points at synced log bytes.)
 */
import fs from 'node:fs';
import { join } from 'node:path';
import { after, mock } from 'node:test';
import { Store, type Volume } from '../../src/engine/index.ts';
import { cleanup, makeTempDir } from '../helpers/index.ts';
import { volumeConformance } from './volume-conformance.ts';

after(cleanup);

/** Per file (its real path): how many bytes the last fdatasync of it covered. */
const durableBytes = new Map<string, number>();

function noteSync(fd: number): void {
  // The file's size when the sync is asked for: every write completed before it is covered.
  durableBytes.set(fs.readlinkSync(`/proc/self/fd/${fd}`), fs.fstatSync(fd).size);
}

const fdatasync = fs.fdatasync;
const fdatasyncSync = fs.fdatasyncSync;
mock.method(fs, 'fdatasync', (fd: number, callback: (err: NodeJS.ErrnoException | null) => void) => {
  noteSync(fd);
  fdatasync(fd, callback);
});
mock.method(fs, 'fdatasyncSync', (fd: number) => {
  noteSync(fd);
  fdatasyncSync(fd);
});

/**
 * Copies a store directory as a power failure would leave it: each log segment cut to the bytes
 * its last fdatasync covered (none: a segment never synced is lost whole), the LMDB lock file
 * left behind (it belongs to the running process).
 */
function copyAsAfterPowerLoss(from: string, to: string): void {
  fs.cpSync(from, to, { recursive: true, filter: (src) => !src.endsWith('lock.mdb') });
  const logDir = join(to, 'log');
  for (const name of fs.readdirSync(logDir)) {
    const durable = durableBytes.get(fs.realpathSync(join(from, 'log', name))) ?? 0;
    if (durable === 0) fs.rmSync(join(logDir, name));
    else fs.truncateSync(join(logDir, name), durable);
  }
  // What survived is on the disk of the machine that restarts: durable as it is.
  for (const name of fs.readdirSync(logDir)) durableBytes.set(fs.realpathSync(join(logDir, name)), fs.statSync(join(logDir, name)).size);
}

const KiB = 1024;

volumeConformance('StoreVolume', {
  async open(sizeBytes) {
    const base = makeTempDir('tessera-store-volume-');
    // Small segments, so a test crosses several; records reach the index a millisecond after they
    // are durable (through the index writer's thread); nothing is synced but by flush and FUA.
    const options = { segmentBytesMax: 128 * KiB, maintenanceIntervalMs: 0, applyDelayMs: 1, syncIntervalMs: 3_600_000 };
    const stores: Store[] = [];
    let n = 0;
    let store = await Store.open({ dir: join(base, `store${n}`), ...options });
    stores.push(store);
    await store.createDisk('d', sizeBytes);
    const volume: Volume = store.openVolume('d');
    return {
      volume,
      initial: Buffer.alloc(sizeBytes),
      openHandle: () => store.openVolume('d'),
      snapshot: async (name) => void (await store.createSnapshot('d', name)),
      openSnapshot: (name) => store.openVolume('d', name),
      resize: async (bytes) => void (await store.resizeDisk('d', bytes)),
      async crash() {
        const from = store.dir;
        const to = join(base, `store${++n}`);
        copyAsAfterPowerLoss(from, to);
        store = await Store.open({ dir: to, ...options });
        stores.push(store);
        return store.openVolume('d');
      },
      async dispose() {
        for (const s of stores) await s.close();
      },
    };
  },
});
