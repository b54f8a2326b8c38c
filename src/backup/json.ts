/** Restore points and backup outcomes as JSON shows them (`--json` of the backup commands, the node's backup route). */
import type { DiskBackupOutcome } from './disk-run.ts';
import { tenantOf, type SnapshotEntry } from './repository.ts';

/** A restore point as JSON shows it: ids as hex, times as ISO 8601; `where` is `here` (in this repository). */
export function restorePointJson(e: SnapshotEntry): object {
  const s = e.snapshot;
  return {
    id: e.id,
    time: new Date(s.time).toISOString(),
    kind: s.kind,
    name: s.name,
    hostname: s.hostname,
    sizeBytes: s.sizeBytes,
    chunkSizeBytes: s.chunkSizeBytes,
    parent: s.parent?.toString('hex') ?? null,
    source: s.source,
    group: s.group?.toString('hex') ?? null,
    tenant: tenantOf(s),
    archivedFrom: s.archivedFrom ?? null,
    stats: s.stats,
    where: 'here',
    archive: null,
  };
}

/** A disk backup's outcome as `backup create --json` prints it (one object per disk). */
export function outcomeJson(o: DiskBackupOutcome): object {
  return {
    ...restorePointJson(o.result),
    incremental: o.result.incremental,
    fullReason: o.fullReason,
    catalogPagesRead: o.result.catalogPagesRead,
    catalogReused: o.result.catalogReused,
    staleSnapshotsRemoved: o.staleSnapshotsRemoved,
  };
}
