import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Store } from '../../src/engine/index.ts';
import type { FallBehind, FeedRecord, FeedSubscriber } from '../../src/engine/feed.ts';
import { RecordType } from '../../src/engine/format.ts';
import { rng, randInt } from './model.ts';
import { until } from '../helpers/wait.ts';

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-feed-'));
}

/** What a subscriber saw: records in order, and how it ended. */
class Seen {
  records: FeedRecord[] = [];
  fell: FallBehind | null = null;
  get seqs(): number[] {
    return this.records.map((r) => r.header.seq);
  }
  /** A subscriber from `fromSeq` that collects what it is given; `slowMs` makes it take that long per batch. */
  subscriber(fromSeq: number, opts: { slowMs?: number; bufferRecordsMax?: number } = {}): FeedSubscriber {
    return {
      fromSeq,
      bufferRecordsMax: opts.bufferRecordsMax,
      onRecords: (batch) => {
        this.records.push(...batch);
        if (opts.slowMs !== undefined) return new Promise((r) => setTimeout(r, opts.slowMs));
      },
      onFallBehind: (info) => void (this.fell = info),
    };
  }
}

/** Seqs strictly ascending: each record once, in order. */
function assertOrderedOnce(seqs: number[], what: string): void {
  for (let i = 1; i < seqs.length; i++) assert.ok(seqs[i] > seqs[i - 1], `${what}: seq ${seqs[i]} after ${seqs[i - 1]} (position ${i})`);
}

/** The change records in the log of a closed store, read by a reopened store's catch-up from seq 1 up to `last`. */
async function seqsInLog(dir: string, last: number): Promise<number[]> {
  const s = await Store.open({ dir, maintenanceIntervalMs: 0 });
  try {
    const seen = new Seen();
    s.feed.subscribe(seen.subscriber(1));
    await until(async () => seen.fell !== null || (seen.seqs.at(-1) ?? 0) >= last, 10_000, 'the catch-up to reach the last record', 10);
    assert.equal(seen.fell, null, 'nothing was compacted away');
    return seen.seqs;
  } finally {
    await s.close();
  }
}

