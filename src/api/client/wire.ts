/**
 * The JSON the HTTP API sends and accepts (docs/api.md), declared here as the API's own types:
 * the server's routes convert engine, hydrate and backup objects to them explicitly
 * (src/api/to-wire.ts), and the client and the CLI use only these. The OpenAPI document
 * (src/api/openapi.ts) describes the same shapes; the compiler checks its object schemas against
 * these types (src/api/schema.ts).
 *
 * They live with the client, which may load nothing of the server: the server imports them from
 * here. Types and constants only.
 */

/** Base path of every route. */
export const API_PREFIX = '/api/v1';

/** Stable `error.code` values of an error reply (ApiError's codes, errors.ts). */
export const ApiErrorCode = {
  /** Unknown disk or snapshot. */
  NOT_FOUND: 'NOT_FOUND',
  /** A disk or snapshot of that name exists already. */
  EXISTS: 'EXISTS',
  /** A well-formed request asked for something invalid: bad name, bad size. */
  INVALID: 'INVALID',
  /** The object is still needed, e.g. a disk or snapshot with open NBD connections. */
  IN_USE: 'IN_USE',
  /** A write to a read-only object: a snapshot, or anything of a node that runs read-only. */
  READ_ONLY: 'READ_ONLY',
  /** A range past the end of a disk. */
  OUT_OF_RANGE: 'OUT_OF_RANGE',
  /** The node's file system is full. */
  NO_SPACE: 'NO_SPACE',
  /** Stored data failed its checks. */
  CORRUPT: 'CORRUPT',
  /**
   * The node's drive failed: a read of this request, or, while the drive is failing (GET
   * /api/v1/node says `drive.state: failing`), any write, flush or change of disks and snapshots.
   */
  IO_ERROR: 'IO_ERROR',
  /** The store is closed or closing: the node is shutting down. */
  CLOSED: 'CLOSED',
  /** The request body is not valid JSON, or its fields have the wrong types. */
  BAD_REQUEST: 'BAD_REQUEST',
  /** No route has this path. */
  NO_ROUTE: 'NO_ROUTE',
  /** The path exists but not with this method. */
  METHOD_NOT_ALLOWED: 'METHOD_NOT_ALLOWED',
  /** The request body is larger than the server accepts. */
  BODY_TOO_LARGE: 'BODY_TOO_LARGE',
  /** A request body that is not `application/json`. */
  UNSUPPORTED_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  /** Too many requests in flight. */
  BUSY: 'BUSY',
  /** The node is starting (recovering its store) and serves only its probes and metrics yet. */
  NOT_READY: 'NOT_READY',
  /** A bug or an unexpected failure; details are in the node's log. */
  INTERNAL: 'INTERNAL',
  /** No key of the backup repository opens with the password given. */
  WRONG_PASSWORD: 'WRONG_PASSWORD',
  /** The backup repository failed, could not be reached, or holds damaged data. */
  REPOSITORY: 'REPOSITORY',
  /** Cluster: the placement policy cannot be met by the nodes up (409). */
  POLICY_UNMET: 'POLICY_UNMET',
  /** Cluster: etcd does not answer; changes wait until it does (503). */
  ETCD_UNAVAILABLE: 'ETCD_UNAVAILABLE',
  /** Cluster: the disk's head or a replica cannot be reached now, or the chain is changing (503; retry). */
  UNAVAILABLE: 'UNAVAILABLE',
  /** A backup job was cancelled (`backup job cancel`): the code of its error, and of its stream's last line. */
  CANCELLED: 'CANCELLED',
  /** An import's source (an NBD server, an image file) could not be reached or read, or went away mid-way (502). */
  SOURCE: 'SOURCE',
} as const;

/** One of the ApiErrorCode values. */
export type ApiErrorCodeValue = (typeof ApiErrorCode)[keyof typeof ApiErrorCode];

/** The body of every error reply. */
export interface ErrorBody {
  error: {
    /** Stable, for programs. */
    code: ApiErrorCodeValue;
    /** One line for people. */
    message: string;
    /** The request's id (also its `x-request-id` header): the node logs the error with it. */
    requestId: string;
  };
}

