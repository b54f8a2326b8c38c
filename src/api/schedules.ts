/**
 * /api/v1/backup-schedules and /api/v1/snapshot-schedules (docs/api.md, "Schedules"): backups
 * and snapshots the node runs on a schedule it keeps in its data directory. The form of a request
 * is checked here, once; the node's ScheduleService checks what only it can (the disks, the
 * password file, the repository).
 */
import { CronError, parseCron } from '../flow/index.ts';
import { ApiError, ApiErrorCode } from './errors.ts';
import type { Route, RequestContext, ScheduleService } from './route.ts';
import { wireObject } from './schema.ts';
import { API_PREFIX as prefix } from './client/wire.ts';
import type { BackupScheduleInfo, BackupScheduleRequest, BackupScheduleRun, ScheduleResult, SnapshotScheduleInfo, SnapshotScheduleRequest, SnapshotScheduleRun } from './client/wire.ts';

/** Most disks one backup schedule takes (one consistency group, as POST /backups). */
const disksMax = 64;
/** Shortest and longest period of `everyMs` and `verifyEveryMs`. */
const periodMsMin = 1000;
const periodMsMax = 366 * 24 * 3_600_000;
/** Most restore points or snapshots one retention rule keeps. */
const keepMax = 100_000;

function service(ctx: RequestContext): ScheduleService {
  if (ctx.schedules === null) throw new ApiError(ApiErrorCode.NO_ROUTE, 'This server keeps no schedules');
  return ctx.schedules;
}

const bad = (message: string): ApiError => new ApiError(ApiErrorCode.BAD_REQUEST, message);

/** The body as an object with no field but `allowed`. */
function fieldsOf(raw: unknown, allowed: readonly string[]): Record<string, unknown> {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw bad(`The body must be a JSON object with fields ${allowed.map((k) => `'${k}'`).join(', ')}`);
  const o = raw as Record<string, unknown>;
  const unknown = Object.keys(o).find((k) => !allowed.includes(k));
  if (unknown !== undefined) throw bad(`Unknown field '${unknown}'; expected ${allowed.map((k) => `'${k}'`).join(', ')}`);
  return o;
}

function string(o: Record<string, unknown>, key: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') throw bad(`Field '${key}' must be a non-empty string`);
  return v;
}

/** A whole number from `min` to `max`, or undefined if absent. */
function integer(o: Record<string, unknown>, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min || v > max) throw bad(`Field '${key}' must be a whole number from ${min} to ${max}`);
  return v;
}

/** `everyMs` or `cron`, exactly one, each well formed. */
function recurrenceOf(o: Record<string, unknown>): { everyMs: number } | { cron: string } {
  const everyMs = integer(o, 'everyMs', periodMsMin, periodMsMax);
  const hasCron = o.cron !== undefined;
  if ((everyMs === undefined) === !hasCron) throw bad("Give one of 'everyMs' and 'cron'");
  if (everyMs !== undefined) return { everyMs };
  const cron = string(o, 'cron');
  try {
    parseCron(cron);
  } catch (err) {
    if (err instanceof CronError) throw new ApiError(ApiErrorCode.INVALID, err.message, { cause: err });
    throw err;
  }
  return { cron };
}

/** A backup schedule request, checked for form. */
export function checkBackupScheduleRequest(raw: unknown): BackupScheduleRequest {
  const o = fieldsOf(raw, ['disks', 'repo', 'passwordFile', 'everyMs', 'cron', 'keepLast', 'keepDaily', 'keepWeekly', 'verifyEveryMs', 'verifyReadData', 'tenant']);
  const disks = o.disks;
  if (!Array.isArray(disks) || !disks.every((d) => typeof d === 'string')) throw bad("Field 'disks' must be an array of strings");
  if (disks.length === 0 || disks.length > disksMax) throw bad(`Field 'disks' must name 1 to ${disksMax} disks`);
  if (new Set(disks).size !== disks.length) throw bad("Field 'disks' names a disk twice");
  const repo = string(o, 'repo');
  if (!repo.startsWith('/') && !repo.startsWith('s3://')) throw bad("Field 'repo' must be an absolute directory path or s3://bucket/prefix, as the node sees it");
  const passwordFile = string(o, 'passwordFile');
  if (!passwordFile.startsWith('/')) throw bad("Field 'passwordFile' must be an absolute path, as the node sees it");
  const keep = { keepLast: integer(o, 'keepLast', 0, keepMax), keepDaily: integer(o, 'keepDaily', 0, keepMax), keepWeekly: integer(o, 'keepWeekly', 0, keepMax) };
  const rules = Object.values(keep).filter((n) => n !== undefined);
  if (rules.length > 0 && rules.every((n) => n === 0)) throw new ApiError(ApiErrorCode.INVALID, 'A retention policy that keeps nothing would forget each restore point as soon as it is made: keep at least 1');
  const verifyEveryMs = integer(o, 'verifyEveryMs', periodMsMin, periodMsMax);
  const verifyReadData = o.verifyReadData;
  if (verifyReadData !== undefined && typeof verifyReadData !== 'boolean') throw bad("Field 'verifyReadData' must be a boolean");
  if (verifyReadData !== undefined && verifyEveryMs === undefined) throw bad("Field 'verifyReadData' goes with 'verifyEveryMs'");
  const tenant = o.tenant === undefined ? undefined : string(o, 'tenant');
  const req: BackupScheduleRequest = { disks: disks as string[], repo, passwordFile, ...recurrenceOf(o) };
  for (const [k, v] of Object.entries(keep)) if (v !== undefined) req[k as keyof typeof keep] = v;
  if (verifyEveryMs !== undefined) req.verifyEveryMs = verifyEveryMs;
  if (verifyReadData !== undefined) req.verifyReadData = verifyReadData;
  if (tenant !== undefined) req.tenant = tenant;
  return req;
}

