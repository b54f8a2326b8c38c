/**
 * A small pool of data mover threads (worker.ts) that hash, compress, seal and open blobs, so
 * the event loop keeps reading and uploading meanwhile.
 */
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import type { Worker } from 'node:worker_threads';
import { startThread } from '../util/thread.ts';
import type { Keys, SealedBlob } from './crypto.ts';
import { BackupError, type BackupErrorCodeValue } from './errors.ts';
import type { PackEntry } from './format.ts';
import { AdaptiveLimiter, type AdaptiveLimiterStats } from './adapt.ts';

/** Most worker threads a pool starts. */
export const workersMax = 16;

/**
 * Tasks a worker holds at once: the one it runs and one waiting in its port, so that it starts
 * the next as soon as it answers instead of idling while the main thread receives the answer and
 * sends more (the main thread is busy reading and writing: workers had been 17–19% idle).
 */
export const tasksPerWorker = 2;

/**
 * Only behind a task of at most this many input bytes does a worker hold a second one: nothing
 * waits long in a worker's port behind a large request.
 */
export const queueBehindBytesMax = 4 << 20;

/** Default number of workers: one per core, at least 1, at most 4. */
export function defaultWorkerCount(): number {
  return Math.max(1, Math.min(4, availableParallelism()));
}

/** One blob to open out of a range read. */
export interface OpenSpec {
  /** Offset in the range read's bytes. */
  offset: number;
  storedLength: number;
  flags: number;
  plainLength: number;
  id: Uint8Array;
  /** Names the blob in errors. */
  what: string;
}

/** Requests a worker understands. */
export type WorkerRequest =
  | { op: 'hashAt'; memory: SharedArrayBuffer; offset: number; length: number }
  | { op: 'sealAt'; memory: SharedArrayBuffer; offset: number; length: number }
  | { op: 'hashSealAt'; memory: SharedArrayBuffer; offset: number; length: number }
  | { op: 'seal'; plain: Uint8Array; withId: boolean }
  | { op: 'open'; sealed: Uint8Array; flags: number; plainLength: number; id: Uint8Array; what: string }
  | { op: 'openMany'; data: Uint8Array; blobs: OpenSpec[] }
  | { op: 'openManyInto'; data: Uint8Array; blobs: OpenSpec[]; memory: SharedArrayBuffer; offsets: number[]; slotBytes: number }
  | { op: 'packTrailer'; entries: PackEntry[] }
  | { op: 'checkPack'; pack: Uint8Array; packIdHex: string };

/** Bytes in memory shared with the workers. */
export interface SharedBytes {
  memory: SharedArrayBuffer;
  offset: number;
  length: number;
}

/** What checkPack finds in a pack. */
export interface PackCheck {
  hashOk: boolean;
  /** The header's entries, or null if the header is damaged. */
  entries: PackEntry[] | null;
  headerError?: string;
  /** Blobs (by header position) that fail to open or do not match their id. */
  badBlobs: { index: number; message: string }[];
}

/**
 * ArrayBuffers that can be moved rather than copied: those a Uint8Array views whole (a Buffer
 * on Node's shared slab must be copied). Looks two levels deep into objects and arrays.
 */
export function transferablesOf(value: unknown, depth = 0, out = new Set<ArrayBuffer>()): ArrayBuffer[] {
  if (value instanceof Uint8Array) {
    if (value.byteOffset === 0 && value.byteLength === value.buffer.byteLength && value.buffer instanceof ArrayBuffer) out.add(value.buffer);
  } else if (depth < 2 && value !== null && typeof value === 'object') {
    for (const v of Array.isArray(value) ? value : Object.values(value)) transferablesOf(v, depth + 1, out);
  }
  return [...out];
}

