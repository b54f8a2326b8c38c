/**
 * The node's schedules on disk (docs/backup.md, "Schedules"): `DATA/schedules.json`, the whole
 * set written at each change (a schedule added or removed, a run finished) to a temporary file,
 * synced, renamed over the old one and the directory synced: a node killed at any point finds the
 * old set or the new one, whole. Passwords are never in it: a backup schedule keeps the path of
 * its password file.
 */
import { open, readFile, rename } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BackupScheduleRun, SnapshotScheduleRun } from '../api/index.ts';
import { parseCron } from '../flow/index.ts';
import type { Logger } from '../observe/index.ts';
import { syncDir } from '../util/sync-dir.ts';

/** What a schedule has done, kept across restarts. */
export interface RunState {
  /** Every due time up to this one is covered: the start of the last run (its creation before any). */
  coveredMs: number;
  runsOk: number;
  runsFailed: number;
}

/** A backup schedule as kept. */
export interface BackupSchedule {
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
  state: RunState & { lastRun: BackupScheduleRun | null; lastVerifyMs: number | null };
}

/** A snapshot schedule as kept. */
export interface SnapshotSchedule {
  id: string;
  disk: string;
  everyMs: number | null;
  cron: string | null;
  keep: number;
  createdMs: number;
  state: RunState & { lastRun: SnapshotScheduleRun | null };
}

/** The file's content, version 1. */
export interface ScheduleSet {
  version: 1;
  backup: BackupSchedule[];
  snapshot: SnapshotSchedule[];
}

/** An empty set. */
export function emptySet(): ScheduleSet {
  return { version: 1, backup: [], snapshot: [] };
}

/** Largest schedule file read. */
const fileBytesMax = 16 << 20;

/** `DATA/schedules.json`: read at start, written whole at each change. */
export class ScheduleFile {
  readonly path: string;
  readonly #log: Logger;
  readonly #writable: boolean;
  /** Writes one after another: each is the whole set as it stood when asked. */
  #queue: Promise<void> = Promise.resolve();

  /** `writable` false (a node serving read-only): the file is read, never written or moved. */
  constructor(path: string, opts: { log: Logger; writable: boolean }) {
    this.path = path;
    this.#log = opts.log;
    this.#writable = opts.writable;
  }

  /**
   * The set kept, or an empty one when there is no file. A file that cannot be parsed or checked
   * is logged as an error and moved aside to `schedules.json.damaged` (its schedules do not run
   * until it is mended and moved back while the node is stopped), so that the next change does not
   * overwrite it.
   */
  async load(): Promise<ScheduleSet> {
    let text: string;
    try {
      const fh = await open(this.path, 'r');
      try {
        const { size } = await fh.stat();
        if (size > fileBytesMax) throw new Error(`it is larger than ${fileBytesMax} bytes`);
        text = await fh.readFile({ encoding: 'utf8' });
      } finally {
        await fh.close();
      }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptySet();
      return this.#damaged((err as Error).message);
    }
    let set: ScheduleSet;
    try {
      set = checkSet(JSON.parse(text));
    } catch (err) {
      return this.#damaged((err as Error).message);
    }
    return set;
  }

  async #damaged(why: string): Promise<ScheduleSet> {
    const aside = `${this.path}.damaged`;
    if (this.#writable) {
      try {
        await rename(this.path, aside);
        this.#log.error(`the schedule file ${this.path} is damaged (${why}): moved to ${aside}; no schedule runs until it is mended and moved back with the node stopped`, { path: this.path });
        return emptySet();
      } catch (err) {
        this.#log.error(`cannot move the damaged schedule file ${this.path} aside: ${(err as Error).message}`);
      }
    }
    this.#log.error(`the schedule file ${this.path} is damaged (${why}); no schedule runs`, { path: this.path });
    return emptySet();
  }

  /** Writes `set` (as it stands now) after the writes asked before; resolves once it is durable. */
  save(set: ScheduleSet): Promise<void> {
    const text = JSON.stringify(set, null, 1) + '\n';
    const write = this.#queue.then(() => this.#write(text));
    this.#queue = write.catch(() => {});
    return write;
  }

  async #write(text: string): Promise<void> {
    if (!this.#writable) return;
    const tmp = `${this.path}.tmp`;
    const fh = await open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, this.path);
    await syncDir(dirname(this.path));
  }
}

