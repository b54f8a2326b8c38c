/**
 * The node's schedules (docs/backup.md, "Schedules"): backups and snapshots it runs at due times
 * of its own, kept in `DATA/schedules.json` (schedule-file.ts) and timed by a Timetable
 * (src/flow) on the clock the node gives it.
 *
 * - A backup schedule's run reads the password from its password file (checked again: readable
 *   by its owner only), has the node back its disks up as a backup job (one backup at a time: a
 *   run waits for one running), then, with a retention policy, forgets the restore points of its
 *   disks the policy does not keep and prunes, then verifies when that is due
 *   (schedule-repository.ts). Its outcome, with the step that failed, is kept with it.
 * - A snapshot schedule's run takes a snapshot `sched-ID-TIME` of its disk and deletes the
 *   oldest of its own snapshots (named `sched-ID-`) beyond the number it keeps.
 * - Due times missed while the node was down are one run at its start; two runs of a schedule
 *   never overlap (the Timetable's rules). A run cut short by the node's shutdown is not kept as
 *   a run: it runs again at the next start.
 */
import { randomBytes } from 'node:crypto';
import { ApiError, ApiErrorCode } from '../api/index.ts';
import type { BackupScheduleInfo, BackupScheduleRequest, BackupScheduleRun, ScheduleService, SnapshotScheduleInfo, SnapshotScheduleRequest, SnapshotScheduleRun } from '../api/index.ts';
import { BackupError, BackupErrorCode, checkTenant, type ForgetPolicy } from '../backup/index.ts';
import type { Replication } from '../cluster/index.ts';
import type { SnapshotInfo, Store } from '../engine/index.ts';
import { Timetable, parseCron, type Recurrence, type RunTimes, type ScheduleClock } from '../flow/index.ts';
import type { Logger } from '../observe/index.ts';
import { readPasswordFile } from './password-file.ts';
import { ScheduleFile, emptySet, type BackupSchedule, type RunState, type ScheduleSet, type SnapshotSchedule } from './schedule-file.ts';
import { awsEnvOf, openScheduleRepository, type OpenScheduleRepository } from './schedule-repository.ts';

/** What the schedules ask of the node's backups (NodeBackups, src/node/backups.ts: its public start and its jobs). */
export interface ScheduledBackups {
  /** Whether a backup job runs (start() refuses another meanwhile). */
  readonly busy: boolean;
  /** Starts a backup job (it shows in `backup jobs`, and `backup job cancel` cancels it). */
  start(req: { disks: string[]; repo: string; password: string; env: Record<string, string>; tenant?: string }): ScheduledBackupJob;
}

/** A backup job as a schedule follows it. */
export interface ScheduledBackupJob {
  readonly id: string;
  /** Resolves to its end, never rejects. */
  readonly finished: Promise<{ state: 'done'; outcomes: object[] } | { state: 'failed' | 'cancelled'; error: Error }>;
  /** Hears its events; returns the function that stops following. */
  follow(listener: (e: { event: string } & Record<string, unknown>) => void): () => void;
  cancel(): Promise<unknown>;
}

/** One schedule's figures for the node's metrics. */
export interface ScheduleSample {
  id: string;
  kind: 'backup' | 'snapshot';
  /** When its last run started and whether it succeeded; null before its first run. */
  lastRunMs: number | null;
  lastOk: boolean | null;
  lastDurationMs: number | null;
  nextRunMs: number | null;
  running: boolean;
  runsOk: number;
  runsFailed: number;
}

