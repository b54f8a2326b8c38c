/**
 * The node's metrics (docs/observability.md lists each): per-disk client I/O, NBD connections, the
 * engine's space and background work, backups and instant restores, API requests. Figures are
 * kept where the work happens and read here when /metrics is scraped.
 */
import type { Store } from '../engine/index.ts';
import type { InstantRestores } from '../hydrate/index.ts';
import type { NbdServer } from '../nbd/index.ts';
import type { ApiRequestDone, ScrubStatus } from '../api/index.ts';
import { DiskIoStats, MetricsRegistry, type Sample } from '../observe/index.ts';
import type { ScheduleSample } from './schedules.ts';

/** Totals of the backups the node ran (NodeBackups counts into them). */
export class BackupTotals {
  runsSucceeded = 0;
  runsFailed = 0;
  /** Backups running now (0 or 1: the node runs one at a time). */
  running = 0;
  /** Bytes read from the disks' snapshots. */
  readBytes = 0;
  /** Sealed bytes written to repositories: new chunks and metadata. */
  storedBytes = 0;
  /** Plaintext bytes of chunks the repositories held already, in whole chunks. */
  dedupedBytes = 0;
}

/** Totals of the node's scrubs, background and asked for (NodeScrubs counts into them). */
export class ScrubTotals {
  /** Scrubs running now. */
  running = 0;
  runsSucceeded = 0;
  runsFailed = 0;
  /** Bytes scrubs read from the write log, counted as they read. */
  readBytes = 0;
  /** Bytes of records scrubs checked, counted as each scrub ends. */
  checkedBytes = 0;
}

/** What the node's metrics read from. */
export interface MetricSources {
  store: Store;
  nbd: NbdServer;
  restores: InstantRestores;
  /** The node's scrubs: the last pass over every disk. */
  scrub: () => ScrubStatus;
}

/** The registry of one node and the figures only the node keeps. */
export class NodeMetrics {
  readonly registry: MetricsRegistry;
  /** Client I/O per disk, counted by MeteredVolume. */
  readonly disks = new DiskIoStats();
  readonly backups = new BackupTotals();
  readonly scrubs = new ScrubTotals();
  /** API requests by method, route template and status. */
  readonly #apiRequests = new Map<string, Sample>();
  /** What instant restores had read and copied at the last scrape, per disk, for counters that only grow. */
  readonly #restoreSeen = new Map<string, { read: number; copied: number }>();
  readonly #restoreTotals = { readBytes: 0, storedBytes: 0 };

  /** `ready` says whether the node is ready; these two metrics are there from the start, the rest from register(). */
  constructor(opts: { version: string; ready: () => boolean; processMetrics?: boolean }) {
    const r = (this.registry = new MetricsRegistry({ processMetrics: opts.processMetrics }));
    r.gauge('tessera_build_info', 'Tessera version this node runs (value always 1)', () => [{ labels: { version: opts.version }, value: 1 }]);
    r.gauge('tessera_ready', 'Whether the node is ready (GET /readyz answers 200): 1, else 0', () => [{ value: opts.ready() ? 1 : 0 }]);
  }

  /** Counts one API request (ApiServerOptions.onRequestDone). */
  apiRequestDone(r: ApiRequestDone): void {
    const key = `${r.method} ${r.route} ${r.status}`;
    const s = this.#apiRequests.get(key);
    if (s !== undefined) s.value++;
    else this.#apiRequests.set(key, { labels: { method: r.method, route: r.route, status: String(r.status) }, value: 1 });
  }

