/**
 * Recovery at open: metadata is loaded, and the log tail the index had not absorbed is replayed
 * through the index apply (docs/engine.md, Recovery).
 */
import { Format } from './format.ts';
import type { WriteLog } from './log/write-log.ts';
import type { BlockIndex } from './index/block-index.ts';
import type { History } from './history.ts';
import type { Applier } from './apply/applier.ts';
import type { ApplyRecord } from './apply/inline.ts';
import type { Sweeper } from './gc/sweep.ts';
import type { Compactor } from './gc/compact.ts';
import type { Overlay } from './read/overlay.ts';

/**
 * What an open replayed: the log tail the index had not absorbed yet. A read-only open reads the
 * tail into the overlay instead, and leaves the torn bytes it counts where they are.
 */
export interface RecoveryStats {
  recordsReplayed: number;
  tornBytesDropped: number;
}

/** Records replayed per index transaction. */
const REPLAY_BATCH_RECORDS = 1024;

/**
 * Loads the store's state and replays every record after the applied position, segment by
 * segment; each segment's valid records end at its first torn one, which is cut off. Then starts
 * a new active segment, drops segments without live data and queues a sweep of every branch.
 */
export async function recover(parts: {
  log: WriteLog; index: BlockIndex; history: History; applier: Applier; sweeper: Sweeper; compactor: Compactor; live: Map<number, number>;
}, stats: RecoveryStats): Promise<void> {
  const { log, index, history, applier } = parts;
  await history.load();
  const checkpoint = index.checkpoint();
  applier.applied = checkpoint.applied;
  // A snapshot or a fork stands at the last seq handed out when it was taken, which may belong to
  // a record that was never written (refused for a full file system) and so is in neither the
  // index's checkpoint nor the log: new records must come after it, or the snapshot would see them.
  let seqNext = checkpoint.seqNext;
  for (const d of history.disks.values()) for (const s of d.snapshots) seqNext = Math.max(seqNext, s.seq + 1);
  for (const b of history.branches.values()) seqNext = Math.max(seqNext, b.forkSeq + 1);
  history.seqNext = seqNext;
  for (const { key, value } of index.segments.getRange({})) parts.live.set(key, value);
  for (const id of log.segmentIds()) {
    const applied = applier.applied;
    if (id < applied.segment) continue;
    const from = id === applied.segment ? applied.offset : 0;
    // A killed process leaves bytes in the page cache that no sync made durable: they are made
    // so before the index points at them (and the feed may hand them on).
    log.syncSegment(id);
    let batch: ApplyRecord[] = [];
    const flush = () => {
      if (batch.length) applier.applyRecords(batch);
      batch = [];
    };
    for await (const rec of log.scan(id, from, { payloads: false })) {
      stats.recordsReplayed++;
      batch.push(rec);
      if (batch.length >= REPLAY_BATCH_RECORDS) flush();
    }
    flush();
    stats.tornBytesDropped += log.skippedBytes.get(id) ?? 0;
    const end = log.validEnd.get(id)!;
    if (end < log.segmentSize(id)) {
      stats.tornBytesDropped += log.segmentSize(id) - end;
      log.truncate(id, Math.max(end, Format.segmentHeaderBytes));
    }
  }
  log.startNewSegment();
  // Segments left with no live data (e.g. after a crash mid-compaction) are dropped now, at
  // full speed: no request is waiting yet.
  await parts.compactor.dropDeadSegments({ paced: false });
  for (const b of history.branches.keys()) parts.sweeper.enqueue(b);
}

/**
 * The read-only open's recovery: loads the store's state and reads the log tail the index had not
 * absorbed into the overlay, where reads find it, instead of into the index. Nothing is synced,
 * cut, started, dropped or swept; torn and skipped bytes are counted and left as they are.
 */
export async function loadReadOnly(parts: {
  log: WriteLog; index: BlockIndex; history: History; overlay: Overlay; live: Map<number, number>;
}, stats: RecoveryStats): Promise<void> {
  const { log, index, history, overlay } = parts;
  await history.load();
  const { applied, seqNext } = index.checkpoint();
  history.seqNext = seqNext;
  for (const { key, value } of index.segments.getRange({})) parts.live.set(key, value);
  for (const id of log.segmentIds()) {
    if (id < applied.segment) continue;
    const from = id === applied.segment ? applied.offset : 0;
    for await (const rec of log.scan(id, from, { payloads: false })) {
      stats.recordsReplayed++;
      // As a record just written enters it (Appender): readers see it from now on.
      overlay.add({ lsn: 0, header: rec.header, segment: rec.segment, offset: rec.offset, end: rec.end, done: true, error: null });
      if (rec.header.seq >= history.seqNext) history.seqNext = rec.header.seq + 1;
    }
    stats.tornBytesDropped += (log.skippedBytes.get(id) ?? 0) + Math.max(0, log.segmentSize(id) - log.validEnd.get(id)!);
  }
}