/** Options of NodeSchedules. */
export interface NodeSchedulesOptions {
  store: Store;
  backups: ScheduledBackups;
  /** The schedule file, `DATA/schedules.json`. */
  file: string;
  /** The clock the schedules run on (the system clock, or a test's). */
  clock: ScheduleClock;
  log: Logger;
  /** A node serving read-only keeps its schedules listed but runs none and takes no change. */
  readOnly?: boolean;
  /** In a cluster: the node's replication once joined (snapshots go through the disk's chain). */
  cluster?: () => Replication | null;
  /** Where the AWS variables of s3:// repositories come from: the node's environment. */
  env?: NodeJS.ProcessEnv;
  /** Opens a repository for retention and checks (tests may count or fail them). */
  openRepository?: OpenScheduleRepository;
  /** While another backup runs, a due backup looks again this often (clock ms). Default 10 s. */
  busyPollMs?: number;
  /**
   * Throws if `disk` may not be snapshotted or backed up now (the node's instant restores: a disk
   * being restored refuses both until it is whole, as through the API). Default: never.
   */
  checkDisk?: (disk: string, what: string) => void;
}

/** Most schedules of each kind a node keeps. */
export const schedulesMax = 256;

/** The name prefix of a snapshot schedule's snapshots: only those are ever deleted by it. */
export function snapshotPrefix(id: string): string {
  return `sched-${id}-`;
}

/** A time in a snapshot name: `2026-01-01T10-15-00-000Z`. */
function stamp(ms: number): string {
  return new Date(ms).toISOString().replace(/[:.]/g, '-');
}

/** How a kept schedule recurs: every so long from its creation, or by its cron expression. */
function recurrenceOf(s: { everyMs: number | null; cron: string | null; createdMs: number }): Recurrence {
  return s.cron !== null ? { kind: 'cron', cron: parseCron(s.cron) } : { kind: 'every', everyMs: s.everyMs!, anchorMs: s.createdMs };
}

/** A backup schedule's retention policy, or null without one. */
function policyOf(s: BackupSchedule): ForgetPolicy | null {
  if (s.keepLast === null && s.keepDaily === null && s.keepWeekly === null) return null;
  return { ...(s.keepLast !== null ? { keepLast: s.keepLast } : {}), ...(s.keepDaily !== null ? { keepDaily: s.keepDaily } : {}), ...(s.keepWeekly !== null ? { keepWeekly: s.keepWeekly } : {}) };
}

/** Counts a finished run into a schedule's state and covers its due times. */
function counted(state: RunState, run: { result: 'ok' | 'failed' }, times: RunTimes): void {
  state.coveredMs = Math.max(state.coveredMs, times.startedMs);
  if (run.result === 'ok') state.runsOk++;
  else state.runsFailed++;
}

const messageOf = (err: unknown): string => (err as Error)?.message ?? String(err);

