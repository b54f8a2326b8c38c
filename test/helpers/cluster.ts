/**
 * What the cluster tests share (docs/cluster.md, "Tests on real nodes"): the digest of a
 * replica's copy read from its store on disk once its node stopped, and of a file; the stamps
 * of its snapshots there.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Store } from '../../src/engine/index.ts';
import { MiB } from './data.ts';

/** SHA-256 of each disk's bytes as the store of a stopped node's data directory holds them. */
export async function storeDigests(dataDir: string, disks: readonly string[]): Promise<string[]> {
  const store = await Store.open({ dir: join(dataDir, 'store'), readOnly: true });
  try {
    const out: string[] = [];
    for (const disk of disks) {
      const v = store.openVolume(disk);
      const h = createHash('sha256');
      for (let at = 0; at < v.sizeBytes; at += 4 * MiB) h.update(await v.read(at, Math.min(4 * MiB, v.sizeBytes - at)));
      v.close();
      out.push(h.digest('hex'));
    }
    return out;
  } finally {
    await store.close();
  }
}

/** `name → hlc` of a disk's snapshots in a stopped node's own store, sync snapshots included. */
export async function storedStamps(dataDir: string, disk: string): Promise<Map<string, string | null>> {
  const store = await Store.open({ dir: join(dataDir, 'store'), readOnly: true });
  try {
    return new Map(store.listSnapshots(disk).map((s) => [s.name, s.hlc]));
  } finally {
    await store.close();
  }
}

/** SHA-256 of one disk of a stopped node's store. */
export async function storeDigest(dataDir: string, disk: string): Promise<string> {
  return (await storeDigests(dataDir, [disk]))[0];
}

/** SHA-256 of a file's bytes. */
export function fileDigest(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}
