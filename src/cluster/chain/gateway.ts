/**
 * The Volume a node that is not a disk's head serves it through (docs/cluster.md, "Any node
 * serves any disk"): each request goes to the head as an IO message. When the head changes or
 * its link is lost, the request waits for the disk record to name a head and goes again; the
 * client sees a delay, not an error, unless no head answers within `retryForMs`.
 */
import { EngineError, EngineErrorCode } from '../../engine/index.ts';
import type { AllocationExtent, ChangeExtent, EngineErrorCodeValue, Volume, WriteOptions, ZeroOptions } from '../../engine/index.ts';
import { checkVolumeRequest } from './volume-check.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import type { IoKind, IoReply } from '../peer/index.ts';

/** Where the disk's head is now, as the node's cache says. */
export interface HeadView {
  node: string;
  epoch: number;
  sizeBytes: number;
  /** The cache's revision (sent as `rev`). */
  rev: number;
}

/** What a gateway volume needs of its node. */
export interface GatewayHost {
  /** The head as known now, or null while the disk has none (or is gone: then `gone` is true). */
  head(disk: string): HeadView | null;
  /** Whether the disk was deleted. */
  gone(disk: string): boolean;
  /** Sends an IO request to `node`. */
  io(node: string, body: { disk: string; epoch: number; rev: number } & IoKind, payload: Buffer | null): Promise<{ body: IoReply; payload: Buffer | null }>;
  /** Resolves after a short wait (a retry's pause); tests may make it instant. */
  pause(ms: number): Promise<void>;
}

/** Codes worth going again for: the head moved, or its link came and went. */
const RETRY = new Set<string>([ClusterErrorCode.STALE_EPOCH, ClusterErrorCode.EPOCH_AHEAD, ClusterErrorCode.NOT_HEAD, ClusterErrorCode.PEER_UNAVAILABLE, ClusterErrorCode.DISK_NOT_FOUND, ClusterErrorCode.CLOSED]);

/** A replicated disk served at a node that is not its head. */
export class GatewayVolume implements Volume {
  readonly disk: string;
  readonly snapshot = null;
  readonly readOnly = false;
  readonly blockBytes = 4096;
  readonly #host: GatewayHost;
  readonly #retryForMs: number;
  #closed = false;

  constructor(disk: string, host: GatewayHost, opts: { retryForMs?: number } = {}) {
    this.disk = disk;
    this.#host = host;
    this.#retryForMs = opts.retryForMs ?? 30_000;
  }

  get sizeBytes(): number {
    return this.#host.head(this.disk)?.sizeBytes ?? 0;
  }

  #check(offset: number, length: number): void {
    checkVolumeRequest(this.#closed, offset, length, this.sizeBytes);
  }

  /** Sends one request to the head, going again while the head moves, up to the retry bound. */
  async #send(kind: IoKind, payload: Buffer | null = null): Promise<{ body: IoReply; payload: Buffer | null }> {
    const deadline = performance.now() + this.#retryForMs;
    let last: Error | null = null;
    for (let attempt = 0; ; attempt++) {
      if (this.#closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
      if (this.#host.gone(this.disk)) throw new EngineError(EngineErrorCode.NOT_FOUND, `Disk "${this.disk}" not found`);
      const head = this.#host.head(this.disk);
      if (head !== null) {
        try {
          return await this.#host.io(head.node, { disk: this.disk, epoch: head.epoch, rev: head.rev, ...kind }, payload);
        } catch (err) {
          if (!(err instanceof ClusterError) || !RETRY.has(err.code)) {
            // What the head's store refused reaches the client with the engine's own code.
            if (err instanceof ClusterError && err.engine !== null) throw new EngineError(err.engine as EngineErrorCodeValue, err.message, { cause: err });
            if (err instanceof ClusterError) throw new EngineError(EngineErrorCode.IO, `Disk "${this.disk}" at its head ${head.node}: ${err.message}`, { cause: err });
            throw err;
          }
          last = err;
        }
      }
      if (performance.now() > deadline) {
        throw new EngineError(EngineErrorCode.IO, `Disk "${this.disk}": no head answered within ${Math.round(this.#retryForMs / 1000)} s${last !== null ? ` (${last.message})` : ''}`, { cause: last ?? undefined });
      }
      await this.#host.pause(Math.min(50 * 2 ** Math.min(attempt, 4), 500));
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.#check(offset, length);
    if (length === 0) return Buffer.alloc(0);
    const r = await this.#send({ kind: 'read', offset, length });
    return r.payload ?? Buffer.alloc(length);
  }

  async write(offset: number, data: Buffer, opts: WriteOptions = {}): Promise<void> {
    this.#check(offset, data.length);
    if (data.length === 0) return;
    await this.#send({ kind: 'write', offset, fua: opts.fua === true }, data);
  }

  async writeZeroes(offset: number, length: number, opts: ZeroOptions = {}): Promise<void> {
    this.#check(offset, length);
    if (length === 0) return;
    await this.#send({ kind: 'zero', offset, length, fua: opts.fua === true, mayTrim: opts.mayTrim === true });
  }

  async trim(offset: number, length: number, opts: WriteOptions = {}): Promise<void> {
    this.#check(offset, length);
    if (length === 0) return;
    await this.#send({ kind: 'trim', offset, length, fua: opts.fua === true });
  }

  async flush(): Promise<void> {
    if (this.#closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
    await this.#send({ kind: 'flush' });
  }

  async blockStatus(offset: number, length: number): Promise<AllocationExtent[]> {
    this.#check(offset, length);
    if (length === 0) return [];
    const r = await this.#send({ kind: 'block-status', offset, length });
    return (r.body.allocation ?? []).map(([o, l, f]) => ({ offset: o, length: l, hole: (f & 1) !== 0, zero: (f & 2) !== 0 }));
  }

  async changedSince(sinceSnapshot: string, offset: number, length: number): Promise<ChangeExtent[]> {
    this.#check(offset, length);
    if (length === 0) return [];
    const r = await this.#send({ kind: 'changed-since', snapshot: sinceSnapshot, offset, length });
    return (r.body.changes ?? []).map(([o, l, c]) => ({ offset: o, length: l, changed: c !== 0 }));
  }

  close(): void {
    this.#closed = true;
  }
}