/** A snapshot schedule request, checked for form. */
export function checkSnapshotScheduleRequest(raw: unknown): SnapshotScheduleRequest {
  const o = fieldsOf(raw, ['disk', 'everyMs', 'cron', 'keep']);
  const keep = integer(o, 'keep', 1, keepMax);
  if (keep === undefined) throw bad(`Missing field 'keep' (1 to ${keepMax})`);
  return { disk: string(o, 'disk'), keep, ...recurrenceOf(o) };
}

const location = (kind: string, id: string): Record<string, string> => ({ location: `${prefix}/${kind}/${encodeURIComponent(id)}` });

/** The schedule routes. */
export const scheduleRoutes: Route[] = [
  { method: 'GET', path: `${prefix}/backup-schedules`, body: null, handle: (_p, _b, ctx) => ({ status: 200, body: service(ctx).listBackup() }) },
  {
    method: 'POST',
    path: `${prefix}/backup-schedules`,
    // Read as JSON; checked by checkBackupScheduleRequest.
    body: { disks: 'strings', repo: 'string', passwordFile: 'string' },
    handle: async (_p, raw, ctx) => {
      const info = await service(ctx).addBackup(checkBackupScheduleRequest(raw));
      return { status: 201, body: info, headers: location('backup-schedules', info.id) };
    },
  },
  { method: 'GET', path: `${prefix}/backup-schedules/{id}`, body: null, handle: (p, _b, ctx) => ({ status: 200, body: service(ctx).getBackup(p.id) }) },
  {
    method: 'DELETE',
    path: `${prefix}/backup-schedules/{id}`,
    body: null,
    handle: async (p, _b, ctx) => {
      await service(ctx).removeBackup(p.id);
      return { status: 204 };
    },
  },
  { method: 'GET', path: `${prefix}/snapshot-schedules`, body: null, handle: (_p, _b, ctx) => ({ status: 200, body: service(ctx).listSnapshot() }) },
  {
    method: 'POST',
    path: `${prefix}/snapshot-schedules`,
    // Read as JSON; checked by checkSnapshotScheduleRequest.
    body: { disk: 'string' },
    handle: async (_p, raw, ctx) => {
      const info = await service(ctx).addSnapshot(checkSnapshotScheduleRequest(raw));
      return { status: 201, body: info, headers: location('snapshot-schedules', info.id) };
    },
  },
  { method: 'GET', path: `${prefix}/snapshot-schedules/{id}`, body: null, handle: (p, _b, ctx) => ({ status: 200, body: service(ctx).getSnapshot(p.id) }) },
  {
    method: 'DELETE',
    path: `${prefix}/snapshot-schedules/{id}`,
    body: null,
    handle: async (p, _b, ctx) => {
      await service(ctx).removeSnapshot(p.id);
      return { status: 204 };
    },
  },
];

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });
const idParam = { name: 'id', in: 'path', required: true, description: 'Schedule id (8 hex digits)', schema: { type: 'string' } };
const bodyErrors = { '400': errorRef('BadRequest'), '413': errorRef('BodyTooLarge'), '415': errorRef('UnsupportedMediaType') };
const commonErrors = { '500': errorRef('Internal'), '503': errorRef('Unavailable') };

