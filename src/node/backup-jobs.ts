/**
 * Backup jobs (docs/backup.md, "Backup jobs"): a backup the node runs has an id and a record that
 * outlives the client that asked for it. Whoever follows a job hears what it did so far (its
 * snapshot, its notes, the last progress of each disk) and then what it does, up to its end; the
 * job goes on when they go away, and stops only when cancelled. The record keeps no password:
 * only the work function's closure holds the request, and it is let go when the job ends.
 */
import { randomBytes } from 'node:crypto';
import { BackupError, BackupErrorCode, type DiskBackupProgress } from '../backup/index.ts';

/** Where a job is: running, or how it ended. */
export type BackupJobState = 'running' | 'done' | 'failed' | 'cancelled';

/** What a running backup reports. */
export type NodeBackupEvent = { event: 'snapshot'; name: string } | { event: 'progress'; progress: DiskBackupProgress } | { event: 'note'; message: string };

/** What a follower hears: the backup's events, then one last event, `done` or `error`. */
export type BackupJobEvent = NodeBackupEvent | { event: 'done'; outcomes: object[] } | { event: 'error'; state: 'failed' | 'cancelled'; error: Error };

/** How a job ended: its outcomes (as `backup create --json` prints them), or its error. */
export type BackupJobEnd = { state: 'done'; outcomes: object[] } | { state: 'failed' | 'cancelled'; error: Error };

/** What a job records of its request: everything but the password and the AWS variables. */
export interface BackupJobFacts {
  disks: readonly string[];
  /** Repository location as the node sees it. */
  repo: string;
  tenant: string | null;
  rateBytesPerSecond: number | null;
}

/** The work a job runs: resolves to the outcomes; `signal` aborts when the job is cancelled. */
export type BackupJobWork = (ctx: { signal: AbortSignal; report: (e: NodeBackupEvent) => void }) => Promise<object[]>;

/** Options of BackupJob.start. */
interface JobOptions {
  /** Clock of `startedMs` and `finishedMs`; default Date.now. */
  now?: () => number;
  onEnd?: (job: BackupJob, end: BackupJobEnd) => void;
}

/** The error a cancelled backup fails with (at its next read, or before it starts). */
export function cancelledError(): BackupError {
  return new BackupError(BackupErrorCode.INVALID, 'The backup was cancelled');
}

/** Notes a job keeps for later followers; those after are dropped (followers hear them live). */
const notesMax = 100;

/** Random hex digits of a job id: unique enough among a node's jobs, short enough to type. */
const idBytes = 6;

/** A backup the node runs, its progress and, once it ended, its outcome. */
export class BackupJob {
  /** 12 hex digits. */
  readonly id: string;
  readonly facts: BackupJobFacts;
  readonly startedMs: number;
  /** Resolves (never rejects) when the job has ended, its snapshot deleted if it failed. */
  readonly finished: Promise<BackupJobEnd>;
  #state: BackupJobState = 'running';
  #finishedMs: number | null = null;
  #snapshot: string | null = null;
  /** The last progress of each disk begun, in the order begun. */
  readonly #progress = new Map<string, DiskBackupProgress>();
  readonly #notes: string[] = [];
  #end: BackupJobEnd | null = null;
  readonly #followers = new Set<(e: BackupJobEvent) => void>();
  readonly #abort = new AbortController();

  private constructor(facts: BackupJobFacts, work: BackupJobWork, options: JobOptions) {
    this.id = randomBytes(idBytes).toString('hex');
    this.facts = facts;
    this.startedMs = (options.now ?? Date.now)();
    this.finished = this.#run(work, options);
  }

  /**
   * Starts `work` as a job. `onEnd` hears its end before its followers do and before `finished`
   * resolves (whoever awaits `finished` sees the node's books already kept).
   */
  static start(facts: BackupJobFacts, work: BackupJobWork, options: JobOptions = {}): BackupJob {
    return new BackupJob(facts, work, options);
  }

  async #run(work: BackupJobWork, options: JobOptions): Promise<BackupJobEnd> {
    let end: BackupJobEnd;
    try {
      // Not called before the constructor has returned: a follower added at once hears everything.
      await Promise.resolve();
      if (this.#abort.signal.aborted) throw cancelledError();
      const outcomes = await work({ signal: this.#abort.signal, report: (e) => this.#report(e) });
      end = { state: 'done', outcomes };
    } catch (err) {
      // A job cancelled fails at its next read: the failure is the cancel's doing, whatever it says.
      end = { state: this.#abort.signal.aborted ? 'cancelled' : 'failed', error: err instanceof Error ? err : new Error(String(err)) };
    }
    this.#end = end;
    this.#state = end.state;
    this.#finishedMs = (options.now ?? Date.now)();
    options.onEnd?.(this, end);
    const last: BackupJobEvent = end.state === 'done' ? { event: 'done', outcomes: end.outcomes } : { event: 'error', state: end.state, error: end.error };
    for (const f of this.#followers) f(last);
    this.#followers.clear();
    return end;
  }

  #report(e: NodeBackupEvent): void {
    if (e.event === 'snapshot') this.#snapshot = e.name;
    else if (e.event === 'progress') this.#progress.set(e.progress.disk, e.progress);
    else if (this.#notes.length < notesMax) this.#notes.push(e.message);
    for (const f of this.#followers) f(e);
  }

  get state(): BackupJobState {
    return this.#state;
  }

  get finishedMs(): number | null {
    return this.#finishedMs;
  }

  /** The node snapshot the job took, once taken. */
  get snapshot(): string | null {
    return this.#snapshot;
  }

  /** The last progress of each disk begun. */
  get progress(): DiskBackupProgress[] {
    return [...this.#progress.values()];
  }

  /** The job's notes (at most the first 100). */
  get notes(): readonly string[] {
    return this.#notes;
  }

  /** How it ended, null while it runs. */
  get end(): BackupJobEnd | null {
    return this.#end;
  }

  /**
   * Calls `listener` with what the job did so far (its snapshot, its notes, the last progress of
   * each disk; its end, if it ended), then with each event as it comes, up to its end. Returns
   * the function that stops following; the job goes on.
   */
  follow(listener: (e: BackupJobEvent) => void): () => void {
    if (this.#snapshot !== null) listener({ event: 'snapshot', name: this.#snapshot });
    for (const message of this.#notes) listener({ event: 'note', message });
    for (const progress of this.#progress.values()) listener({ event: 'progress', progress });
    const end = this.#end;
    if (end !== null) {
      listener(end.state === 'done' ? { event: 'done', outcomes: end.outcomes } : { event: 'error', state: end.state, error: end.error });
      return () => {};
    }
    this.#followers.add(listener);
    return () => void this.#followers.delete(listener);
  }

  /**
   * Cancels the job: its next read fails, and it fails as any failed backup does (its new
   * snapshot deleted, the repository left as a killed backup leaves it). Resolves to how it
   * ended: `cancelled`, or what it had ended as before.
   */
  cancel(): Promise<BackupJobEnd> {
    if (this.#end === null) this.#abort.abort();
    return this.finished;
  }
}