  /** Registers the cluster's metrics (a node in cluster mode): the etcd requests it made, by kind; whether it is the controller. */
  registerCluster(src: {
    etcdRequests: () => Readonly<Record<string, number>>;
    isController: () => boolean;
    disks: () => { heads: number; replicas: number; copyingIn: number; copiedBytes: number; syncPoints: number };
    degraded: () => { replicasNotHealthy: number; disksUnderPolicy: number };
  }): void {
    const r = this.registry;
    r.counter('tessera_etcd_requests_total', 'Requests the node made to etcd, by kind (range, put, txn, lease-grant, lease-revoke, keepalive, watch, election, lease-ttl)', () =>
      Object.entries(src.etcdRequests()).map(([kind, value]) => ({ labels: { kind }, value })),
    );
    r.gauge('tessera_cluster_controller', "Whether this node is the cluster's controller: 1, else 0", () => [{ value: src.isController() ? 1 : 0 }]);
    r.gauge('tessera_cluster_replicas', 'Replicas of cluster disks this node holds, by role (head: it serves the disk; all: every replica it holds)', () => {
      const d = src.disks();
      return [{ labels: { role: 'head' }, value: d.heads }, { labels: { role: 'all' }, value: d.replicas }];
    });
    r.gauge('tessera_cluster_replicas_copying_in', 'Replicas on this node copying their data in (catching up or rebuilding)', () => [{ value: src.disks().copyingIn }]);
    r.counter('tessera_cluster_copied_in_bytes_total', 'Bytes this node copied in from other replicas (catch-ups and rebuilds)', () => [{ value: src.disks().copiedBytes }]);
    r.counter('tessera_cluster_sync_points_total', 'Sync snapshots this node put through the chains it heads', () => [{ value: src.disks().syncPoints }]);
    r.gauge('tessera_cluster_replicas_not_healthy', "Replicas of the cluster's disks not healthy (copying in, or away), as this node's cache sees them", () => [{ value: src.degraded().replicasNotHealthy }]);
    r.gauge('tessera_cluster_disks_under_policy', "The cluster's disks with fewer healthy replicas than their policy, as this node's cache sees them", () => [{ value: src.degraded().disksUnderPolicy }]);
  }

  /**
   * Registers the schedules' metrics (docs/observability.md, "Schedules"): per schedule, labelled
   * by its id and kind (backup, snapshot), read from `samples` at each scrape.
   */
  registerSchedules(samples: () => ScheduleSample[]): void {
    const r = this.registry;
    const per = (value: (s: ScheduleSample) => number | null) => () =>
      samples().flatMap((s) => {
        const v = value(s);
        return v === null ? [] : [{ labels: { schedule: s.id, kind: s.kind }, value: v }];
      });
    r.gauge('tessera_schedule_last_run_timestamp_seconds', "When a schedule's last finished run started, seconds since the epoch (absent before its first)", per((s) => (s.lastRunMs === null ? null : s.lastRunMs / 1000)));
    r.gauge('tessera_schedule_last_success', "Whether a schedule's last finished run succeeded: 1, else 0 (absent before its first)", per((s) => (s.lastOk === null ? null : s.lastOk ? 1 : 0)));
    r.gauge('tessera_schedule_last_duration_seconds', "How long a schedule's last finished run took (absent before its first)", per((s) => (s.lastDurationMs === null ? null : s.lastDurationMs / 1000)));
    r.gauge('tessera_schedule_next_run_timestamp_seconds', "When a schedule's next run is due, seconds since the epoch (absent on a node that runs no schedules)", per((s) => (s.nextRunMs === null ? null : s.nextRunMs / 1000)));
    r.gauge('tessera_schedule_running', 'Whether a run of a schedule is under way: 1, else 0', per((s) => (s.running ? 1 : 0)));
    r.counter('tessera_schedule_runs_total', 'Runs of a schedule since it was added, by result (ok, failed); kept across restarts', () =>
      samples().flatMap((s) => [
        { labels: { schedule: s.id, kind: s.kind, result: 'ok' }, value: s.runsOk },
        { labels: { schedule: s.id, kind: s.kind, result: 'failed' }, value: s.runsFailed },
      ]),
    );
  }

