/**
 * A client of a node's HTTP API (docs/api.md): one method per route, taking and returning the
 * API's wire types. The CLI is one of its users; a web console, peers and DR orchestration are
 * meant to be others. Disk data goes over NodeData (node-data.ts) instead, which reads bodies
 * into the caller's buffers.
 */
import type { IncomingMessage } from 'node:http';
import { http, https } from '../../util/node-http.ts';
import type {
  BackupEvent,
  BackupJob,
  BackupOutcome,
  BackupRequest,
  BackupScheduleInfo,
  BackupScheduleRequest,
  CloneRequest,
  ClusterStatus,
  CompactStats,
  DiskLease,
  CreateDiskRequest,
  DiskInfo,
  GroupSnapshotRequest,
  InstantRestoreInfo,
  InstantRestoreRequest,
  NodeInfo,
  ResumeRequest,
  ScrubEvent,
  ImportEvent,
  ImportProgress,
  ImportRequest,
  ImportResult,
  ScrubProgress,
  ScrubReport,
  ScrubRequest,
  SetLatencyProfileRequest,
  SnapshotInfo,
  SnapshotScheduleInfo,
  SnapshotScheduleRequest,
} from './wire.ts';
import { API_PREFIX, type ApiErrorCodeValue } from './wire.ts';
import { ClientError, ClientErrorCode, replyError } from './errors.ts';

/** Default API URL: where `tessera serve` listens unless told otherwise. */
export const DEFAULT_API_URL = 'http://127.0.0.1:7480';

/** A request's time limit unless it says otherwise. */
export const requestTimeoutMsDefault = 60_000;

/** A compaction may take long on a large store; the node keeps serving meanwhile. */
const compactTimeoutMs = 60 * 60_000;

/** Starting or resuming an instant restore, or adding a backup schedule, opens a repository (an S3 one may be slow). */
const restoreStartTimeoutMs = 300_000;

/** A cancelled backup job ends at its next read, then deletes its snapshot and its marker (an S3 repository may be slow). */
const cancelTimeoutMs = 300_000;

/** One line of a streamed reply (a backup's outcomes, a scrub's report) is at most this long. */
const lineBytesMax = 16 << 20;

/** Options of a request. */
export interface RequestOptions {
  /** JSON body to send. */
  body?: unknown;
  /** Give up after this long. Default requestTimeoutMsDefault. */
  timeoutMs?: number;
}

const seg = encodeURIComponent;

