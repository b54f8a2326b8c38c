/**
 * What a route is and what its handler sees: the types the route table (routes.ts), the handlers
 * (data.ts, backups.ts, instant-restore.ts) and the server share, in a file of their own so that
 * the table can import the handlers without the handlers importing the table.
 */
import type { IncomingMessage } from 'node:http';
import type { ScrubProgress, ScrubReport, Store, Volume } from '../engine/index.ts';
import type { InstantRestores } from '../hydrate/index.ts';
import type { Replication } from '../cluster/index.ts';
import type { Logger } from '../observe/index.ts';
import type { LatencyProfile } from '../flow/index.ts';
import type { JsonReply, StreamReply } from './http.ts';
import type { BodySpec } from './validate.ts';
import type { BackupJobState, BackupProgress, BackupScheduleInfo, BackupScheduleRequest, ClusterStatus, NbdEndpoints, NodeInfo, ScrubStatus, SnapshotScheduleInfo, SnapshotScheduleRequest } from './client/wire.ts';

/** HTTP methods the API uses. */
export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

/** Facts about the node that only the daemon knows, for GET /api/v1/node. */
export interface NodeFacts {
  /** Tessera version the node runs. */
  version: string;
  /** Data directory of the node. */
  dataDir: string | null;
  /** Where the NBD server listens. */
  nbd: NbdEndpoints | null;
  /** A new value of the node's hybrid logical clock, formatted; null for a node without one. */
  hlc?: string | null;
}

/** What a handler sees of the server it runs in. */
export interface RouteContext {
  store: Store;
  nodeInfo: () => Promise<NodeInfo>;
  /** Largest range of disk data one request reads or writes. */
  rangeBytesMax: number;
  /** Most extents one extents reply lists. */
  extentsMax: number;
  /** The node's instant restores, or null when the server has none (tests of the API alone). */
  restores: InstantRestores | null;
  /** The node's backups, or null when the server runs none (tests of the API alone). */
  backups: BackupRunner | null;
  /** The node's scrubs, or null when the server has none (then POST /scrub asks the store itself). */
  scrubs: ScrubRunner | null;
  /** The node's backup and snapshot schedules, or null when the server keeps none (tests of the API alone). */
  schedules: ScheduleService | null;
  /** Opens the sources of disk imports, or null when the server has none (then imports are refused). */
  importSources: ImportSources | null;
  /** Opens a disk's head (snap null) or a snapshot for the data routes; the caller closes it. */
  openVolume: (disk: string, snap: string | null) => Volume;
  /** The cluster's nodes (GET /cluster): the node's coordinator's view, or this node alone. */
  clusterStatus: () => ClusterStatus;
  /** In a cluster: the node's replication, which the disk routes go through; null on a single node. */
  cluster: Replication | null;
  /** The disks' latency profiles, or null when the server has none (tests of the API alone). */
  latency: LatencySettings | null;
}

/** What a handler sees of its request besides path parameters and a JSON body. */
export interface RequestContext extends RouteContext {
  /** The query string, to be checked with checkQuery. */
  query: URLSearchParams;
  /** The request, for routes that read a binary body themselves. */
  req: IncomingMessage;
  /** The request's id, sent back in `x-request-id` and in error bodies. */
  requestId: string;
  /** The API's logger bound to this request's id. */
  log: Logger;
}

/** What a handler answers: a status and a JSON body (none for 204), or a body it streams. */
export type Reply = JsonReply | StreamReply;

/** One route: a method and a path template whose `{param}` segments match one segment each. */
export interface Route {
  method: Method;
  /** Template below API_PREFIX-less root, e.g. `/api/v1/disks/{name}`. */
  path: string;
  /** Fields of the JSON body, when the route takes one; `octets` when it reads a binary body itself. */
  body: BodySpec | 'octets' | null;
  handle(params: Record<string, string>, body: any, ctx: RequestContext): Promise<Reply> | Reply;
}

/** The disks' latency profiles (docs/latency.md; src/node/latency.ts implements it). */
export interface LatencySettings {
  /** The profile of `disk`, or null. */
  profile(disk: string): LatencyProfile | null;
  /** Gives `disk` a profile (null: removes it), durably; the disk's open volumes take it at their next request. */
  set(disk: string, profile: LatencyProfile | null): Promise<void>;
  /** Drops the profile of a disk deleted. */
  forget(disk: string): Promise<void>;
}