test('feed: every durable record reaches every subscriber once, in order, with its payload', async () => {
  const dir = tmp();
  try {
    const s = await Store.open({ dir, maintenanceIntervalMs: 0, syncIntervalMs: 5, segmentBytesMax: 1 << 20 });
    const fast = new Seen();
    const slow = new Seen();
    const late = new Seen();
    s.feed.subscribe(fast.subscriber(1));
    s.feed.subscribe(slow.subscriber(1, { slowMs: 3 }));
    await s.createDisk('a', 4 << 20);
    await s.createDisk('b', 4 << 20);
    const vols = [s.openVolume('a'), s.openVolume('b')];
    const r = rng(17);
    const written = new Map<number, Buffer>(); // seq → payload, for whole-block writes
    let lateAt = -1;
    for (let i = 0; i < 400; i++) {
      const v = vols[randInt(r, 0, 2)];
      const block = randInt(r, 0, 1000);
      const roll = r();
      const ops: Promise<void>[] = [];
      if (roll < 0.7) ops.push(v.write(block * 4096, Buffer.alloc(4096 * randInt(r, 1, 5), i & 0xff)));
      else if (roll < 0.8) ops.push(v.writeZeroes(block * 4096, 8192));
      else if (roll < 0.9) ops.push(v.trim(block * 4096 + 512, 9000));
      else ops.push(v.flush());
      await Promise.all(ops);
      if (i === 200) {
        // A subscriber that comes in the middle reads what was published from the log.
        lateAt = fast.seqs.at(-1)!;
        s.feed.subscribe(late.subscriber(lateAt - 50));
      }
    }
    await Promise.all(vols.map((v) => v.flush()));
    const seqNext = (await s.createSnapshot('a', 'end')).seq + 1;
    await until(async () => slow.seqs.at(-1) === fast.seqs.at(-1) && late.seqs.at(-1) === fast.seqs.at(-1), 10_000, 'the slow and late subscribers to catch up', 10);
    assertOrderedOnce(fast.seqs, 'fast');
    assertOrderedOnce(slow.seqs, 'slow');
    assertOrderedOnce(late.seqs, 'late');
    assert.deepEqual(slow.seqs, fast.seqs, 'the slow subscriber saw the same records');
    assert.deepEqual(late.seqs, fast.seqs.filter((q) => q >= lateAt - 50), 'the late one: everything from its seq on');
    assert.equal(fast.fell ?? slow.fell ?? late.fell, null);
    assert.ok(fast.records.every((x) => x.header.type !== RecordType.RELOCATE), 'no relocations unless asked');
    // Every record is durable, so its payload reads back and matches its checksum.
    for (const rec of fast.records.filter((x) => x.header.type === RecordType.WRITE).slice(-20)) {
      const payload = await s.feed.readPayload(rec);
      assert.equal(payload.length, rec.header.payloadBytes);
      written.set(rec.header.seq, payload);
    }
    assert.equal(written.size, 20);
    for (const v of vols) v.close();
    await s.close();
    // The log holds exactly what was delivered: nothing missing, nothing made up.
    const inLog = await seqsInLog(dir, seqNext - 1);
    assert.deepEqual(inLog, fast.seqs);
    assert.equal(inLog.at(-1), seqNext - 1);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('feed: a record is published only once durable', async () => {
  const dir = tmp();
  try {
    const s = await Store.open({ dir, maintenanceIntervalMs: 0, syncIntervalMs: 60_000 });
    const seen = new Seen();
    s.feed.subscribe(seen.subscriber(1));
    await s.createDisk('d', 1 << 20);
    const v = s.openVolume('d');
    await v.write(0, Buffer.alloc(4096, 1));
    await v.write(8192, Buffer.alloc(100, 2));
    await v.trim(4096, 4096);
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(seen.seqs, [], 'written, not yet synced: nothing delivered');
    await v.flush();
    assert.equal(seen.records.length, 3, 'the flush made them durable, and they were delivered');
    await v.write(0, Buffer.alloc(4096, 3), { fua: true });
    assert.equal(seen.records.length, 4, 'a FUA write is durable when acknowledged');
    v.close();
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('feed: a subscriber too slow for its buffer is told to resume, and resumes from the log', async () => {
  const dir = tmp();
  try {
    const s = await Store.open({ dir, maintenanceIntervalMs: 0, syncIntervalMs: 5 });
    await s.createDisk('d', 8 << 20);
    const stuck = new Seen();
    let firstBatch: number[] | null = null;
    s.feed.subscribe({
      fromSeq: 1,
      bufferRecordsMax: 16,
      onRecords: (batch) => {
        stuck.records.push(...batch);
        if (firstBatch === null) {
          firstBatch = batch.map((x) => x.header.seq);
          return; // taken at once
        }
        return new Promise(() => {}); // then it stops answering
      },
      onFallBehind: (info) => void (stuck.fell = info),
    });
    const all = new Seen();
    s.feed.subscribe(all.subscriber(1));
    const v = s.openVolume('d');
    for (let i = 0; i < 200; i++) await v.write((i % 64) * 4096, Buffer.alloc(4096, i), { fua: i % 3 === 0 });
    await v.flush();
    const fell = stuck.fell as FallBehind | null;
    assert.ok(fell, 'the stuck subscriber was cut off');
    assert.ok(fell.resume === 'log' && fell.reason === 'buffer-full', `told to resume from the log: ${JSON.stringify(fell)}`);
    // It acknowledged only its first batch: it resumes right after it.
    assert.ok(firstBatch);
    const resumeFrom = fell.fromSeq;
    assert.equal(resumeFrom, (firstBatch as number[]).at(-1)! + 1);
    assert.ok(stuck.records.length < all.records.length, 'it was not handed everything');
    const again = new Seen();
    s.feed.subscribe(again.subscriber(resumeFrom, { slowMs: 1 }));
    for (let i = 0; i < 50; i++) await v.write((i % 64) * 4096, Buffer.alloc(4096, i), { fua: true });
    await until(async () => again.seqs.at(-1) === all.seqs.at(-1), 10_000, 'the resumed subscriber to catch up', 10);
    assert.deepEqual(again.seqs, all.seqs.filter((q) => q >= resumeFrom), 'resumed where it left off, nothing lost or repeated');
    assertOrderedOnce(again.seqs, 'resumed');
    v.close();
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('feed: resuming from a sequence compacted away says catch up by changed blocks', async () => {
  const dir = tmp();
  try {
    const s = await Store.open({ dir, maintenanceIntervalMs: 0, syncIntervalMs: 5, segmentBytesMax: 256 * 1024 });
    await s.createDisk('d', 1 << 20);
    const all = new Seen();
    s.feed.subscribe(all.subscriber(1));
    const v = s.openVolume('d');
    // Overwrite the same blocks again and again: the early segments die and are deleted.
    for (let round = 0; round < 8; round++) await v.write(0, Buffer.alloc(128 * 1024, round + 1), { fua: true });
    const stats = await s.compact();
    assert.ok(stats.segmentsRemoved > 0, 'compaction deleted segments');
    const gone = new Seen();
    s.feed.subscribe(gone.subscriber(all.seqs[0]));
    await until(async () => gone.fell !== null, 5000, 'the subscriber to be told');
    assert.deepEqual(gone.fell, { resume: 'changed-blocks', sinceSeq: all.seqs[0] - 1, reason: 'compacted' });
    assert.deepEqual(gone.seqs, [], 'nothing delivered: the start is missing');
    // From the newest record on, the log still has everything.
    const recent = new Seen();
    const from = all.seqs.at(-1)!;
    s.feed.subscribe(recent.subscriber(from));
    await until(async () => recent.seqs.length === 1, 5000, 'the recent record');
    assert.deepEqual(recent.seqs, [from]);
    assert.equal(recent.fell, null);
    v.close();
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('feed: after a crash and a reopen a subscriber resumes from its sequence', async () => {
  const dir = tmp();
  const copy = tmp();
  try {
    const s = await Store.open({ dir, maintenanceIntervalMs: 0, syncIntervalMs: 5, segmentBytesMax: 256 * 1024 });
    await s.createDisk('d', 4 << 20);
    const before = new Seen();
    s.feed.subscribe(before.subscriber(1));
    const v = s.openVolume('d');
    for (let i = 0; i < 120; i++) await v.write(i * 8192, Buffer.alloc(8192, i + 1), { fua: i % 10 === 9 });
    await v.flush();
    // The subscriber had taken (and stored) everything up to the middle when the node died.
    const resumeAt = before.seqs[60];
    fs.cpSync(dir, copy, { recursive: true }); // kill -9: the copy is never closed
    v.close();
    await s.close();
    const r = await Store.open({ dir: copy, maintenanceIntervalMs: 0, syncIntervalMs: 5 });
    const after = new Seen();
    r.feed.subscribe(after.subscriber(resumeAt));
    const w = r.openVolume('d');
    await w.write(0, Buffer.alloc(4096, 0xee), { fua: true }); // live, after the catch-up
    await until(async () => after.records.some((x) => x.header.seq > before.seqs.at(-1)!), 10_000, 'the new record');
    assertOrderedOnce(after.seqs, 'after the reopen');
    assert.deepEqual(after.seqs.slice(0, -1), before.seqs.filter((q) => q >= resumeAt), 'from the log: what was durable before the crash');
    assert.equal(after.fell, null);
    assert.equal((await r.feed.readPayload(after.records[0])).length, after.records[0].header.payloadBytes);
    w.close();
    await r.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    fs.rmSync(copy, { recursive: true, force: true });
  }
});

test('feed: restarts without writes (their empty segments deleted) do not cost a subscriber its place', async () => {
  const dir = tmp();
  try {
    let s = await Store.open({ dir, maintenanceIntervalMs: 0 });
    await s.createDisk('d', 1 << 20);
    const seen = new Seen();
    s.feed.subscribe(seen.subscriber(1));
    const v = s.openVolume('d');
    for (let i = 0; i < 10; i++) await v.write(i * 4096, Buffer.alloc(4096, i + 1), { fua: true });
    v.close();
    await s.close();
    for (let i = 0; i < 3; i++) await (await Store.open({ dir, maintenanceIntervalMs: 0 })).close();
    const ids = fs.readdirSync(path.join(dir, 'log')).map((n) => Number(n.slice(0, 10))).sort((a, b) => a - b);
    assert.ok(ids.at(-1)! > ids.length, `the numbering has gaps where empty segments were: ${ids}`);
    s = await Store.open({ dir, maintenanceIntervalMs: 0 });
    assert.deepEqual(await seqsAfterReopen(s, seen.seqs[3], seen.seqs.at(-1)!), seen.seqs.slice(3));
    await s.close();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** What a subscriber from `fromSeq` gets from an open store's log, up to `last`. */
async function seqsAfterReopen(s: Store, fromSeq: number, last: number): Promise<number[]> {
  const seen = new Seen();
  s.feed.subscribe(seen.subscriber(fromSeq));
  await until(async () => seen.fell !== null || (seen.seqs.at(-1) ?? 0) >= last, 10_000, 'the catch-up', 10);
  assert.equal(seen.fell, null, 'told to catch up otherwise');
  return seen.seqs;
}