/** A client of one node's API; every failure is a ClientError with a one-line message. */
export class ApiClient {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:7480`. */
  readonly baseUrl: string;

  constructor(baseUrl: string) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new ClientError(ClientErrorCode.BAD_URL, `invalid API URL '${baseUrl}': expected e.g. ${DEFAULT_API_URL}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new ClientError(ClientErrorCode.BAD_URL, `invalid API URL '${baseUrl}': expected an http:// or https:// URL`);
    }
    this.baseUrl = url.href.replace(/\/+$/, '');
  }

  /**
   * Sends a request to API_PREFIX + `path` and resolves to the parsed JSON reply (undefined for
   * 204). The typed methods below are the usual way in; this is for routes they do not cover.
   */
  async request<T = unknown>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? requestTimeoutMsDefault;
    let status: number;
    let text: string;
    try {
      ({ status, text } = await send(new URL(`${this.baseUrl}${API_PREFIX}${path}`), method, opts.body === undefined ? undefined : JSON.stringify(opts.body), timeoutMs));
    } catch (err) {
      if (err instanceof TimeoutError) {
        throw new ClientError(ClientErrorCode.TIMEOUT, `the Tessera node at ${this.baseUrl} did not answer within ${timeoutMs / 1000} s`, { cause: err });
      }
      throw unreachable(this.baseUrl, err);
    }
    if (status === 204) return undefined as T;
    let reply: unknown;
    try {
      reply = JSON.parse(text);
    } catch {
      throw new ClientError(ClientErrorCode.BAD_REPLY, `unexpected reply from ${this.baseUrl} (HTTP ${status}, not JSON): is it a Tessera node?`);
    }
    if (status < 200 || status >= 300) throw replyError(status, reply, `${method} ${path}`);
    return reply as T;
  }

  /** Every disk, by name. */
  listDisks(): Promise<DiskInfo[]> {
    return this.request('GET', '/disks');
  }

  /** One disk. */
  getDisk(name: string): Promise<DiskInfo> {
    return this.request('GET', `/disks/${seg(name)}`);
  }

  /** Creates an empty (thin) disk. */
  createDisk(req: CreateDiskRequest): Promise<DiskInfo> {
    return this.request('POST', '/disks', { body: req });
  }

  /** Grows or shrinks a disk. */
  resizeDisk(name: string, sizeBytes: number): Promise<DiskInfo> {
    return this.request('POST', `/disks/${seg(name)}/resize`, { body: { sizeBytes } });
  }

  /** Creates disk `req.name` from snapshot `req.snapshot` of disk `name`. */
  cloneDisk(name: string, req: CloneRequest): Promise<DiskInfo> {
    return this.request('POST', `/disks/${seg(name)}/clone`, { body: req });
  }

  /** Deletes a disk and its snapshots. */
  async deleteDisk(name: string): Promise<void> {
    await this.request('DELETE', `/disks/${seg(name)}`);
  }

  /** A disk's snapshots, oldest first. */
  listSnapshots(disk: string): Promise<SnapshotInfo[]> {
    return this.request('GET', `/disks/${seg(disk)}/snapshots`);
  }

  /** Takes snapshot `name` of `disk`. */
  createSnapshot(disk: string, name: string): Promise<SnapshotInfo> {
    return this.request('POST', `/disks/${seg(disk)}/snapshots`, { body: { name } });
  }

  /** Deletes snapshot `snap` of `disk`. */
  async deleteSnapshot(disk: string, snap: string): Promise<void> {
    await this.request('DELETE', `/disks/${seg(disk)}/snapshots/${seg(snap)}`);
  }

  /** Makes `disk` read as its snapshot `snap` again. */
  revertDisk(disk: string, snap: string): Promise<DiskInfo> {
    return this.request('POST', `/disks/${seg(disk)}/snapshots/${seg(snap)}/revert`);
  }

  /** One snapshot of several disks at the same instant (a consistency group). */
  snapshotGroup(req: GroupSnapshotRequest): Promise<SnapshotInfo[]> {
    return this.request('POST', '/snapshots', { body: req });
  }

  /** Who owns a disk of the cluster, at which epoch, and its lease's time left. */
  diskLease(name: string): Promise<DiskLease> {
    return this.request('GET', `/disks/${seg(name)}/lease`);
  }

  /** Moves a disk's head to its next healthy replica at a new epoch, even while the owner's lease lives. */
  breakDiskLease(name: string): Promise<DiskLease> {
    return this.request('POST', `/disks/${seg(name)}/lease/break`);
  }

  /** The node: version, endpoints, space figures. */
  nodeInfo(): Promise<NodeInfo> {
    return this.request('GET', '/node');
  }

  /** The cluster's nodes (a node without etcd lists itself alone). */
  clusterStatus(): Promise<ClusterStatus> {
    return this.request('GET', '/cluster');
  }

  /** Gives a disk a device's latency: a built-in profile's name (hdd, ssd, nvme) or a profile (`disk set --latency-profile`). */
  setLatencyProfile(disk: string, profile: SetLatencyProfileRequest['profile']): Promise<DiskInfo> {
    return this.request('PUT', `/disks/${encodeURIComponent(disk)}/latency-profile`, { body: { profile } });
  }

  /** Removes a disk's latency profile (`disk set --latency-profile none`). */
  removeLatencyProfile(disk: string): Promise<DiskInfo> {
    return this.request('DELETE', `/disks/${encodeURIComponent(disk)}/latency-profile`);
  }

  /** In a cluster: changes a disk's replica count (`disk set`). */
  setReplicas(disk: string, replicas: number): Promise<DiskInfo> {
    return this.request('PATCH', `/disks/${encodeURIComponent(disk)}`, { body: { replicas } });
  }

  /** In a cluster: drains a node (`node drain`). */
  async drainNode(id: string): Promise<void> {
    await this.request('POST', `/nodes/${encodeURIComponent(id)}/drain`);
  }

  /** In a cluster: forgets a drained or dead node (`node rm`). */
  async removeNode(id: string): Promise<void> {
    await this.request('DELETE', `/nodes/${encodeURIComponent(id)}`);
  }

  /** Runs one compaction pass. */
  compact(): Promise<CompactStats> {
    return this.request('POST', '/compact', { timeoutMs: compactTimeoutMs });
  }

  /** The node's instant restores. */
  listInstantRestores(): Promise<InstantRestoreInfo[]> {
    return this.request('GET', '/instant-restores');
  }

  /** The instant restore of `disk`. */
  getInstantRestore(disk: string): Promise<InstantRestoreInfo> {
    return this.request('GET', `/instant-restores/${seg(disk)}`);
  }

  /** Starts an instant restore: the disk is served once this resolves. */
  startInstantRestore(req: InstantRestoreRequest): Promise<InstantRestoreInfo> {
    return this.request('POST', '/instant-restores', { body: req, timeoutMs: restoreStartTimeoutMs });
  }

  /** Gives the password again to an instant restore that waits for it. */
  resumeInstantRestore(disk: string, req: ResumeRequest): Promise<InstantRestoreInfo> {
    return this.request('POST', `/instant-restores/${seg(disk)}/resume`, { body: req, timeoutMs: restoreStartTimeoutMs });
  }

  /** Stops an unfinished instant restore and deletes its disk. */
  async cancelInstantRestore(disk: string): Promise<void> {
    await this.request('DELETE', `/instant-restores/${seg(disk)}`);
  }

  /** The node's backup schedules, oldest first. */
  listBackupSchedules(): Promise<BackupScheduleInfo[]> {
    return this.request('GET', '/backup-schedules');
  }

  /** Adds a backup schedule; the node checks the disks, the password file and the repository first. */
  addBackupSchedule(req: BackupScheduleRequest): Promise<BackupScheduleInfo> {
    return this.request('POST', '/backup-schedules', { body: req, timeoutMs: restoreStartTimeoutMs });
  }

  /** Removes a backup schedule. */
  async removeBackupSchedule(id: string): Promise<void> {
    await this.request('DELETE', `/backup-schedules/${seg(id)}`);
  }

  /** The node's snapshot schedules, oldest first. */
  listSnapshotSchedules(): Promise<SnapshotScheduleInfo[]> {
    return this.request('GET', '/snapshot-schedules');
  }

  /** Adds a snapshot schedule. */
  addSnapshotSchedule(req: SnapshotScheduleRequest): Promise<SnapshotScheduleInfo> {
    return this.request('POST', '/snapshot-schedules', { body: req });
  }

  /** Removes a snapshot schedule (its snapshots stay). */
  async removeSnapshotSchedule(id: string): Promise<void> {
    await this.request('DELETE', `/snapshot-schedules/${seg(id)}`);
  }

  /**
   * Has the node back up disks (POST /backups): the node starts a job and this follows it, up
   * to its end; resolves to the outcomes. `onEvent` hears the job (first), the snapshot,
   * progress and notes as they come; the next line is read once it resolves. An `error` event
   * rejects with a REFUSED ClientError carrying the node's code (`CANCELLED` for a job
   * cancelled). Going away (`signal`) stops following; the job goes on.
   */
  async runBackup(req: BackupRequest, onEvent: (e: BackupEvent) => void | Promise<void> = () => {}, opts: { signal?: AbortSignal } = {}): Promise<BackupOutcome[]> {
    for await (const e of this.events<BackupEvent>('POST', '/backups', req, 'backup', opts.signal)) {
      if (e.event === 'done') return e.outcomes;
      await onEvent(e);
    }
    throw lost('backup');
  }

  /** Starts a backup job (POST /backups?follow=false) and resolves to it at once. */
  startBackupJob(req: BackupRequest): Promise<BackupJob> {
    return this.request('POST', '/backups?follow=false', { body: req, timeoutMs: restoreStartTimeoutMs });
  }

  /**
   * The node's running and recently finished backup jobs, newest first; in a cluster those of
   * every node up, unless `scope` is `node` (this node's only).
   */
  listBackupJobs(opts: { scope?: 'node'; timeoutMs?: number } = {}): Promise<BackupJob[]> {
    return this.request('GET', `/backup-jobs${opts.scope === 'node' ? '?scope=node' : ''}`, { timeoutMs: opts.timeoutMs });
  }

  /** One backup job, by its id or a unique prefix of at least 4 digits. */
  getBackupJob(id: string, opts: { scope?: 'node'; timeoutMs?: number } = {}): Promise<BackupJob> {
    return this.request('GET', `/backup-jobs/${seg(id)}${opts.scope === 'node' ? '?scope=node' : ''}`, { timeoutMs: opts.timeoutMs });
  }

  /**
   * Follows a backup job (GET /backup-jobs/{id}?follow=true) as runBackup follows the job it
   * starts: the job first, then what it did so far (its snapshot, notes, the last progress of
   * each disk), then its events as they come; resolves to the outcomes.
   */
  async followBackupJob(id: string, onEvent: (e: BackupEvent) => void | Promise<void> = () => {}, opts: { scope?: 'node'; signal?: AbortSignal } = {}): Promise<BackupOutcome[]> {
    const path = `/backup-jobs/${seg(id)}?follow=true${opts.scope === 'node' ? '&scope=node' : ''}`;
    for await (const e of this.events<BackupEvent>('GET', path, undefined, 'backup', opts.signal)) {
      if (e.event === 'done') return e.outcomes;
      await onEvent(e);
    }
    throw lost('backup');
  }

  /**
   * Cancels a backup job and resolves to it once it has ended: `cancelled`, or what it had
   * ended as before the cancel.
   */
  cancelBackupJob(id: string, opts: { scope?: 'node' } = {}): Promise<BackupJob> {
    return this.request('POST', `/backup-jobs/${seg(id)}/cancel${opts.scope === 'node' ? '?scope=node' : ''}`, { timeoutMs: cancelTimeoutMs });
  }

  /**
   * Has the node scrub disks (POST /scrub; all of them when `req.disks` is left out) and resolves
   * to the report, damage or none. `onProgress` hears the progress lines as they come; an `error`
   * line rejects with a REFUSED ClientError carrying the node's code.
   */
  async scrub(req: ScrubRequest = {}, onProgress: (p: ScrubProgress) => void | Promise<void> = () => {}): Promise<ScrubReport> {
    for await (const e of this.events<ScrubEvent>('POST', '/scrub', req, 'scrub')) {
      if (e.event === 'done') return e.report;
      if (e.event === 'progress') await onProgress(e.progress);
    }
    throw lost('scrub');
  }

  /**
   * Has the node create disk `name` sized as `req.source` and copy it in (POST
   * /disks/{name}/import) and resolves to what it did. `onProgress` hears the progress lines; an
   * `error` line (the disk was deleted) rejects with a REFUSED ClientError carrying the node's code.
   */
  async importDisk(name: string, req: ImportRequest, onProgress: (p: ImportProgress) => void | Promise<void> = () => {}): Promise<ImportResult> {
    for await (const e of this.events<ImportEvent>('POST', `/disks/${seg(name)}/import`, req, 'import')) {
      if (e.event === 'done') return e.result;
      if (e.event === 'progress') await onProgress(e.progress);
    }
    throw lost('import');
  }

  /**
   * Asks a route whose reply is JSON lines (POSTing `req`, or a GET when it is undefined) and
   * yields its events as they come, up to and with `done`: an `error` line rejects with a
   * REFUSED ClientError carrying the node's code, a reply cut short with LOST. The next line is
   * read once the caller asks for it. `signal` closes the connection (and rejects with LOST).
   */
  private async *events<E extends { event: string }>(method: 'GET' | 'POST', path: string, req: unknown, what: string, signal?: AbortSignal): AsyncGenerator<E, void, void> {
    const res = await this.open(method, path, req === undefined ? null : Buffer.from(JSON.stringify(req)));
    const stop = (): void => void res.destroy();
    signal?.addEventListener('abort', stop, { once: true });
    if (signal?.aborted) stop();
    if (res.statusCode !== 200) {
      let text = '';
      for await (const chunk of res) text += chunk;
      let body: unknown = null;
      try {
        body = JSON.parse(text);
      } catch {
        // not JSON: the status says what failed
      }
      throw replyError(res.statusCode ?? 0, body, `${method} ${API_PREFIX}${path}`);
    }
    try {
      for await (const line of lines(res, lineBytesMax, what)) {
        let e: E;
        try {
          e = JSON.parse(line);
        } catch {
          throw new ClientError(ClientErrorCode.BAD_REPLY, `the node sent a line of its ${what} that is not JSON`);
        }
        if (e.event === 'error') {
          const { message, code } = e as unknown as { message: string; code: ApiErrorCodeValue };
          throw new ClientError(ClientErrorCode.REFUSED, message, { status: 200, nodeCode: code });
        }
        yield e;
        if (e.event === 'done') return;
      }
    } catch (err) {
      // A reset connection fails the reply stream with a bare error; whatever the caller threw goes on as it is.
      if (signal?.aborted || (err as NodeJS.ErrnoException).code === 'ECONNRESET' || (err as Error).message === 'aborted') throw lost(what, err);
      throw err;
    } finally {
      signal?.removeEventListener('abort', stop);
      res.destroy();
    }
  }

  /** Sends a request (with a JSON body, or none); resolves once the reply's head came, without a time limit (a backup may run for hours). */
  private open(method: string, path: string, body: Buffer | null): Promise<IncomingMessage> {
    const url = new URL(`${this.baseUrl}${API_PREFIX}${path}`);
    const headers = body === null ? {} : { 'content-type': 'application/json', 'content-length': String(body.length) };
    return new Promise((resolve, reject) => {
      const req = (url.protocol === 'https:' ? https : http).request(url, { method, headers, agent: false }, resolve);
      req.on('error', (err) => reject(unreachable(this.baseUrl, err)));
      req.end(body ?? undefined);
    });
  }
}

