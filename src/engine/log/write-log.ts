/**
 * The write log: records appended to numbered segment files. Appends are issued concurrently
 * at positions reserved in order; the log tracks which prefix of them is complete and which
 * prefix is durable (fdatasync), because recovery replays a segment only up to its first torn
 * record — so anything acknowledged as durable must sit in a complete, synced prefix.
 */
import path from 'node:path';
import assert from 'node:assert/strict';
import { crc32 } from '../../native/index.ts';
import { Format, encodeRecordHeader, decodeRecordHeader, encodeSegmentHeader, decodeSegmentHeader, type RecordHeader } from '../format.ts';
import { EngineError, EngineErrorCode } from '../errors.ts';
import type { DriveHealth } from '../health.ts';
import { LoopIoGate } from '../../flow/index.ts';
import { isBug } from '../../util/bug.ts';
import type { LogFiles } from './files.ts';
import { openSegmentReader, type SegmentReader } from './segment-reader.ts';

/** A position in the log: the byte offset of a record header within a segment. */
export interface LogPosition {
  segment: number;
  offset: number;
}

/** Sequential reads of a file through one large buffer; a failed read is ENGINE_IO. */
class ReadWindow {
  private start = 0;
  private buf = Buffer.alloc(0);
  private readonly files: LogFiles;
  private readonly fd: number;
  private readonly size: number;
  /** The file, for errors: `log segment 7`. */
  private readonly what: string;
  constructor(files: LogFiles, fd: number, size: number, what: string) {
    this.files = files;
    this.fd = fd;
    this.size = size;
    this.what = what;
  }

  /** Bytes [pos, pos+length) — a view valid until the next call — or null past the end. */
  async at(pos: number, length: number): Promise<Buffer | null> {
    if (pos + length > this.size) return null;
    if (pos < this.start || pos + length > this.start + this.buf.length) {
      const buf = Buffer.allocUnsafe(Math.min(Math.max(length, 4 * 1024 * 1024), this.size - pos));
      const n = await pread(this.files, this.fd, buf, pos).catch((err) => {
        throw ioError(err, `reading ${this.what} at ${pos}`);
      });
      this.start = pos;
      this.buf = buf.subarray(0, n);
      if (n < length) return null;
    }
    return this.buf.subarray(pos - this.start, pos - this.start + length);
  }
}

/** Orders two positions. */
export function comparePositions(a: LogPosition, b: LogPosition): number {
  return a.segment !== b.segment ? a.segment - b.segment : a.offset - b.offset;
}

/** One appended record, tracked until it is complete, durable and applied to the index. */
export interface Append {
  /** Reservation order. */
  lsn: number;
  header: RecordHeader;
  segment: number;
  /** Offset of the record header. */
  offset: number;
  /** Offset just past the record. */
  end: number;
  done: boolean;
  error: Error | null;
}

/** A record read back from a segment. */
export interface ScannedRecord {
  header: RecordHeader;
  segment: number;
  offset: number;
  end: number;
  payload: Buffer | null;
}

interface Segment {
  id: number;
  fd: number;
  /** Bytes reserved (next append offset). */
  size: number;
  dirty: boolean;
}

/** The file name of segment `id` in the log directory. */
export const segmentName = (id: number): string => `${String(id).padStart(10, '0')}.seg`;

/** Reads a segment's header into `head`; the file is closed should the read fail. */
function readHead(files: LogFiles, fd: number, head: Buffer): number {
  try {
    return files.readSync(fd, head, 0, head.length, 0);
  } catch (err) {
    files.closeSync(fd);
    throw err;
  }
}

