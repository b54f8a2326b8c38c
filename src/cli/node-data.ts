/**
 * Disk data of a node over its HTTP API (docs/api.md, "Disk data"), for the backup commands: a
 * snapshot's extents and bytes as a backup source, and a disk's writes and trims as a restore
 * sink. Requests go over a small pool of keep-alive connections; bodies stream straight into and
 * out of the caller's buffers.
 */
import type { Agent, IncomingMessage } from 'node:http';
import { http } from '../util/node-http.ts';
import type { DiskExtent, DiskSnapshotSource, RestoreSink } from '../backup/index.ts';
import { CliError, CliErrorCode } from './errors.ts';

/** Largest range one data request reads or writes (the node's default limit). */
export const rangeBytesMax = 16 << 20;

/** Options of NodeData. */
export interface NodeDataOptions {
  /** Connections at once. Default 8. */
  connectionsMax?: number;
  /** A request silent for this long fails. Default 60 s. */
  idleTimeoutMs?: number;
}

/** A client of one node's disk data routes. */
export class NodeData {
  readonly baseUrl: string;
  private readonly agent: Agent;
  private readonly idleTimeoutMs: number;

  constructor(baseUrl: string, options: NodeDataOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.agent = new http.Agent({ keepAlive: true, maxSockets: options.connectionsMax ?? 8 });
    this.idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  }

  /** Closes the idle connections. */
  close(): void {
    this.agent.destroy();
  }

  /**
   * Sends one request to `/api/v1` + `path`. `onBody` gets the response of a 2xx reply and
   * consumes it; any other status is turned into a CliError with the node's message.
   */
  private send<T>(method: string, path: string, body: Buffer | string | null, contentType: string | null, onBody: (res: IncomingMessage) => Promise<T>): Promise<T> {
    const url = new URL(`${this.baseUrl}/api/v1${path}`);
    return new Promise<T>((resolve, reject) => {
      const headers: Record<string, string> = {};
      if (body !== null) {
        headers['content-type'] = contentType!;
        headers['content-length'] = String(Buffer.byteLength(body));
      }
      const req = http.request({ host: url.hostname, port: url.port, path: url.pathname + url.search, method, headers, agent: this.agent }, (res) => {
        if (res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300) {
          onBody(res).then(resolve, reject);
          return;
        }
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          if (text.length < 65536) text += c;
        });
        res.on('end', () => {
          let message = `the node answered HTTP ${res.statusCode} to ${method} ${url.pathname}`;
          try {
            const m = JSON.parse(text)?.error?.message;
            if (typeof m === 'string') message = m;
          } catch {
            // not JSON: keep the generic message
          }
          reject(new CliError(CliErrorCode.FAILED, message));
        });
        res.on('error', reject);
      });
      req.setTimeout(this.idleTimeoutMs, () => req.destroy(new CliError(CliErrorCode.FAILED, `the Tessera node at ${this.baseUrl} did not answer within ${this.idleTimeoutMs / 1000} s`)));
      req.on('error', (err) => {
        if (err instanceof CliError) reject(err);
        else reject(new CliError(CliErrorCode.UNREACHABLE, `lost the Tessera node at ${this.baseUrl}: ${(err as NodeJS.ErrnoException).code ?? err.message}`, { cause: err }));
      });
      req.end(body ?? undefined);
    });
  }

  private async json(method: string, path: string, body: unknown = null): Promise<any> {
    return this.send(method, path, body === null ? null : JSON.stringify(body), 'application/json', async (res) => {
      let text = '';
      res.setEncoding('utf8');
      for await (const c of res) text += c;
      return text === '' ? undefined : JSON.parse(text);
    });
  }

  /** Calls `visit` with every extent run of `disk@snap` (allocation, or changes since `since`), page by page. */
  async extents(disk: string, snap: string, visit: (e: DiskExtent) => void, since?: string): Promise<void> {
    let next: number | null = 0;
    while (next !== null) {
      const q = new URLSearchParams({ offset: String(next) });
      if (since !== undefined) q.set('since', since);
      const reply: { extents: DiskExtent[]; next: number | null } = await this.json('GET', `/disks/${seg(disk)}/snapshots/${seg(snap)}/extents?${q}`);
      for (const e of reply.extents) visit(e);
      if (reply.next !== null && reply.next <= next) throw new CliError(CliErrorCode.FAILED, `the node's extents did not advance past offset ${next}`);
      next = reply.next;
    }
  }

  /** Fills `into` with the bytes of `disk@snap` from `offset`, in requests of at most rangeBytesMax. */
  async read(disk: string, snap: string, offset: number, into: Buffer): Promise<void> {
    for (let at = 0; at < into.length; at += rangeBytesMax) {
      const length = Math.min(rangeBytesMax, into.length - at);
      const path = `/disks/${seg(disk)}/snapshots/${seg(snap)}/data?offset=${offset + at}&length=${length}`;
      // 'data' events, not an async iterator: a promise per 64 KiB piece was a good part of the
      // main thread's time while an incremental backup read its changed chunks.
      const got = await this.send('GET', path, null, null, (res) =>
        new Promise<number>((resolve, reject) => {
          let n = 0;
          res.on('data', (c: Buffer) => {
            if (n + c.length > length) {
              res.destroy();
              reject(new CliError(CliErrorCode.FAILED, `the node sent more than the ${length} bytes asked at offset ${offset + at}`));
              return;
            }
            n += c.copy(into, at + n);
          });
          res.on('end', () => resolve(n));
          res.on('error', reject);
          res.on('close', () => resolve(n)); // a reply cut short: the count says so below
        }),
      );
      if (got !== length) throw new CliError(CliErrorCode.FAILED, `the node sent ${got} of ${length} bytes at offset ${offset + at}`);
    }
  }

  /** Writes `data` to disk `disk` at `offset`. */
  async write(disk: string, offset: number, data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += rangeBytesMax) {
      const piece = data.subarray(at, Math.min(data.length, at + rangeBytesMax));
      await this.send('PUT', `/disks/${seg(disk)}/data?offset=${offset + at}`, piece, 'application/octet-stream', async (res) => void res.resume());
    }
  }

  /** Deallocates [offset, offset + length) of `disk`. */
  async trim(disk: string, offset: number, length: number): Promise<void> {
    await this.json('POST', `/disks/${seg(disk)}/trim`, { offset, length });
  }

  /** Makes everything written to `disk` durable. */
  async flush(disk: string): Promise<void> {
    await this.json('POST', `/disks/${seg(disk)}/flush`);
  }

  /** A backup source over `disk@snap`. */
  source(disk: string, snap: string, sizeBytes: number): DiskSnapshotSource {
    return {
      disk,
      snapshot: snap,
      sizeBytes,
      extents: (visit, since) => this.extents(disk, snap, visit, since),
      read: (offset, into) => this.read(disk, snap, offset, into),
    };
  }

  /** A restore sink into `disk`; with `trimZeroes`, zero chunks are trimmed (the disk held data). */
  sink(disk: string, trimZeroes: boolean): RestoreSink {
    return {
      write: (data, offset) => this.write(disk, offset, data),
      zero: trimZeroes ? (offset, length) => this.trim(disk, offset, length) : undefined,
    };
  }
}

const seg = encodeURIComponent;