  /** Registers every Tessera metric, reading `src` at each scrape. Call once. */
  register(src: MetricSources): void {
    const r = this.registry;
    const d = this.disks;

    // Disks: what clients do to them (NBD and the API's data routes).
    r.gauge('tessera_disks', 'Disks of the node', () => [{ value: src.store.listDisks().length }]);
    r.gauge('tessera_disk_size_bytes', 'Virtual size of each disk', () => {
      const disks = src.store.listDisks();
      d.prune(new Set(disks.map((x) => x.name)));
      return disks.map((x) => ({ labels: { disk: x.name }, value: x.sizeBytes }));
    });
    r.gauge('tessera_disk_allocated_bytes', "Bytes of data a disk's head references", () => src.store.listDisks().map((x) => ({ labels: { disk: x.name }, value: x.allocatedBytes })));
    r.counter('tessera_disk_ops_total', 'Client operations on a disk, by op (read, write, trim, zero, flush), failed ones included', () => d.perOp((s) => s.ops));
    r.counter('tessera_disk_op_errors_total', 'Client operations on a disk that failed, by op', () => d.perOp((s) => s.errors));
    r.counter('tessera_disk_bytes_total', 'Bytes clients read, wrote, trimmed or zeroed on a disk, by op (successful operations only)', () => d.perOp((s) => s.bytes, ['read', 'write', 'trim', 'zero']));
    r.histogram('tessera_disk_op_duration_seconds', 'Time a client operation on a disk took in the engine, by op', () => d.latency());
    r.gauge('tessera_disk_requests_in_flight', 'Client operations on a disk started and not finished', () => d.inFlight());
    r.counter('tessera_read_errors_total', 'Client operations on a disk that failed because the drive failed a read (an I/O error, a truncated or missing log segment)', () => d.perDisk((s) => s.readErrors));
    r.counter('tessera_checksum_errors_total', "Client reads of a disk that failed because the bytes read fail their record's checksum", () => d.perDisk((s) => s.checksumErrors));

    // NBD.
    r.gauge('tessera_nbd_connections', 'Open NBD client connections, handshaking or transmitting', () => [{ value: src.nbd.connections }]);
    r.counter('tessera_nbd_connections_accepted_total', 'NBD client connections accepted since the node started', () => [{ value: src.nbd.connectionsAccepted }]);

    // Engine.
    // Engine: figures as they stand; a scrape makes the engine do no work (the index absorbs
    // queued records on its own schedule, and the apply lag below says how many wait).
    r.gauge('tessera_engine_log_bytes', 'Bytes in write log segment files', () => [{ value: src.store.metrics().logBytes }]);
    r.gauge('tessera_engine_live_bytes', 'Bytes of data blocks the index says some disk, snapshot or clone still references', () => [{ value: src.store.metrics().liveBytes }]);
    r.gauge('tessera_engine_log_segments', 'Write log segment files', () => [{ value: src.store.metrics().segments }]);
    r.counter('tessera_engine_appended_bytes_total', 'Bytes of log records made durable since the node started (data, zeroes, trims, compaction copies)', () => [{ value: src.store.metrics().appendedBytes }]);
    r.gauge('tessera_engine_apply_lag_records', 'Durable log records the index has not absorbed yet', () => [{ value: src.store.metrics().applyLagRecords }]);
    r.counter('tessera_engine_compaction_runs_total', 'Compaction passes finished since the node started', () => [{ value: src.store.metrics().compactionRuns }]);
    r.counter('tessera_engine_compaction_rewritten_bytes_total', 'Live bytes compaction copied out of mostly-dead segments', () => [{ value: src.store.metrics().compactionRewrittenBytes }]);
    r.counter('tessera_engine_compaction_reclaimed_bytes_total', 'Bytes of segment files compaction removed', () => [{ value: src.store.metrics().compactionReclaimedBytes }]);
    // Space of the file system under the data directory (docs/engine.md, "The reserve and the thresholds").
    r.gauge('tessera_space_total_bytes', 'Size of the file system under the data directory', () => [{ value: src.store.space().totalBytes }]);
    r.gauge('tessera_space_free_bytes', 'Bytes free on that file system', () => [{ value: src.store.space().freeBytes }]);
    r.gauge('tessera_space_reserve_bytes', 'Bytes of it kept for compaction, the index and recovery', () => [{ value: src.store.space().reserveBytes }]);
    r.gauge('tessera_space_used_ratio', 'Bytes used on it over the bytes the node may use (total less the reserve); client writes stop at the full ratio', () => [{ value: Math.min(src.store.space().usedRatio, 1e6) }]);
    r.gauge('tessera_space_full_ratio', 'Used ratio from which client writes are refused', () => [{ value: src.store.space().fullRatio }]);
    r.gauge('tessera_space_nearfull_ratio', 'Used ratio from which the node warns', () => [{ value: src.store.space().nearfullRatio }]);
    r.gauge('tessera_space_state', 'Space state: 1 for the current one of ok, nearfull, full', () => {
      const state = src.store.space().state;
      return (['ok', 'nearfull', 'full'] as const).map((s) => ({ labels: { state: s }, value: s === state ? 1 : 0 }));
    });
    r.gauge('tessera_engine_recovery_replayed_records', 'Log records the last start replayed into the index', () => [{ value: src.store.recovery.recordsReplayed }]);
    r.gauge('tessera_drive_failing', 'Whether the drive under the store is failing (a write, sync or index update failed on it: writes are refused until restart): 1, else 0', () => [{ value: src.store.health().drive === 'failing' ? 1 : 0 }]);

    // Backups run by the node.
    const b = this.backups;
    r.counter('tessera_backup_runs_total', 'Backups the node ran, by result (succeeded, failed)', () => [
      { labels: { result: 'succeeded' }, value: b.runsSucceeded },
      { labels: { result: 'failed' }, value: b.runsFailed },
    ]);
    r.gauge('tessera_backup_running', 'Backups running now', () => [{ value: b.running }]);
    r.counter('tessera_backup_read_bytes_total', "Bytes backups read from disks' snapshots", () => [{ value: b.readBytes }]);
    r.counter('tessera_backup_stored_bytes_total', 'Bytes backups wrote to repositories (sealed: compressed and encrypted chunks and metadata)', () => [{ value: b.storedBytes }]);
    r.counter('tessera_backup_deduped_bytes_total', 'Bytes of chunks backups referenced that the repository held already, in whole chunks', () => [{ value: b.dedupedBytes }]);

    // Scrubs: the last pass over every disk, and what all scrubs read and checked.
    const sc = this.scrubs;
    r.gauge('tessera_scrub_damaged_blocks', 'Damaged blocks the last finished scrub of every disk found (absent before the first)', () => {
      const n = src.scrub().damagedBlocks;
      return n === null ? [] : [{ value: n }];
    });
    r.gauge('tessera_scrub_last_finished_timestamp_seconds', 'When the last scrub of every disk finished, seconds since the epoch (absent before the first)', () => {
      const ms = src.scrub().lastFinishedMs;
      return ms === null ? [] : [{ value: ms / 1000 }];
    });
    r.gauge('tessera_scrub_running', 'Scrubs running now, background and asked for', () => [{ value: sc.running }]);
    r.counter('tessera_scrub_runs_total', 'Scrubs the node ran, by result (succeeded, failed; one stopped by a shutdown or its client is neither)', () => [
      { labels: { result: 'succeeded' }, value: sc.runsSucceeded },
      { labels: { result: 'failed' }, value: sc.runsFailed },
    ]);
    r.counter('tessera_scrub_read_bytes_total', 'Bytes scrubs read from the write log', () => [{ value: sc.readBytes }]);
    r.counter('tessera_scrub_checked_bytes_total', 'Bytes of log records scrubs checked, counted as each scrub ends', () => [{ value: sc.checkedBytes }]);

    // Instant restores.
    r.gauge('tessera_restores', 'Instant restores of this node run, by state (copying, retrying, needs-password, done, damaged)', () => {
      const byState = new Map<string, number>([['copying', 0], ['retrying', 0], ['needs-password', 0], ['done', 0], ['damaged', 0]]);
      for (const i of src.restores.list()) byState.set(i.state, (byState.get(i.state) ?? 0) + 1);
      return [...byState].map(([state, value]) => ({ labels: { state }, value }));
    });
    r.counter('tessera_restore_read_bytes_total', 'Bytes instant restores read from repositories', () => [{ value: this.#restores(src.restores).readBytes }]);
    r.counter('tessera_restore_stored_bytes_total', 'Bytes instant restores copied into their disks', () => [{ value: this.#restores(src.restores).storedBytes }]);

    // API.
    r.counter('tessera_api_requests_total', 'Requests of the HTTP API under /api/v1, by method, route template and status (0: connection cut)', () => [...this.#apiRequests.values()]);
  }

  /**
   * The restores' totals, grown by what each restore read and copied since the last look: a
   * restore's own figures restart with the node, and a cancelled one leaves the list.
   */
  #restores(restores: InstantRestores): { readBytes: number; storedBytes: number } {
    const t = this.#restoreTotals;
    for (const i of restores.list()) {
      const seen = this.#restoreSeen.get(i.disk) ?? { read: 0, copied: 0 };
      // Smaller than seen: a new restore of a disk of the same name; all of it is new.
      t.readBytes += i.bytesRead >= seen.read ? i.bytesRead - seen.read : i.bytesRead;
      t.storedBytes += i.bytesCopied >= seen.copied ? i.bytesCopied - seen.copied : i.bytesCopied;
      this.#restoreSeen.set(i.disk, { read: i.bytesRead, copied: i.bytesCopied });
    }
    return t;
  }
}