function pread(files: LogFiles, fd: number, buf: Buffer, position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    files.read(fd, buf, 0, buf.length, position, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Writes all of `bufs` at `position`, continuing after short writes (ENOSPC shows on the retry). */
async function pwritevAll(files: LogFiles, fd: number, bufs: Buffer[], position: number): Promise<void> {
  const total = byteLength(bufs);
  for (let done = await pwritev(files, fd, bufs, position); done < total; ) done += await pwritev(files, fd, after(bufs, done), position + done);
}

function byteLength(bufs: Buffer[]): number {
  let n = 0;
  for (const b of bufs) n += b.length;
  return n;
}

/** The part of `bufs` past its first `skip` bytes. */
function after(bufs: Buffer[], skip: number): Buffer[] {
  let i = 0;
  while (skip >= bufs[i].length) skip -= bufs[i++].length;
  return [bufs[i].subarray(skip), ...bufs.slice(i + 1)];
}

/** pwritevAll on the calling thread (see LoopIoGate). */
function pwritevAllSync(files: LogFiles, fd: number, bufs: Buffer[], position: number): Promise<void> {
  try {
    const total = byteLength(bufs);
    for (let done = wrote(files.writevSync(fd, bufs, position)); done < total; ) done += wrote(files.writevSync(fd, after(bufs, done), position + done));
    return Promise.resolve();
  } catch (err) {
    return Promise.reject(err);
  }
}

function pwritev(files: LogFiles, fd: number, bufs: Buffer[], position: number): Promise<number> {
  return new Promise((resolve, reject) => {
    files.writev(fd, bufs, position, (err, n) => (err ? reject(err) : n === 0 ? reject(zeroWrite()) : resolve(n)));
  });
}

/**
 * A write that wrote nothing and reported no error would be retried forever: the drive failed
 * it. (A file system reports a full disk as ENOSPC on the retry after a short write, never as 0.)
 */
function wrote(n: number): number {
  if (n === 0) throw zeroWrite();
  return n;
}

function zeroWrite(): NodeJS.ErrnoException {
  return Object.assign(new Error('EIO: a write wrote no byte, writev'), { code: 'EIO', errno: -5, syscall: 'writev' });
}

/** Most buffers in one pwritev (IOV_MAX is 1024 on Linux; each record takes up to two). */
const BATCH_BUFFERS_MAX = 1024;
/** A batch takes no more records once it holds this many bytes (bounds one write's latency). */
const BATCH_BYTES_MAX = 8 * 1024 * 1024;
/**
 * pwritevs in flight at once. One at a time lost a quarter of sequential write speed (a write
 * stalled behind writeback stalls everything); four, the thread pool's size, measured best for
 * both sequential and random writes.
 */
const WRITES_INFLIGHT_MAX = 4;
/** A dead segment is shrunk by this much at a time before it is unlinked (see removeSegment). */
const REMOVE_STEP_BYTES = 16 * 1024 * 1024;
/** Pause between two shrinking steps. */
const REMOVE_PAUSE_MS = 10;

/** Records reserved back to back in one segment, written by one pwritev. */
interface Batch {
  seg: Segment;
  offset: number;
  bufs: Buffer[];
  bytes: number;
  appends: Append[];
  written: Promise<void>;
  resolve: () => void;
  reject: (err: Error) => void;
}

function newBatch(seg: Segment, offset: number): Batch {
  let resolve!: () => void;
  let reject!: (err: Error) => void;
  const written = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  // Every caller awaits `written`; this handler only keeps an unawaited failure from being
  // reported as unhandled before they do.
  written.catch(() => {});
  return { seg, offset, bufs: [], bytes: 0, appends: [], written, resolve, reject };
}

function fdatasync(files: LogFiles, fd: number): Promise<void> {
  return new Promise((resolve, reject) => files.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}

/** Whether a file-system error says the file system is full (not that the drive failed). */
export function isNoSpace(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT';
}

/**
 * Maps a file-system error to an EngineError: a full file system is ENGINE_NO_SPACE, anything
 * else ENGINE_IO (a drive's error is not corrupt data). A bug is passed on as it is.
 */
export function ioError(err: unknown, what: string): Error {
  if (err instanceof EngineError || isBug(err)) return err as Error;
  if (isNoSpace(err)) return new EngineError(EngineErrorCode.NO_SPACE, `No space left while ${what}`, { cause: err });
  return new EngineError(EngineErrorCode.IO, `I/O error while ${what}: ${(err as Error)?.message}`, { cause: err });
}

/** What a write log works through: its file layer, and the drive's state it shares with the store. */
export interface WriteLogOptions {
  files: LogFiles;
  health: DriveHealth;
}

export class WriteLog {
  readonly dir: string;
  readonly segmentBytesMax: number;
  private readonly files: LogFiles;
  private readonly health: DriveHealth;
  private segments = new Map<number, Segment>();
  private active!: Segment;
  private nextLsn = 0;
  /** Appends not yet complete, or complete but behind an incomplete one, in lsn order. */
  private pending: Append[] = [];
  private completeLsn = 0;
  private syncedLsn = 0;
  private syncing: Promise<void> | null = null;
  private prefixWaiters: { lsn: number; resolve: () => void }[] = [];
  /** Called with appends that are complete and durable, in order, ready for the index. */
  onDurable: (appends: Append[]) => void = () => {};
  private durableQueue: Append[] = [];
  /** Bytes of records appended since open (the space guard counts them used until it reads the file system again). */
  appendedBytes = 0;

  private constructor(dir: string, segmentBytesMax: number, opts: WriteLogOptions) {
    this.dir = dir;
    this.segmentBytesMax = segmentBytesMax;
    this.files = opts.files;
    this.health = opts.health;
  }

  /**
   * Opens the segment files of a directory (creating it). Does not replay; see scan(). Read-only,
   * the files are opened for reading and nothing is created or removed: a log that is only read
   * (Store.open with readOnly) has no active segment and takes no appends.
   */
  static open(dir: string, segmentBytesMax: number, opts: WriteLogOptions & { readOnly?: boolean }): WriteLog {
    const log = new WriteLog(dir, segmentBytesMax, opts);
    try {
      log.openSegments(opts.readOnly === true);
    } catch (err) {
      // A log opened halfway keeps no file open.
      log.close();
      throw err;
    }
    return log;
  }

  private openSegments(readOnly: boolean): void {
    const { dir, files } = this;
    if (!readOnly) files.mkdirSync(dir, { recursive: true });
    const names = readOnly && !files.existsSync(dir) ? [] : files.readdirSync(dir);
    const ids = names.filter((n) => /^\d{10}\.seg$/.test(n)).map((n) => Number(n.slice(0, 10))).sort((a, b) => a - b);
    for (const id of ids) {
      const fd = files.openSync(path.join(dir, segmentName(id)), readOnly ? 'r' : 'r+');
      const head = Buffer.alloc(Format.segmentHeaderBytes);
      const n = readHead(files, fd, head);
      if (n < head.length && id === ids[ids.length - 1]) {
        // The newest segment's creation was cut short (a crash or a full disk before its header
        // was complete): it holds no record. Drop it (read-only: leave it, unread).
        files.closeSync(fd);
        if (!readOnly) files.rmSync(path.join(dir, segmentName(id)));
        continue;
      }
      const decoded = n === head.length ? decodeSegmentHeader(head) : null;
      if (!decoded || decoded.id !== id) {
        files.closeSync(fd);
        throw new EngineError(EngineErrorCode.CORRUPT, `Log segment ${segmentName(id)} has a bad header`);
      }
      this.segments.set(id, { id, fd, size: files.fstatSync(fd).size, dirty: false });
    }
  }

  /** Segment ids present, ascending. */
  segmentIds(): number[] {
    return [...this.segments.keys()].sort((a, b) => a - b);
  }

  segmentSize(id: number): number {
    return this.segments.get(id)?.size ?? 0;
  }

  /** A reader of a segment's file on a descriptor of its own, through the log's file layer (the scrub's). Throws ENOENT when the file is gone. */
  segmentReader(id: number): SegmentReader {
    return openSegmentReader(this.files, path.join(this.dir, segmentName(id)));
  }

  /** Total bytes of all segment files. */
  totalBytes(): number {
    let n = 0;
    for (const s of this.segments.values()) n += s.size;
    return n;
  }

  get activeSegment(): number {
    return this.active.id;
  }

  /** Where the next record goes. */
  tail(): LogPosition {
    return { segment: this.active.id, offset: this.active.size };
  }

  /**
   * A log write or sync failed with `err`: a full file system is ENGINE_NO_SPACE, anything else
   * puts the store in the failing state (see DriveHealth) and is ENGINE_IO.
   */
  private writeFailed(err: unknown, what: string): Error {
    if (err instanceof EngineError || isBug(err)) return err as Error;
    return isNoSpace(err) ? ioError(err, what) : this.health.fail(err, what);
  }

  /** Starts a fresh active segment after recovery (never appends into a recovered one). */
  startNewSegment(): void {
    this.health.check();
    const { files } = this;
    const ids = this.segmentIds();
    const id = ids.length ? ids[ids.length - 1] + 1 : 1;
    const file = path.join(this.dir, segmentName(id));
    let fd: number;
    try {
      fd = files.openSync(file, 'wx+');
    } catch (err) {
      throw this.writeFailed(err, 'starting a log segment');
    }
    try {
      const head = encodeSegmentHeader(id, Date.now());
      for (let done = 0; done < head.length; ) done += wrote(files.writeSync(fd, head, done, head.length - done, done));
      files.fdatasyncSync(fd);
      const dfd = files.openSync(this.dir, 'r');
      try {
        files.fsyncSync(dfd);
      } finally {
        files.closeSync(dfd);
      }
    } catch (err) {
      // A segment without its header would stop the next open: leave none behind.
      try {
        files.closeSync(fd);
        files.rmSync(file, { force: true });
      } catch {
        // The drive fails more: the error that matters is the first.
      }
      throw this.writeFailed(err, 'starting a log segment');
    }
    const seg: Segment = { id, fd, size: Format.segmentHeaderBytes, dirty: false };
    this.segments.set(id, seg);
    this.active = seg;
  }

  /**
   * Appends a record. Returns the reservation at once (its position is known synchronously) and
   * a promise that settles when the bytes are written (not yet durable).
   *
   * Group commit: records appended in one turn gather into a batch written by one pwritev, on
   * the next tick; while WRITES_INFLIGHT_MAX writes are in flight, new records gather into the
   * next batch, issued as one completes. A thread-pool hand-off per 4 KiB record cost more than
   * the write itself. A failed batch fails every record in it. While the drive is failing,
   * nothing is appended: ENGINE_IO, thrown.
   */
  append(header: RecordHeader, payload: Buffer | null): { append: Append; written: Promise<void> } {
    this.health.check();
    const headerBytes = encodeRecordHeader(header);
    const recordBytes = Format.recordHeaderBytes + header.payloadBytes;
    if (this.active.size + recordBytes > this.segmentBytesMax && this.active.size > Format.segmentHeaderBytes) this.startNewSegment();
    const seg = this.active;
    const a: Append = { lsn: this.nextLsn++, header, segment: seg.id, offset: seg.size, end: seg.size + recordBytes, done: false, error: null };
    seg.size += recordBytes;
    this.appendedBytes += recordBytes;
    seg.dirty = true;
    this.pending.push(a);
    let batch = this.gathering;
    if (batch === null || batch.seg !== seg || batch.bufs.length + 2 > BATCH_BUFFERS_MAX || batch.bytes >= BATCH_BYTES_MAX) {
      if (batch !== null) this.ready.push(batch);
      batch = this.gathering = newBatch(seg, a.offset);
    }
    batch.bufs.push(headerBytes);
    if (payload) batch.bufs.push(payload);
    batch.bytes += recordBytes;
    batch.appends.push(a);
    if (this.writing < WRITES_INFLIGHT_MAX && !this.kickScheduled) {
      this.kickScheduled = true;
      process.nextTick(this.kick);
    }
    return { append: a, written: batch.written };
  }

  /** The batch new appends join. */
  private gathering: Batch | null = null;
  /** Closed batches (full, or of an older segment) waiting for the writer, oldest first. */
  private ready: Batch[] = [];
  /** pwritevs in flight. */
  private writing = 0;
  /**
   * Reads up to 64 KiB on the loop (larger ones copy in parallel with the loop's work on the
   * pool). A slow one missed the page cache, and the next ones likely will too: a second's pause.
   */
  private readonly loopReads = new LoopIoGate({ bytesMax: 64 * 1024, slowMs: 1, pauseMinMs: 1000, pauseMaxMs: 1000 });
  /**
   * Batches up to 128 KiB (random 4 KiB writes make batches of a few records) on the loop. A slow
   * one usually met writeback of the page it appends to, for a moment: a pause of 50 ms, doubled
   * while it lasts. Fio 4k random writes, six alternating 15 s runs each: 28.9k IOPS on average,
   * where a fixed second's pause (the pool for 60–80% of batches) gave 25.5k.
   */
  private readonly loopWrites = new LoopIoGate({ bytesMax: 128 * 1024, slowMs: 2, pauseMinMs: 50, pauseMaxMs: 1000 });
  private kickScheduled = false;

  private readonly kick = (): void => {
    this.kickScheduled = false;
    this.writeNext();
  };

  /**
   * Issues waiting batches, oldest first, up to WRITES_INFLIGHT_MAX in flight. Once the drive is
   * failing, nothing more is written: batches not issued yet fail as the failed one did.
   */
  private writeNext(): void {
    if (this.health.failing) {
      const waiting = this.gathering === null ? this.ready : [...this.ready, this.gathering];
      this.ready = [];
      this.gathering = null;
      for (const b of waiting) this.fail(b, this.health.refusal());
      return;
    }
    while (this.writing < WRITES_INFLIGHT_MAX) {
      let batch = this.ready.shift();
      if (batch === undefined) {
        if (this.gathering === null) return;
        batch = this.gathering;
        this.gathering = null;
      }
      this.issue(batch);
    }
  }

  private issue(b: Batch): void {
    this.writing++;
    const { files } = this;
    const io = this.loopWrites.allows(b.bytes) ? this.loopWrites.run(() => pwritevAllSync(files, b.seg.fd, b.bufs, b.offset)) : pwritevAll(files, b.seg.fd, b.bufs, b.offset);
    io.then(
      () => {
        this.writing--;
        for (const a of b.appends) this.complete(a, null);
        b.resolve();
        this.writeNext();
      },
      (err) => {
        this.writing--;
        this.fail(b, this.writeFailed(err, 'appending to the write log'));
        this.writeNext();
      },
    );
  }

  /** Fails every record of a batch with `err`. */
  private fail(b: Batch, err: Error): void {
    for (const a of b.appends) this.complete(a, err);
    b.reject(err);
  }

  private complete(a: Append, error: Error | null): void {
    a.done = true;
    a.error = error;
    if (error && !this.health.failing) {
      // The failed record's bytes are a hole in this segment: recovery would stop there and drop
      // everything after it. Seal the segment so later records land in a new one.
      if (this.active.id === a.segment) {
        try {
          this.startNewSegment();
        } catch {
          // The next append retries the roll through its own error path.
        }
      }
    }
    while (this.pending.length && this.pending[0].done) {
      const head = this.pending.shift()!;
      this.completeLsn = head.lsn + 1;
      if (!head.error) this.durableQueue.push(head);
    }
    while (this.prefixWaiters.length && this.prefixWaiters[0].lsn <= this.completeLsn) this.prefixWaiters.shift()!.resolve();
  }

  private waitComplete(lsn: number): Promise<void> {
    if (this.completeLsn >= lsn) return Promise.resolve();
    return new Promise((resolve) => {
      this.prefixWaiters.push({ lsn, resolve });
      this.prefixWaiters.sort((x, y) => x.lsn - y.lsn);
    });
  }

  /** Whether appends are waiting to become durable. */
  get hasUnsynced(): boolean {
    return this.syncedLsn < this.nextLsn;
  }

  /**
   * Makes every append reserved before this call durable: waits for the complete prefix to
   * reach it, then fdatasyncs the segments written. Concurrent calls share a sync. While the
   * drive is failing, nothing is made durable any more: ENGINE_IO.
   */
  async sync(): Promise<void> {
    const target = this.nextLsn;
    await this.waitComplete(target);
    while (this.syncedLsn < target) {
      if (this.syncing) {
        await this.syncing;
        continue;
      }
      this.health.check();
      const upTo = this.completeLsn;
      const dirty = [...this.segments.values()].filter((s) => s.dirty);
      for (const s of dirty) s.dirty = false;
      const { files } = this;
      this.syncing = Promise.all(dirty.map((s) => fdatasync(files, s.fd)))
        .then(() => {
          this.syncedLsn = Math.max(this.syncedLsn, upTo);
          this.releaseDurable();
        }, (err) => {
          for (const s of dirty) s.dirty = true;
          throw this.writeFailed(err, 'syncing the write log');
        })
        .finally(() => {
          this.syncing = null;
        });
      await this.syncing;
    }
  }

  private releaseDurable(): void {
    let n = 0;
    while (n < this.durableQueue.length && this.durableQueue[n].lsn < this.syncedLsn) n++;
    if (n === 0) return;
    const ready = this.durableQueue.splice(0, n);
    this.onDurable(ready);
  }

  /** fdatasyncs a segment: bytes a killed process left in the page cache become durable. */
  syncSegment(segment: number): void {
    const seg = this.segments.get(segment);
    assert.ok(seg, `sync of unknown segment ${segment}`);
    try {
      this.files.fdatasyncSync(seg.fd);
    } catch (err) {
      throw this.writeFailed(err, `syncing log segment ${segment}`);
    }
  }

  /** Whether an append into this segment is still in flight or not yet durable. */
  hasPendingIn(segment: number): boolean {
    return this.pending.some((a) => a.segment === segment) || this.durableQueue.some((a) => a.segment === segment);
  }

  /**
   * Reads bytes from a segment into `out` (exactly out.length bytes). A read that fails (an I/O
   * error, a segment shorter than the index says, a missing segment) is ENGINE_IO.
   */
  /**
   * Reads the 64 bytes before `offset` into `head` and the bytes from `offset` into `out`, in one
   * system call (a record's header with its payload, to check it). Short reads as readInto.
   */
  async readWithHeader(segment: number, offset: number, head: Buffer, out: Buffer): Promise<void> {
    const seg = this.segments.get(segment);
    if (!seg) throw new EngineError(EngineErrorCode.IO, `Log segment ${segment} is missing`);
    const { files } = this;
    const bufs = [head, out];
    const at = offset - head.length;
    let n: number;
    try {
      n = this.loopReads.allows(out.length)
        ? this.loopReads.run(() => files.readvSync(seg.fd, bufs, at))
        : await new Promise<number>((resolve, reject) => files.readv(seg.fd, bufs, at, (err, got) => (err ? reject(err) : resolve(got))));
    } catch (err) {
      throw ioError(err, `reading log segment ${segment} at ${offset}`);
    }
    if (n !== head.length + out.length) throw new EngineError(EngineErrorCode.IO, `Short read in log segment ${segment} at ${offset}: ${Math.max(0, n - head.length)} of ${out.length} bytes (the segment is truncated)`);
  }

  async readInto(segment: number, offset: number, out: Buffer): Promise<void> {
    const seg = this.segments.get(segment);
    if (!seg) throw new EngineError(EngineErrorCode.IO, `Log segment ${segment} is missing`);
    const { files } = this;
    let n: number;
    try {
      n = this.loopReads.allows(out.length) ? this.loopReads.run(() => files.readSync(seg.fd, out, 0, out.length, offset)) : await pread(files, seg.fd, out, offset);
    } catch (err) {
      throw ioError(err, `reading log segment ${segment} at ${offset}`);
    }
    if (n !== out.length) throw new EngineError(EngineErrorCode.IO, `Short read in log segment ${segment} at ${offset}: ${n} of ${out.length} bytes (the segment is truncated)`);
  }


  /**
   * Reads the records of a segment from `offset` on, in order, verifying both checksums. Stops
   * at the end or at the first torn or invalid record, and reports where the valid part ends.
   *
   * With `verify: false` (a sealed segment known valid, whose reader checks what it uses) payload
   * checksums are left to the caller, and payloads are views into the read window, valid until
   * the generator resumes; where the valid part ends is not recorded.
   *
   * With `end`, bytes from there on are not read: the active segment's records past a point may
   * still be in flight (the feed reads up to what it has published).
   */
  async *scan(segment: number, offset: number, opts: { payloads: boolean; verify?: boolean; end?: number }): AsyncGenerator<ScannedRecord, void, void> {
    const verify = opts.verify ?? true;
    const seg = this.segments.get(segment);
    assert.ok(seg, `scan of unknown segment ${segment}`);
    let pos = Math.max(offset, Format.segmentHeaderBytes);
    let fileBytes: number;
    try {
      fileBytes = this.files.fstatSync(seg.fd).size;
    } catch (err) {
      throw ioError(err, `reading log segment ${segment}`);
    }
    const size = Math.min(fileBytes, opts.end ?? Infinity);
    let skipped = 0;
    let validEnd = pos;
    // Records are read through a large window: one pread per few MiB, not two per record.
    const win = new ReadWindow(this.files, seg.fd, size, `log segment ${segment}`);
    while (pos + Format.recordHeaderBytes <= size) {
      const rec = await this.readRecord(segment, seg.fd, pos, size, opts.payloads, win, verify);
      if (!rec) {
        // A torn or failed append. Usually this is the tail; but a record whose write failed
        // (e.g. ENOSPC) leaves a hole with complete records after it, so look for the next one.
        const next = await this.findRecord(segment, seg.fd, pos + 1, size);
        if (next < 0) break;
        skipped += next - pos;
        pos = next;
        continue;
      }
      yield { header: rec.header, segment, offset: pos, end: rec.end, payload: rec.payload };
      pos = rec.end;
      validEnd = pos;
    }
    if (!verify) return;
    this.validEnd.set(segment, validEnd);
    this.skippedBytes.set(segment, skipped);
  }

  /** Reads and verifies the record at `pos`, or returns null if there is no valid one. */
  private async readRecord(segment: number, fd: number, pos: number, size: number, withPayload: boolean, win?: ReadWindow, verify = true): Promise<{ header: RecordHeader; end: number; payload: Buffer | null } | null> {
    const w = win ?? new ReadWindow(this.files, fd, size, `log segment ${segment}`);
    const headBuf = await w.at(pos, Format.recordHeaderBytes);
    if (!headBuf) return null;
    const header = decodeRecordHeader(headBuf);
    if (!header) return null;
    const end = pos + Format.recordHeaderBytes + header.payloadBytes;
    if (end > size) return null;
    let payload: Buffer | null = null;
    if (header.payloadBytes > 0) {
      const p = await w.at(pos + Format.recordHeaderBytes, header.payloadBytes);
      if (!p) return null;
      if (!verify) payload = withPayload ? p : null;
      else {
        if (crc32(p) !== header.payloadCrc) return null;
        if (withPayload) payload = Buffer.from(p);
      }
    }
    return { header, end, payload };
  }

  /** Offset of the next valid record at or after `from`, or -1. */
  private async findRecord(segment: number, fd: number, from: number, size: number): Promise<number> {
    const window = Buffer.allocUnsafe(4 * 1024 * 1024);
    const magic = Buffer.alloc(4);
    magic.writeUInt32LE(Format.recordMagic, 0);
    for (let base = from; base + Format.recordHeaderBytes <= size; base += window.length - 3) {
      const n = await pread(this.files, fd, window, base).catch((err) => {
        throw ioError(err, `reading log segment ${segment} at ${base}`);
      });
      let i = window.subarray(0, n).indexOf(magic);
      while (i >= 0) {
        if (await this.readRecord(segment, fd, base + i, size, false)) return base + i;
        i = window.subarray(0, n).indexOf(magic, i + 1);
      }
      if (n < window.length) break;
    }
    return -1;
  }

  /** Where the last scan of each segment found its valid records to end. */
  readonly validEnd = new Map<number, number>();
  /** Bytes the last scan of each segment skipped over between valid records. */
  readonly skippedBytes = new Map<number, number>();

  /** Cuts a segment at `end` (drops a torn tail found by recovery). */
  truncate(segment: number, end: number): void {
    const seg = this.segments.get(segment);
    assert.ok(seg);
    try {
      this.files.ftruncateSync(seg.fd, end);
      this.files.fdatasyncSync(seg.fd);
    } catch (err) {
      throw this.writeFailed(err, `cutting the torn tail of log segment ${segment}`);
    }
    seg.size = end;
  }

  /**
   * Deletes a sealed segment whose data is no longer referenced. It leaves the log at once; the
   * file is then shrunk a step at a time on the thread pool, with pauses, and unlinked: freeing a
   * large file's cached pages and extents in one go held the file system, and the log's appends
   * behind it, for up to a second (4 KiB random writes fell to a few hundred per second while
   * four 256 MiB segments went). A crash part-way leaves a shorter dead segment, which recovery
   * drops like any other. Unpaced, it is unlinked at once (recovery: no request waits yet).
   */
  removeSegment(id: number, opts: { paced: boolean }): Promise<void> {
    const seg = this.segments.get(id);
    assert.ok(seg && seg !== this.active, 'only sealed segments are removed');
    this.segments.delete(id);
    const file = path.join(this.dir, segmentName(id));
    const { files } = this;
    return (async () => {
      try {
        for (let size = seg.size - REMOVE_STEP_BYTES; opts.paced && size > Format.segmentHeaderBytes; size -= REMOVE_STEP_BYTES) {
          await new Promise<void>((resolve) => files.ftruncate(seg.fd, size, () => resolve()));
          await new Promise((resolve) => setTimeout(resolve, REMOVE_PAUSE_MS));
        }
        await new Promise<void>((resolve, reject) => files.unlink(file, (err) => (err ? reject(err) : resolve())));
      } finally {
        await new Promise<void>((resolve) => files.close(seg.fd, () => resolve()));
      }
    })();
  }

  close(): void {
    for (const s of this.segments.values()) {
      try {
        this.files.closeSync(s.fd);
      } catch {
        // A failing drive can fail a close too; the descriptor is released all the same.
      }
    }
    this.segments.clear();
  }
}