/** The error of a request that reached no node. */
function unreachable(baseUrl: string, err: unknown): ClientError {
  const e = err as NodeJS.ErrnoException;
  return new ClientError(ClientErrorCode.UNREACHABLE, `cannot reach the Tessera node at ${baseUrl}: ${e.code ?? e.message}`, { cause: err });
}

/** The error of a streamed reply that ended before its last line. */
function lost(what: string, cause?: unknown): ClientError {
  return new ClientError(ClientErrorCode.LOST, `the node closed the connection before the ${what} was done`, { cause });
}

/** The reply's lines, as they come; a line longer than `lineBytesMax` fails. */
async function* lines(res: IncomingMessage, lineBytesMax: number, what: string): AsyncGenerator<string> {
  let rest = '';
  res.setEncoding('utf8');
  for await (const chunk of res as AsyncIterable<string>) {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line !== '') yield line;
    }
    if (rest.length > lineBytesMax) throw new ClientError(ClientErrorCode.BAD_REPLY, `the node sent a line of its ${what} over ${lineBytesMax} bytes`);
  }
  if (rest !== '') yield rest;
}

/** A request that took longer than its time limit. */
class TimeoutError extends Error {}

/**
 * One HTTP request, on a connection of its own, with a limit on its whole duration. node:http,
 * not fetch: a command's first fetch loads undici and compiles its WebAssembly HTTP parser,
 * ~70 ms of every command's start.
 */
function send(url: URL, method: string, body: string | undefined, timeoutMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    const req = (url.protocol === 'https:' ? https : http).request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', fail);
    });
    const timer = setTimeout(() => req.destroy(new TimeoutError(`no answer within ${timeoutMs} ms`)), timeoutMs);
    function fail(err: Error): void {
      clearTimeout(timer);
      reject(err);
    }
    req.on('error', fail);
    req.end(body);
  });
}
