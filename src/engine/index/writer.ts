/**
 * The index writer: a thread that makes batches of index changes in LMDB, so that the main
 * thread only plans them. At random 4 KiB writes a batch of 30,000 blocks took the event loop
 * 300 ms inside LMDB — a stall every second or so, during which no request was answered; planned
 * here and written there, it takes about a fifth of that.
 *
 * The store sends one batch at a time and changes nothing its batch touches (block versions,
 * segment counters, the applied position) until the reply; see Applier.applyOffThread (apply/applier.ts).
 */
import type { Worker } from 'node:worker_threads';
import { startThread } from '../../util/thread.ts';
import { entryValueBytes, indexKeyBytes, encodeKey, encodeValue, type Entry } from '../format.ts';
import type { LogPosition } from '../log/write-log.ts';

/** One change of a planned batch. */
export interface IndexOp {
  branch: number;
  block: number;
  seq: number;
  /** The version to put, or null to remove the version (branch, block, seq). */
  put: Entry | null;
}

/** @internal What the main thread sends: the batch's changes, encoded. */
export interface WriterRequest {
  id: number;
  keys: ArrayBuffer;
  values: ArrayBuffer;
  /** 1 = put (the next value), 0 = remove; one per key. */
  puts: ArrayBuffer;
  applied: LogPosition;
  seqNext: number;
  /** Segment → its live bytes after the batch. */
  segments: [number, number][];
  /** Segment → where the batch's last record in it ends (BlockIndex.segmentEnds). */
  ends: [number, number][];
}

/** @internal What the thread answers. */
export type WriterReply = { id: number; ok: true } | { id: number; ok: false; code: unknown; message: string };

export class IndexWriter {
  private worker: Worker;
  private nextId = 1;
  private waiting = new Map<number, { resolve: () => void; reject: (err: Error) => void }>();
  private failure: Error | null = null;

  constructor(indexPath: string) {
    this.worker = startThread(new URL('./writer-thread.ts', import.meta.url), { workerData: { path: indexPath } });
    // The store closes the writer; an idle one must not keep the process alive.
    this.worker.unref();
    this.worker.on('message', (r: WriterReply) => {
      const w = this.waiting.get(r.id);
      if (!w) return;
      this.waiting.delete(r.id);
      if (!this.waiting.size) this.worker.unref();
      if (r.ok) w.resolve();
      else w.reject(Object.assign(new Error(r.message), { code: r.code }));
    });
    const fail = (err: Error) => {
      this.failure ??= err;
      for (const w of this.waiting.values()) w.reject(err);
      this.waiting.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`The index writer thread exited (code ${code})`)));
  }

  /** Whether the thread is still usable (it has not failed or exited). */
  get usable(): boolean {
    return this.failure === null;
  }

  /**
   * Makes `ops`, the applied position, the next seq, the segment counters and the segments'
   * applied ends durable in one transaction. Resolves once committed; rejects, with nothing changed, if the
   * transaction failed.
   */
  write(ops: IndexOp[], applied: LogPosition, seqNext: number, segments: [number, number][], ends: [number, number][]): Promise<void> {
    if (this.failure) return Promise.reject(this.failure);
    let puts = 0;
    for (const op of ops) if (op.put) puts++;
    const keys = Buffer.allocUnsafeSlow(ops.length * indexKeyBytes);
    const values = Buffer.allocUnsafeSlow(puts * entryValueBytes);
    const flags = new Uint8Array(ops.length);
    let v = 0;
    ops.forEach((op, i) => {
      encodeKey(op.branch, op.block, op.seq, keys.subarray(i * indexKeyBytes, (i + 1) * indexKeyBytes));
      if (op.put) {
        encodeValue(op.put, values.subarray(v, v + entryValueBytes));
        v += entryValueBytes;
        flags[i] = 1;
      }
    });
    const id = this.nextId++;
    const req: WriterRequest = { id, keys: keys.buffer as ArrayBuffer, values: values.buffer as ArrayBuffer, puts: flags.buffer, applied, seqNext, segments, ends };
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      // A batch in flight keeps the process alive until it is committed.
      this.worker.ref();
      this.worker.postMessage(req, [req.keys, req.values, req.puts]);
    });
  }

  /** Stops the thread once it has finished what it was sent. */
  async close(): Promise<void> {
    if (this.failure) return;
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    // Unreferenced, the thread would not keep the process alive while this waits for it.
    this.worker.ref();
    this.worker.postMessage('close');
    await exited;
  }
}