/** The four routes of one kind of schedule. */
function schedulePaths(kind: 'backup' | 'snapshot', what: string, addDescription: string, addErrors: Record<string, unknown>) {
  const Name = kind === 'backup' ? 'Backup' : 'Snapshot';
  return {
    [`/api/v1/${kind}-schedules`]: {
      get: {
        operationId: `list${Name}Schedules`,
        summary: `The node's ${what} schedules, with each one's last run and next run`,
        responses: { '200': { description: `Every ${what} schedule, oldest first`, ...json({ type: 'array', items: ref(`${Name}ScheduleInfo`) }) }, ...commonErrors },
      },
      post: {
        operationId: `add${Name}Schedule`,
        summary: `Add a ${what} schedule; the node keeps it in its data directory and runs it`,
        description: addDescription,
        requestBody: { required: true, ...json(ref(`${Name}ScheduleRequest`)) },
        responses: {
          '201': { description: `The new schedule; \`Location: /api/v1/${kind}-schedules/ID\``, ...json(ref(`${Name}ScheduleInfo`)) },
          ...bodyErrors,
          ...addErrors,
          '409': errorRef('Conflict'),
          ...commonErrors,
        },
      },
    },
    [`/api/v1/${kind}-schedules/{id}`]: {
      get: {
        operationId: `get${Name}Schedule`,
        summary: `One ${what} schedule`,
        parameters: [idParam],
        responses: { '200': { description: 'The schedule', ...json(ref(`${Name}ScheduleInfo`)) }, '404': errorRef('NotFound'), ...commonErrors },
      },
      delete: {
        operationId: `remove${Name}Schedule`,
        summary: `Remove a ${what} schedule: it runs no more (a run under way goes on to its end); what it made stays`,
        parameters: [idParam],
        responses: { '204': { description: 'Removed' }, '404': errorRef('NotFound'), '409': errorRef('Conflict'), ...commonErrors },
      },
    },
  };
}

/** OpenAPI paths of the schedule routes. */
export const schedulePathsDoc = {
  ...schedulePaths(
    'backup',
    'backup',
    'Checks that the disks exist, that the password file is readable by its owner only and opens the repository, then keeps the schedule (the password file\'s path, never the password). ' +
      'Each run backs the disks up as `POST /backups` would (one backup at a time on the node: a run waits for one running), then, with a retention policy, forgets the restore points of its disks the policy does not keep and prunes, ' +
      'then, when `verifyEveryMs` has passed since the last, verifies the repository. Due times missed while the node was down are one run at its start; two runs of a schedule never overlap.',
    { '403': errorRef('WrongPassword'), '404': errorRef('NotFound'), '502': errorRef('Repository') },
  ),
  ...schedulePaths(
    'snapshot',
    'snapshot',
    'Each run takes a snapshot of the disk named `sched-ID-TIME`, then deletes the oldest of the schedule\'s own snapshots (those named `sched-ID-`) beyond `keep`; no other snapshot is touched.',
    { '404': errorRef('NotFound') },
  ),
};

const recurrenceProperties = {
  everyMs: { type: 'integer', minimum: periodMsMin, maximum: periodMsMax, description: 'Run every so long from the creation of the schedule; give this or `cron`' },
  cron: { type: 'string', description: 'Run at the minutes of a 5-field cron expression (minute hour day-of-month month day-of-week), evaluated in UTC; give this or `everyMs`' },
};
const nullableInteger = (description: string) => ({ type: ['integer', 'null'], description });
const runProperties = {
  startedMs: { type: 'integer' },
  finishedMs: { type: 'integer' },
  result: { type: 'string', enum: ['ok', 'failed'] satisfies ScheduleResult[] },
  error: { type: ['string', 'null'], description: 'Why the run failed, null when ok' },
};
const stateProperties = {
  createdMs: { type: 'integer' },
  running: { type: 'boolean', description: 'Whether a run is under way' },
  nextRunMs: nullableInteger('When the next run starts; null on a node that runs no schedules (read-only)'),
  runsOk: { type: 'integer', description: 'Runs since the schedule was added that succeeded' },
  runsFailed: { type: 'integer', description: 'Runs since the schedule was added that failed' },
};

