/**
 * A small pool of data mover threads (worker.ts) that hash, compress, seal and open blobs, so
 * the event loop keeps reading and uploading meanwhile.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { Keys, SealedBlob } from './crypto.ts';
import { BackupError, type BackupErrorCodeValue } from './errors.ts';
import type { PackEntry } from './format.ts';

/** Most worker threads a pool starts. */
export const workersMax = 16;

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
  | { op: 'hash'; plain: Uint8Array }
  | { op: 'seal'; plain: Uint8Array; withId: boolean }
  | { op: 'open'; sealed: Uint8Array; flags: number; plainLength: number; id: Uint8Array; what: string }
  | { op: 'openMany'; data: Uint8Array; blobs: OpenSpec[] }
  | { op: 'pack'; blobs: Uint8Array[]; entries: PackEntry[] }
  | { op: 'checkPack'; pack: Uint8Array; packIdHex: string };

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

interface Pending {
  resolve(value: any): void;
  reject(err: Error): void;
  worker: number;
}

/** A fixed set of worker threads sharing the repository keys. */
export class WorkerPool {
  readonly size: number;
  private readonly workers: Worker[] = [];
  private readonly outstanding: number[] = [];
  private readonly pending = new Map<number, Pending>();
  private seq = 0;
  private failure: Error | null = null;

  constructor(keys: Keys, options: { workers?: number } = {}) {
    const n = options.workers ?? defaultWorkerCount();
    if (!Number.isSafeInteger(n) || n < 1 || n > workersMax) throw new BackupError('BACKUP_INVALID', `Worker count ${n} is not in 1..${workersMax}`);
    this.size = n;
    for (let i = 0; i < n; i++) {
      const w = new Worker(new URL('./worker.ts', import.meta.url), { workerData: { encKey: keys.encKey, idKey: keys.idKey } });
      w.unref();
      w.on('message', (msg: { seq: number; result?: any; error?: { code: BackupErrorCodeValue; message: string } }) => {
        const p = this.pending.get(msg.seq);
        if (p === undefined) return;
        this.pending.delete(msg.seq);
        this.outstanding[p.worker]--;
        if (msg.error) p.reject(new BackupError(msg.error.code, msg.error.message));
        else p.resolve(msg.result);
      });
      w.on('error', (err) => this.fail(err));
      w.on('exit', (code) => {
        if (code !== 0 && this.failure === null) this.fail(new Error(`Backup worker thread exited with code ${code}`));
      });
      this.workers.push(w);
      this.outstanding.push(0);
    }
  }

  private fail(err: Error): void {
    this.failure = err;
    for (const p of this.pending.values()) p.reject(err);
    this.pending.clear();
  }

  /** Sends a request to the least busy worker, moving the buffers in `transfer`. */
  private run<T>(req: WorkerRequest, transfer: Uint8Array[]): Promise<T> {
    if (this.failure) return Promise.reject(this.failure);
    let best = 0;
    for (let i = 1; i < this.size; i++) if (this.outstanding[i] < this.outstanding[best]) best = i;
    const seq = this.seq++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(seq, { resolve, reject, worker: best });
      this.outstanding[best]++;
      const w = this.workers[best];
      // Keep the thread referenced while it has work, so a pending result keeps the process alive.
      if (this.outstanding[best] === 1) w.ref();
      const done = () => {
        if (this.outstanding[best] === 0) w.unref();
      };
      this.pending.get(seq)!.resolve = (v) => (resolve(v), done());
      this.pending.get(seq)!.reject = (e) => (reject(e), done());
      w.postMessage({ ...req, seq }, transferablesOf(transfer));
    });
  }

  /** The blob id of `plain`; `plain` is moved to the worker and back (use the returned one). */
  async hash(plain: Buffer): Promise<{ id: Buffer; plain: Buffer }> {
    const r = await this.run<{ id: Uint8Array; plain: Uint8Array }>({ op: 'hash', plain }, [plain]);
    return { id: asBuffer(r.id), plain: asBuffer(r.plain) };
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

  /** Builds a pack from sealed blobs (moved) and their entries: its bytes and SHA-256 id. */
  async pack(blobs: Buffer[], entries: PackEntry[]): Promise<{ pack: Buffer; id: Buffer }> {
    const r = await this.run<{ pack: Uint8Array; id: Uint8Array }>({ op: 'pack', blobs, entries }, blobs);
    return { pack: asBuffer(r.pack), id: asBuffer(r.id) };
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