/** What the node's backup service is asked (src/node/backups.ts implements it). */
export interface BackupRunner {
  /** Whether a job is running (another is refused meanwhile). */
  readonly busy: boolean;
  /** Starts a job; throws at once for an unknown disk or while another runs. */
  start(req: { disks: string[]; repo: string; password: string; env: Record<string, string>; tenant?: string; rateBytesPerSecond?: number }): BackupJobView;
  /** Running and recently finished jobs, newest first. */
  jobs(): BackupJobView[];
  /** The job with this id or unique prefix, or null. */
  job(id: string): BackupJobView | null;
}

/** A backup job as the routes see it (src/node/backup-jobs.ts). */
export interface BackupJobView {
  readonly id: string;
  readonly facts: { readonly disks: readonly string[]; readonly repo: string; readonly tenant: string | null; readonly rateBytesPerSecond: number | null };
  readonly state: BackupJobState;
  readonly startedMs: number;
  readonly finishedMs: number | null;
  readonly snapshot: string | null;
  readonly progress: BackupProgress[];
  readonly end: { state: 'done'; outcomes: object[] } | { state: 'failed' | 'cancelled'; error: Error } | null;
  /** Replays what the job did so far, then calls `listener` with each event up to its end; returns the function that stops following. */
  follow(listener: (e: BackupJobViewEvent) => void): () => void;
  /** Cancels the job; resolves once it has ended. */
  cancel(): Promise<unknown>;
}

/** What a follower of a backup job hears. */
export type BackupJobViewEvent =
  | { event: 'snapshot'; name: string }
  | { event: 'progress'; progress: BackupProgress }
  | { event: 'note'; message: string }
  | { event: 'done'; outcomes: object[] }
  | { event: 'error'; state: 'failed' | 'cancelled'; error: Error };

/** What the node's scrub service is asked (src/node/scrub.ts implements it). */
export interface ScrubRunner {
  /** Runs a scrub now (at full speed unless a rate is asked); one of every disk counts as the node's last pass. */
  run(req: { disks?: string[]; rateBytesPerSecond?: number }, onProgress: (p: ScrubProgress) => void, signal: AbortSignal): Promise<ScrubReport>;
  /** The background scrub and the last pass over every disk, for GET /node. */
  status(): ScrubStatus;
}

/**
 * What the node's schedules are asked (src/node/schedules.ts implements it): requests come
 * checked for form (api/schedules.ts); the service checks what only the node can (the disks,
 * the password file, the repository). An unknown id is NOT_FOUND.
 */
export interface ScheduleService {
  listBackup(): BackupScheduleInfo[];
  getBackup(id: string): BackupScheduleInfo;
  addBackup(req: BackupScheduleRequest): Promise<BackupScheduleInfo>;
  removeBackup(id: string): Promise<void>;
  listSnapshot(): SnapshotScheduleInfo[];
  getSnapshot(id: string): SnapshotScheduleInfo;
  addSnapshot(req: SnapshotScheduleRequest): Promise<SnapshotScheduleInfo>;
  removeSnapshot(id: string): Promise<void>;
}

/**
 * One reader of an import's source (src/node/import-sources.ts opens them): an NBD connection, or
 * an open image file. Its failures are ApiErrors (SOURCE when the source fails or goes away).
 */
export interface ImportReader {
  /** The source's size in bytes. */
  readonly sizeBytes: number;
  /** Whether the source reports its allocation (else `extents` says all of it is data). */
  readonly sparse: boolean;
  /** Largest read the source takes at once. */
  readonly readBytesMax: number;
  /** Allocation runs from `offset` on, covering at least a first part of [offset, offset + length), in order. */
  extents(offset: number, length: number): Promise<Array<{ offset: number; length: number; zero: boolean }>>;
  /** Exactly `length` bytes at `offset`, read into the first `length` bytes of `into` (the result is a view of it). */
  read(offset: number, length: number, into: Buffer): Promise<Buffer>;
  close(): Promise<void>;
}

/** Opens readers of import sources (the node's: an NBD client, image files). */
export interface ImportSources {
  /** Opens one reader of `source`; refuses what is not a source (INVALID), one not found (NOT_FOUND), one that fails (SOURCE). */
  open(source: string): Promise<ImportReader>;
  /** Notes, durably, that disk `disk` (just created) is being imported: a node that stops before end() deletes it when it starts again. */
  begin(disk: string): Promise<void>;
  /** The import of `disk` ended: done, or its disk deleted. */
  end(disk: string): Promise<void>;
}
