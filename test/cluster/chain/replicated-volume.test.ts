/**
 * The Volume conformance suite (test/engine/volume-conformance.ts) against a replicated disk's
 * volume at its head: three real stores, one ChainReplica each, a transport that hands ops from
 * one replica to the next in process (on a later turn, as a network would). After each test
 * the three copies must hold the same bytes, and the same snapshots with the same stamps: each
 * node has a clock of its own (its store's and its replica's), and every replica records the
 * value the head's took.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after } from 'node:test';
import { Store } from '../../../src/engine/index.ts';
import { ChainReplica } from '../../../src/cluster/chain/replica.ts';
import { EngineReplicaStore } from '../../../src/cluster/chain/engine-store.ts';
import { ReplicatedVolume } from '../../../src/cluster/chain/volume.ts';
import type { ChainTransport } from '../../../src/cluster/chain/replica.ts';
import { cleanup, makeTempDir } from '../../helpers/index.ts';
import { volumeConformance } from '../../engine/volume-conformance.ts';

after(cleanup);

const KiB = 1024;
const NODES = ['n1', 'n2', 'n3'];

/** A digest of every byte of a disk, to compare the replicas. */
async function digest(store: Store, disk: string): Promise<string> {
  const v = store.openVolume(disk);
  const h = createHash('sha256');
  for (let at = 0; at < v.sizeBytes; at += 256 * KiB) h.update(await v.read(at, Math.min(256 * KiB, v.sizeBytes - at)));
  v.close();
  return h.digest('hex');
}

volumeConformance('ReplicatedVolume (3 replicas)', {
  lacks: { crash: 'a replicated disk survives the loss of a node by failover (test/cluster/), not by one store recovering' },
  async open(sizeBytes) {
    const base = makeTempDir('tessera-replicated-volume-');
    const stores = new Map<string, Store>();
    const replicas = new Map<string, ChainReplica>();
    const locals: EngineReplicaStore[] = [];
    const transport: ChainTransport = {
      forward: (node, msg) => new Promise((resolve, reject) => setImmediate(() => replicas.get(node)!.receive(msg).then(resolve, reject))),
    };
    for (const [i, node] of NODES.entries()) {
      // Clocks far apart: a stamp tells whose clock took it.
      let ticks = BigInt(i + 1) << 40n;
      const clock = (): bigint => ticks++;
      const store = await Store.open({ dir: join(base, node), segmentBytesMax: 128 * KiB, maintenanceIntervalMs: 0, applyDelayMs: 1, hlc: clock });
      await store.createDisk('d', sizeBytes);
      stores.set(node, store);
      const local = new EngineReplicaStore(store, 'd');
      locals.push(local);
      replicas.set(node, new ChainReplica({ disk: 'd', node, store: local, transport, clock }));
    }
    for (const node of [...NODES].reverse()) replicas.get(node)!.configure({ epoch: 1, chain: NODES });
    const head = replicas.get('n1')!;
    const headStore = stores.get('n1')!;
    const open = (): ReplicatedVolume => new ReplicatedVolume(head, headStore.openVolume('d'));
    return {
      volume: open(),
      initial: Buffer.alloc(sizeBytes),
      openHandle: open,
      snapshot: (name) => head.submit({ kind: 'snapshot', name }),
      openSnapshot: (name) => headStore.openVolume('d', name),
      resize: (bytes) => head.submit({ kind: 'resize', sizeBytes: bytes }),
      async dispose() {
        await Promise.all([...replicas.values()].map((r) => r.idle()));
        const digests = await Promise.all(NODES.map((n) => digest(stores.get(n)!, 'd')));
        const snaps = NODES.map((n) => stores.get(n)!.listSnapshots('d').map((s) => `${s.name}:${s.hlc}`).join(','));
        const stamps = stores.get('n1')!.listSnapshots('d').map((s) => BigInt(s.hlc!));
        assert.ok(stamps.every((h, i) => h >> 40n === 1n && (i === 0 || h > stamps[i - 1]!)), `every snapshot stamped by the head's clock, rising: ${snaps[0]}`);
        for (const r of replicas.values()) r.close();
        for (const l of locals) l.close();
        for (const s of stores.values()) await s.close();
        assert.deepEqual(new Set(digests).size, 1, `the replicas differ: ${NODES.map((n, i) => `${n} ${digests[i].slice(0, 12)}`).join(', ')}`);
        assert.deepEqual(new Set(snaps).size, 1, `the replicas' snapshots differ: ${snaps.join(' | ')}`);
      },
    };
  },
});
