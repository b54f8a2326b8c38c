/**
 * Counters of a disk's I/O (docs/observability.md, "Disk I/O"): operations, bytes, failures and
 * a latency histogram per kind of operation, and requests in flight. Updating them is a few
 * additions into preallocated arrays: the NBD path pays no allocation and no map lookup per
 * request (the volume holds its disk's IoStats).
 */
import type { HistogramSample, Sample } from './metrics.ts';

/** The operations counted, as their metric label. */
export const ioOps = ['read', 'write', 'trim', 'zero', 'flush'] as const;
/** One of ioOps. */
export type IoOp = (typeof ioOps)[number];
/** Index of each op in the arrays of IoStats. */
export const IoOpIndex = { read: 0, write: 1, trim: 2, zero: 3, flush: 4 } as const satisfies Record<IoOp, number>;

/**
 * Upper bounds of the latency buckets, seconds: 50 µs (a read from page cache) to 10 s (a flush
 * behind a full disk), about 2.5 per decade.
 */
export const ioLatencyBoundsSeconds: readonly number[] = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10];

const opCount = ioOps.length;
const bucketCount = ioLatencyBoundsSeconds.length + 1;

/** The I/O counters of one disk. */
export class IoStats {
  /** Requests started and not finished. */
  inFlight = 0;
  /** Volumes open on the disk through a counting wrapper (a disk's stats are dropped at 0, once deleted). */
  users = 0;
  /** Requests that failed because the drive failed a read (also counted in `errors` by op). */
  readErrors = 0;
  /** Requests that failed because the bytes read failed their record's checksum (also counted in `errors`). */
  checksumErrors = 0;
  readonly ops = new Float64Array(opCount);
  readonly bytes = new Float64Array(opCount);
  readonly errors = new Float64Array(opCount);
  readonly sumSeconds = new Float64Array(opCount);
  /** bucketCount buckets per op, op-major. */
  readonly buckets = new Float64Array(opCount * bucketCount);

  /** A request starts; returns the time to pass to end(). */
  begin(): number {
    this.inFlight++;
    return performance.now();
  }

  /** A request of `op` that began at `startMs` ended, having moved `bytes` (0 when it failed). */
  end(op: number, startMs: number, bytes: number, failed: boolean): void {
    this.inFlight--;
    const seconds = (performance.now() - startMs) / 1000;
    this.ops[op]++;
    if (failed) this.errors[op]++;
    else this.bytes[op] += bytes;
    this.sumSeconds[op] += seconds;
    let b = 0;
    while (b < ioLatencyBoundsSeconds.length && seconds > ioLatencyBoundsSeconds[b]) b++;
    this.buckets[op * bucketCount + b]++;
  }
}

/** Per-disk IoStats, and their samples for a MetricsRegistry. */
export class DiskIoStats {
  readonly #disks = new Map<string, IoStats>();

  /** The stats of `disk`, created on first use; the caller counts itself in `users`. */
  of(disk: string): IoStats {
    let s = this.#disks.get(disk);
    if (s === undefined) {
      s = new IoStats();
      this.#disks.set(disk, s);
    }
    return s;
  }

  /** Forgets the disks not in `live` that nobody has open, so deleted disks leave the metrics. */
  prune(live: ReadonlySet<string>): void {
    for (const [disk, s] of this.#disks) if (!live.has(disk) && s.users === 0 && s.inFlight === 0) this.#disks.delete(disk);
  }

  /** One sample per disk and op of the array `pick` chooses. */
  perOp(pick: (s: IoStats) => Float64Array, ops: readonly IoOp[] = ioOps): Sample[] {
    const out: Sample[] = [];
    for (const [disk, s] of this.#disks) for (const op of ops) out.push({ labels: { disk, op }, value: pick(s)[IoOpIndex[op]] });
    return out;
  }

  /** One sample per disk of the figure `pick` chooses. */
  perDisk(pick: (s: IoStats) => number): Sample[] {
    return [...this.#disks].map(([disk, s]) => ({ labels: { disk }, value: pick(s) }));
  }

  /** Client operations on every disk so far (deleted disks' counts go with them). */
  totalOps(): number {
    let n = 0;
    for (const s of this.#disks.values()) for (const v of s.ops) n += v;
    return n;
  }

  /** Requests in flight per disk. */
  inFlight(): Sample[] {
    return [...this.#disks].map(([disk, s]) => ({ labels: { disk }, value: s.inFlight }));
  }

  /** The latency histogram per disk and op. */
  latency(): HistogramSample[] {
    const out: HistogramSample[] = [];
    for (const [disk, s] of this.#disks) {
      for (const op of ioOps) {
        const i = IoOpIndex[op];
        out.push({ labels: { disk, op }, bounds: ioLatencyBoundsSeconds, counts: s.buckets.subarray(i * bucketCount, (i + 1) * bucketCount), sum: s.sumSeconds[i], count: s.ops[i] });
      }
    }
    return out;
  }
}
