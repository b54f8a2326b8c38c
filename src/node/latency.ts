/**
 * The node's latency profiles (docs/latency.md): which disks emulate a target device, kept in
 * `DIR/latency.json` (the node's own metadata: the engine knows nothing of them), with each
 * disk's emulated device, and the one queue of deadlines their requests wait in.
 *
 * A disk's entry carries the disk's creation time: a disk deleted and made again under the same
 * name (by any way: the API forgets the entry on delete, but a restore or a crash between the
 * two could leave it) does not inherit its profile.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ApiError, ApiErrorCode } from '../api/index.ts';
import type { LatencySettings } from '../api/index.ts';
import type { Store } from '../engine/index.ts';
import { checkLatencyProfile, DelayQueue, LatencyDevice } from '../flow/index.ts';
import type { LatencyProfile } from '../flow/index.ts';
import type { Logger } from '../observe/index.ts';
import { syncDir } from '../util/sync-dir.ts';

/** Format version of `latency.json`. */
const FORMAT = 1;

interface Entry {
  createdMs: number;
  profile: LatencyProfile;
}

/** Per-disk latency profiles of a node, their devices and their queue. */
export class DiskLatencies implements LatencySettings {
  readonly #file: string;
  readonly #store: Store;
  readonly #log: Logger;
  readonly #keep: boolean;
  readonly #entries = new Map<string, Entry>();
  readonly #devices = new Map<string, LatencyDevice>();
  /** The queue every delayed request of the node waits in. */
  readonly queue = new DelayQueue();
  /** Writes of the file, one after the other. */
  #writing: Promise<void> = Promise.resolve();

  private constructor(opts: { file: string; store: Store; log: Logger; keep: boolean }) {
    this.#file = opts.file;
    this.#store = opts.store;
    this.#log = opts.log;
    this.#keep = opts.keep;
  }

  /**
   * Reads `file` (none: no disk has a profile). Entries of disks the store does not have, or has
   * made since, are dropped; a damaged file is logged and taken as empty. `keep` false (a
   * read-only node) never writes it.
   */
  static async open(opts: { file: string; store: Store; log: Logger; keep: boolean }): Promise<DiskLatencies> {
    const l = new DiskLatencies(opts);
    let text: string;
    try {
      text = await readFile(opts.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') opts.log.warn(`cannot read ${opts.file}: ${(err as Error).message}; no disk has a latency profile`);
      return l;
    }
    let disks: Record<string, unknown>;
    try {
      const doc = JSON.parse(text) as { version?: unknown; disks?: unknown };
      if (doc.version !== FORMAT || typeof doc.disks !== 'object' || doc.disks === null) throw new Error(`not a version ${FORMAT} latency file`);
      disks = doc.disks as Record<string, unknown>;
    } catch (err) {
      opts.log.warn(`${opts.file} is damaged (${(err as Error).message}); no disk has a latency profile`);
      return l;
    }
    const known = new Map(opts.store.listDisks().map((d) => [d.name, d.createdMs]));
    for (const [disk, raw] of Object.entries(disks)) {
      const e = raw as { createdMs?: unknown; profile?: unknown };
      const check = checkLatencyProfile(e?.profile);
      if (!check.ok) {
        opts.log.warn(`${opts.file}: the latency profile of disk ${disk} is dropped: ${check.error}`, { disk });
        continue;
      }
      if (known.get(disk) !== e.createdMs) continue;
      l.#entries.set(disk, { createdMs: e.createdMs as number, profile: check.profile });
      l.#devices.set(disk, new LatencyDevice(check.profile));
    }
    return l;
  }

  /** The emulated device of `disk`, or null: asked at every request, so a change applies to open connections at once. */
  device(disk: string): LatencyDevice | null {
    return this.#devices.get(disk) ?? null;
  }

  profile(disk: string): LatencyProfile | null {
    return this.#entries.get(disk)?.profile ?? null;
  }

  async set(disk: string, profile: LatencyProfile | null): Promise<void> {
    if (!this.#keep) throw new ApiError(ApiErrorCode.READ_ONLY, 'the node serves its store read-only: latency profiles cannot be changed');
    const { createdMs } = this.#store.getDisk(disk);
    if (profile === null) {
      this.#entries.delete(disk);
      this.#devices.delete(disk);
    } else {
      this.#entries.set(disk, { createdMs, profile });
      this.#devices.set(disk, new LatencyDevice(profile));
    }
    await this.#save();
  }

  async forget(disk: string): Promise<void> {
    if (!this.#entries.has(disk)) return;
    this.#entries.delete(disk);
    this.#devices.delete(disk);
    await this.#save().catch((err) => this.#log.warn(`cannot drop the latency profile of deleted disk ${disk} from ${this.#file}: ${(err as Error).message}`, { disk }));
  }

  /** Lets every delayed request go (the node is closing). */
  close(): void {
    this.queue.releaseAll();
  }

  /** Writes the file aside, renames it over, makes it durable; one write at a time, each with the entries as they are then. */
  #save(): Promise<void> {
    const run = async (): Promise<void> => {
      const doc = { version: FORMAT, disks: Object.fromEntries(this.#entries) };
      const tmp = `${this.#file}.tmp`;
      try {
        const fh = await open(tmp, 'w');
        try {
          await fh.writeFile(JSON.stringify(doc, null, 1) + '\n');
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, this.#file);
        await syncDir(dirname(this.#file));
      } catch (err) {
        throw new ApiError(ApiErrorCode.INTERNAL, `cannot keep the latency profiles in ${this.#file}: ${(err as Error).message}`, { cause: err });
      }
    };
    const next = this.#writing.then(run, run);
    this.#writing = next.catch(() => {});
    return next;
  }
}