/** Throws a message naming what is wrong unless `v` is a schedule set of version 1. */
function checkSet(v: unknown): ScheduleSet {
  const o = obj(v, 'the file');
  if (o.version !== 1) throw new Error(`version ${String(o.version)} is not one this node reads (1)`);
  if (!Array.isArray(o.backup) || !Array.isArray(o.snapshot)) throw new Error("'backup' and 'snapshot' must be arrays");
  const ids = new Set<string>();
  const id = (s: Record<string, unknown>, at: string): void => {
    if (typeof s.id !== 'string' || !/^[0-9a-f]{8}$/.test(s.id)) throw new Error(`${at}: bad id`);
    if (ids.has(s.id)) throw new Error(`${at}: id ${s.id} twice`);
    ids.add(s.id);
  };
  o.backup.forEach((x, i) => {
    const at = `backup schedule ${i}`;
    const s = obj(x, at);
    id(s, at);
    if (!Array.isArray(s.disks) || s.disks.length === 0 || !s.disks.every((d) => typeof d === 'string')) throw new Error(`${at}: bad disks`);
    fieldsAre(s, at, { repo: 'string', passwordFile: 'string', verifyReadData: 'boolean', createdMs: 'integer' });
    fieldsAre(s, at, { keepLast: 'integer?', keepDaily: 'integer?', keepWeekly: 'integer?', verifyEveryMs: 'integer?', tenant: 'string?' });
    recurrence(s, at);
    const st = state(s, at);
    if (st.lastVerifyMs !== null && !Number.isSafeInteger(st.lastVerifyMs)) throw new Error(`${at}: bad lastVerifyMs`);
    if (st.lastRun !== null) {
      const r = obj(st.lastRun, `${at}: lastRun`);
      run(r, at);
      if (!Array.isArray(r.restorePoints) || !Number.isSafeInteger(r.forgotten)) throw new Error(`${at}: bad lastRun`);
    }
  });
  o.snapshot.forEach((x, i) => {
    const at = `snapshot schedule ${i}`;
    const s = obj(x, at);
    id(s, at);
    fieldsAre(s, at, { disk: 'string', keep: 'integer', createdMs: 'integer' });
    recurrence(s, at);
    const st = state(s, at);
    if (st.lastRun !== null) {
      const r = obj(st.lastRun, `${at}: lastRun`);
      run(r, at);
      if (!Array.isArray(r.deleted)) throw new Error(`${at}: bad lastRun`);
    }
  });
  return o as unknown as ScheduleSet;
}

function obj(v: unknown, at: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error(`${at} is not an object`);
  return v as Record<string, unknown>;
}

function fieldsAre(o: Record<string, unknown>, at: string, spec: Record<string, 'string' | 'integer' | 'boolean' | 'string?' | 'integer?'>): void {
  for (const [k, t] of Object.entries(spec)) {
    const v = o[k];
    if (t.endsWith('?') && v === null) continue;
    const ok = t.startsWith('string') ? typeof v === 'string' : t.startsWith('integer') ? Number.isSafeInteger(v) : typeof v === 'boolean';
    if (!ok) throw new Error(`${at}: bad ${k}`);
  }
}

function recurrence(s: Record<string, unknown>, at: string): void {
  const every = Number.isSafeInteger(s.everyMs) && (s.everyMs as number) > 0;
  const cron = typeof s.cron === 'string';
  if (every === cron || (!every && s.everyMs !== null) || (!cron && s.cron !== null)) throw new Error(`${at}: needs one of everyMs and cron`);
  if (cron) parseCron(s.cron as string); // its message says what is wrong
}

function state(s: Record<string, unknown>, at: string): Record<string, unknown> {
  const st = obj(s.state, `${at}: state`);
  fieldsAre(st, `${at}: state`, { coveredMs: 'integer', runsOk: 'integer', runsFailed: 'integer' });
  if (st.lastRun === undefined) throw new Error(`${at}: no lastRun`);
  return st;
}

function run(r: Record<string, unknown>, at: string): void {
  fieldsAre(r, `${at}: lastRun`, { startedMs: 'integer', finishedMs: 'integer', error: 'string?' });
  if (r.result !== 'ok' && r.result !== 'failed') throw new Error(`${at}: bad lastRun result`);
}