function asBuffer(u8: Uint8Array): Buffer {
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

/** A request waiting in the shared queue, then running on one worker. */
interface Task {
  req: WorkerRequest;
  transfer: Uint8Array[];
  /** Input bytes, for the busy-worker limiter's throughput. */
  bytes: number;
  /** Number of the message to the worker; its reply carries it back. */
  seq: number;
  resolve(value: any): void;
  reject(err: Error): void;
}

/**
 * A fixed set of worker threads sharing the repository keys. Requests wait in one shared queue
 * and go to an idle worker first; a worker that runs a small request (at most
 * queueBehindBytesMax) may also hold the next one (tasksPerWorker), so it never waits for the
 * main thread between two. A long request never holds up requests queued behind it: nothing is
 * queued behind it in its worker. How many tasks may be on workers at once is an
 * AdaptiveLimiter between busyMin × tasksPerWorker (busyMin defaults to the pool's size, so all
 * workers are used) and size × tasksPerWorker: with a lower busyMin it gives back workers that do
 * not add throughput (a machine whose cores the node or the disk already keep busy).
 */
export class WorkerPool {
  readonly size: number;
  private readonly workers: Worker[] = [];
  /** The tasks on each worker, in the order sent (it answers in that order); empty when it is free. */
  private readonly running: Task[][] = [];
  private readonly queue: Task[] = [];
  private queueHead = 0;
  private readonly busy: AdaptiveLimiter;
  private failure: Error | null = null;
  private seq = 0;

  /** Whether the workers have the keys: tasks wait until then. */
  private keyed = false;

  /**
   * Starts the threads. `keys` may be a promise: the first thread boots meanwhile (a CLI command
   * starts the pool while the password's key is derived), the others once it resolves, and all
   * take tasks from then on; if it rejects, every task fails with its error.
   */
  constructor(keys: Keys | Promise<Keys>, options: { workers?: number; busyMin?: number; now?: () => number } = {}) {
    const n = options.workers ?? defaultWorkerCount();
    if (!Number.isSafeInteger(n) || n < 1 || n > workersMax) throw new BackupError('BACKUP_INVALID', `Worker count ${n} is not in 1..${workersMax}`);
    this.size = n;
    // Every worker stays available unless busyMin asks for less: the work is CPU-bound, and the
    // hill climb, judging windows of mixed hash, seal and pack tasks on a shared machine, took
    // noise for a knee and left one worker hashing while the other idled.
    const busyMin = Math.max(1, Math.min(n, options.busyMin ?? n));
    this.busy = new AdaptiveLimiter({ min: busyMin * tasksPerWorker, max: n * tasksPerWorker, initial: n * tasksPerWorker, now: options.now });
    // One thread boots at once; the others once the keys are there. A thread's start-up costs
    // ~0.1 s of CPU (Node's internal modules compiled anew in each), and a command starts its pool
    // while the password's key is derived: the key, the command's own start and two booting
    // threads took the two cores of the benchmark's VM from one another.
    for (let i = 0; i < n; i++) this.running.push([]);
    this.startWorker(0);
    const give = (k: Keys): void => {
      if (this.failure !== null) return;
      for (let i = this.workers.length; i < n; i++) this.startWorker(i);
      // The first message of each thread; the tasks follow it in its port.
      for (const w of this.workers) w.postMessage({ op: 'keys', encKey: k.encKey, idKey: k.idKey });
      this.keyed = true;
      this.dispatch();
    };
    if (keys instanceof Promise) keys.then(give, (err: Error) => this.failure ?? this.fail(err));
    else give(keys);
  }

  /** Starts thread `i`, whose tasks are `running[i]`. */
  private startWorker(i: number): void {
    const w = startThread(new URL('./worker.ts', import.meta.url));
    w.unref();
    w.on('message', (msg: { seq: number; result?: any; error?: { code: BackupErrorCodeValue; message: string } }) => {
      const task = this.running[i].shift();
      if (task === undefined) return; // the pool failed meanwhile
      assert.equal(msg.seq, task.seq, 'a worker answered a message it was not sent');
      // Keep a thread referenced only while it has work, so a pending result keeps the process alive.
      if (this.running[i].length === 0) w.unref();
      this.busy.release({ bytes: task.bytes });
      if (msg.error) task.reject(new BackupError(msg.error.code, msg.error.message));
      else task.resolve(msg.result);
      this.dispatch();
    });
    w.on('error', (err) => this.fail(err));
    w.on('exit', (code) => {
      if (code !== 0 && this.failure === null) this.fail(new Error(`Backup worker thread exited with code ${code}`));
    });
    this.workers.push(w);
  }

  /** The busy-worker limiter's record (for `--json` stats). */
  stats(): AdaptiveLimiterStats {
    return this.busy.stats();
  }

  private fail(err: Error): void {
    this.failure = err;
    for (let i = 0; i < this.running.length; i++) {
      for (const task of this.running[i]) task.reject(err);
      this.running[i] = [];
    }
    for (let i = this.queueHead; i < this.queue.length; i++) this.queue[i].reject(err);
    this.queue.length = 0;
    this.queueHead = 0;
  }

  /** Queues a request, moving the buffers in `transfer`; a free worker takes it. */
  private run<T>(req: WorkerRequest, transfer: Uint8Array[], sharedBytes = 0): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const bytes = transfer.reduce((n, b) => n + b.byteLength, sharedBytes);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ req, transfer, bytes, seq: this.seq++, resolve, reject });
      this.dispatch();
    });
  }

  /**
   * A worker for the next task: an idle one, else one whose only task is small enough to queue
   * behind; -1 if none.
   */
  private pickWorker(): number {
    let second = -1;
    for (let i = 0; i < this.running.length; i++) {
      const tasks = this.running[i];
      if (tasks.length === 0) return i;
      if (second < 0 && tasks.length < tasksPerWorker && tasks.every((t) => t.bytes <= queueBehindBytesMax)) second = i;
    }
    return second;
  }

  /** Hands queued tasks to workers while the task limit allows. */
  private dispatch(): void {
    while (this.keyed && this.queueHead < this.queue.length && this.failure === null) {
      const i = this.pickWorker();
      if (i < 0 || !this.busy.tryAcquire()) return;
      const task = this.queue[this.queueHead++];
      if (this.queueHead > 1024 && this.queueHead * 2 > this.queue.length) {
        this.queue.splice(0, this.queueHead);
        this.queueHead = 0;
      }
      this.running[i].push(task);
      const w = this.workers[i];
      w.ref();
      w.postMessage({ ...task.req, seq: task.seq }, transferablesOf(task.transfer));
    }
  }

  /** The blob id of the `length` bytes at `offset` of shared `memory` (read where they lie). */
  async hashAt(at: SharedBytes): Promise<Buffer> {
    const r = await this.run<{ id: Uint8Array }>({ op: 'hashAt', ...at }, [], at.length);
    return asBuffer(r.id);
  }

  /** Compresses and seals the `length` bytes at `offset` of shared `memory` (read where they lie). */
  async sealAt(at: SharedBytes): Promise<SealedBlob> {
    const r = await this.run<{ sealed: Uint8Array; flags: number; plainLength: number }>({ op: 'sealAt', ...at }, [], at.length);
    return { sealed: asBuffer(r.sealed), flags: r.flags, plainLength: r.plainLength };
  }

  /**
   * hashAt and sealAt in one task: for bytes that are most likely a new blob, one trip to a
   * worker instead of two (the seal is wasted if the id turns out to be known).
   */
  async hashSealAt(at: SharedBytes): Promise<SealedBlob & { id: Buffer }> {
    const r = await this.run<{ sealed: Uint8Array; flags: number; plainLength: number; id: Uint8Array }>({ op: 'hashSealAt', ...at }, [], at.length);
    return { sealed: asBuffer(r.sealed), flags: r.flags, plainLength: r.plainLength, id: asBuffer(r.id) };
  }

  /** Compresses and seals `plain` (moved to the worker); with `withId` also returns its id. */
  async seal(plain: Buffer, withId = false): Promise<SealedBlob & { id?: Buffer }> {
    const r = await this.run<{ sealed: Uint8Array; flags: number; plainLength: number; id?: Uint8Array }>({ op: 'seal', plain, withId }, [plain]);
    return { sealed: asBuffer(r.sealed), flags: r.flags, plainLength: r.plainLength, id: r.id ? asBuffer(r.id) : undefined };
  }

  /** Opens one blob and checks it against its id. */
  async open(sealed: Buffer, expect: { flags: number; plainLength: number; id: Buffer }, what: string): Promise<Buffer> {
    const r = await this.run<{ plain: Uint8Array }>({ op: 'open', sealed, flags: expect.flags, plainLength: expect.plainLength, id: expect.id, what }, [sealed]);
    return asBuffer(r.plain);
  }

  /** Opens several blobs of one range read (`data` is moved to the worker). */
  async openMany(data: Buffer, blobs: OpenSpec[]): Promise<Buffer[]> {
    const r = await this.run<{ plains: Uint8Array[] }>({ op: 'openMany', data, blobs }, [data]);
    return r.plains.map(asBuffer);
  }

  /**
   * Opens several blobs of one range read (`data` is moved to the worker) into shared memory:
   * blob i's plaintext goes to `offsets[i]` of `memory` (at most `slotBytes` of it). Returns
   * the plaintexts' lengths.
   */
  async openManyInto(data: Buffer, blobs: OpenSpec[], into: { memory: SharedArrayBuffer; offsets: number[]; slotBytes: number }): Promise<number[]> {
    const r = await this.run<{ lengths: number[] }>({ op: 'openManyInto', data, blobs, ...into }, [data]);
    return r.lengths;
  }

  /** The tail of a pack of `entries`: its sealed header, then the header's length. */
  async packTrailer(entries: PackEntry[]): Promise<Buffer> {
    return asBuffer(await this.run<Uint8Array>({ op: 'packTrailer', entries }, []));
  }

  /** Checks a whole pack (moved): hash against its name, header, every blob. */
  async checkPack(pack: Buffer, packIdHex: string): Promise<PackCheck> {
    const r = await this.run<PackCheck>({ op: 'checkPack', pack, packIdHex }, [pack]);
    return { ...r, entries: r.entries?.map((e) => ({ ...e, id: asBuffer(e.id) })) ?? null };
  }

  /** Stops the threads. */
  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.fail(new BackupError('BACKUP_INVALID', 'The worker pool is closed'));
  }
}
