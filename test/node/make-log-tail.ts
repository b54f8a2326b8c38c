/**
 * Leaves a store with a long log tail the index has not absorbed, as a node killed before its
 * index caught up would: `node make-log-tail.ts STORE_DIR DISK RECORDS` writes RECORDS 4 KiB
 * blocks to a new disk, makes them durable, and exits without closing the store. The next open
 * replays them all (the readiness test watches /readyz meanwhile).
 */
import { Store } from '../../src/engine/index.ts';

const [dir, disk, recordsText] = process.argv.slice(2);
const records = Number(recordsText);
// Nothing reaches the index on its own: no apply timer fires, no background pass runs.
const store = await Store.open({ dir, applyDelayMs: 3_600_000, maintenanceIntervalMs: 0 });
await store.createDisk(disk, 1 << 30);
const vol = store.openVolume(disk);
const block = Buffer.alloc(4096, 0x5a);
const pending: Promise<void>[] = [];
for (let i = 0; i < records; i++) {
  // Scattered blocks: one record each, never merged.
  pending.push(vol.write(((i * 7919) % 262_144) * 4096, block));
  if (pending.length >= 256) await Promise.all(pending.splice(0));
}
await Promise.all(pending);
await vol.flush();
const lag = store.metrics().applyLagRecords;
if (lag !== records) throw new Error(`expected ${records} records outside the index, got ${lag}`);
process.stdout.write(`${lag}\n`);
process.exit(0);
