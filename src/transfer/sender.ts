/**
 * The sending end (docs/transfer.md, "What one transfer does"): N connections designated for
 * one transfer, opened and primed before data; the file cut into chunks sent over a chosen subset
 * of them, paced from an end-to-end bandwidth estimate; every frame's acknowledgement splits its
 * latency into network transit and receiver hold time; a lost connection retried from what the
 * receiver holds. `sendFile` resolves once the receiver holds the whole file, verified.
 */
import { createHash, webcrypto } from 'node:crypto';
import { open, stat, type FileHandle } from 'node:fs/promises';
import net from 'node:net';
import { basename } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { encodeBody } from './codec.ts';
import { Channel, nowUs, unexpected, type Received } from './channel.ts';
import { ConnectionChooser, stallThresholdMs } from './choose.ts';
import { digestFile, type FileDigest } from './digest.ts';
import { FATAL_CODES, TransferError, TransferErrorCode } from './errors.ts';
import { BandwidthEstimator, PacingClock, type SendStamp } from './estimate.ts';
import { clientHandshake } from './handshake.ts';
import { LatencySplit, type LatencyPercentiles } from './latency.ts';
import { FrameType, Limit, ServiceClass, Size, type ServiceClassName } from './spec.ts';

/** Options of sendFile. */
export interface SendOptions {
  /** The file to send; it lands as its base name. */
  file: string;
  host: string;
  port: number;
  /** Connections designated for the transfer, 1 to 16 (default 4). */
  connections?: number;
  /** Service class (default bulk): its DSCP code point marks every socket. */
  className?: ServiceClassName;
  /** DSCP code point, 0 to 63, instead of the class's. */
  dscp?: number;
  /** The shared secret; null or absent: none. */
  secret?: Buffer | null;
  /** Chunk (sub-transfer) size (default 4 MiB). */
  chunkBytes?: number;
  /** Whether connections are primed before data (default true). */
  prime?: boolean;
  /** Cap on the pacing rate, bytes a second. */
  rateMax?: number;
  /** How long to keep trying after a lost connection without progress (default 30 s). */
  retryMs?: number;
  /** Called with progress, connection choices and retries as they happen. */
  onEvent?: (event: SendEvent) => void;
  /** ms between progress events (default 500). */
  progressMs?: number;
  /** Reports every DATA frame's acknowledgement as a `frame` event (the per-message latency log). */
  logFrames?: boolean;
}

/** Progress of a transfer. */
export interface ProgressEvent {
  event: 'progress';
  bytesDone: number;
  sizeBytes: number;
  rateBytesPerSecond: number;
  etaSeconds: number | null;
  connectionsActive: number;
  bandwidthBytesPerSecond: number;
  pacingBytesPerSecond: number | null;
  minRttMs: number;
  transitMsP50: number;
  holdMsP50: number;
}

/** What a transfer reports as it goes. */
export type SendEvent =
  | ProgressEvent
  | { event: 'connections'; active: number; reason: string }
  | { event: 'retry'; attempt: number; message: string }
  | FrameEvent;

/** One DATA frame acknowledged: its latency split (`logFrames`). */
export interface FrameEvent {
  event: 'frame';
  /** The connection's place among the N, the frame's sequence number on it. */
  connection: number;
  seq: number;
  chunk: number;
  bytes: number;
  transitMs: number;
  holdMs: number;
}

/** The final report. */
export interface SendReport {
  event: 'done';
  name: string;
  sizeBytes: number;
  sha256: string;
  /** File bytes sent in this run, resends included; bytes the receiver held already; filler of priming. */
  bytesSent: number;
  bytesSkipped: number;
  primeBytes: number;
  chunks: number;
  chunksSent: number;
  chunksResent: number;
  attempts: number;
  seconds: number;
  rateBytesPerSecond: number;
  connections: number;
  connectionsActiveMin: number;
  connectionsActiveMax: number;
  /** Chunks sent on each connection (by its place among the N), over all attempts. */
  chunksPerConnection: number[];
  bandwidthBytesPerSecond: number;
  minRttMs: number;
  transitMs: LatencyPercentiles;
  holdMs: LatencyPercentiles;
  limitedBy: 'network' | 'receiver';
  className: ServiceClassName;
  dscp: number;
}

