import type { Store } from '../engine/index.ts';
import type { Replication } from '../cluster/index.ts';
import type { ExportProvider } from '../nbd/index.ts';

/** An ExportProvider over a store; listSnapshots is always there. */
export type StoreExports = Required<ExportProvider>;

/** Splits an export name into a disk and, for `DISK@SNAP`, a snapshot. */
function parseExportName(name: string): { disk: string; snap: string | null } {
  const at = name.indexOf('@');
  return at < 0 ? { disk: name, snap: null } : { disk: name.slice(0, at), snap: name.slice(at + 1) };
}

/**
 * Exports of a store: every disk as `NAME` (read-write, its head) and every snapshot as
 * `NAME@SNAP` (read-only). Unknown names fail in the engine with ENGINE_NOT_FOUND, which the
 * NBD server reports to the client.
 */
export function storeExports(store: Store): StoreExports {
  return {
    listExports() {
      const names: string[] = [];
      for (const disk of store.listDisks()) {
        names.push(disk.name);
        for (const snap of disk.snapshots) names.push(`${disk.name}@${snap}`);
      }
      return names;
    },
    openExport(name) {
      const { disk, snap } = parseExportName(name);
      return store.openVolume(disk, snap);
    },
    listSnapshots(exportName) {
      // The snapshots a volume can report changes since: all of its disk's for the head, the
      // older ones for a snapshot view.
      const { disk, snap } = parseExportName(exportName);
      const names = store.listSnapshots(disk).map((s) => s.name);
      return snap === null ? names : names.slice(0, Math.max(0, names.indexOf(snap)));
    },
  };
}

/**
 * Exports of a cluster node: every disk of the cluster as `NAME` (its head's volume here, or a
 * gateway to it), and `NAME@SNAP` for the snapshots of disks this node holds a copy of. The
 * cluster's own sync snapshots are not exported.
 */
export function clusterExports(r: Replication): StoreExports {
  return {
    listExports() {
      const names: string[] = [];
      for (const disk of r.list()) {
        names.push(disk.name);
        for (const snap of disk.snapshots) names.push(`${disk.name}@${snap}`);
      }
      return names;
    },
    openExport(name) {
      const { disk, snap } = parseExportName(name);
      return r.openVolume(disk, snap);
    },
    listSnapshots(exportName) {
      const { disk, snap } = parseExportName(exportName);
      let names: string[];
      try {
        names = r.info(disk).snapshots;
      } catch {
        return [];
      }
      return snap === null ? names : names.slice(0, Math.max(0, names.indexOf(snap)));
    },
  };
}