/** A disk (`DiskInfo` in the OpenAPI document). */
export interface DiskInfo {
  /** Unique name; also the NBD export name. */
  name: string;
  /** Virtual size in bytes, a multiple of 512. */
  sizeBytes: number;
  /** Bytes of data the disk references (thin). */
  allocatedBytes: number;
  /** Snapshot names, oldest first. */
  snapshots: string[];
  /** `DISK@SNAP` the disk was cloned from, or null. */
  origin: string | null;
  /** Creation time, ms since the epoch. */
  createdMs: number;
  /** In a cluster: the disk's replicas in chain order, head first (docs/cluster.md). */
  replicas?: Array<{ node: string; role: 'head' | 'middle' | 'tail'; state: 'healthy' | 'rebuilding' | 'catching-up' | 'stale' }>;
  /** In a cluster: grows at every change of the replica set or head. */
  epoch?: number;
  /** In a cluster: the disk's placement policy. */
  policy?: { replicas: number; failureDomain: 'node' | 'zone' };
  /** On a single node: the device latency the disk emulates (docs/latency.md), or null for none. */
  latencyProfile?: LatencyProfile | null;
}

/** A service time: log-normal, by its median and 99th percentile in µs (docs/latency.md). */
export interface LatencyDistribution {
  medianUs: number;
  p99Us: number;
}

/** A device's latency: the file format of `disk set --latency-profile FILE` (docs/latency.md). */
export interface LatencyProfile {
  /** hdd, ssd, nvme, or a custom profile's own name. */
  name: string;
  description?: string;
  /** Requests the device serves at once; more wait. */
  parallel: number;
  read: LatencyDistribution;
  /** Writes, trims and writes of zeroes. */
  write: LatencyDistribution;
  /** A read or write starting where the previous request ended (no seek). */
  sequential?: LatencyDistribution;
  /** A flush, and a FUA write on top of its write. */
  flush?: LatencyDistribution;
  /** Transfer rate: a request takes length / rate more. */
  bytesPerSecond?: number;
}

/** PUT /disks/{name}/latency-profile: a built-in profile's name (hdd, ssd, nvme) or a profile. */
export interface SetLatencyProfileRequest {
  profile: string | LatencyProfile;
}

/** A snapshot of a disk. */
export interface SnapshotInfo {
  name: string;
  disk: string;
  /** Size of the disk when the snapshot was taken. */
  sizeBytes: number;
  /** Write log sequence number the snapshot stands at. */
  seq: number;
  /** Creation time, ms since the epoch. */
  createdMs: number;
  /**
   * The hybrid logical clock's value when it was taken, as its decimal integer (docs/cluster.md,
   * "Time"); in a cluster the head's, the same on every replica. Null for a snapshot taken
   * without one (before stamps existed).
   */
  hlc: string | null;
}

/** Space figures of a node's store. */
export interface StoreStats {
  /** Bytes in write log segment files. */
  logBytes: number;
  /** Bytes of data still referenced. */
  liveBytes: number;
  segments: number;
}

/** How full the node's file system is (docs/engine.md, "The reserve and the thresholds"). */
export interface NodeSpace {
  /** ok; nearfull (a warning); full (client writes refused with 507 NO_SPACE / NBD ENOSPC). */
  state: 'ok' | 'nearfull' | 'full';
  /** Size of the file system under the data directory. */
  totalBytes: number;
  /** Bytes still free there. */
  freeBytes: number;
  /** Bytes kept for the store's own work (compaction, the index, recovery). */
  reserveBytes: number;
  /** totalBytes − reserveBytes: what the node may use. */
  usableBytes: number;
  /** totalBytes − freeBytes, whoever's files they are. */
  usedBytes: number;
  /** usedBytes ÷ usableBytes. */
  usedRatio: number;
  /** usedRatio from which the state is nearfull. */
  nearfullRatio: number;
  /** usedRatio from which client writes are refused. */
  fullRatio: number;
}

/** What one compaction pass did (POST /compact). */
export interface CompactStats {
  segmentsRemoved: number;
  bytesReclaimed: number;
  bytesRewritten: number;
}

/** The drive under a node's store (docs/engine.md, "A failing drive"). */
export interface DriveHealth {
  /**
   * `failing` once a write, sync or index update the drive failed: writes, flushes and changes
   * of disks and snapshots are refused (IO_ERROR, NBD EIO) until the node is restarted; reads go on.
   */
  state: 'ok' | 'failing';
  /** What failed first, when failing. */
  error: string | null;
  /** When the drive started failing, ms since the epoch. */
  sinceMs: number | null;
}