/** Resolves as `p` does, or rejects once `signal` aborts (then `p` goes on unawaited, its failure ignored). */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  p.catch(() => {});
  if (signal.aborted) return Promise.reject(new Error('aborted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Error('aborted'));
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

/** The node's backup and snapshot schedules. */
export class NodeSchedules implements ScheduleService {
  readonly #store: Store;
  readonly #backups: ScheduledBackups;
  readonly #file: ScheduleFile;
  readonly #clock: ScheduleClock;
  readonly #log: Logger;
  readonly #readOnly: boolean;
  readonly #cluster: () => Replication | null;
  readonly #env: NodeJS.ProcessEnv;
  readonly #open: OpenScheduleRepository;
  readonly #busyPollMs: number;
  readonly #checkDiskNow: (disk: string, what: string) => void;
  #set: ScheduleSet = emptySet();
  #table: Timetable | null = null;
  readonly #stop = new AbortController();
  /** Scheduled backups one at a time, in the order they came due. */
  #backupTurn: Promise<unknown> = Promise.resolve();
  /** Retention, prune and verify one at a time on the node (two prunes of a repository must not race). */
  #maintenanceTurn: Promise<unknown> = Promise.resolve();
  /** Whether a write of the file after a run failed (close tries again). */
  #dirty = false;

  constructor(opts: NodeSchedulesOptions) {
    this.#store = opts.store;
    this.#backups = opts.backups;
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#readOnly = opts.readOnly === true;
    this.#file = new ScheduleFile(opts.file, { log: opts.log, writable: !this.#readOnly });
    this.#cluster = opts.cluster ?? (() => null);
    this.#env = opts.env ?? process.env;
    this.#open = opts.openRepository ?? openScheduleRepository;
    this.#busyPollMs = opts.busyPollMs ?? 10_000;
    this.#checkDiskNow = opts.checkDisk ?? (() => {});
  }

  /** Reads the schedule file. */
  async load(): Promise<void> {
    this.#set = await this.#file.load();
  }

  /**
   * Starts timing the schedules: those whose due time passed while the node was down run at once,
   * once. A node serving read-only runs none.
   */
  start(): void {
    if (this.#readOnly || this.#table !== null) return;
    this.#table = new Timetable({
      clock: this.#clock,
      run: (id, times) => this.#run(id, times),
      onError: (id, err) => this.#log.error(`schedule ${id}: run failed unexpectedly: ${messageOf(err)}`, { schedule: id, err }),
    });
    for (const s of [...this.#set.backup, ...this.#set.snapshot]) this.#table.add(s.id, recurrenceOf(s), s.state.coveredMs);
    const n = this.#set.backup.length + this.#set.snapshot.length;
    if (n > 0) this.#log.info(`${n} schedules: ${this.#set.backup.length} backup, ${this.#set.snapshot.length} snapshot`);
  }

  /** Stops the schedules: a backup under way is cancelled (it runs again at the next start); waits for the runs to end. */
  async close(): Promise<void> {
    this.#stop.abort();
    await this.#table?.close();
    if (this.#dirty) await this.#save();
  }

  listBackup(): BackupScheduleInfo[] {
    return this.#set.backup.map((s) => this.#backupInfo(s));
  }

  getBackup(id: string): BackupScheduleInfo {
    return this.#backupInfo(this.#find(this.#set.backup, id, 'backup'));
  }

  async addBackup(req: BackupScheduleRequest): Promise<BackupScheduleInfo> {
    this.#changeable(this.#set.backup, 'backup');
    for (const d of req.disks) this.#checkDisk(d);
    if (req.tenant !== undefined) checkTenant(req.tenant);
    // The password file must be as a run needs it, and open the repository, before it is kept.
    const password = await readPasswordFile(req.passwordFile);
    const repo = await this.#open(req.repo, password, awsEnvOf(req.repo, this.#env));
    await repo.close();
    const createdMs = this.#clock.now();
    const s: BackupSchedule = {
      id: this.#newId(),
      disks: [...req.disks],
      repo: req.repo,
      passwordFile: req.passwordFile,
      everyMs: req.everyMs ?? null,
      cron: req.cron ?? null,
      keepLast: req.keepLast ?? null,
      keepDaily: req.keepDaily ?? null,
      keepWeekly: req.keepWeekly ?? null,
      verifyEveryMs: req.verifyEveryMs ?? null,
      verifyReadData: req.verifyReadData ?? false,
      tenant: req.tenant ?? null,
      createdMs,
      state: { coveredMs: createdMs, runsOk: 0, runsFailed: 0, lastRun: null, lastVerifyMs: null },
    };
    await this.#keep(this.#set.backup, s);
    this.#log.info(`backup schedule ${s.id} added: ${s.disks.join(', ')} into ${s.repo} ${s.cron !== null ? `at '${s.cron}' (UTC)` : `every ${s.everyMs} ms`}`, { schedule: s.id });
    return this.#backupInfo(s);
  }

  async removeBackup(id: string): Promise<void> {
    await this.#remove(this.#set.backup, id, 'backup');
  }

  listSnapshot(): SnapshotScheduleInfo[] {
    return this.#set.snapshot.map((s) => this.#snapshotInfo(s));
  }

  getSnapshot(id: string): SnapshotScheduleInfo {
    return this.#snapshotInfo(this.#find(this.#set.snapshot, id, 'snapshot'));
  }

  async addSnapshot(req: SnapshotScheduleRequest): Promise<SnapshotScheduleInfo> {
    this.#changeable(this.#set.snapshot, 'snapshot');
    this.#checkDisk(req.disk);
    const createdMs = this.#clock.now();
    const s: SnapshotSchedule = {
      id: this.#newId(),
      disk: req.disk,
      everyMs: req.everyMs ?? null,
      cron: req.cron ?? null,
      keep: req.keep,
      createdMs,
      state: { coveredMs: createdMs, runsOk: 0, runsFailed: 0, lastRun: null },
    };
    await this.#keep(this.#set.snapshot, s);
    this.#log.info(`snapshot schedule ${s.id} added: ${s.disk} ${s.cron !== null ? `at '${s.cron}' (UTC)` : `every ${s.everyMs} ms`}, keeping ${s.keep}`, { schedule: s.id });
    return this.#snapshotInfo(s);
  }

  async removeSnapshot(id: string): Promise<void> {
    await this.#remove(this.#set.snapshot, id, 'snapshot');
  }

  /** Each schedule's figures, for the metrics. */
  samples(): ScheduleSample[] {
    const sample = (kind: 'backup' | 'snapshot', s: BackupSchedule | SnapshotSchedule): ScheduleSample => {
      const last = s.state.lastRun;
      return {
        id: s.id,
        kind,
        lastRunMs: last?.startedMs ?? null,
        lastOk: last === null ? null : last.result === 'ok',
        lastDurationMs: last === null ? null : last.finishedMs - last.startedMs,
        nextRunMs: this.#table?.nextMs(s.id) ?? null,
        running: this.#table?.running(s.id) ?? false,
        runsOk: s.state.runsOk,
        runsFailed: s.state.runsFailed,
      };
    };
    return [...this.#set.backup.map((s) => sample('backup', s)), ...this.#set.snapshot.map((s) => sample('snapshot', s))];
  }

  #backupInfo(s: BackupSchedule): BackupScheduleInfo {
    const r = s.state.lastRun;
    return {
      id: s.id,
      disks: [...s.disks],
      repo: s.repo,
      passwordFile: s.passwordFile,
      everyMs: s.everyMs,
      cron: s.cron,
      keepLast: s.keepLast,
      keepDaily: s.keepDaily,
      keepWeekly: s.keepWeekly,
      verifyEveryMs: s.verifyEveryMs,
      verifyReadData: s.verifyReadData,
      tenant: s.tenant,
      createdMs: s.createdMs,
      running: this.#table?.running(s.id) ?? false,
      nextRunMs: this.#table?.nextMs(s.id) ?? null,
      lastRun:
        r === null
          ? null
          : {
              startedMs: r.startedMs,
              finishedMs: r.finishedMs,
              result: r.result,
              error: r.error,
              job: r.job,
              restorePoints: [...r.restorePoints],
              forgotten: r.forgotten,
              prune: r.prune === null ? null : { packsMarked: r.prune.packsMarked, packsDeleted: r.prune.packsDeleted, bytesFreed: r.prune.bytesFreed },
              verify: r.verify === null ? null : { readData: r.verify.readData, faults: r.verify.faults },
            },
      lastVerifyMs: s.state.lastVerifyMs,
      runsOk: s.state.runsOk,
      runsFailed: s.state.runsFailed,
    };
  }

  #snapshotInfo(s: SnapshotSchedule): SnapshotScheduleInfo {
    const r = s.state.lastRun;
    return {
      id: s.id,
      disk: s.disk,
      everyMs: s.everyMs,
      cron: s.cron,
      keep: s.keep,
      createdMs: s.createdMs,
      snapshotPrefix: snapshotPrefix(s.id),
      running: this.#table?.running(s.id) ?? false,
      nextRunMs: this.#table?.nextMs(s.id) ?? null,
      lastRun: r === null ? null : { startedMs: r.startedMs, finishedMs: r.finishedMs, result: r.result, error: r.error, snapshot: r.snapshot, deleted: [...r.deleted] },
      runsOk: s.state.runsOk,
      runsFailed: s.state.runsFailed,
    };
  }

  #find<T extends { id: string }>(list: T[], id: string, kind: string): T {
    const s = list.find((x) => x.id === id);
    if (s === undefined) throw new ApiError(ApiErrorCode.NOT_FOUND, `No ${kind} schedule ${id}`);
    return s;
  }

  /** Refuses a change on a node serving read-only, or beyond the limit. */
  #changeable(list: unknown[], kind: string): void {
    if (this.#readOnly) throw new ApiError(ApiErrorCode.READ_ONLY, 'The node runs read-only: it keeps no new schedule');
    if (list.length >= schedulesMax) throw new ApiError(ApiErrorCode.INVALID, `The node keeps at most ${schedulesMax} ${kind} schedules`);
  }

  /** Throws NOT_FOUND unless `disk` exists (a cluster's disk, in a cluster). */
  #checkDisk(disk: string): void {
    const r = this.#cluster();
    if (r !== null) r.info(disk);
    else this.#store.getDisk(disk);
  }

  #newId(): string {
    const taken = new Set([...this.#set.backup, ...this.#set.snapshot].map((s) => s.id));
    for (;;) {
      const id = randomBytes(4).toString('hex');
      if (!taken.has(id)) return id;
    }
  }

  /** Adds `s` to `list`, made durable before it is timed; undone if the file cannot be written. */
  async #keep<T extends BackupSchedule | SnapshotSchedule>(list: T[], s: T): Promise<void> {
    list.push(s);
    try {
      await this.#file.save(this.#set);
    } catch (err) {
      list.splice(list.indexOf(s), 1);
      throw err;
    }
    this.#table?.add(s.id, recurrenceOf(s), s.state.coveredMs);
  }

  async #remove<T extends BackupSchedule | SnapshotSchedule>(list: T[], id: string, kind: string): Promise<void> {
    if (this.#readOnly) throw new ApiError(ApiErrorCode.READ_ONLY, 'The node runs read-only: its schedules cannot change');
    const s = this.#find(list, id, kind);
    const at = list.indexOf(s);
    list.splice(at, 1);
    try {
      await this.#file.save(this.#set);
    } catch (err) {
      list.splice(at, 0, s);
      throw err;
    }
    // A run under way goes on to its end; its outcome is not kept.
    void this.#table?.remove(id);
    this.#log.info(`${kind} schedule ${id} removed`, { schedule: id });
  }

  #run(id: string, times: RunTimes): Promise<void> {
    const b = this.#set.backup.find((s) => s.id === id);
    if (b !== undefined) return this.#runBackup(b, times);
    const s = this.#set.snapshot.find((x) => x.id === id);
    if (s !== undefined) return this.#runSnapshot(s, times);
    return Promise.resolve();
  }

  async #runBackup(s: BackupSchedule, times: RunTimes): Promise<void> {
    const signal = this.#stop.signal;
    const run: BackupScheduleRun = { startedMs: times.startedMs, finishedMs: 0, result: 'ok', error: null, job: null, restorePoints: [], forgotten: 0, prune: null, verify: null };
    const verifyDue = s.verifyEveryMs !== null && (s.state.lastVerifyMs === null || times.startedMs - s.state.lastVerifyMs >= s.verifyEveryMs);
    let verified = false;
    let step = 'backup';
    this.#log.info(`backup schedule ${s.id} runs: ${s.disks.join(', ')} into ${s.repo}`, { schedule: s.id, dueMs: times.dueMs });
    try {
      // Read at each run: a file made readable by others since is refused now, as at the start.
      const password = await readPasswordFile(s.passwordFile);
      for (const d of s.disks) this.#checkDiskNow(d, 'a scheduled backup');
      const outcomes = await this.#backupOnce(s, password, run, signal);
      run.restorePoints = outcomes.map((o) => String((o as { id?: unknown }).id));
      const policy = policyOf(s);
      if (policy !== null || verifyDue) {
        step = policy !== null ? 'retention' : 'verify';
        await this.#maintenance(signal, async () => {
          const repo = await this.#open(s.repo, password, awsEnvOf(s.repo, this.#env));
          try {
            if (policy !== null) {
              step = 'retention';
              run.forgotten = await repo.forget(policy, s.disks);
              step = 'prune';
              run.prune = await repo.prune();
            }
            if (verifyDue) {
              step = 'verify';
              const v = await repo.verify(s.verifyReadData);
              run.verify = { readData: s.verifyReadData, faults: v.faults };
              verified = true;
              if (v.faults > 0) throw new BackupError(BackupErrorCode.CORRUPT, `${v.faults} faults, the first ${v.first}; \`tessera backup verify\` lists them`);
            }
          } finally {
            await repo.close();
          }
        });
      }
    } catch (err) {
      if (signal.aborted) {
        this.#log.info(`backup schedule ${s.id}: its run was cut short by the node's shutdown; it runs again at the next start`, { schedule: s.id });
        return;
      }
      run.result = 'failed';
      run.error = `${step}: ${messageOf(err)}`;
    }
    run.finishedMs = this.#clock.now();
    // A schedule removed meanwhile: its run is logged, not kept.
    const kept = this.#set.backup.includes(s);
    const fields = { schedule: s.id, restorePoints: run.restorePoints, forgotten: run.forgotten, prune: run.prune, verify: run.verify, durationMs: run.finishedMs - run.startedMs };
    const removed = kept ? '' : ' (the schedule was removed meanwhile)';
    if (run.result === 'ok') {
      const pruned = run.prune === null ? '' : `; pruned: ${run.prune.packsMarked} packs marked, ${run.prune.packsDeleted} deleted`;
      const verifiedText = run.verify === null ? '' : `; verified${run.verify.readData ? ' with data' : ''}: no faults`;
      this.#log.info(`backup schedule ${s.id} ran: ${run.restorePoints.length} restore points made, ${run.forgotten} forgotten${pruned}${verifiedText}${removed}`, fields);
    } else this.#log.warn(`backup schedule ${s.id} failed: ${run.error}${removed}`, fields);
    if (!kept) return;
    if (verified) s.state.lastVerifyMs = times.startedMs;
    s.state.lastRun = run;
    counted(s.state, run, times);
    await this.#save();
  }

  /**
   * Has the node's backups run the schedule's backup as a job, after the scheduled backups before
   * it and any backup running; resolves to its outcomes, rejects with its error. The node's
   * shutdown cancels it.
   */
  async #backupOnce(s: BackupSchedule, password: string, run: BackupScheduleRun, signal: AbortSignal): Promise<object[]> {
    const turn = this.#backupTurn.then(async () => {
      while (this.#backups.busy) {
        if (signal.aborted) throw new BackupError(BackupErrorCode.INVALID, 'The node is shutting down');
        await this.#sleep(this.#busyPollMs, signal);
      }
      if (signal.aborted) throw new BackupError(BackupErrorCode.INVALID, 'The node is shutting down');
      // busy was false just now, on this same turn of the event loop: start() takes the node's one backup slot.
      const job = this.#backups.start({ disks: s.disks, repo: s.repo, password, env: awsEnvOf(s.repo, this.#env), ...(s.tenant !== null ? { tenant: s.tenant } : {}) });
      run.job = job.id;
      const unfollow = job.follow((e) => {
        if (e.event === 'note') this.#log.info(`backup schedule ${s.id}: ${String(e.message)}`, { schedule: s.id, job: job.id });
      });
      const cancel = (): void => void job.cancel();
      signal.addEventListener('abort', cancel, { once: true });
      try {
        const end = await job.finished;
        if (end.state === 'done') return end.outcomes;
        throw end.error;
      } finally {
        signal.removeEventListener('abort', cancel);
        unfollow();
      }
    });
    this.#backupTurn = turn.catch(() => {});
    return turn;
  }

  /** Runs `fn` after the retention, prune and verify asked before it; a shutdown stops waiting for it. */
  async #maintenance(signal: AbortSignal, fn: () => Promise<void>): Promise<void> {
    const turn = this.#maintenanceTurn.then(() => (signal.aborted ? undefined : fn()));
    this.#maintenanceTurn = turn.catch(() => {});
    await abortable(turn, signal);
  }

  #sleep(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const h = this.#clock.setTimer(resolve, ms);
      signal.addEventListener('abort', () => {
        this.#clock.clearTimer(h);
        resolve();
      }, { once: true });
    });
  }

  async #runSnapshot(s: SnapshotSchedule, times: RunTimes): Promise<void> {
    const run: SnapshotScheduleRun = { startedMs: times.startedMs, finishedMs: 0, result: 'ok', error: null, snapshot: null, deleted: [] };
    const prefix = snapshotPrefix(s.id);
    let step = 'snapshot';
    this.#log.info(`snapshot schedule ${s.id} runs: ${s.disk}`, { schedule: s.id, dueMs: times.dueMs });
    try {
      const existing = new Set(this.#listSnapshots(s.disk).map((x) => x.name));
      // Named by the run's start; a clock set back could meet a name taken.
      let name = prefix + stamp(times.startedMs);
      for (let k = 2; existing.has(name); k++) name = `${prefix}${stamp(times.startedMs)}-${k}`;
      this.#checkDiskNow(s.disk, 'a scheduled snapshot');
      await this.#takeSnapshot(s.disk, name);
      run.snapshot = name;
      step = 'retention';
      // Its own snapshots only, oldest first by the log's order.
      const mine = this.#listSnapshots(s.disk).filter((x) => x.name.startsWith(prefix)).sort((a, b) => a.seq - b.seq || a.createdMs - b.createdMs);
      const failures: string[] = [];
      for (const old of mine.slice(0, Math.max(0, mine.length - s.keep))) {
        try {
          await this.#deleteSnapshot(s.disk, old.name);
          run.deleted.push(old.name);
        } catch (err) {
          failures.push(`${old.name}: ${messageOf(err)}`);
        }
      }
      if (failures.length > 0) {
        run.result = 'failed';
        run.error = `retention: cannot delete ${failures.join('; ')}`;
      }
    } catch (err) {
      run.result = 'failed';
      run.error = `${step}: ${messageOf(err)}`;
    }
    run.finishedMs = this.#clock.now();
    const kept = this.#set.snapshot.includes(s);
    const removed = kept ? '' : ' (the schedule was removed meanwhile)';
    const fields = { schedule: s.id, disk: s.disk, snapshot: run.snapshot, deleted: run.deleted };
    if (run.result === 'ok') this.#log.info(`snapshot schedule ${s.id} ran: took ${s.disk}@${run.snapshot}, deleted ${run.deleted.length}${removed}`, fields);
    else this.#log.warn(`snapshot schedule ${s.id} failed: ${run.error}${removed}`, fields);
    if (!kept) return;
    s.state.lastRun = run;
    counted(s.state, run, times);
    await this.#save();
  }

  #listSnapshots(disk: string): SnapshotInfo[] {
    const r = this.#cluster();
    if (r !== null) r.info(disk);
    return this.#store.listSnapshots(disk);
  }

  async #takeSnapshot(disk: string, name: string): Promise<void> {
    const r = this.#cluster();
    if (r !== null) await r.disks.submit(disk, { kind: 'snapshot', name });
    else await this.#store.createSnapshot(disk, name);
  }

  async #deleteSnapshot(disk: string, name: string): Promise<void> {
    const r = this.#cluster();
    if (r !== null) await r.disks.submit(disk, { kind: 'snapshot-delete', name });
    else await this.#store.deleteSnapshot(disk, name);
  }

  /** Writes the set after a run; a failure is logged (the run happened; the next write carries it). */
  async #save(): Promise<void> {
    try {
      await this.#file.save(this.#set);
      this.#dirty = false;
    } catch (err) {
      this.#dirty = true;
      this.#log.error(`cannot write the schedule file ${this.#file.path}: ${messageOf(err)}`, { err });
    }
  }
}