interface Job {
  chunk: number;
  offset: number;
  length: number;
  data: Buffer | null;
  sha256: Buffer | null;
  sent: number;
  announced: boolean;
}

interface Conn {
  ch: Channel;
  /** Frames awaiting their ACK: when sent, and for DATA its chunk (-1 for PRIME). */
  stamps: Map<number, { stamp: SendStamp; chunk: number }>;
  jobs: Job[];
  waitingDrain: boolean;
  onAcked: (() => void) | null;
}

const FILLER = Buffer.alloc(Size.SEGMENT_BYTES);

/** The transfer id of a file: 16 bytes of SHA-256 over its name, size, modification time and chunk size, as hex. */
export function transferId(name: string, sizeBytes: number, mtimeMs: number, chunkBytes: number): string {
  return createHash('sha256').update(`tessera transfer\0${name}\0${sizeBytes}\0${mtimeMs}\0${chunkBytes}`).digest().subarray(0, 16).toString('hex');
}

function connectTcp(host: string, port: number, where: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new TransferError(TransferErrorCode.UNREACHABLE, `Cannot reach the receiver at ${where}: no answer within ${Limit.CONNECT_TIMEOUT_MS} ms`));
    }, Limit.CONNECT_TIMEOUT_MS);
    const onError = (err: Error) => {
      clearTimeout(timer);
      reject(new TransferError(TransferErrorCode.UNREACHABLE, `Cannot reach the receiver at ${where}: ${err.message}`, { cause: err }));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.off('error', onError);
      resolve(socket);
    });
  });
}

/** Sends a file; resolves to the report once the receiver holds it, verified. */
export async function sendFile(opts: SendOptions): Promise<SendReport> {
  const sender = await Sender.create(opts);
  try {
    return await sender.run();
  } finally {
    await sender.close();
  }
}

class Sender {
  readonly #opts: SendOptions;
  readonly #where: string;
  readonly #fh: FileHandle;
  readonly #name: string;
  readonly #size: number;
  readonly #mtimeMs: number;
  readonly #chunkBytes: number;
  readonly #chunks: number;
  readonly #id: string;
  readonly #n: number;
  readonly #className: ServiceClassName;
  readonly #dscp: number;
  /** The code point asked for explicitly (--dscp), which the receiver then uses too. */
  readonly #dscpAsked: number | undefined;
  readonly #digest: Promise<FileDigest>;
  readonly #done: Uint8Array;
  #doneCount = 0;
  #doneBytes = 0;
  readonly #est: BandwidthEstimator;
  readonly #pacer = new PacingClock();
  readonly #latency = new LatencySplit();
  readonly #chooser: ConnectionChooser;
  readonly #startMs = performance.now();
  #bytesSent = 0;
  #bytesSkipped: number | null = null;
  #primeBytes = 0;
  #chunksSent = 0;
  #chunksResent = 0;
  /** Times each chunk came back CHUNK_BAD. */
  readonly #bad = new Map<number, number>();
  readonly #chunksPerConnection: number[];
  #attempts = 0;
  #lastProgressMs = performance.now();
  /** When the last acknowledgement came, on any connection. */
  #lastAckMs = performance.now();
  // State of the current attempt.
  #conns: Conn[] = [];
  #pending: number[] = [];
  #rr = 0;
  #phase: 'open' | 'prime' | 'data' | 'finish' | 'over' = 'over';
  #pumpTimer: NodeJS.Timeout | null = null;
  #timers: NodeJS.Timeout[] = [];
  #settle: { resolve(): void; reject(err: TransferError): void } | null = null;
  #sha256: Buffer | null = null;
  readonly #rateWindow: [number, number][] = [];

