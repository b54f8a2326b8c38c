/**
 * Engine, instant-restore and backup objects as the API sends them (wire.ts): field by field, so
 * that a field added to an internal type reaches clients only when the API declares it.
 */
import type {
  CompactStats as EngineCompactStats,
  DiskInfo as EngineDisk,
  ScrubProgress as EngineScrubProgress,
  ScrubReport as EngineScrubReport,
  SnapshotInfo as EngineSnapshot,
  SpaceFigures,
  StoreHealth,
  StoreStats as EngineStoreStats,
} from '../engine/index.ts';
import type { InstantRestoreInfo as HydrateRestore } from '../hydrate/index.ts';
import type { BackupOutcome, BackupProgress, CompactStats, DiskInfo, DriveHealth, InstantRestoreInfo, NodeSpace, ScrubProgress, ScrubReport, SnapshotInfo, StoreStats } from './client/wire.ts';

/** A disk on the wire. */
export function diskWire(d: EngineDisk): DiskInfo {
  return { name: d.name, sizeBytes: d.sizeBytes, allocatedBytes: d.allocatedBytes, snapshots: [...d.snapshots], origin: d.origin, createdMs: d.createdMs };
}

/** A snapshot on the wire. */
export function snapshotWire(s: EngineSnapshot): SnapshotInfo {
  return { name: s.name, disk: s.disk, sizeBytes: s.sizeBytes, seq: s.seq, createdMs: s.createdMs, hlc: s.hlc };
}

/** The store's space figures on the wire. */
export function storeStatsWire(s: EngineStoreStats): StoreStats {
  return { logBytes: s.logBytes, liveBytes: s.liveBytes, segments: s.segments };
}

/** The space figures on the wire (a ratio of an empty usable part, Infinity, is sent as a large number JSON can carry). */
export function spaceWire(f: SpaceFigures): NodeSpace {
  return {
    state: f.state, totalBytes: f.totalBytes, freeBytes: f.freeBytes, reserveBytes: f.reserveBytes, usableBytes: f.usableBytes, usedBytes: f.usedBytes,
    usedRatio: Number.isFinite(f.usedRatio) ? f.usedRatio : Number.MAX_SAFE_INTEGER, nearfullRatio: f.nearfullRatio, fullRatio: f.fullRatio,
  };
}

/** The drive's health on the wire. */
export function driveHealthWire(h: StoreHealth): DriveHealth {
  return { state: h.drive, error: h.error ?? null, sinceMs: h.sinceMs ?? null };
}

/** A compaction pass on the wire. */
export function compactStatsWire(s: EngineCompactStats): CompactStats {
  return { segmentsRemoved: s.segmentsRemoved, bytesReclaimed: s.bytesReclaimed, bytesRewritten: s.bytesRewritten };
}

/** A scrub's progress on the wire. */
export function scrubProgressWire(p: EngineScrubProgress): ScrubProgress {
  return { segments: p.segments, segmentsDone: p.segmentsDone, bytesToRead: p.bytesToRead, bytesRead: p.bytesRead };
}

/** What a scrub found, on the wire. */
export function scrubReportWire(r: EngineScrubReport): ScrubReport {
  return {
    disks: [...r.disks],
    segments: r.segments,
    segmentsSkipped: r.segmentsSkipped,
    records: r.records,
    bytesChecked: r.bytesChecked,
    bytesRead: r.bytesRead,
    durationMs: r.durationMs,
    damagedBlocks: r.damagedBlocks,
    damagedDisks: [...r.damagedDisks],
    damagedExtents: r.damagedExtents,
    damaged: r.damaged.map((e) => ({
      disk: e.disk,
      offset: e.offset,
      length: e.length,
      head: e.head,
      snapshots: [...e.snapshots],
      segment: e.segment,
      recordOffset: e.recordOffset,
      reason: e.reason,
    })),
  };
}

/** An instant restore on the wire. */
export function instantRestoreWire(r: HydrateRestore): InstantRestoreInfo {
  return {
    disk: r.disk,
    repo: r.repo,
    snapshot: r.snapshot,
    state: r.state,
    imageBytes: r.imageBytes,
    chunkSizeBytes: r.chunkSizeBytes,
    chunks: r.chunks,
    chunksZero: r.chunksZero,
    chunksCopied: r.chunksCopied,
    chunksMissing: r.chunksMissing,
    bytesCopied: r.bytesCopied,
    chunksFetchedForClients: r.chunksFetchedForClients,
    bytesRead: r.bytesRead,
    startedMs: r.startedMs,
    finishedMs: r.finishedMs,
    lastError: r.lastError,
    archivedFrom: r.archivedFrom === null ? null : { repo: r.archivedFrom.repo, snapshot: r.archivedFrom.snapshot },
  };
}

/** A backup's progress on the wire (the backup code's object carries more than the API promises). */
export function backupProgressWire(p: BackupProgress): BackupProgress {
  return {
    disk: p.disk,
    bytesToRead: p.bytesToRead,
    bytesRead: p.bytesRead,
    sizeBytes: p.sizeBytes,
    bytesScanned: p.bytesScanned,
    bytesStored: p.bytesStored,
    chunksNew: p.chunksNew,
    chunksReused: p.chunksReused,
    chunksZero: p.chunksZero,
  };
}

/**
 * A disk backup's outcome on the wire. The node's backup service hands over the backup code's
 * own JSON (src/backup/json.ts, what `backup create --local --json` prints): the fields the API
 * declares are taken from it, so the two outputs of `backup create --json` stay one shape.
 */
export function backupOutcomeWire(o: object): BackupOutcome {
  const j = o as BackupOutcome;
  return {
    id: j.id,
    time: j.time,
    kind: j.kind,
    name: j.name,
    hostname: j.hostname,
    sizeBytes: j.sizeBytes,
    chunkSizeBytes: j.chunkSizeBytes,
    parent: j.parent,
    source: j.source,
    group: j.group,
    tenant: j.tenant,
    archivedFrom: j.archivedFrom,
    stats: j.stats,
    where: j.where,
    archive: j.archive,
    incremental: j.incremental,
    fullReason: j.fullReason,
    catalogPagesRead: j.catalogPagesRead,
    catalogReused: j.catalogReused,
    staleSnapshotsRemoved: j.staleSnapshotsRemoved,
  };
}
