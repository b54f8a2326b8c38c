/**
 * A faulty drive under a store's write log (the engine's LogFiles, StoreOptions.files): the real
 * file system, plus seeded faults a test asks for (docs/engine.md, "A failing drive"):
 *
 * - errors: EIO (or another errno) on the Nth write or sync, or on each with a probability; a
 *   write that fails may have written a part of its bytes first, as a drive's can;
 * - short writes: a write writes a random prefix of its bytes and says so;
 * - slow I/O: calls delayed by up to `slowMsMax` (an asynchronous call's completion is held back,
 *   so they complete out of order; a synchronous one blocks the thread as a slow drive would);
 * - power loss: `copyAfterPowerLoss` copies a store directory as a machine that lost power would
 *   find it: every byte an fdatasync covered, and of the rest, each write kept whole, torn (a
 *   random-length prefix kept) or lost. A sync that failed with EIO covers nothing, then or later
 *   (the kernel may have dropped the pages it could not write, and a later fsync reports
 *   success); one that failed with ENOSPC leaves them for a later sync.
 *
 * Every random choice comes from the seed, so a failing test replays with TESSERA_TEST_SEED.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { LogFiles } from '../../src/engine/index.ts';
import { Rng } from './data.ts';

/** Which faults to inject, from the moment it is set (FaultyFiles.plan). */
export interface FaultPlan {
  /** The Nth write from now on (write or writev call; 1 = the next one) fails. */
  writeErrorAt?: number;
  /** Each write fails with this probability. */
  writeErrorProbability?: number;
  /** The errno a failing write gets. Default EIO. */
  writeErrorCode?: 'EIO' | 'ENOSPC' | 'EDQUOT';
  /** The Nth sync from now on (fdatasync, or fsync of a directory) fails. */
  syncErrorAt?: number;
  syncErrorProbability?: number;
  /** The errno a failing sync gets. Default EIO. */
  syncErrorCode?: 'EIO' | 'ENOSPC';
  /** The Nth read from now on fails with EIO. */
  readErrorAt?: number;
  readErrorProbability?: number;
  /** A write writes only a random prefix of its bytes (and returns how many) with this probability. */
  shortWriteProbability?: number;
  /** A call is delayed with this probability, by up to slowMsMax. */
  slowProbability?: number;
  slowMsMax?: number;
}

/** What FaultyFiles counted since it was made. */
export interface FaultCounts {
  writes: number;
  syncs: number;
  reads: number;
  writeErrors: number;
  syncErrors: number;
  readErrors: number;
  shortWrites: number;
  delays: number;
}

/** A write not (yet) covered by a successful sync. */
interface Pending {
  pos: number;
  len: number;
  /** The bytes it overwrote that the file held before (none for an append). */
  before: Buffer;
}

/** What the layer knows of one file it opened. */
interface FileState {
  path: string;
  /** Bytes a sync covered (or the file held when first opened here). */
  durableBytes: number;
  /** Writes no sync covered yet, in the order they were made. */
  unsynced: Pending[];
  /** Writes a failed sync was to cover: never durable. */
  poisoned: Pending[];
  /** Created here and its directory not synced since: a power loss loses it. */
  nameVolatile: boolean;
}

const errnos: Record<string, number> = { EIO: 5, ENOSPC: 28, EDQUOT: 122 };