  private constructor(opts: SendOptions, fh: FileHandle, size: number, mtimeMs: number) {
    this.#opts = opts;
    this.#where = `${opts.host}:${opts.port}`;
    this.#fh = fh;
    this.#name = basename(opts.file);
    this.#size = size;
    this.#mtimeMs = mtimeMs;
    this.#chunkBytes = opts.chunkBytes ?? Size.CHUNK_BYTES;
    this.#chunks = Math.ceil(size / this.#chunkBytes);
    this.#id = transferId(this.#name, size, mtimeMs, this.#chunkBytes);
    this.#n = opts.connections ?? Limit.CONNECTIONS_DEFAULT;
    this.#className = opts.className ?? 'bulk';
    this.#dscp = opts.dscp ?? ServiceClass[this.#className];
    this.#dscpAsked = opts.dscp;
    this.#done = new Uint8Array(this.#chunks);
    this.#est = new BandwidthEstimator({ rateMax: opts.rateMax ?? Infinity });
    this.#chooser = new ConnectionChooser(this.#n);
    this.#chunksPerConnection = new Array<number>(this.#n).fill(0);
    this.#digest = digestFile(opts.file, size, this.#chunkBytes);
    this.#digest.catch(() => {});
  }

  static async create(opts: SendOptions): Promise<Sender> {
    const n = opts.connections ?? Limit.CONNECTIONS_DEFAULT;
    if (!Number.isInteger(n) || n < 1 || n > Limit.CONNECTIONS_MAX) throw new TransferError(TransferErrorCode.INVALID, `Connections must be 1 to ${Limit.CONNECTIONS_MAX}, got ${n}`);
    const chunkBytes = opts.chunkBytes ?? Size.CHUNK_BYTES;
    if (!Number.isInteger(chunkBytes) || chunkBytes < Size.CHUNK_BYTES_MIN || chunkBytes > Size.CHUNK_BYTES_MAX || chunkBytes % 4096 !== 0) {
      throw new TransferError(TransferErrorCode.INVALID, `The chunk size must be a multiple of 4096 from ${Size.CHUNK_BYTES_MIN} to ${Size.CHUNK_BYTES_MAX}, got ${chunkBytes}`);
    }
    if (opts.dscp !== undefined && (!Number.isInteger(opts.dscp) || opts.dscp < 0 || opts.dscp > 63)) throw new TransferError(TransferErrorCode.INVALID, `A DSCP code point is 0 to 63, got ${opts.dscp}`);
    let st;
    try {
      st = await stat(opts.file);
    } catch (err) {
      throw new TransferError(TransferErrorCode.INVALID, `Cannot read ${opts.file}: ${(err as Error).message}`, { cause: err });
    }
    if (!st.isFile()) throw new TransferError(TransferErrorCode.INVALID, `${opts.file} is not a regular file`);
    if (Math.ceil(st.size / chunkBytes) > Size.CHUNKS_MAX) throw new TransferError(TransferErrorCode.LIMIT, `${opts.file} has more than ${Size.CHUNKS_MAX} chunks of ${chunkBytes} bytes`);
    let fh: FileHandle;
    try {
      fh = await open(opts.file, 'r');
    } catch (err) {
      throw new TransferError(TransferErrorCode.INVALID, `Cannot read ${opts.file}: ${(err as Error).message}`, { cause: err });
    }
    return new Sender(opts, fh, st.size, st.mtimeMs);
  }

  async close(): Promise<void> {
    this.#teardown(new TransferError(TransferErrorCode.CLOSED, 'Done'));
    await this.#fh.close().catch(() => {});
  }