/** OpenAPI schemas of the schedule routes. */
export const scheduleSchemas = {
  BackupScheduleRequest: wireObject<BackupScheduleRequest>()({
    required: ['disks', 'repo', 'passwordFile'],
    additionalProperties: false,
    properties: {
      disks: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: disksMax, uniqueItems: true },
      repo: { type: 'string', description: 'Repository as the node sees it: an absolute directory path or s3://bucket/prefix (AWS variables from the node\'s environment)' },
      passwordFile: { type: 'string', description: "Absolute path on the node of a file holding the repository's password, readable by its owner only; the node keeps the path, never the password" },
      ...recurrenceProperties,
      keepLast: { type: 'integer', minimum: 0, maximum: keepMax, description: 'Retention per disk after each run: the newest N' },
      keepDaily: { type: 'integer', minimum: 0, maximum: keepMax, description: 'The newest of each of the last N UTC days' },
      keepWeekly: { type: 'integer', minimum: 0, maximum: keepMax, description: 'The newest of each of the last N ISO weeks' },
      verifyEveryMs: { type: 'integer', minimum: periodMsMin, maximum: periodMsMax, description: 'Verify the repository after a run when the last verify is at least this old' },
      verifyReadData: { type: 'boolean', description: 'That verify reads every pack too; default false' },
      tenant: { type: 'string' },
    },
  }),
  BackupScheduleRun: wireObject<BackupScheduleRun>()({
    required: ['startedMs', 'finishedMs', 'result', 'error', 'job', 'restorePoints', 'forgotten', 'prune', 'verify'],
    properties: {
      ...runProperties,
      job: { type: ['string', 'null'], description: 'The backup job it ran (GET /backup-jobs), or null if it started none' },
      restorePoints: { type: 'array', items: { type: 'string' }, description: 'Restore points made, one per disk' },
      forgotten: { type: 'integer', description: 'Restore points of the disks the retention forgot' },
      prune: {
        type: ['object', 'null'],
        required: ['packsMarked', 'packsDeleted', 'bytesFreed'],
        properties: { packsMarked: { type: 'integer' }, packsDeleted: { type: 'integer' }, bytesFreed: { type: 'integer' } },
        description: 'What the prune after the retention did; null when none ran',
      },
      verify: {
        type: ['object', 'null'],
        required: ['readData', 'faults'],
        properties: { readData: { type: 'boolean' }, faults: { type: 'integer' } },
        description: 'The verify run after it, if one was due; null when none ran',
      },
    },
  }),
  BackupScheduleInfo: wireObject<BackupScheduleInfo>()({
    required: ['id', 'disks', 'repo', 'passwordFile', 'everyMs', 'cron', 'keepLast', 'keepDaily', 'keepWeekly', 'verifyEveryMs', 'verifyReadData', 'tenant', 'createdMs', 'running', 'nextRunMs', 'lastRun', 'lastVerifyMs', 'runsOk', 'runsFailed'],
    properties: {
      id: { type: 'string' },
      disks: { type: 'array', items: { type: 'string' } },
      repo: { type: 'string' },
      passwordFile: { type: 'string' },
      everyMs: nullableInteger('The period, or null for a cron schedule'),
      cron: { type: ['string', 'null'] },
      keepLast: nullableInteger('null: no such rule'),
      keepDaily: nullableInteger('null: no such rule'),
      keepWeekly: nullableInteger('null: no such rule'),
      verifyEveryMs: nullableInteger('null: no verify'),
      verifyReadData: { type: 'boolean' },
      tenant: { type: ['string', 'null'] },
      ...stateProperties,
      lastRun: { oneOf: [ref('BackupScheduleRun'), { type: 'null' }] },
      lastVerifyMs: nullableInteger('When the last verify after a run started'),
    },
  }),
  SnapshotScheduleRequest: wireObject<SnapshotScheduleRequest>()({
    required: ['disk', 'keep'],
    additionalProperties: false,
    properties: {
      disk: { type: 'string' },
      ...recurrenceProperties,
      keep: { type: 'integer', minimum: 1, maximum: keepMax, description: "How many of the schedule's own snapshots are kept" },
    },
  }),
  SnapshotScheduleRun: wireObject<SnapshotScheduleRun>()({
    required: ['startedMs', 'finishedMs', 'result', 'error', 'snapshot', 'deleted'],
    properties: {
      ...runProperties,
      snapshot: { type: ['string', 'null'], description: 'The snapshot taken, or null' },
      deleted: { type: 'array', items: { type: 'string' }, description: "The schedule's older snapshots deleted" },
    },
  }),
  SnapshotScheduleInfo: wireObject<SnapshotScheduleInfo>()({
    required: ['id', 'disk', 'everyMs', 'cron', 'keep', 'createdMs', 'snapshotPrefix', 'running', 'nextRunMs', 'lastRun', 'runsOk', 'runsFailed'],
    properties: {
      id: { type: 'string' },
      disk: { type: 'string' },
      everyMs: nullableInteger('The period, or null for a cron schedule'),
      cron: { type: ['string', 'null'] },
      keep: { type: 'integer' },
      snapshotPrefix: { type: 'string', description: 'Name prefix of the snapshots it takes: `sched-ID-`' },
      ...stateProperties,
      lastRun: { oneOf: [ref('SnapshotScheduleRun'), { type: 'null' }] },
    },
  }),
};
