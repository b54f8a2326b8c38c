import { mkdir, mkdtemp, rm, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { createApiServer } from '../api/index.ts';
import { EngineError, EngineErrorCode, Store } from '../engine/index.ts';
import type { SpaceOptions, SpaceState } from '../engine/index.ts';
import { InstantRestores } from '../hydrate/index.ts';
import { NodeBackups } from './backups.ts';
import { NodeImports } from './import-sources.ts';
import { NodeScrubs, scrubIntervalMsDefault, scrubRateBytesPerSecondDefault } from './scrub.ts';
import { NodeSchedules } from './schedules.ts';
import { fastClock, systemClock, type ScheduleClock } from '../flow/index.ts';
import { NbdServer } from '../nbd/index.ts';
import type { LogFiles, Volume } from '../engine/index.ts';
import { Logger } from '../observe/index.ts';
import { MeteredVolume, ReadFaultLog } from './metered-volume.ts';
import { DiskLatencies } from './latency.ts';
import { LatencyVolume } from './latency-volume.ts';
import { NodeMetrics } from './metrics.ts';
import { NodeError, NodeErrorCode } from './errors.ts';
import { acquireLock } from './lock.ts';
import type { DirLock } from './lock.ts';
import { checkDataDir, dataDirError } from './data-dir.ts';
import { clusterExports, storeExports } from './provider.ts';
import { fileBoundStore, formatHlc, Hlc } from '../cluster/index.ts';
import type { Replication } from '../cluster/index.ts';
import { tesseraVersion } from '../util/version.ts';
import type { ClusterMode, ClusterModeOptions } from './cluster.ts';

/** Options of startNode. */
export interface NodeOptions {
  /** Data directory: holds the store, the lock file and by default the NBD socket. Created if missing. */
  dataDir: string;
  /** Address the NBD and API servers listen on. */
  host: string;
  /** NBD TCP port; 0 picks a free one. */
  nbdPort: number;
  /** HTTP API port; 0 picks a free one. */
  apiPort: number;
  /** Path of the NBD Unix socket. */
  socketPath: string;
  /** Where the node logs (docs/observability.md, "Logs"). Default: nowhere. */
  log?: Logger;
  /**
   * Bytes per second an instant restore's background copier reads at most (client reads are
   * never held back); null for no limit. Default: `$TESSERA_RESTORE_RATE` (a whole number of
   * bytes per second), else no limit.
   */
  restoreCopyBytesPerSecondMax?: number | null;
  /** The space reserve and the nearfull and full ratios (docs/engine.md, "The reserve and the thresholds"). */
  space?: SpaceOptions;
  /**
   * Serve the store read-only (docs/engine.md, "Read-only mode"), to copy data off a node that
   * cannot start otherwise: nothing is written to the data directory but the lock file (left
   * out where the file system is read-only), every disk is exported read-only, the API refuses
   * changes, no instant restore resumes. Default false.
   */
  readOnly?: boolean;
  /** @internal The file layer under the store's write log (StoreOptions.files): tests put a faulty drive here. */
  files?: LogFiles;
  /**
   * The background scrub (docs/engine.md, "Scrub"): bytes a second it reads (default 4 MiB/s;
   * 0 turns it off), the time between two passes (default a day), and the wait before the first
   * pass after the start (default the interval, at most 5 minutes).
   */
  scrub?: { rateBytesPerSecond?: number; intervalMs?: number; firstDelayMs?: number };
  /** Cluster mode (`serve --etcd …`, docs/cluster.md); without it the node is a single node and no etcd code loads. */
  cluster?: ClusterModeOptions;
  /**
   * @internal The clock the backup and snapshot schedules run on (docs/backup.md, "Schedules").
   * Default: the system clock, or, as a test's hook, `$TESSERA_SCHEDULE_SPEED`.
   */
  scheduleClock?: ScheduleClock;
}

/** A running node. */
export interface RunningNode {
  /** Base URL of the API, e.g. `http://127.0.0.1:7480`. */
  api: string;
  /** Bound NBD TCP endpoint. */
  nbd: { host: string; port: number };
  /** NBD Unix socket path. */
  socket: string;
  /** Whether the node serves its store read-only. */
  readOnly: boolean;
  /** Closes NBD connections, the API server and the store, then releases the data directory. */
  close(): Promise<void>;
}

/**
 * Why a node is not ready, step by step (GET /readyz answers 503 with it): the API listens from
 * the first step on, so probes can tell a node recovering its store from one that is gone.
 */
export const NotReady = {
  STORE: 'recovering the store: replaying the write log tail into the index',
  RESTORES: 'reopening instant restores',
  NBD: 'NBD listeners not up yet',
  CLUSTER: 'joining the cluster',
  CLOSING: 'shutting down',
} as const;

/** The version in package.json. */
export const VERSION: string = tesseraVersion();

/** Name of the lock file in the data directory. */
const LOCK_FILE = 'tessera.lock';

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * Starts a node: locks the data directory, opens the store in `DIR/store`, then serves it
 * over NBD (TCP and a Unix socket) and over the HTTP API. Whatever started is stopped again
 * if a later step fails.
 */
export async function startNode(opts: NodeOptions): Promise<RunningNode> {
  const root = opts.log ?? Logger.silent();
  const log = root.child({ component: 'node' });
  const dataDir = resolve(opts.dataDir);
  const socketPath = resolve(opts.socketPath);
  const readOnly = opts.readOnly === true;
  const undo: Array<() => Promise<void>> = [];
  const rollback = async (): Promise<void> => {
    for (const step of undo.reverse()) await step().catch((err) => log.error('cleanup failed', { err }));
  };
  let notReady: string | null = NotReady.STORE;
  const metrics = new NodeMetrics({ version: VERSION, ready: () => notReady === null });
  try {
    await checkDataDir(dataDir, { readOnly });
    const lock = await takeLock(join(dataDir, LOCK_FILE), { readOnly, log });
    undo.push(() => lock.release());
    // The node's clock from here on: it stamps log records and snapshots (and in a cluster peer
    // messages). Read-only, nothing is written to the data directory, so there is none.
    const clock = readOnly ? null : await openClock(dataDir);
    if (clock !== null) {
      root.setClock(() => formatHlc(clock.now()));
      undo.push(() => closeClock(root, clock));
    }

    // The API listens first: its probes answer while the store recovers, its routes once all is up.
    const api = createApiServer({
      log: root,
      probes: { notReady: () => notReady, metrics: async () => ({ contentType: metrics.registry.contentType, text: await metrics.registry.text() }) },
      onRequestDone: (r) => metrics.apiRequestDone(r),
    });
    undo.push(() => api.close());
    const apiAddress = await listen({ what: 'API', address: hostPort(opts.host, opts.apiPort) }, () => api.listen({ host: opts.host, port: opts.apiPort }));
    const apiUrl = `http://${hostPort(apiAddress.host, apiAddress.port)}`;
    log.info(`API listening on ${apiUrl}; ${notReady}`, { dataDir });

    // The cluster first (docs/cluster.md): a wrong identity or an unreachable etcd fails before the store's recovery.
    let cluster: ClusterMode | null = null;
    if (opts.cluster !== undefined) {
      if (readOnly) throw new NodeError(NodeErrorCode.INVALID, 'a read-only node serves its store alone: start it without --etcd');
      const { connectCluster } = await import('./cluster.ts');
      cluster = await connectCluster({ ...opts.cluster, dataDir, log: root });
      undo.push(() => cluster!.close());
    }

    let store: Store;
    try {
      store = await Store.open({
        dir: join(dataDir, 'store'),
        space: opts.space,
        readOnly,
        files: opts.files,
        ...(clock !== null ? { hlc: () => clock.now() } : {}),
        // Said once, when it starts: the store refuses writes from then on (docs/engine.md, "A failing drive").
        onDriveFailing: (h) => log.error(`the drive under the store is failing: writes, flushes and disk and snapshot changes are refused until the node is restarted; reads go on. ${h.error}`, { dataDir }),
      });
    } catch (err) {
      // Below the reserve: the store says how much is free and needed; the node names its options.
      if (err instanceof EngineError && err.code === EngineErrorCode.NO_SPACE) {
        throw new NodeError(NodeErrorCode.NO_SPACE, `${err.message} (--reserve SIZE sets the reserve; --read-only serves every disk read-only)`, { cause: err });
      }
      throw err;
    }
    undo.push(() => store.close());
    const spaceWatch = watchSpace(store, log);
    undo.push(async () => clearInterval(spaceWatch));
    log.info(readOnly ? 'store open read-only' : 'store open', { recordsReplayed: store.recovery.recordsReplayed, tornBytesDropped: store.recovery.tornBytesDropped });
    for (const damage of store.damage) log.error(`store damaged: ${damage}; reads of those blocks fail`);

    // Disks being restored from a backup are served through their hydrator (docs/backup.md, "Instant restore").
    notReady = NotReady.RESTORES;
    const copyBytesPerSecondMax = opts.restoreCopyBytesPerSecondMax === undefined ? restoreRateFromEnv(process.env) : opts.restoreCopyBytesPerSecondMax;
    const restores = await InstantRestores.open({ store, dir: join(dataDir, 'instant-restore'), cacheDir: join(dataDir, 'backup-cache'), log: lineLog(root.child({ component: 'hydrate' })), limits: { copyBytesPerSecondMax }, readOnly });
    undo.push(() => restores.close());
    // Disks that emulate a device's latency (docs/latency.md), from the node's own metadata.
    const latencies = await DiskLatencies.open({ file: join(dataDir, 'latency.json'), store, log, keep: !readOnly });
    undo.push(async () => latencies.close());
    // Every volume a client gets answers no sooner than its disk's emulated device, if it has
    // one, and counts its disk's I/O (docs/observability.md, "Disk I/O") as the client sees it,
    // and its failed reads, logged with where they failed.
    const readFaults = new ReadFaultLog(log);
    const metered = (vol: Volume): Volume => {
      const disk = vol.disk;
      const delayed = new LatencyVolume(vol, { device: () => latencies.device(disk), queue: latencies.queue });
      return new MeteredVolume(delayed, metrics.disks.of(disk), readFaults.onFault);
    };
    // In a cluster, exports are the cluster's disks, served here whichever node heads them (docs/cluster.md, "Any node serves any disk").
    let replication: Replication | null = null;
    const exports = storeExports(store);
    // The exports served: the store's, until the node joined its cluster, then the cluster's.
    let served = exports;
    const provider = {
      ...exports,
      listExports: () => served.listExports(),
      listSnapshots: (name: string) => served.listSnapshots(name),
      openExport: (name: string) => metered(restores.openExport(name) ?? served.openExport(name)),
    };


    notReady = NotReady.NBD;
    const nbd = new NbdServer({ provider, log: root.child({ component: 'nbd' }) });
    undo.push(() => nbd.close());
    const nbdAddress = await listen({ what: 'NBD', address: hostPort(opts.host, opts.nbdPort) }, () => nbd.listenTcp({ host: opts.host, port: opts.nbdPort }));
    await listen({ what: 'NBD', address: socketPath }, () => nbd.listenUnix(socketPath));
    undo.push(() => unlink(socketPath).catch(() => {}));

    // Disk backups the node runs itself (docs/backup.md, "Disk backups run by the node").
    // Read-only, a backup's index cache goes to a directory of its own, not the data directory.
    const backupCache = readOnly ? await mkdtemp(join(tmpdir(), 'tessera-backup-cache-')) : undefined;
    const removeBackupCache = async (): Promise<void> => {
      if (backupCache !== undefined) await rm(backupCache, { recursive: true, force: true });
    };
    undo.push(removeBackupCache);
    const backups = new NodeBackups({ store, dataDir, totals: metrics.backups, cacheDir: backupCache, cluster: () => replication, log: root.child({ component: 'backup' }) });
    undo.push(() => backups.close());
    // The background scrub, and scrubs asked for through the API (docs/engine.md, "Scrub").
    const scrubs = new NodeScrubs({
      store,
      stateFile: join(dataDir, 'scrub.json'),
      // Read-only, the last pass is read but not written: nothing is written to the data directory.
      keepState: !readOnly,
      rateBytesPerSecond: opts.scrub?.rateBytesPerSecond ?? scrubRateBytesPerSecondDefault,
      intervalMs: opts.scrub?.intervalMs ?? scrubIntervalMsDefault,
      firstDelayMs: opts.scrub?.firstDelayMs,
      log: root.child({ component: 'scrub' }),
      totals: metrics.scrubs,
    });
    await scrubs.start();
    undo.push(() => scrubs.close());
    // Backups and snapshots on schedules the node keeps (docs/backup.md, "Schedules"); timed once the node serves.
    const schedules = new NodeSchedules({
      store,
      backups,
      file: join(dataDir, 'schedules.json'),
      clock: opts.scheduleClock ?? scheduleClockFromEnv(process.env, log),
      log: root.child({ component: 'schedule' }),
      readOnly,
      cluster: () => replication,
      checkDisk: (disk, what) => restores.checkDiskChange(disk, what),
    });
    await schedules.load();
    undo.push(() => schedules.close());
    metrics.registerSchedules(() => schedules.samples());
    metrics.register({ store, nbd, restores, scrub: () => scrubs.status() });
    // Client operations a second since the last ask (placement's load, in the live record every 30 s).
    let lastOps = { n: 0, ms: performance.now() };
    const load = (): number => {
      const now = { n: metrics.disks.totalOps(), ms: performance.now() };
      const rate = now.ms > lastOps.ms ? ((now.n - lastOps.n) * 1000) / (now.ms - lastOps.ms) : 0;
      lastOps = now;
      return Math.max(0, Math.round(rate));
    };
    if (cluster !== null) {
      notReady = NotReady.CLUSTER;
      const c = cluster;
      replication = await c.join({
        store,
        hlc: clock!,
        host: opts.host,
        apiPort: apiAddress.port,
        nbdPort: nbdAddress.port,
        version: VERSION,
        usage: () => {
          const s = store.space();
          return { capacityBytes: s.usableBytes, usedBytes: s.usedBytes, load: load() };
        },
      });
      const r = replication;
      served = clusterExports(r);
      metrics.registerCluster({ etcdRequests: () => c.coordinator.requests, isController: () => c.coordinator.isController, disks: () => r.disks.stats(), degraded: () => r.degraded() });
    }
    // Disks whose import a stop cut short are deleted before anyone sees them as whole (docs/api.md, "Import").
    const imports = new NodeImports(join(dataDir, 'imports'));
    if (!readOnly) {
      const r = replication;
      await imports.deleteLeftovers((name) => (r !== null ? r.deleteDisk(name) : store.deleteDisk(name)), root.child({ component: 'import' }));
    }
    api.attach({
      store,
      restores,
      backups,
      scrubs,
      schedules,
      importSources: imports,
      openVolume: (disk, snap) => metered(replication !== null ? replication.openVolume(disk, snap) : store.openVolume(disk, snap)),
      latency: latencies,
      ...(cluster !== null ? { clusterNodes: () => cluster.nodes(), cluster: replication } : {}),
      nodeFacts: () => ({
        version: VERSION,
        dataDir,
        nbd: { tcp: nbdAddress, socket: socketPath, connections: nbd.connections },
        hlc: clock === null ? null : formatHlc(clock.now()),
      }),
    });
    schedules.start();
    notReady = null;
    log.info(`serving ${dataDir}${readOnly ? ' read-only' : ''}: api=${apiUrl} nbd=${hostPort(nbdAddress.host, nbdAddress.port)} socket=${socketPath}`);
    let closing: Promise<void> | null = null;
    return {
      api: apiUrl,
      nbd: nbdAddress,
      socket: socketPath,
      readOnly,
      close() {
        // Order: stop taking NBD and API work, then flush and close the store, then unlock.
        closing ??= (async () => {
          notReady = NotReady.CLOSING;
          // A running backup job is cancelled first, while its snapshot can still be deleted
          // through the chains, and so that its followers' streams end before the API closes.
          await backups.close();
          // Leaving first: the others see the node down at once, not a lease TTL later.
          await cluster?.close();
          // Replies held for an emulated device go now, so the connections can end.
          latencies.close();
          await nbd.close();
          await unlink(socketPath).catch(() => {});
          await api.close();
          // Before the backups and the store: a scheduled backup under way is cancelled and waited for.
          await schedules.close();
          await restores.close();
          clearInterval(spaceWatch);
          await removeBackupCache();
          await scrubs.close();
          await store.close();
          // The last record stamped, then the clock let go while the directory is still ours.
          log.info('stopped');
          if (clock !== null) await closeClock(root, clock);
          await lock.release();
        })();
        return closing;
      },
    };
  } catch (err) {
    await rollback();
    throw err;
  }
}

/**
 * The node's hybrid logical clock (docs/cluster.md, "Time"), its bound in `DIR/cluster/hlc`:
 * where cluster nodes kept it first; a single node keeps it there too, and so keeps its clock
 * should it join a cluster later.
 */
async function openClock(dataDir: string): Promise<Hlc> {
  await mkdir(join(dataDir, 'cluster'), { recursive: true });
  return Hlc.open({ store: fileBoundStore(join(dataDir, 'cluster', 'hlc')) });
}

/**
 * Done with the clock before the data directory is let go: log records stop carrying it, and no
 * write of its bound is in flight (none may land once another node could hold the directory).
 */
async function closeClock(root: Logger, clock: Hlc): Promise<void> {
  root.setClock(null);
  await clock.idle();
}

/** How often the node reads the space figures to log a change of state. */
const SPACE_WATCH_MS = 1000;

/**
 * Logs the space state when the node starts other than ok and at every change: warn at nearfull,
 * error at full, info back to ok (docs/engine.md, "The reserve and the thresholds").
 */
function watchSpace(store: Store, log: Logger): NodeJS.Timeout {
  let last: SpaceState = 'ok';
  const look = (): void => {
    let f;
    try {
      f = store.space();
    } catch (err) {
      log.warn('cannot read the space of the data directory\'s file system', { err });
      return;
    }
    if (f.state === last) return;
    last = f.state;
    const fields = { state: f.state, usedBytes: f.usedBytes, usableBytes: f.usableBytes, freeBytes: f.freeBytes, reserveBytes: f.reserveBytes };
    const used = `${Math.round(f.usedRatio * 100)}% of the usable space used`;
    if (f.state === 'full') log.error(`space full: ${used}; client writes are refused until space is freed (delete disks or snapshots, trim, or grow the file system)`, fields);
    else if (f.state === 'nearfull') log.warn(`space nearfull: ${used}; client writes stop at ${Math.round(f.fullRatio * 100)}%`, fields);
    else log.info(`space ok: ${used}`, fields);
  };
  look();
  return setInterval(look, SPACE_WATCH_MS).unref();
}

/**
 * Takes the data directory's lock file. Read-only on a read-only file system there is none to
 * take, and none needed: nobody can write the directory there either.
 */
async function takeLock(path: string, opts: { readOnly: boolean; log: Logger }): Promise<DirLock> {
  try {
    return await acquireLock(path);
  } catch (err) {
    if (opts.readOnly && (err as NodeJS.ErrnoException).code === 'EROFS') {
      opts.log.info('the data directory is on a read-only file system: no lock file is taken (nobody can write it)', { path });
      return { path, release: () => Promise.resolve() };
    }
    throw dataDirError(err, path, opts);
  }
}

/**
 * A `(msg) => void` log for rooms that log lines (instant restores write `hydrate: DISK: what`):
 * each becomes an info record of `log`, the disk in its field.
 */
function lineLog(log: Logger): (msg: string) => void {
  return (msg) => {
    const m = /^[a-z]+: ([A-Za-z0-9][A-Za-z0-9._-]{0,127}): ([^]*)$/.exec(msg);
    if (m === null) log.info(msg);
    else log.info(m[2], { disk: m[1] });
  };
}

/** `$TESSERA_RESTORE_RATE`: bytes per second, a positive whole number; unset or empty means no limit. */
function restoreRateFromEnv(env: NodeJS.ProcessEnv): number | null {
  const text = env.TESSERA_RESTORE_RATE;
  if (text === undefined || text === '') return null;
  const n = /^\d{1,15}$/.test(text) ? Number(text) : 0;
  if (n <= 0) throw new NodeError(NodeErrorCode.INVALID, `TESSERA_RESTORE_RATE=${text} is not a positive whole number of bytes per second`);
  return n;
}

/**
 * The schedules' clock: the system's, unless `$TESSERA_SCHEDULE_SPEED` is `FACTOR@SINCE_MS`, a
 * test's hook: the schedules then run on a clock FACTOR times as fast as the system's from the
 * instant SINCE_MS on (3600: a schedule of an hour runs every second), across restarts alike.
 */
function scheduleClockFromEnv(env: NodeJS.ProcessEnv, log: Logger): ScheduleClock {
  const text = env.TESSERA_SCHEDULE_SPEED;
  if (text === undefined || text === '') return systemClock();
  const m = /^(\d{1,7})@(\d{1,15})$/.exec(text);
  if (m === null || Number(m[1]) < 1) throw new NodeError(NodeErrorCode.INVALID, `TESSERA_SCHEDULE_SPEED=${text} is not FACTOR@SINCE_MS (e.g. 3600@${Date.now()})`);
  log.warn(`schedules run on a clock ${m[1]} times as fast as the system's since ${new Date(Number(m[2])).toISOString()} (TESSERA_SCHEDULE_SPEED, a test's hook)`);
  return fastClock(Number(m[1]), Number(m[2]));
}

/** What the usual reasons a listen fails mean. */
const listenFailures: Record<string, string> = {
  EADDRINUSE: 'address in use',
  EACCES: 'permission denied',
  EADDRNOTAVAIL: 'not an address of this machine',
  ENOTFOUND: 'unknown host',
  ENOENT: 'no such directory',
};

/** Runs a listen step, turning "address in use" and similar into a NodeError naming the address. */
async function listen<T>({ what, address }: { what: string; address: string }, step: () => Promise<T>): Promise<T> {
  try {
    return await step();
  } catch (err) {
    // The NBD server wraps the system error in its own; look through it.
    const e = err as NodeJS.ErrnoException & { cause?: NodeJS.ErrnoException };
    const code = e.cause?.code ?? e.code;
    const why = code === undefined ? undefined : listenFailures[code];
    if (why !== undefined) throw new NodeError(NodeErrorCode.LISTEN, `cannot listen for ${what} on ${address}: ${why}`, { cause: err });
    throw err;
  }
}