/** Why a block is damaged: its record fails its checksum, the drive failed the read, its segment is gone, or the segment was cut short before it. */
export type DamageReason = 'checksum' | 'unreadable' | 'missing-segment' | 'truncated';

/** A run of damaged blocks as one disk sees them. */
export interface DamagedExtent {
  disk: string;
  /** Byte offset in the disk (a multiple of 4096, the block size). */
  offset: number;
  /** Bytes: whole 4 KiB blocks, cut at the disk's (or snapshot's) size. */
  length: number;
  /** Whether the disk's head reads these blocks. */
  head: boolean;
  /** Snapshots of the disk that read them too, oldest first. */
  snapshots: string[];
  /** Write log segment holding the damaged record. */
  segment: number;
  /** Offset of the record (or of the unreadable stretch) in the segment; null when none could be placed. */
  recordOffset: number | null;
  reason: DamageReason;
}

/** POST /scrub. */
export interface ScrubRequest {
  /** Disks to check (their heads, snapshots, and what clones read of their parents); every disk when left out. */
  disks?: string[];
  /** Bytes a second the scrub reads at most; full speed when left out. */
  rateBytesPerSecond?: number;
}

/** How far a scrub is. */
export interface ScrubProgress {
  /** Segments to read. */
  segments: number;
  segmentsDone: number;
  /** Bytes of those segments. */
  bytesToRead: number;
  bytesRead: number;
}

/** What a scrub found (the last line of POST /scrub; `tessera scrub --json`). */
export interface ScrubReport {
  /** The disks checked. */
  disks: string[];
  /** Write log segments read. */
  segments: number;
  /** Segments compaction removed while the scrub ran (their blocks had moved, and were checked as they were copied). */
  segmentsSkipped: number;
  /** Records holding live blocks whose checksums were checked. */
  records: number;
  /** Bytes of those records. */
  bytesChecked: number;
  /** Bytes read from the drive. */
  bytesRead: number;
  durationMs: number;
  /** Damaged block versions some disk or snapshot reads (a block seen by a disk, its snapshots and clones counts once). */
  damagedBlocks: number;
  /** The disks that read some of them. */
  damagedDisks: string[];
  /** Extents they make, listed or not. */
  damagedExtents: number;
  /** Those blocks as each disk sees them, by disk and offset (the first 10,000 extents); empty when the data is clean. */
  damaged: DamagedExtent[];
}

/** One line of POST /scrub's reply. */
export type ScrubEvent =
  | { event: 'progress'; progress: ScrubProgress }
  | { event: 'done'; report: ScrubReport }
  | { event: 'error'; code: ApiErrorCodeValue; message: string; requestId: string };

/** Most streams one import runs (ImportRequest.streams). */
export const IMPORT_STREAMS_MAX = 16;

/** POST /disks/{name}/import. */
export interface ImportRequest {
  /** `nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`, or the absolute path of a raw image on the node's machine. */
  source: string;
  /** Connections (or readers) copying at once, 1 to 16; default 4. */
  streams?: number;
}

/** How far an import is. */
export interface ImportProgress {
  /** The new disk's size: the source's, rounded up to 512 bytes. */
  sizeBytes: number;
  /** Bytes the source reports allocated (all of it when it cannot say): what is read. */
  bytesToRead: number;
  /** Of those, bytes read so far. */
  bytesRead: number;
  /** Bytes written to the disk so far (read data that is not all zeroes). */
  bytesCopied: number;
}

/** What an import did. */
export interface ImportResult {
  disk: string;
  source: string;
  sizeBytes: number;
  /** Bytes written to the disk. */
  bytesCopied: number;
  /** Bytes not written: holes and zero runs the source reported, and read blocks that were all zeroes. */
  bytesSkipped: number;
  /** Bytes read from the source. */
  bytesRead: number;
  /** Whether the source reported its allocation (NBD base:allocation, SEEK_DATA/SEEK_HOLE). */
  sparse: boolean;
  streams: number;
  durationMs: number;
}

/** One line of POST /disks/{name}/import's reply. */
export type ImportEvent =
  | { event: 'progress'; progress: ImportProgress }
  | { event: 'done'; result: ImportResult }
  | { event: 'error'; code: ApiErrorCodeValue; message: string; requestId: string };