  async run(): Promise<SendReport> {
    let backoffMs = 200;
    for (;;) {
      this.#attempts++;
      try {
        await this.#attempt();
        break;
      } catch (err) {
        if (!(err instanceof TransferError)) throw err;
        this.#teardown(err);
        if (FATAL_CODES.has(err.code) || this.#bytesSkipped === null) throw err;
        if (performance.now() - this.#lastProgressMs > (this.#opts.retryMs ?? Limit.RETRY_MS_DEFAULT)) {
          throw new TransferError(TransferErrorCode.LOST, `Lost the receiver at ${this.#where} and could not go on within ${this.#opts.retryMs ?? Limit.RETRY_MS_DEFAULT} ms: ${err.message}`, { cause: err });
        }
        this.#opts.onEvent?.({ event: 'retry', attempt: this.#attempts + 1, message: err.message });
        await sleep(backoffMs);
        backoffMs = Math.min(2_000, backoffMs * 2);
      }
    }
    return this.#report();
  }

  /** One attempt: connect, open, prime, send what the receiver lacks, finish. */
  async #attempt(): Promise<void> {
    this.#phase = 'open';
    const sockets = await Promise.allSettled(Array.from({ length: this.#n }, () => connectTcp(this.#opts.host, this.#opts.port, this.#where)));
    const failed = sockets.find((s) => s.status === 'rejected');
    if (failed !== undefined) {
      for (const s of sockets) if (s.status === 'fulfilled') s.value.destroy();
      throw failed.reason;
    }
    const channels = sockets.map((s) => {
      const socket = (s as PromiseFulfilledResult<net.Socket>).value;
      socket.setTypeOfService(this.#dscp << 2);
      return new Channel(socket);
    });
    this.#conns = channels.map((ch) => ({ ch, stamps: new Map(), jobs: [], waitingDrain: false, onAcked: null }));
    const shaken = await Promise.allSettled(channels.map((ch) => clientHandshake(ch, this.#opts.secret ?? null, this.#where)));
    const refused = shaken.find((s) => s.status === 'rejected');
    if (refused !== undefined) {
      // An authentication failure says more than the connections it made the receiver close.
      const auth = shaken.find((s) => s.status === 'rejected' && FATAL_CODES.has((s.reason as TransferError).code));
      throw ((auth ?? refused) as PromiseRejectedResult).reason;
    }
    const [first, ...rest] = channels;
    first.send(FrameType.OPEN, encodeBody({ transfer: this.#id, name: this.#name, sizeBytes: this.#size, chunkBytes: this.#chunkBytes, class: this.#className, connections: this.#n, ...this.#dscpField() }));
    // The receiver re-reads what it holds before it answers: give it time by the size.
    const opened = await first.expect(60_000 + this.#size / 20_000, 'OPENED');
    this.#onOpened(opened);
    this.#watchAcks();
    await Promise.all(
      rest.map(async (ch) => {
        ch.send(FrameType.JOIN, encodeBody({ transfer: this.#id, class: this.#className, ...this.#dscpField() }));
        const joined = await ch.expect(Limit.HANDSHAKE_TIMEOUT_MS, 'JOINED');
        if (joined.frame.header.type !== FrameType.JOINED) throw unexpected(joined, 'JOINED');
      }),
    );
    const settled = new Promise<void>((resolve, reject) => (this.#settle = { resolve, reject }));
    settled.catch(() => {});
    for (const conn of this.#conns) {
      conn.ch.onFrame((r) => this.#onFrame(conn, r));
      conn.ch.onClose((err) => this.#fail(err.code === TransferErrorCode.CLOSED ? new TransferError(TransferErrorCode.LOST, 'The receiver closed the connection') : err));
    }
    this.#pending = [];
    for (let i = 0; i < this.#chunks; i++) if (this.#done[i] === 0) this.#pending.push(i);
    if ((this.#opts.prime ?? true) && this.#pending.length > 0) {
      this.#phase = 'prime';
      await Promise.race([Promise.all(this.#conns.map((c) => this.#prime(c))), settled]);
    }
    this.#phase = 'data';
    this.#startTimers();
    if (this.#doneCount === this.#chunks) void this.#finish();
    else this.#pump();
    await settled;
  }

  /** `{dscp}` when one was asked for explicitly, else nothing. */
  #dscpField(): { dscp?: number } {
    return this.#dscpAsked === undefined ? {} : { dscp: this.#dscpAsked };
  }

  #onOpened(r: Received): void {
    if (r.frame.header.type !== FrameType.OPENED || r.meta === null) throw unexpected(r, 'OPENED');
    const map = r.payload ?? Buffer.alloc(0);
    if (r.meta.chunks !== this.#chunks || map.length !== Math.ceil(this.#chunks / 8)) {
      throw new TransferError(TransferErrorCode.PROTOCOL, `OPENED for ${String(r.meta.chunks)} chunks with a bitmap of ${map.length} bytes, expected ${this.#chunks} chunks`);
    }
    let held = 0;
    for (let i = 0; i < this.#chunks; i++) {
      if ((map[i >> 3] & (1 << (i & 7))) !== 0) {
        held += this.#lengthOf(i);
        this.#markDone(i);
      }
    }
    if (this.#bytesSkipped === null) {
      this.#bytesSkipped = held;
      this.#lastProgressMs = performance.now();
    }
  }

  #lengthOf(chunk: number): number {
    return Math.min(this.#chunkBytes, this.#size - chunk * this.#chunkBytes);
  }

  #markDone(chunk: number): void {
    if (this.#done[chunk] === 1) return;
    this.#done[chunk] = 1;
    this.#doneCount++;
    this.#doneBytes += this.#lengthOf(chunk);
  }

  async #prime(conn: Conn): Promise<void> {
    const start = performance.now();
    let total = 0;
    for (let round = 0; round < Limit.PRIME_ROUNDS_MAX; round++) {
      const bytes = Limit.PRIME_FIRST_BYTES << round;
      if (total + bytes > Limit.PRIME_BYTES_MAX || performance.now() - start > Limit.PRIME_MS_MAX) break;
      for (let sent = 0; sent < bytes; ) {
        if (conn.ch.closed) return;
        const delay = this.#pacer.delayMs(performance.now());
        if (delay > 0.5) await sleep(delay);
        const n = Math.min(Size.SEGMENT_BYTES, bytes - sent);
        conn.stamps.set(conn.ch.nextSeq, { stamp: this.#est.onSend(n), chunk: -1 });
        const ok = conn.ch.send(FrameType.PRIME, encodeBody({}, FILLER.subarray(0, n)));
        this.#pacer.spend(n, this.#est.pacingRate, performance.now(), 2 * Size.SEGMENT_BYTES);
        sent += n;
        total += n;
        this.#primeBytes += n;
        if (!ok) await conn.ch.drained().catch(() => {});
      }
      // The next round goes once this one is acknowledged: one round trip each, as slow start grows.
      await new Promise<void>((resolve) => {
        const check = () => {
          if (conn.stamps.size === 0 || conn.ch.closed) {
            conn.onAcked = null;
            resolve();
          }
        };
        conn.onAcked = check;
        conn.ch.onClose(() => resolve());
        check();
      });
    }
  }

  /** Gives the attempt up when frames are in flight and no acknowledgement came for a while (a link cut silently). */
  #watchAcks(): void {
    this.#lastAckMs = performance.now();
    const watch = setInterval(() => {
      const silentMs = performance.now() - this.#lastAckMs;
      if (this.#est.inflightBytes > 0 && silentMs > Limit.ACK_SILENCE_MS_MAX) {
        this.#fail(new TransferError(TransferErrorCode.LOST, `No acknowledgement from the receiver for ${Math.round(silentMs / 1000)} s with ${this.#est.inflightBytes} bytes in flight`));
      }
    }, 1_000);
    this.#timers.push(watch);
  }

  #startTimers(): void {
    const progressMs = this.#opts.progressMs ?? 500;
    const progress = setInterval(() => this.#opts.onEvent?.(this.#progress()), progressMs);
    this.#timers.push(progress);
    let lastDelivered = this.#est.deliveredBytes;
    let lastMs = performance.now();
    const choose = () => {
      const now = performance.now();
      const rate = ((this.#est.deliveredBytes - lastDelivered) * 1000) / Math.max(1, now - lastMs);
      lastDelivered = this.#est.deliveredBytes;
      lastMs = now;
      const minRtt = this.#est.minRttMs;
      const figures = this.#latency.takeInterval((p50) => stallThresholdMs(minRtt, p50));
      const choice = this.#chooser.decide({ ...figures, rateBytesPerSecond: rate });
      if (choice.reason !== null) this.#opts.onEvent?.({ event: 'connections', active: choice.active, reason: choice.reason });
      this.#pump();
      const next = Math.max(500, (8 * this.#est.bdpBytes * 1000) / Math.max(1, this.#est.bandwidth));
      this.#timers.push(setTimeout(choose, next));
    };
    this.#timers.push(setTimeout(choose, 500));
  }

  #progress(): ProgressEvent {
    const now = performance.now();
    const w = this.#rateWindow;
    w.push([now, this.#doneBytes]);
    while (w.length > 2 && w[0][0] < now - 3_000) w.shift();
    const rate = w.length < 2 ? 0 : ((w[w.length - 1][1] - w[0][1]) * 1000) / Math.max(1, w[w.length - 1][0] - w[0][0]);
    const remaining = this.#size - this.#doneBytes;
    const recent = this.#latency.recent();
    const pacing = this.#est.pacingRate;
    return {
      event: 'progress',
      bytesDone: this.#doneBytes,
      sizeBytes: this.#size,
      rateBytesPerSecond: Math.round(rate),
      etaSeconds: rate > 0 ? Math.round((remaining / rate) * 10) / 10 : null,
      connectionsActive: this.#chooser.active,
      bandwidthBytesPerSecond: Math.round(this.#est.bandwidth),
      pacingBytesPerSecond: Number.isFinite(pacing) ? Math.round(pacing) : null,
      minRttMs: Math.round(this.#est.minRttMs * 1000) / 1000,
      transitMsP50: recent.transitP50Ms,
      holdMsP50: recent.holdP50Ms,
    };
  }

  #onFrame(conn: Conn, r: Received): void {
    if (this.#phase === 'over') return;
    try {
      this.#handle(conn, r);
    } catch (err) {
      if (!(err instanceof TransferError)) throw err;
      conn.ch.close(err);
      this.#fail(err);
    }
  }

  #handle(conn: Conn, r: Received): void {
    const meta = r.meta;
    if (meta === null) throw unexpected(r, 'a well-formed frame');
    switch (r.frame.header.type) {
      case FrameType.ACK: {
        const { seq, echoUs, holdUs } = meta;
        if (typeof seq !== 'number' || typeof echoUs !== 'number' || typeof holdUs !== 'number' || holdUs < 0) throw unexpected(r, 'ACK {seq, echoUs, holdUs}');
        const entry = conn.stamps.get(seq);
        if (entry === undefined) throw new TransferError(TransferErrorCode.PROTOCOL, `ACK of frame ${seq}, which is not awaiting one`);
        conn.stamps.delete(seq);
        this.#lastAckMs = performance.now();
        const rttMs = Number(nowUs() - BigInt(Math.round(echoUs))) / 1000;
        const holdMs = holdUs / 1000;
        const transitMs = Math.max(0, rttMs - holdMs);
        this.#est.onAck(entry.stamp, transitMs, holdMs);
        if (entry.chunk >= 0) {
          this.#latency.add(transitMs, holdMs);
          if (this.#opts.logFrames === true) {
            const round = (x: number) => Math.round(x * 1000) / 1000;
            this.#opts.onEvent?.({ event: 'frame', connection: this.#conns.indexOf(conn), seq, chunk: entry.chunk, bytes: entry.stamp.bytes, transitMs: round(transitMs), holdMs: round(holdMs) });
          }
        }
        this.#est.windowBytesMin = 4 * Size.SEGMENT_BYTES * this.#chooser.active;
        conn.onAcked?.();
        this.#pump();
        return;
      }
      case FrameType.CHUNK_OK:
      case FrameType.CHUNK_BAD: {
        const i = conn.jobs.findIndex((j) => j.chunk === meta.chunk && j.sent === j.length);
        if (i < 0) throw new TransferError(TransferErrorCode.PROTOCOL, `${r.frame.header.type === FrameType.CHUNK_OK ? 'CHUNK_OK' : 'CHUNK_BAD'} of chunk ${String(meta.chunk)}, not sent on this connection`);
        const [job] = conn.jobs.splice(i, 1);
        if (r.frame.header.type === FrameType.CHUNK_BAD) {
          const times = (this.#bad.get(job.chunk) ?? 0) + 1;
          this.#bad.set(job.chunk, times);
          if (times > Limit.CHUNK_RESENDS_MAX) throw new TransferError(TransferErrorCode.INTEGRITY, `Chunk ${job.chunk} arrived damaged ${times} times: ${String(meta.rule)}`);
          this.#chunksResent++;
          this.#pending.unshift(job.chunk);
        } else {
          this.#markDone(job.chunk);
          this.#lastProgressMs = performance.now();
          if (this.#doneCount === this.#chunks) void this.#finish();
        }
        this.#pump();
        return;
      }
      case FrameType.DONE: {
        if (this.#phase !== 'finish' || this.#sha256 === null) throw unexpected(r, 'no DONE before FINISH');
        if (!Buffer.isBuffer(meta.sha256) || !meta.sha256.equals(this.#sha256)) throw new TransferError(TransferErrorCode.INTEGRITY, 'The receiver confirmed a different SHA-256');
        this.#phase = 'over';
        this.#settle?.resolve();
        return;
      }
      default:
        throw unexpected(r, 'ACK, CHUNK_OK, CHUNK_BAD or DONE');
    }
  }

  async #finish(): Promise<void> {
    if (this.#phase === 'finish') return;
    this.#phase = 'finish';
    try {
      const digest = await this.#digest;
      const st = await stat(this.#opts.file);
      if (st.size !== this.#size || st.mtimeMs !== this.#mtimeMs) throw new TransferError(TransferErrorCode.SOURCE_CHANGED, `${this.#opts.file} changed while it was sent`);
      this.#sha256 = digest.whole;
      if (this.#settle === null) return;
      this.#conns[0].ch.send(FrameType.FINISH, encodeBody({ sha256: digest.whole }));
    } catch (err) {
      this.#fail(err instanceof TransferError ? err : new TransferError(TransferErrorCode.IO, (err as Error).message));
    }
  }

  #fail(err: TransferError): void {
    const settle = this.#settle;
    this.#settle = null;
    settle?.reject(err);
  }

  /** Ends an attempt: timers stopped, connections closed, unconfirmed chunks back to pending. */
  #teardown(err: TransferError): void {
    this.#phase = 'over';
    this.#settle = null;
    if (this.#pumpTimer !== null) clearTimeout(this.#pumpTimer);
    this.#pumpTimer = null;
    for (const t of this.#timers) clearTimeout(t);
    this.#timers = [];
    for (const conn of this.#conns) {
      let lost = 0;
      for (const { stamp } of conn.stamps.values()) lost += stamp.bytes;
      this.#est.onLost(lost);
      conn.stamps.clear();
      conn.jobs = [];
      conn.ch.destroy(err);
    }
    this.#conns = [];
  }

  /** Gives chunks to the active connections that have room, and starts reading them. */
  #assign(): void {
    const active = Math.min(this.#chooser.active, this.#conns.length);
    for (let i = 0; i < active && this.#pending.length > 0; i++) {
      const conn = this.#conns[i];
      while (conn.jobs.length < Limit.CHUNKS_PER_CONNECTION && this.#pending.length > 0) {
        const chunk = this.#pending.shift()!;
        const job: Job = { chunk, offset: chunk * this.#chunkBytes, length: this.#lengthOf(chunk), data: null, sha256: null, sent: 0, announced: false };
        conn.jobs.push(job);
        void this.#load(job);
      }
    }
  }

  async #load(job: Job): Promise<void> {
    const buf = Buffer.allocUnsafeSlow(job.length);
    try {
      let filled = 0;
      while (filled < job.length) {
        const { bytesRead } = await this.#fh.read(buf, filled, job.length - filled, job.offset + filled);
        if (bytesRead === 0) throw new TransferError(TransferErrorCode.SOURCE_CHANGED, `${this.#opts.file} ends before its ${this.#size} bytes: it changed while it was sent`);
        filled += bytesRead;
      }
    } catch (err) {
      this.#fail(err instanceof TransferError ? err : new TransferError(TransferErrorCode.IO, `Cannot read ${this.#opts.file}: ${(err as Error).message}`, { cause: err }));
      return;
    }
    // WebCrypto's digest runs in libuv's pool: 4 MiB hashed off the event loop that paces frames.
    job.sha256 = Buffer.from(await webcrypto.subtle.digest('SHA-256', buf));
    job.data = buf;
    this.#pump();
  }

  /** Sends what pacing and the window allow, then arms a timer or waits for an acknowledgement. */
  #pump(): void {
    if (this.#phase !== 'data' || this.#pumpTimer !== null) return;
    this.#assign();
    for (;;) {
      if (this.#est.inflightBytes >= this.#est.windowBytes) return;
      const now = performance.now();
      const delay = this.#pacer.delayMs(now);
      if (delay > 0.5) {
        this.#pumpTimer = setTimeout(() => {
          this.#pumpTimer = null;
          this.#pump();
        }, delay);
        return;
      }
      const next = this.#nextReady();
      if (next === null) return;
      this.#sendSegment(next.conn, next.job, now);
    }
  }

  /** The next connection, round robin, whose current chunk is loaded and whose socket takes more. */
  #nextReady(): { conn: Conn; job: Job } | null {
    const n = this.#conns.length;
    for (let k = 0; k < n; k++) {
      const conn = this.#conns[(this.#rr + k) % n];
      if (conn.waitingDrain) continue;
      const job = conn.jobs.find((j) => j.sent < j.length);
      if (job === undefined || job.data === null) continue;
      this.#rr = (this.#rr + k + 1) % n;
      return { conn, job };
    }
    return null;
  }

  #sendSegment(conn: Conn, job: Job, now: number): void {
    if (!job.announced) {
      conn.ch.send(FrameType.CHUNK, encodeBody({ chunk: job.chunk, offset: job.offset, length: job.length, sha256: job.sha256 }));
      job.announced = true;
      this.#chunksSent++;
      this.#chunksPerConnection[this.#conns.indexOf(conn)]++;
    }
    const n = Math.min(Size.SEGMENT_BYTES, job.length - job.sent);
    const payload = job.data!.subarray(job.sent, job.sent + n);
    conn.stamps.set(conn.ch.nextSeq, { stamp: this.#est.onSend(n), chunk: job.chunk });
    const ok = conn.ch.send(FrameType.DATA, encodeBody({ chunk: job.chunk, offset: job.offset + job.sent }, payload));
    this.#pacer.spend(n, this.#est.pacingRate, now, 2 * Size.SEGMENT_BYTES);
    job.sent += n;
    this.#bytesSent += n;
    if (job.sent === job.length) job.data = null;
    if (!ok) {
      conn.waitingDrain = true;
      conn.ch.drained().then(
        () => {
          conn.waitingDrain = false;
          this.#pump();
        },
        () => {},
      );
    }
  }

  #report(): SendReport {
    const seconds = (performance.now() - this.#startMs) / 1000;
    const { transitMs, holdMs } = this.#latency.summary();
    return {
      event: 'done',
      name: this.#name,
      sizeBytes: this.#size,
      sha256: this.#sha256!.toString('hex'),
      bytesSent: this.#bytesSent,
      bytesSkipped: this.#bytesSkipped ?? 0,
      primeBytes: this.#primeBytes,
      chunks: this.#chunks,
      chunksSent: this.#chunksSent,
      chunksResent: this.#chunksResent,
      attempts: this.#attempts,
      seconds: Math.round(seconds * 1000) / 1000,
      rateBytesPerSecond: Math.round(this.#bytesSent / Math.max(0.001, seconds)),
      connections: this.#n,
      connectionsActiveMin: this.#chooser.low,
      connectionsActiveMax: this.#chooser.high,
      chunksPerConnection: this.#chunksPerConnection,
      bandwidthBytesPerSecond: Math.round(this.#est.bandwidth),
      minRttMs: Math.round(this.#est.minRttMs * 1000) / 1000,
      transitMs,
      holdMs,
      limitedBy: holdMs.p50 > transitMs.p50 && holdMs.p50 > 1 ? 'receiver' : 'network',
      className: this.#className,
      dscp: this.#dscp,
    };
  }
}
