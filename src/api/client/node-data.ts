/**
 * Disk data of a node over its HTTP API (docs/api.md, "Disk data"): a snapshot's extents and
 * bytes (what a backup reads), a disk's writes, trims and flushes (what a restore writes).
 * Requests go over a small pool of keep-alive connections (data-connections.ts) that read bodies
 * straight into the caller's buffers.
 */
import { API_PREFIX, type ExtentRun, type ExtentsReply } from './wire.ts';
import { DataConnections, type DataReply, type DataRequest } from './data-connections.ts';
import { ClientError, ClientErrorCode, replyError } from './errors.ts';

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
  private readonly connections: DataConnections;

  constructor(baseUrl: string, options: NodeDataOptions = {}) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.connections = new DataConnections(this.baseUrl, options);
  }

  /** Closes the connections. */
  close(): void {
    this.connections.close();
  }

  /**
   * Sends one request to API_PREFIX + its path; resolves to a 2xx reply, and turns any other
   * status into a ClientError with the node's message and code.
   */
  private async send(request: DataRequest): Promise<DataReply> {
    const reply = await this.connections.request({ ...request, path: `${API_PREFIX}${request.path}` });
    if (reply.status >= 200 && reply.status < 300) return reply;
    let body: unknown = null;
    try {
      body = JSON.parse(reply.body.toString('utf8'));
    } catch {
      // not JSON: the status says what failed
    }
    throw replyError(reply.status, body, `${request.method} ${API_PREFIX}${request.path.split('?')[0]}`);
  }

  private async json(method: string, path: string, body: unknown = null): Promise<any> {
    const reply = await this.send({ method, path, body: body === null ? null : Buffer.from(JSON.stringify(body)), contentType: 'application/json' });
    const text = reply.body.toString('utf8');
    if (text === '') return undefined;
    try {
      return JSON.parse(text);
    } catch {
      throw new ClientError(ClientErrorCode.BAD_REPLY, `the node answered ${method} ${API_PREFIX}${path.split('?')[0]} with something other than JSON`);
    }
  }

  /** Calls `visit` with every extent run of `disk@snap` (allocation, or changes since `since`), page by page. */
  async extents(disk: string, snap: string, visit: (e: ExtentRun) => void, since?: string): Promise<void> {
    let next: number | null = 0;
    while (next !== null) {
      const q = new URLSearchParams({ offset: String(next) });
      if (since !== undefined) q.set('since', since);
      const reply: ExtentsReply = await this.json('GET', `/disks/${seg(disk)}/snapshots/${seg(snap)}/extents?${q}`);
      for (const e of reply.extents) visit(e);
      if (reply.next !== null && reply.next <= next) throw new ClientError(ClientErrorCode.BAD_REPLY, `the node's extents did not advance past offset ${next}`);
      next = reply.next;
    }
  }

  /** Fills `into` with the bytes of `disk@snap` from `offset`, in requests of at most rangeBytesMax. */
  async read(disk: string, snap: string, offset: number, into: Buffer): Promise<void> {
    for (let at = 0; at < into.length; at += rangeBytesMax) {
      const piece = into.subarray(at, Math.min(into.length, at + rangeBytesMax));
      await this.send({ method: 'GET', path: `/disks/${seg(disk)}/snapshots/${seg(snap)}/data?offset=${offset + at}&length=${piece.length}`, into: piece });
    }
  }

  /**
   * Fills `into`'s buffers one after the other with the bytes of `disk@snap` from `offset`: one
   * request if they add up to at most rangeBytesMax, else a read per buffer.
   */
  async readMany(disk: string, snap: string, offset: number, into: readonly Buffer[]): Promise<void> {
    const bytes = into.reduce((n, b) => n + b.length, 0);
    if (bytes === 0) return;
    if (bytes <= rangeBytesMax) {
      await this.send({ method: 'GET', path: `/disks/${seg(disk)}/snapshots/${seg(snap)}/data?offset=${offset}&length=${bytes}`, into });
      return;
    }
    for (const buf of into) {
      await this.read(disk, snap, offset, buf);
      offset += buf.length;
    }
  }

  /** Writes `data` to disk `disk` at `offset`. */
  async write(disk: string, offset: number, data: Buffer): Promise<void> {
    for (let at = 0; at < data.length; at += rangeBytesMax) {
      const piece = data.subarray(at, Math.min(data.length, at + rangeBytesMax));
      await this.send({ method: 'PUT', path: `/disks/${seg(disk)}/data?offset=${offset + at}`, body: piece, contentType: 'application/octet-stream' });
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
}

const seg = encodeURIComponent;