/** The node's scrubs: the background pass and the last pass over every disk (GET /node). */
export interface ScrubStatus {
  /** Bytes a second the background scrub reads at most; 0 when it is off. */
  rateBytesPerSecond: number;
  /** Time between the starts of two background passes. */
  intervalMs: number;
  /** Whether a pass over every disk is running (in the background, or asked for). */
  running: boolean;
  /** When the next background pass starts; null when it is off or one is running. */
  nextStartMs: number | null;
  /** When the last pass over every disk started (it may be running). */
  lastStartedMs: number | null;
  /** When the last pass over every disk finished; null before the first. */
  lastFinishedMs: number | null;
  /** Damaged blocks the last finished pass found; null before the first. */
  damagedBlocks: number | null;
  /** Disks with damaged blocks in the last finished pass. */
  damagedDisks: string[];
  /** Bytes of records the last finished pass checked. */
  bytesChecked: number | null;
  /** Why the last pass stopped short (a restart is not a failure), or null. */
  lastError: string | null;
}

/** Where a node's NBD server listens. */
export interface NbdEndpoints {
  /** TCP endpoint, or null when not listening on TCP. */
  tcp: { host: string; port: number } | null;
  /** Unix socket path, or null when not listening on one. */
  socket: string | null;
  /** Open NBD connections. */
  connections: number;
}

/** What GET /node answers. */
export interface NodeInfo {
  /** Tessera version the node runs. */
  version: string;
  /** Data directory of the node. */
  dataDir: string | null;
  nbd: NbdEndpoints | null;
  /** Base URL of this API, e.g. `http://127.0.0.1:7480`. */
  api: string | null;
  /** Process id of the node. */
  pid: number;
  /** Milliseconds since the API server started. */
  uptimeMs: number;
  /** Number of disks. */
  disks: number;
  /** The node serves its store read-only (`serve --read-only`): every change is refused with 409 READ_ONLY. */
  readOnly: boolean;
  stats: StoreStats;
  space: NodeSpace;
  drive: DriveHealth;
  /** The node's scrubs; null where no node runs them (an API server on its own). */
  scrub: ScrubStatus | null;
  /**
   * A new value of the node's hybrid logical clock, as its decimal integer (docs/cluster.md,
   * "Time"): above every value the node stamped before this answer (snapshots, log records).
   * Null where the node keeps no clock (read-only, or an API server on its own).
   */
  hlc: string | null;
  /** The node's part in its cluster; null for a node without etcd. */
  cluster: NodeClusterInfo | null;
}

/** A copy of a disk a cluster node must delete and has not yet (docs/cluster.md, "How a node runs it"). */
export interface CopyToDelete {
  disk: string;
  /** Why it goes: `the disk was deleted`, or `this node holds no replica of it any more`. */
  reason: string;
  /** What refused the last try to delete it (e.g. a client still has it open), or null before the first. */
  error: string | null;
  /** When the node learnt the copy must go, ms since the epoch. */
  sinceMs: number;
}

/** A node's part in its cluster, as GET /node shows it. */
export interface NodeClusterInfo {
  /** The node's id (`--node-id`). */
  node: string;
  /** The etcd revision the node's cache of the cluster's keys is at: its cluster-map version. */
  revision: number;
  /** Copies it must delete and has not yet; it tries again every 2 s. */
  copiesToDelete: CopyToDelete[];
}

/** One node of the cluster, as GET /cluster lists it (docs/cluster.md, "Contract"). */
export interface ClusterNode {
  /** The node's id (`--node-id`); `local` for a node without etcd. */
  id: string;
  /** up while its lease lives; down while it is a member without one. */
  state: 'up' | 'down';
  /** Its failure domain (`--zone`). */
  zone: string;
  /** `HOST:PORT` of its HTTP API, as advertised. */
  api: string;
  /** `HOST:PORT` of its NBD server, as advertised. */
  nbd: string;
  /** `HOST:PORT` of its peer protocol, as advertised; null for a node without etcd. */
  peer: string | null;
  /** Whether it is the cluster's controller (a node without etcd is its own). */
  controller: boolean;
  /** Usable bytes of its store (0 while down). */
  capacityBytes: number;
  /** Bytes of its store in use (0 while down). */
  usedBytes: number;
}

