/**
 * A small pool of worker threads that run CPU-heavy tasks (hashing, compression, encryption) so
 * the event loop keeps reading and writing meanwhile. What a task is belongs to the caller: it
 * names the thread's module (which answers through serveTasks, thread-worker.ts) and turns the
 * errors its threads report into its own. The backup's WorkerPool (src/backup/pool.ts) is one.
 */
import assert from 'node:assert/strict';
import type { Worker } from 'node:worker_threads';
import { startThread } from '../util/thread.ts';
import { AdaptiveLimiter, type AdaptiveLimiterStats } from './adapt.ts';

/** Most threads a pool starts. */
export const threadsMax = 16;

/**
 * Tasks a thread holds at once: the one it runs and one waiting in its port, so that it starts
 * the next as soon as it answers instead of idling while the main thread receives the answer and
 * sends more (the main thread is busy reading and writing: workers had been 17–19% idle).
 */
export const tasksPerWorker = 2;

/**
 * Only behind a task of at most this many input bytes does a thread hold a second one: nothing
 * waits long in a thread's port behind a large request.
 */
export const queueBehindBytesMax = 4 << 20;

/** An error a thread reports for a task: its code (the caller's table) and message. */
export interface TaskFailure {
  code: string;
  message: string;
}

/** Options of a ThreadPool. */
export interface ThreadPoolOptions<Init> {
  /** The threads' module; it calls serveTasks (thread-worker.ts). */
  module: URL;
  /** Threads to start, 1 to threadsMax. */
  threads: number;
  /**
   * Each thread's first message (e.g. keys). May be a promise: the first thread boots meanwhile,
   * the others once it resolves, and all take tasks from then on; if it rejects, every task
   * fails with its error.
   */
  init: Init | Promise<Init>;
  /** The error a task fails with when its thread reports `failure`. */
  errorOf: (failure: TaskFailure) => Error;
  /** Names the threads in the error of one that exits, e.g. `Backup worker`. */
  name: string;
  /** Threads kept busy at the least; the adaptive limit gives back the rest. Default: all. */
  busyMin?: number;
  /** Clock in ms of the busy-thread limiter, for tests. */
  now?: () => number;
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

/** A request waiting in the shared queue, then running on one thread. */
interface Task<Req> {
  req: Req;
  transfer: Uint8Array[];
  /** Input bytes, for the busy-thread limiter's throughput. */
  bytes: number;
  /** Number of the message to the thread; its reply carries it back. */
  seq: number;
  resolve(value: any): void;
  reject(err: Error): void;
}

/**
 * A fixed set of worker threads. Requests wait in one shared queue and go to an idle thread
 * first; a thread that runs a small request (at most queueBehindBytesMax) may also hold the next
 * one (tasksPerWorker), so it never waits for the main thread between two. A long request never
 * holds up requests queued behind it: nothing is queued behind it in its thread. How many tasks
 * may be on threads at once is an AdaptiveLimiter between busyMin × tasksPerWorker (busyMin
 * defaults to the pool's size, so all threads are used) and size × tasksPerWorker: with a lower
 * busyMin it gives back threads that do not add throughput (a machine whose cores the node or
 * the disk already keep busy).
 */
export class ThreadPool<Req extends object, Init> {
  /** Number of threads. */
  readonly size: number;
  private readonly module: URL;
  private readonly errorOf: (failure: TaskFailure) => Error;
  private readonly name: string;
  private readonly workers: Worker[] = [];
  /** The tasks on each thread, in the order sent (it answers in that order); empty when it is free. */
  private readonly running: Task<Req>[][] = [];
  private readonly queue: Task<Req>[] = [];
  private queueHead = 0;
  private readonly busy: AdaptiveLimiter;
  private failure: Error | null = null;
  private seq = 0;

  /** Whether the threads have their first message: tasks wait until then. */
  private initialised = false;

  constructor(options: ThreadPoolOptions<Init>) {
    const n = options.threads;
    assert.ok(Number.isSafeInteger(n) && n >= 1 && n <= threadsMax, `threads ${n}`);
    this.size = n;
    this.module = options.module;
    this.errorOf = options.errorOf;
    this.name = options.name;
    // Every thread stays available unless busyMin asks for less: the work is CPU-bound, and the
    // hill climb, judging windows of mixed hash, seal and pack tasks on a shared machine, took
    // noise for a knee and left one worker hashing while the other idled.
    const busyMin = Math.max(1, Math.min(n, options.busyMin ?? n));
    this.busy = new AdaptiveLimiter({ min: busyMin * tasksPerWorker, max: n * tasksPerWorker, initial: n * tasksPerWorker, now: options.now });
    // One thread boots at once; the others once the first message is there. A thread's start-up
    // costs ~0.1 s of CPU (Node's internal modules compiled anew in each), and a command starts
    // its pool while the password's key is derived: the key, the command's own start and two
    // booting threads took the two cores of the benchmark's VM from one another.
    for (let i = 0; i < n; i++) this.running.push([]);
    this.startWorker(0);
    const give = (init: Init): void => {
      if (this.failure !== null) return;
      for (let i = this.workers.length; i < n; i++) this.startWorker(i);
      // The first message of each thread; the tasks follow it in its port.
      for (const w of this.workers) w.postMessage({ init });
      this.initialised = true;
      this.dispatch();
    };
    const init = options.init;
    if (init instanceof Promise) init.then(give, (err: Error) => this.failure ?? this.fail(err));
    else give(init);
  }

  /** Starts thread `i`, whose tasks are `running[i]`. */
  private startWorker(i: number): void {
    const w = startThread(this.module);
    w.unref();
    w.on('message', (msg: { seq: number; result?: any; error?: TaskFailure }) => {
      const task = this.running[i].shift();
      if (task === undefined) return; // the pool failed meanwhile
      assert.equal(msg.seq, task.seq, 'a worker answered a message it was not sent');
      // Keep a thread referenced only while it has work, so a pending result keeps the process alive.
      if (this.running[i].length === 0) w.unref();
      this.busy.release({ bytes: task.bytes });
      if (msg.error) task.reject(this.errorOf(msg.error));
      else task.resolve(msg.result);
      this.dispatch();
    });
    w.on('error', (err) => this.fail(err));
    w.on('exit', (code) => {
      if (code !== 0 && this.failure === null) this.fail(new Error(`${this.name} thread exited with code ${code}`));
    });
    this.workers.push(w);
  }

  /** The busy-thread limiter's record (for `--json` stats). */
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

  /**
   * Queues a request, moving the buffers in `transfer`; a free thread takes it. `sharedBytes`:
   * input in shared memory, counted with the moved buffers for the limiter's throughput.
   */
  run<T>(req: Req, transfer: Uint8Array[] = [], sharedBytes = 0): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    const bytes = transfer.reduce((n, b) => n + b.byteLength, sharedBytes);
    return new Promise<T>((resolve, reject) => {
      this.queue.push({ req, transfer, bytes, seq: this.seq++, resolve, reject });
      this.dispatch();
    });
  }

  /**
   * A thread for the next task: an idle one, else one whose only task is small enough to queue
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

  /** Hands queued tasks to threads while the task limit allows. */
  private dispatch(): void {
    while (this.initialised && this.queueHead < this.queue.length && this.failure === null) {
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
      w.postMessage({ req: task.req, seq: task.seq }, transferablesOf(task.transfer));
    }
  }

  /** Stops the threads; tasks not done, and any run later, fail with `reason`. */
  async close(reason: Error): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()));
    this.fail(reason);
  }
}
