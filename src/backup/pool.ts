/**
 * The backup's data mover threads (worker.ts) on a ThreadPool (src/flow): the tasks they run
 * (hash, compress, seal and open blobs, build and check packs), the keys they are given first,
 * and their failures as BackupErrors.
 */
import { availableParallelism } from 'node:os';
import { ThreadPool, threadsMax, type AdaptiveLimiterStats } from '../flow/index.ts';
import type { Keys, SealedBlob } from './crypto.ts';
import { BackupError, BackupErrorCode, type BackupErrorCodeValue } from './errors.ts';
import type { PackEntry } from './format.ts';

/** Most worker threads a pool starts. */
export const workersMax = threadsMax;

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

function asBuffer(u8: Uint8Array): Buffer {
  return Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

/** What a worker thread is given first: the repository's keys. */
export interface WorkerInit {
  encKey: Uint8Array;
  idKey: Uint8Array;
}

/**
 * The data mover threads of one repository, sharing its keys: a ThreadPool (src/flow) whose
 * tasks are the requests above. Requests wait in its one shared queue and go to an idle worker
 * first; with a lower busyMin it gives back workers that do not add throughput.
 */
export class WorkerPool {
  /** Number of worker threads. */
  readonly size: number;
  private readonly threads: ThreadPool<WorkerRequest, WorkerInit>;

  /**
   * Starts the threads. `keys` may be a promise: the first thread boots meanwhile (a CLI command
   * starts the pool while the password's key is derived), the others once it resolves, and all
   * take tasks from then on; if it rejects, every task fails with its error.
   */
  constructor(keys: Keys | Promise<Keys>, options: { workers?: number; busyMin?: number; now?: () => number } = {}) {
    const n = options.workers ?? defaultWorkerCount();
    if (!Number.isSafeInteger(n) || n < 1 || n > workersMax) throw new BackupError(BackupErrorCode.INVALID, `Worker count ${n} is not in 1..${workersMax}`);
    this.size = n;
    const init = (k: Keys): WorkerInit => ({ encKey: k.encKey, idKey: k.idKey });
    this.threads = new ThreadPool<WorkerRequest, WorkerInit>({
      module: new URL('./worker.ts', import.meta.url),
      threads: n,
      init: keys instanceof Promise ? keys.then(init) : init(keys),
      errorOf: (failure) => new BackupError(failure.code as BackupErrorCodeValue, failure.message),
      name: 'Backup worker',
      busyMin: options.busyMin,
      now: options.now,
    });
  }

  /** The busy-worker limiter's record (for `--json` stats). */
  stats(): AdaptiveLimiterStats {
    return this.threads.stats();
  }

  /** Queues a request, moving the buffers in `transfer`; a free worker takes it. */
  private run<T>(req: WorkerRequest, transfer: Uint8Array[], sharedBytes = 0): Promise<T> {
    return this.threads.run<T>(req, transfer, sharedBytes);
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
    await this.threads.close(new BackupError(BackupErrorCode.INVALID, 'The worker pool is closed'));
  }
}