/** What GET /cluster answers. */
export interface ClusterStatus {
  nodes: ClusterNode[];
}

/** A disk's ownership in a cluster, as GET /disks/{name}/lease answers (docs/cluster.md, "Epochs, ownership and fencing"). */
export interface DiskLease {
  disk: string;
  /** The node holding the disk's owner key in etcd, or null while none does (between heads, or after a break). */
  owner: string | null;
  /** The disk's epoch: grows at every change of its replicas or head. */
  epoch: number;
  /** The epoch the owner took the key at, or null without an owner. */
  ownerEpoch: number | null;
  /** Seconds the owner's etcd lease has left without a keep-alive, or null without an owner. */
  ttlSeconds: number | null;
  /** The head the disk's record names (the owner once it has taken the key). */
  head: string | null;
}

/** POST /disks. */
export interface CreateDiskRequest {
  name: string;
  sizeBytes: number;
  /** In a cluster: how many replicas (1 to 5; default 3, or the node count below 3). */
  replicas?: number;
  /** In a cluster: what two replicas may not share, `node` (default) or `zone`. */
  failureDomain?: 'node' | 'zone';
}

/** POST /disks/{name}/resize and PATCH /disks/{name}. */
export interface ResizeRequest {
  sizeBytes: number;
}

/** POST /disks/{name}/clone. */
export interface CloneRequest {
  /** Snapshot of the disk in the path to clone. */
  snapshot: string;
  /** Name of the new disk. */
  name: string;
}

/** POST /disks/{name}/snapshots. */
export interface CreateSnapshotRequest {
  name: string;
}

/** POST /snapshots: one snapshot of several disks at the same instant. */
export interface GroupSnapshotRequest {
  /** Name of the snapshot on every disk. */
  name: string;
  /** Disks to snapshot, each once. */
  disks: string[];
}

/** POST /disks/{name}/trim. */
export interface TrimRequest {
  offset: number;
  length: number;
}

/** One run of an extents reply. */
export interface ExtentRun {
  offset: number;
  length: number;
  /** Allocation: `data`, `zero` (reads as zeroes, allocated) or `hole`; with `since`: `changed` or `unchanged`. */
  type: 'data' | 'zero' | 'hole' | 'changed' | 'unchanged';
}

/** What GET /disks/{name}/snapshots/{snap}/extents answers. */
export interface ExtentsReply {
  /** Size of the snapshot. */
  sizeBytes: number;
  /** The snapshot changes are reported against, or null for allocation. */
  since: string | null;
  /** First byte covered. */
  offset: number;
  /** Bytes covered by `extents`, from `offset`. */
  length: number;
  /** Runs in order, covering [offset, offset + length) exactly, adjacent runs of one type merged. */
  extents: ExtentRun[];
  /** Where to continue when the reply stopped at the extent limit before the range's end, else null. */
  next: number | null;
}

/** States of an instant restore. */
export type InstantRestoreState = 'copying' | 'retrying' | 'needs-password' | 'done' | 'damaged';

/** Where a restore point read from an archive repository was archived from. */
export interface ArchivedOrigin {
  /** The primary repository's location. */
  repo: string;
  /** The original restore point's id there. */
  snapshot: string;
}

/** An instant restore and its progress. */
export interface InstantRestoreInfo {
  disk: string;
  /** Repository location. */
  repo: string;
  /** Restore point id, or null for a damaged state file. */
  snapshot: string | null;
  state: InstantRestoreState;
  /** Image size in the restore point. */
  imageBytes: number;
  chunkSizeBytes: number;
  chunks: number;
  /** Chunks that are all zeroes: nothing to copy. */
  chunksZero: number;
  chunksCopied: number;
  chunksMissing: number;
  bytesCopied: number;
  /** Chunks a client needed before the copier got to them. */
  chunksFetchedForClients: number;
  /** Bytes read from the repository since the node started. */
  bytesRead: number;
  startedMs: number;
  finishedMs: number | null;
  /** Why the copier is retrying, or why the restore is damaged. */
  lastError: string | null;
  /** Set for a restore from an archive repository. */
  archivedFrom: ArchivedOrigin | null;
}