/** An error as Node.js's fs gives it (code, errno, syscall: what the engine takes for the world's failure). */
export function systemError(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected fault, ${syscall}`), { code, errno: -(errnos[code] ?? 5), syscall });
}

const sleeper = new Int32Array(new SharedArrayBuffer(4));

/** LogFiles over node:fs with seeded faults; see the file's comment. */
export class FaultyFiles implements LogFiles {
  readonly seed: number;
  readonly counts: FaultCounts = { writes: 0, syncs: 0, reads: 0, writeErrors: 0, syncErrors: 0, readErrors: 0, shortWrites: 0, delays: 0 };
  #rng: Rng;
  #plan: FaultPlan = {};
  /** Writes, syncs and reads since the plan was set. */
  #since = { writes: 0, syncs: 0, reads: 0 };
  readonly #byFd = new Map<number, FileState>();
  readonly #dirFds = new Map<number, string>();
  readonly #byPath = new Map<string, FileState>();

  constructor(opts: { seed: number; plan?: FaultPlan }) {
    this.seed = opts.seed;
    this.#rng = new Rng(opts.seed);
    if (opts.plan) this.plan(opts.plan);
  }

  /** Injects `plan`'s faults from now on (counting the Nth write, sync or read from here); `{}` for none. */
  plan(plan: FaultPlan): void {
    this.#plan = plan;
    this.#since = { writes: 0, syncs: 0, reads: 0 };
  }

  // ------------------------------------------------------------------ faults

  #chance(p: number | undefined): boolean {
    return p !== undefined && p > 0 && this.#rng.next() < p;
  }

  #writeFault(): string | null {
    this.counts.writes++;
    const n = ++this.#since.writes;
    const p = this.#plan;
    if (n === p.writeErrorAt || this.#chance(p.writeErrorProbability)) {
      this.counts.writeErrors++;
      return p.writeErrorCode ?? 'EIO';
    }
    return null;
  }

  #syncFault(): string | null {
    this.counts.syncs++;
    const n = ++this.#since.syncs;
    const p = this.#plan;
    if (n === p.syncErrorAt || this.#chance(p.syncErrorProbability)) {
      this.counts.syncErrors++;
      return p.syncErrorCode ?? 'EIO';
    }
    return null;
  }

  #readFault(): boolean {
    this.counts.reads++;
    const n = ++this.#since.reads;
    const p = this.#plan;
    if (n === p.readErrorAt || this.#chance(p.readErrorProbability)) {
      this.counts.readErrors++;
      return true;
    }
    return false;
  }

  /** A delay to hold a call back by, or 0. */
  #delayMs(): number {
    const p = this.#plan;
    if (!this.#chance(p.slowProbability)) return 0;
    this.counts.delays++;
    return 1 + this.#rng.int(Math.max(1, p.slowMsMax ?? 20));
  }

  /** Blocks the thread for a slow synchronous call. */
  #stall(): void {
    const ms = this.#delayMs();
    if (ms > 0) Atomics.wait(sleeper, 0, 0, ms);
  }

  /** Runs `fn` now or after a delay; its callback, too, after a delay (so calls complete out of order). */
  #later(fn: () => void): void {
    const ms = this.#delayMs();
    if (ms > 0) setTimeout(fn, ms);
    else fn();
  }

  // ------------------------------------------------------------------ writes, tracked for a power loss

  /** Bytes of `bufs` to write this time: all, or a random prefix for a short write. */
  #writeBytes(total: number): number {
    if (total > 1 && this.#chance(this.#plan.shortWriteProbability)) {
      this.counts.shortWrites++;
      return 1 + this.#rng.int(total - 1);
    }
    return total;
  }

  /** Writes the first `n` bytes of `bufs` at `pos` for real, noting them as not yet durable. */
  #writeFor(fd: number, bufs: readonly Buffer[], pos: number, n: number): number {
    if (n === 0) return 0;
    const st = this.#byFd.get(fd);
    const parts: Buffer[] = [];
    for (let left = n, i = 0; left > 0; i++) {
      const b = bufs[i]!.subarray(0, left);
      parts.push(b);
      left -= b.length;
    }
    let before = Buffer.alloc(0);
    if (st) {
      const size = fs.fstatSync(fd).size;
      if (pos < size) {
        before = Buffer.alloc(Math.min(n, size - pos));
        fs.readSync(fd, before, 0, before.length, pos);
      }
    }
    const wrote = fs.writevSync(fd, parts, pos);
    st?.unsynced.push({ pos, len: wrote, before });
    return wrote;
  }

  /** One write call: a fault, a short write, or the whole of it. */
  #write(fd: number, bufs: readonly Buffer[], pos: number): number {
    let total = 0;
    for (const b of bufs) total += b.length;
    const fault = this.#writeFault();
    if (fault !== null) {
      // A drive that fails a write may have written some of it (a full one, the part that fit).
      this.#writeFor(fd, bufs, pos, this.#rng.int(fault === 'EIO' ? total + 1 : total));
      throw systemError(fault, 'write');
    }
    return this.#writeFor(fd, bufs, pos, this.#writeBytes(total));
  }

  #sync(fd: number): void {
    const dir = this.#dirFds.get(fd);
    const st = this.#byFd.get(fd);
    const covered = st ? st.unsynced.slice() : [];
    const fault = this.#syncFault();
    if (fault === null) {
      if (dir !== undefined) fs.fsyncSync(fd);
      else fs.fdatasyncSync(fd);
    }
    if (dir !== undefined && fault === null) {
      for (const f of this.#byPath.values()) if (path.dirname(f.path) === dir) f.nameVolatile = false;
    }
    if (st) {
      st.unsynced = st.unsynced.filter((w) => !covered.includes(w));
      if (fault === null) for (const w of covered) st.durableBytes = Math.max(st.durableBytes, w.pos + w.len);
      else if (fault === 'EIO') st.poisoned.push(...covered);
      // ENOSPC: the pages stay dirty, for a later sync to cover.
      else st.unsynced.unshift(...covered);
    }
    if (fault !== null) throw systemError(fault, dir !== undefined ? 'fsync' : 'fdatasync');
  }

  // ------------------------------------------------------------------ LogFiles

  mkdirSync(dir: string, opts: { recursive: true }): unknown {
    return fs.mkdirSync(dir, opts);
  }

  readdirSync(dir: string): string[] {
    return fs.readdirSync(dir);
  }

  existsSync(file: string): boolean {
    return fs.existsSync(file);
  }

  openSync(file: string, flags: 'r+' | 'wx+' | 'r' | number): number {
    const fd = fs.openSync(file, flags);
    const real = fs.realpathSync(file);
    if (flags === 'r' || typeof flags === 'number') {
      // A directory, to sync it; or a segment of a log opened read-only, or by the scrub's reader
      // (numeric flags: O_RDONLY, O_DIRECT), which nothing writes.
      if (fs.fstatSync(fd).isDirectory()) this.#dirFds.set(fd, real);
      return fd;
    }
    let st = this.#byPath.get(real);
    if (st === undefined || flags === 'wx+') {
      st = { path: real, durableBytes: flags === 'wx+' ? 0 : fs.fstatSync(fd).size, unsynced: [], poisoned: [], nameVolatile: flags === 'wx+' };
      this.#byPath.set(real, st);
    }
    this.#byFd.set(fd, st);
    return fd;
  }

  closeSync(fd: number): void {
    this.#byFd.delete(fd);
    this.#dirFds.delete(fd);
    fs.closeSync(fd);
  }

  close(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void {
    this.#byFd.delete(fd);
    this.#dirFds.delete(fd);
    fs.close(fd, cb);
  }

  fstatSync(fd: number): { size: number } {
    return fs.fstatSync(fd);
  }

  readSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    this.#stall();
    if (this.#readFault()) throw systemError('EIO', 'read');
    return fs.readSync(fd, buf, offset, length, position);
  }

  read(fd: number, buf: Buffer, offset: number, length: number, position: number, cb: (err: NodeJS.ErrnoException | null, bytesRead: number) => void): void {
    const fault = this.#readFault();
    this.#later(() => {
      if (fault) cb(systemError('EIO', 'read'), 0);
      else fs.read(fd, buf, offset, length, position, (err, n) => this.#later(() => cb(err, n)));
    });
  }

  readvSync(fd: number, bufs: readonly Buffer[], position: number): number {
    this.#stall();
    if (this.#readFault()) throw systemError('EIO', 'read');
    return fs.readvSync(fd, bufs, position);
  }

  readv(fd: number, bufs: readonly Buffer[], position: number, cb: (err: NodeJS.ErrnoException | null, bytesRead: number) => void): void {
    const fault = this.#readFault();
    this.#later(() => {
      if (fault) cb(systemError('EIO', 'read'), 0);
      else fs.readv(fd, bufs, position, (err, n) => this.#later(() => cb(err, n)));
    });
  }

  writeSync(fd: number, buf: Buffer, offset: number, length: number, position: number): number {
    this.#stall();
    return this.#write(fd, [buf.subarray(offset, offset + length)], position);
  }

  writevSync(fd: number, bufs: readonly Buffer[], position: number): number {
    this.#stall();
    return this.#write(fd, bufs, position);
  }

  writev(fd: number, bufs: readonly Buffer[], position: number, cb: (err: NodeJS.ErrnoException | null, bytesWritten: number) => void): void {
    this.#later(() => {
      let n = 0;
      let error: NodeJS.ErrnoException | null = null;
      try {
        n = this.#write(fd, bufs, position);
      } catch (err) {
        error = err as NodeJS.ErrnoException;
      }
      this.#later(() => cb(error, n));
    });
  }

  fdatasyncSync(fd: number): void {
    this.#stall();
    this.#sync(fd);
  }

  fdatasync(fd: number, cb: (err: NodeJS.ErrnoException | null) => void): void {
    this.#later(() => {
      let error: NodeJS.ErrnoException | null = null;
      try {
        this.#sync(fd);
      } catch (err) {
        error = err as NodeJS.ErrnoException;
      }
      this.#later(() => cb(error));
    });
  }

  fsyncSync(fd: number): void {
    this.#stall();
    this.#sync(fd);
  }

  ftruncateSync(fd: number, length: number): void {
    fs.ftruncateSync(fd, length);
    this.#truncated(fd, length);
  }

  ftruncate(fd: number, length: number, cb: (err: NodeJS.ErrnoException | null) => void): void {
    this.#later(() =>
      fs.ftruncate(fd, length, (err) => {
        if (!err) this.#truncated(fd, length);
        cb(err);
      }),
    );
  }

  /** A truncation is taken as durable at once (the bytes it cut were dead). */
  #truncated(fd: number, length: number): void {
    const st = this.#byFd.get(fd);
    if (!st) return;
    st.durableBytes = Math.min(st.durableBytes, length);
    const clip = (ws: Pending[]) => ws.filter((w) => w.pos < length).map((w) => (w.pos + w.len <= length ? w : { pos: w.pos, len: length - w.pos, before: w.before.subarray(0, length - w.pos) }));
    st.unsynced = clip(st.unsynced);
    st.poisoned = clip(st.poisoned);
  }

  unlink(file: string, cb: (err: NodeJS.ErrnoException | null) => void): void {
    const real = fs.realpathSync(file);
    this.#later(() =>
      fs.unlink(file, (err) => {
        if (!err) this.#byPath.delete(real);
        cb(err);
      }),
    );
  }

  rmSync(file: string, opts?: { force?: boolean }): void {
    if (fs.existsSync(file)) this.#byPath.delete(fs.realpathSync(file));
    fs.rmSync(file, opts);
  }

  // ------------------------------------------------------------------ power loss

  /**
   * Whether a file under `dir` has writes a sync failed to cover (EIO). A process restarted on
   * them would find them in the page cache, though the drive may never have taken them: what a
   * reboot (a power loss here) settles.
   */
  poisoned(dir: string): boolean {
    const root = fs.realpathSync(dir);
    for (const st of this.#byPath.values()) if (st.poisoned.length > 0 && !path.relative(root, st.path).startsWith('..')) return true;
    return false;
  }

  /**
   * Copies the store directory `from` to `to` as a power loss would leave it (see the file's
   * comment), for a store to be opened on (with a healthy layer). The LMDB index is copied as it
   * is, less its lock file: LMDB makes its own commits durable, and the index only ever points at
   * synced log bytes. `tear: 'prefix'` keeps, of each file's writes no sync covered, a random
   * number in the order they were made (the next one torn); `'any'` (the default) decides each
   * write on its own, as a drive's write-back cache may.
   */
  copyAfterPowerLoss(from: string, to: string, opts: { tear?: 'prefix' | 'any' } = {}): { kept: number; torn: number; lost: number } {
    const tally = { kept: 0, torn: 0, lost: 0 };
    fs.cpSync(from, to, { recursive: true, filter: (src) => !src.endsWith('lock.mdb') });
    const root = fs.realpathSync(from);
    for (const st of this.#byPath.values()) {
      const rel = path.relative(root, st.path);
      if (rel.startsWith('..') || !fs.existsSync(path.join(to, rel))) continue;
      const target = path.join(to, rel);
      if (st.nameVolatile) {
        fs.rmSync(target);
        continue;
      }
      const writes = [...st.unsynced, ...st.poisoned].sort((a, b) => a.pos - b.pos);
      const fd = fs.openSync(target, 'r+');
      try {
        let end = st.durableBytes;
        // A cut in the order the writes were made: those before it kept, the one at it torn.
        const cut = opts.tear === 'prefix' ? this.#rng.int(writes.length + 1) : -1;
        writes.forEach((w, i) => {
          let keep: number;
          if (opts.tear === 'prefix') keep = i < cut ? w.len : i === cut ? this.#rng.int(w.len + 1) : 0;
          else {
            const fate = this.#rng.int(3);
            keep = fate === 0 ? w.len : fate === 1 ? this.#rng.int(w.len + 1) : 0;
          }
          if (keep === w.len) tally.kept++;
          else if (keep === 0) tally.lost++;
          else tally.torn++;
          if (keep > 0) end = Math.max(end, w.pos + keep);
          if (keep < w.len) {
            // What was there before the write where it had bytes, else zeroes.
            const undo = Buffer.alloc(w.len - keep);
            w.before.subarray(keep).copy(undo);
            fs.writeSync(fd, undo, 0, undo.length, w.pos + keep);
          }
        });
        if (fs.fstatSync(fd).size > end) fs.ftruncateSync(fd, end);
      } finally {
        fs.closeSync(fd);
      }
    }
    return tally;
  }
}
