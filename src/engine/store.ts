import type { DiskInfo, SnapshotInfo, Volume } from './types.ts';

/** Options of Store.open. */
export interface StoreOptions {
  /** Directory holding the write log segments and the index. Created if missing. */
  dir: string;
  /** Size at which a log segment is sealed and a new one started. Default 256 MiB. */
  segmentBytesMax?: number;
}

/** Space figures of a store. */
export interface StoreStats {
  /** Bytes in log segment files. */
  logBytes: number;
  /** Bytes of data blocks still referenced by some disk, snapshot or clone. */
  liveBytes: number;
  segments: number;
}

/** What one compaction pass did. */
export interface CompactStats {
  segmentsRemoved: number;
  bytesReclaimed: number;
  bytesRewritten: number;
}

/** A store of thin disks on local storage. Not implemented yet: see docs/engine.md. */
export class Store {
  static async open(opts: StoreOptions): Promise<Store> { throw new Error('todo ' + opts.dir); }
  async close(): Promise<void> {}
  listDisks(): DiskInfo[] { return []; }
  getDisk(name: string): DiskInfo { throw new Error('todo ' + name); }
  async createDisk(name: string, sizeBytes: number): Promise<DiskInfo> { throw new Error('todo ' + name + sizeBytes); }
  async deleteDisk(name: string): Promise<void> { throw new Error('todo ' + name); }
  async resizeDisk(name: string, sizeBytes: number): Promise<DiskInfo> { throw new Error('todo ' + name + sizeBytes); }
  async createSnapshot(disk: string, snap: string): Promise<SnapshotInfo> { throw new Error('todo ' + disk + snap); }
  listSnapshots(disk: string): SnapshotInfo[] { throw new Error('todo ' + disk); }
  async deleteSnapshot(disk: string, snap: string): Promise<void> { throw new Error('todo ' + disk + snap); }
  async revertDisk(disk: string, snap: string): Promise<DiskInfo> { throw new Error('todo ' + disk + snap); }
  async cloneDisk(disk: string, snap: string, newName: string): Promise<DiskInfo> { throw new Error('todo ' + disk + snap + newName); }
  openVolume(disk: string, snap?: string | null): Volume { throw new Error('todo ' + disk + snap); }
  async flush(): Promise<void> {}
  async compact(): Promise<CompactStats> { return { segmentsRemoved: 0, bytesReclaimed: 0, bytesRewritten: 0 }; }
  stats(): StoreStats { return { logBytes: 0, liveBytes: 0, segments: 0 }; }
}