/** POST /instant-restores. */
export interface InstantRestoreRequest {
  /** New disk to create. */
  disk: string;
  /** Repository as the node sees it: an absolute directory path or s3://bucket/prefix. */
  repo: string;
  /** Restore point id or unique prefix. */
  snapshot: string;
  /** Repository password; the node keeps it in memory only. */
  password: string;
  /** AWS_* variables for an s3:// repository. */
  env?: Record<string, string>;
  /** For a restore point moved to an archive: the original. */
  archivedFrom?: ArchivedOrigin;
}

/** POST /instant-restores/{disk}/resume. */
export interface ResumeRequest {
  password: string;
  env?: Record<string, string>;
}

/** POST /backups: a backup the node runs. */
export interface BackupRequest {
  /** Disks backed up as one consistency group. */
  disks: string[];
  /** Repository as the node sees it: an absolute directory path or s3://bucket/prefix. */
  repo: string;
  /** Repository password; the node keeps it in memory only. */
  password: string;
  /** AWS_* variables for an s3:// repository. */
  env?: Record<string, string>;
  /** Tenant the restore points belong to; unset means `default`. */
  tenant?: string;
  /** Bytes a second the backup reads of the disks at most; full speed when left out. */
  rateBytesPerSecond?: number;
}

/** Where a backup job is: running, or how it ended. */
export type BackupJobState = 'running' | 'done' | 'failed' | 'cancelled';

/** A backup the node runs (POST /backups, GET /backup-jobs): never its password. */
export interface BackupJob {
  /** 12 hex digits. */
  id: string;
  /** In a cluster: the id of the node that runs it (the disks' head); null on a single node. */
  node: string | null;
  disks: string[];
  /** Repository as the node sees it. */
  repo: string;
  tenant: string | null;
  rateBytesPerSecond: number | null;
  state: BackupJobState;
  /** The node snapshot it took, once taken. */
  snapshot: string | null;
  /** Bytes read so far, over the disks begun. */
  bytesRead: number;
  /** Bytes to read of the disks begun. */
  bytesToRead: number;
  /** The last progress of each disk begun. */
  progress: BackupProgress[];
  startedMs: number;
  finishedMs: number | null;
  /** Once done: one per disk, as `tessera backup create --json` prints them. */
  outcomes: BackupOutcome[] | null;
  /** Once failed or cancelled: why (the API's code, the failure's message). */
  error: { code: ApiErrorCodeValue; message: string } | null;
}

/** Progress of a backup run by the node, per disk. */
export interface BackupProgress {
  disk: string;
  /** Bytes of the chunks the backup reads (allocated, or changed since the parent). */
  bytesToRead: number;
  bytesRead: number;
  sizeBytes: number;
  bytesScanned: number;
  bytesStored: number;
  chunksNew: number;
  chunksReused: number;
  chunksZero: number;
}

/** What a backup made of one disk, as `tessera backup create --json` prints it. */
export interface BackupOutcome {
  /** Restore point id, 64 hex digits. */
  id: string;
  /** ISO 8601 time of the restore point. */
  time: string;
  kind: 'disk' | 'file';
  /** The disk's name. */
  name: string;
  hostname: string;
  sizeBytes: number;
  chunkSizeBytes: number;
  /** The restore point this one is incremental to, or null. */
  parent: string | null;
  /** The node snapshot it was read from. */
  source: { snapshot: string } | { path: string };
  /** Id shared by the restore points of one consistency group, or null. */
  group: string | null;
  tenant: string;
  archivedFrom: { repository: string; id: string } | null;
  stats: { bytesScanned: number; bytesNew: number; bytesStored: number; chunksNew: number; chunksReused: number; chunksZero: number; durationMs: number };
  where: 'here';
  archive: null;
  incremental: boolean;
  /** Why a backup that could have been incremental was full, or null. */
  fullReason: string | null;
  catalogPagesRead: number;
  catalogReused: boolean;
  /** Older node snapshots of earlier backups that this one deleted. */
  staleSnapshotsRemoved: string[];
}

/** One line of POST /backups' reply, and of GET /backup-jobs/{id}?follow=true's. */
export type BackupEvent =
  | { event: 'job'; job: BackupJob }
  | { event: 'snapshot'; name: string }
  | { event: 'progress'; progress: BackupProgress }
  | { event: 'note'; message: string }
  | { event: 'done'; outcomes: BackupOutcome[] }
  | { event: 'error'; code: ApiErrorCodeValue; message: string; requestId: string };

/** How a schedule's run ended: `ok`, or `failed` with its error. */
export type ScheduleResult = 'ok' | 'failed';

/** POST /backup-schedules: backups the node runs on a schedule (docs/backup.md, "Schedules"). */
export interface BackupScheduleRequest {
  /** Disks backed up as one consistency group at each run. */
  disks: string[];
  /** Repository as the node sees it: an absolute directory path or s3://bucket/prefix. */
  repo: string;
  /**
   * Absolute path, on the node, of a file holding the repository's password: readable by its
   * owner only (mode 0600 or 0400). The node keeps the path, never the password.
   */
  passwordFile: string;
  /** Runs every so long from the schedule's creation; give this or `cron`. */
  everyMs?: number;
  /** Runs at the minutes of a 5-field cron expression, in UTC; give this or `everyMs`. */
  cron?: string;
  /** Retention after each run, per disk, as `backup forget` keeps: the newest N. */
  keepLast?: number;
  /** The newest of each of the last N UTC days. */
  keepDaily?: number;
  /** The newest of each of the last N ISO weeks. */
  keepWeekly?: number;
  /** Verify the repository after a run when the last verify is at least this old. */
  verifyEveryMs?: number;
  /** Whether that verify reads every pack (`backup verify --read-data`). Default false. */
  verifyReadData?: boolean;
  /** Tenant of the restore points; unset means `default`. */
  tenant?: string;
}

/** What the last run of a backup schedule did. */
export interface BackupScheduleRun {
  startedMs: number;
  finishedMs: number;
  result: ScheduleResult;
  /** Why it failed, naming the step (`backup:`, `retention:`, `prune:`, `verify:`); null when ok. */
  error: string | null;
  /** The backup job it ran (`tessera backup jobs`), or null if it started none. */
  job: string | null;
  /** Restore points the run made (ids), one per disk; none if the backup failed. */
  restorePoints: string[];
  /** Restore points of the schedule's disks its retention forgot. */
  forgotten: number;
  /** What the prune after the retention did; null when none ran. */
  prune: { packsMarked: number; packsDeleted: number; bytesFreed: number } | null;
  /** The verify run after it, if one was due; null when none ran. */
  verify: { readData: boolean; faults: number } | null;
}

/** A backup schedule, GET /backup-schedules. */
export interface BackupScheduleInfo {
  /** 8 hex digits. */
  id: string;
  disks: string[];
  repo: string;
  passwordFile: string;
  everyMs: number | null;
  cron: string | null;
  keepLast: number | null;
  keepDaily: number | null;
  keepWeekly: number | null;
  verifyEveryMs: number | null;
  verifyReadData: boolean;
  tenant: string | null;
  createdMs: number;
  /** Whether a run is under way (waiting for another backup to end included). */
  running: boolean;
  /** When the next run starts; null on a node that runs no schedules (read-only). */
  nextRunMs: number | null;
  lastRun: BackupScheduleRun | null;
  /** When the last verify after a run started. */
  lastVerifyMs: number | null;
  /** Runs since the schedule was added, by result. */
  runsOk: number;
  runsFailed: number;
}

/** POST /snapshot-schedules: snapshots the node takes of a disk on a schedule. */
export interface SnapshotScheduleRequest {
  disk: string;
  everyMs?: number;
  cron?: string;
  /** How many of the schedule's own snapshots are kept; older ones are deleted after each run. */
  keep: number;
}

/** What the last run of a snapshot schedule did. */
export interface SnapshotScheduleRun {
  startedMs: number;
  finishedMs: number;
  result: ScheduleResult;
  error: string | null;
  /** The snapshot taken, or null if none was. */
  snapshot: string | null;
  /** The schedule's older snapshots deleted. */
  deleted: string[];
}

/** A snapshot schedule, GET /snapshot-schedules. */
export interface SnapshotScheduleInfo {
  id: string;
  disk: string;
  everyMs: number | null;
  cron: string | null;
  keep: number;
  createdMs: number;
  /** Name prefix of the snapshots it takes: `sched-ID-`. */
  snapshotPrefix: string;
  running: boolean;
  nextRunMs: number | null;
  lastRun: SnapshotScheduleRun | null;
  runsOk: number;
  runsFailed: number;
}
