/**
 * Backup routes (docs/api.md, "Backups"): POST /api/v1/backups starts a disk backup the node runs
 * itself as a job, and follows it; GET /api/v1/backup-jobs lists the jobs, GET
 * /api/v1/backup-jobs/{id} shows or follows one, POST /api/v1/backup-jobs/{id}/cancel cancels
 * one. The node opens the repository with the password (and, for s3://, the AWS variables) the
 * request carries, and keeps them in memory only: a job's record shows neither. In a cluster a
 * backup runs at the head of its disks, and any node answers for the jobs of every node up.
 */
import type { ServerResponse } from 'node:http';
import { awsVariables } from '../hydrate/index.ts';
import { ApiError, ApiErrorCode, toApiError, type ApiErrorCodeValue } from './errors.ts';
import type { BackupJobView, BackupJobViewEvent, BackupRunner, Reply, RequestContext, Route } from './route.ts';
import { ApiClient, ClientError } from './client/index.ts';
import { checkBody, checkQuery } from './validate.ts';
import { streamClient, writeJsonLine } from './http.ts';
import { backupOutcomeWire, backupProgressWire } from './to-wire.ts';
import { wireObject } from './schema.ts';
import { API_PREFIX as prefix, type BackupEvent, type BackupJob, type BackupJobState, type BackupOutcome, type BackupProgress, type BackupRequest } from './client/wire.ts';

/** Most disks one backup takes (a consistency group). */
const disksMax = 64;

/** How long a node waits for another's answer about its jobs (listing, finding one). */
const peerJobsTimeoutMs = 5_000;

const ndjson = { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' };

function service(ctx: RequestContext): BackupRunner {
  if (ctx.backups === null) throw new ApiError(ApiErrorCode.NO_ROUTE, 'This server runs no backups');
  return ctx.backups;
}

/** A backup request, checked: the required fields by checkBody, the optional ones here. */
type CheckedRequest = BackupRequest & { env: Record<string, string> };

/** The optional fields of a backup request, checked; the required ones go to checkBody. */
function checkRequest(raw: unknown): CheckedRequest {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ApiError(ApiErrorCode.BAD_REQUEST, 'The body must be a JSON object');
  const { env, tenant, rateBytesPerSecond: rate, ...rest } = raw as Record<string, unknown>;
  const fields = checkBody(rest, { disks: 'strings', repo: 'string', password: 'string' });
  if (fields.disks.length === 0 || fields.disks.length > disksMax) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field 'disks' must name 1 to ${disksMax} disks`);
  if (new Set(fields.disks).size !== fields.disks.length) throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'disks' names a disk twice");
  if (env !== undefined && (env === null || typeof env !== 'object' || Array.isArray(env) || !Object.values(env).every((v) => typeof v === 'string'))) {
    throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'env' must be an object of strings");
  }
  const unknown = Object.keys(env ?? {}).find((k) => !(awsVariables as readonly string[]).includes(k));
  if (unknown !== undefined) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Variable ${unknown} is not one the node takes; expected some of ${awsVariables.join(', ')}`);
  if (tenant !== undefined && typeof tenant !== 'string') throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'tenant' must be a string");
  if (rate !== undefined && !(typeof rate === 'number' && Number.isSafeInteger(rate) && rate > 0)) {
    throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'rateBytesPerSecond' must be a positive whole number of bytes a second");
  }
  return { ...fields, env: (env ?? {}) as Record<string, string>, ...(tenant !== undefined ? { tenant } : {}), ...(rate !== undefined ? { rateBytesPerSecond: rate as number } : {}) };
}

/** `?follow=true|false`, default `fallback`. */
function followOf(value: string | undefined, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (value === 'true' || value === 'false') return value === 'true';
  throw new ApiError(ApiErrorCode.BAD_REQUEST, "Query parameter 'follow' must be true or false");
}

/** `?scope=node`: this node's jobs only (what nodes of a cluster ask each other); else, in a cluster, every node's. */
function nodeScope(value: string | undefined): boolean {
  if (value === undefined) return false;
  if (value === 'node') return true;
  throw new ApiError(ApiErrorCode.BAD_REQUEST, "Query parameter 'scope' must be node");
}

/** The error a failed or cancelled job shows: the API's code (as an error reply would carry it), the failure's own message. */
function jobError(state: 'failed' | 'cancelled', err: Error): { code: ApiErrorCodeValue; message: string } {
  return { code: state === 'cancelled' ? ApiErrorCode.CANCELLED : toApiError(err).error.code, message: err.message };
}

/** A job on the wire. */
function backupJobWire(job: BackupJobView, ctx: RequestContext): BackupJob {
  const progress = job.progress.map(backupProgressWire);
  const end = job.end;
  return {
    id: job.id,
    node: ctx.cluster?.coord.nodeId ?? null,
    disks: [...job.facts.disks],
    repo: job.facts.repo,
    tenant: job.facts.tenant,
    rateBytesPerSecond: job.facts.rateBytesPerSecond,
    state: job.state,
    snapshot: job.snapshot,
    bytesRead: progress.reduce((n, p) => n + p.bytesRead, 0),
    bytesToRead: progress.reduce((n, p) => n + p.bytesToRead, 0),
    progress,
    startedMs: job.startedMs,
    finishedMs: job.finishedMs,
    outcomes: end?.state === 'done' ? end.outcomes.map(backupOutcomeWire) : null,
    error: end !== null && end.state !== 'done' ? jobError(end.state, end.error) : null,
  };
}

/** An event a follower hears, as the wire's line. */
function eventWire(e: BackupJobViewEvent, ctx: RequestContext): BackupEvent {
  switch (e.event) {
    case 'snapshot':
      return { event: 'snapshot', name: e.name };
    case 'progress':
      return { event: 'progress', progress: backupProgressWire(e.progress) };
    case 'note':
      return { event: 'note', message: e.message };
    case 'done':
      return { event: 'done', outcomes: e.outcomes.map(backupOutcomeWire) };
    case 'error':
      return { event: 'error', ...jobError(e.state, e.error), requestId: ctx.requestId };
  }
}

/**
 * A job's lines: the job, what it did so far, then its events (progress at most 4 times a
 * second) up to its end. A client that goes away stops following; the job goes on.
 */
function followReply(job: BackupJobView, ctx: RequestContext): Reply {
  return {
    status: 200,
    headers: ndjson,
    async stream(res: ServerResponse) {
      const client = streamClient(res);
      const write = (e: BackupEvent): Promise<void> => writeJsonLine(res, e);
      void write({ event: 'job', job: backupJobWire(job, ctx) });
      await new Promise<void>((resolve) => {
        let ended = false;
        const stop = job.follow((e) => {
          if (ended || (e.event === 'progress' && !client.progressDue())) return;
          ended = e.event === 'done' || e.event === 'error';
          const written = write(eventWire(e, ctx));
          if (ended) void written.then(resolve);
        });
        const gone = (): void => {
          stop();
          resolve();
        };
        if (client.signal.aborted) gone();
        else client.signal.addEventListener('abort', gone, { once: true });
      });
      res.end();
    },
  };
}

/** The backup routes. */
export const backupRoutes: Route[] = [
  {
    method: 'POST',
    path: `${prefix}/backups`,
    // Read as JSON; checked by checkRequest (`env`, `tenant` and `rateBytesPerSecond` are optional).
    body: { disks: 'strings', repo: 'string', password: 'string' },
    handle: async (_p, raw, ctx) => {
      const runner = service(ctx);
      const follow = followOf(checkQuery(ctx.query, { follow: { type: 'string', required: false } }).follow, true);
      const req = checkRequest(raw);
      // In a cluster a backup runs at the head of its disks (it snapshots them through their
      // chains): here if this node heads them all, else at their head, its answer passed on.
      const head = headOf(ctx, req.disks);
      if (head !== null) return follow ? proxied(head, `the disks' head ${head}`, ctx, (client, onEvent, signal) => client.runBackup(req, onEvent, { signal })) : { status: 202, body: await atPeer(head, (c) => c.startBackupJob(req)) };
      if (runner.busy) throw new ApiError(ApiErrorCode.BUSY, 'A backup is running on this node already; try again when it is done');
      // An unknown disk is refused here (404), before a job exists.
      const job = runner.start(req);
      return follow ? followReply(job, ctx) : { status: 202, body: backupJobWire(job, ctx), headers: { location: `${prefix}/backup-jobs/${job.id}` } };
    },
  },
  {
    method: 'GET',
    path: `${prefix}/backup-jobs`,
    body: null,
    handle: async (_p, _b, ctx) => {
      const local = nodeScope(checkQuery(ctx.query, { scope: { type: 'string', required: false } }).scope);
      const here = service(ctx).jobs().map((j) => backupJobWire(j, ctx));
      if (local || ctx.cluster === null) return { status: 200, body: here };
      const there = await Promise.all(
        peers(ctx).map((api) =>
          new ApiClient(`http://${api}`).listBackupJobs({ scope: 'node', timeoutMs: peerJobsTimeoutMs }).catch((err: unknown) => {
            // A node that does not answer has its jobs left out: say so in the log, not in the reply.
            ctx.log.warn(`backup jobs of ${api} left out: ${(err as Error).message}`, { peer: api });
            return [];
          }),
        ),
      );
      return { status: 200, body: [...here, ...there.flat()].sort((a, b) => b.startedMs - a.startedMs) };
    },
  },
  {
    method: 'GET',
    path: `${prefix}/backup-jobs/{id}`,
    body: null,
    handle: async (p, _b, ctx) => {
      const q = checkQuery(ctx.query, { follow: { type: 'string', required: false }, scope: { type: 'string', required: false } });
      const follow = followOf(q.follow, false);
      const job = service(ctx).job(p.id);
      if (job !== null) return follow ? followReply(job, ctx) : { status: 200, body: backupJobWire(job, ctx) };
      const { api, found } = await jobElsewhere(ctx, p.id, nodeScope(q.scope));
      if (!follow) return { status: 200, body: found };
      return proxied(api, `node ${api}`, ctx, (client, onEvent, signal) => client.followBackupJob(found.id, onEvent, { scope: 'node', signal }));
    },
  },
  {
    method: 'POST',
    path: `${prefix}/backup-jobs/{id}/cancel`,
    body: null,
    handle: async (p, _b, ctx) => {
      const local = nodeScope(checkQuery(ctx.query, { scope: { type: 'string', required: false } }).scope);
      const job = service(ctx).job(p.id);
      if (job !== null) {
        if (job.state === 'running') ctx.log.info(`backup job ${job.id} cancelled by a client`, { job: job.id });
        await job.cancel();
        return { status: 200, body: backupJobWire(job, ctx) };
      }
      const { api, found } = await jobElsewhere(ctx, p.id, local);
      return { status: 200, body: await atPeer(api, (c) => c.cancelBackupJob(found.id, { scope: 'node' })) };
    },
  },
];

/** The API address of the one node that heads every disk of a cluster backup, null when it is this node (or there is no cluster). */
function headOf(ctx: RequestContext, disks: string[]): string | null {
  const r = ctx.cluster;
  if (r === null) return null;
  r.groupHead(disks);
  return r.headApi(disks[0]);
}

/** In a cluster: the API addresses of the other nodes up. */
function peers(ctx: RequestContext): string[] {
  const c = ctx.cluster;
  if (c === null) return [];
  return c.coord.nodes().filter((n) => n.state === 'up' && n.id !== c.coord.nodeId).map((n) => n.api);
}

/** A job this node does not have: in a cluster (and unless asked of this node only), the node up that has it; else NOT_FOUND. */
async function jobElsewhere(ctx: RequestContext, id: string, local: boolean): Promise<{ api: string; found: BackupJob }> {
  if (!local) {
    for (const api of peers(ctx)) {
      const found = await new ApiClient(`http://${api}`).getBackupJob(id, { scope: 'node', timeoutMs: peerJobsTimeoutMs }).catch(() => null);
      if (found !== null) return { api, found };
    }
  }
  throw new ApiError(ApiErrorCode.NOT_FOUND, `No backup job ${id}${ctx.cluster !== null && !local ? ' on any node up' : ''}: finished jobs are kept for a while, and not across a restart of the node`);
}

/** Asks another node; its refusal keeps its code, a node that does not answer is UNAVAILABLE. */
async function atPeer<T>(api: string, ask: (client: ApiClient) => Promise<T>): Promise<T> {
  try {
    return await ask(new ApiClient(`http://${api}`));
  } catch (err) {
    if (err instanceof ClientError && err.nodeCode !== null) throw new ApiError(err.nodeCode, err.message, { cause: err });
    throw new ApiError(ApiErrorCode.UNAVAILABLE, `the node ${api} did not answer: ${(err as Error).message}`, { cause: err });
  }
}

/** Another node's job lines, passed on as they come; a client that goes away stops following there too. */
function proxied(
  api: string,
  where: string,
  ctx: RequestContext,
  follow: (client: ApiClient, onEvent: (e: BackupEvent) => void, signal: AbortSignal) => Promise<BackupOutcome[]>,
): Reply {
  return {
    status: 200,
    headers: ndjson,
    async stream(res: ServerResponse) {
      const { signal } = streamClient(res);
      try {
        const outcomes = await follow(new ApiClient(`http://${api}`), (e) => void writeJsonLine(res, e), signal);
        await writeJsonLine(res, { event: 'done', outcomes } satisfies BackupEvent);
      } catch (err) {
        if (signal.aborted) return void res.end(); // the client went away: nobody to tell
        const code = err instanceof ClientError && err.nodeCode !== null ? err.nodeCode : ApiErrorCode.UNAVAILABLE;
        await writeJsonLine(res, { event: 'error', code, message: `at ${where}: ${(err as Error).message}`, requestId: ctx.requestId } satisfies BackupEvent);
      }
      res.end();
    },
  };
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });
const jobLines = { description: "The job's events, one JSON object per line", content: { 'application/x-ndjson': { schema: { type: 'string' } } } };
const idParam = { name: 'id', in: 'path', required: true, description: 'Job id, or a unique prefix of at least 4 hex digits', schema: { type: 'string' } };
const scopeParam = { name: 'scope', in: 'query', required: false, description: "`node`: this node's jobs only; without it, in a cluster, those of every node up", schema: { type: 'string', enum: ['node'] } };
const lines =
  'Lines: `{"event":"job","job"}` (a `BackupJob`) first; then what the job did so far and what it does: `{"event":"snapshot","name"}` once the snapshot is taken, ' +
  '`{"event":"progress","progress"}` (a `BackupProgress`) at most 4 times a second, `{"event":"note","message"}`; the last line is `{"event":"done","outcomes":[…]}` ' +
  '(what `tessera backup create --json` prints) or `{"event":"error","code","message","requestId"}` (`CANCELLED` for a job cancelled). Closing the connection stops following; the job goes on.';

/** OpenAPI paths of the backup routes. */
export const backupPaths = {
  '/api/v1/backups': {
    post: {
      operationId: 'runBackup',
      summary: 'Back up disks of this node into a repository: a job the node runs, followed as JSON lines (or answered at once with `follow=false`)',
      description:
        'The node starts a job: it takes one snapshot of the disks, backs each up (incrementally from the newest restore point of the disk whose base snapshot it still has). ' +
        lines +
        ' One job runs at a time; the repository and its worker threads stay open for a minute after one. In a cluster the job runs at the head of the disks.',
      parameters: [{ name: 'follow', in: 'query', required: false, description: '`false`: answer 202 with the job at once instead of following it', schema: { type: 'string', enum: ['true', 'false'] } }],
      requestBody: { required: true, ...json(ref('BackupRequest')) },
      responses: {
        '200': jobLines,
        '202': { description: 'The job, started (with `follow=false`)', ...json(ref('BackupJob')) },
        '400': errorRef('BadRequest'),
        '404': errorRef('NotFound'),
        '503': errorRef('Unavailable'),
        '500': errorRef('Internal'),
      },
    },
  },
  '/api/v1/backup-jobs': {
    get: {
      operationId: 'listBackupJobs',
      summary: 'Backup jobs: the running one and the last 32 finished, newest first (kept in memory: a restart of the node forgets them)',
      parameters: [scopeParam],
      responses: { '200': { description: 'The jobs', ...json({ type: 'array', items: ref('BackupJob') }) }, '500': errorRef('Internal'), '503': errorRef('Unavailable') },
    },
  },
  '/api/v1/backup-jobs/{id}': {
    get: {
      operationId: 'getBackupJob',
      summary: 'One backup job, or (`follow=true`) its JSON lines up to its end',
      description: lines,
      parameters: [idParam, { name: 'follow', in: 'query', required: false, description: '`true`: follow the job as JSON lines', schema: { type: 'string', enum: ['true', 'false'] } }, scopeParam],
      responses: { '200': { description: 'The job; with `follow=true` its events, one JSON object per line', content: { ...json(ref('BackupJob')).content, ...jobLines.content } }, '404': errorRef('NotFound'), '500': errorRef('Internal'), '503': errorRef('Unavailable') },
    },
  },
  '/api/v1/backup-jobs/{id}/cancel': {
    post: {
      operationId: 'cancelBackupJob',
      summary: 'Cancel a backup job; answers once it has ended',
      description:
        'The job fails at its next read as any failed backup does: its new snapshot is deleted, its writer marker removed; packs it uploaded are left for the next backup to reuse or prune to remove. ' +
        'The reply is the job as it ended: `cancelled`, or `done`/`failed` if it had ended before (nothing is changed then).',
      parameters: [idParam, scopeParam],
      responses: { '200': { description: 'The job, ended', ...json(ref('BackupJob')) }, '404': errorRef('NotFound'), '500': errorRef('Internal'), '503': errorRef('Unavailable') },
    },
  },
};

/** OpenAPI schemas of the backup routes. */
export const backupSchemas = {
  BackupRequest: wireObject<BackupRequest>()({
    required: ['disks', 'repo', 'password'],
    additionalProperties: false,
    properties: {
      disks: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: disksMax },
      repo: { type: 'string', description: 'Repository as the node sees it: an absolute directory path or s3://bucket/prefix' },
      password: { type: 'string', description: 'Repository password; kept in memory only, never logged or shown in a job' },
      env: { type: 'object', additionalProperties: { type: 'string' }, description: 'AWS_* variables for an s3:// repository' },
      tenant: { type: 'string' },
      rateBytesPerSecond: { type: 'integer', minimum: 1, description: 'Bytes a second the backup reads of the disks at most; full speed when left out' },
    },
  }),
  BackupProgress: wireObject<BackupProgress>()({
    required: ['disk', 'bytesToRead', 'bytesRead', 'sizeBytes', 'bytesScanned', 'bytesStored', 'chunksNew', 'chunksReused', 'chunksZero'],
    properties: {
      disk: { type: 'string' },
      bytesToRead: { type: 'integer', description: 'Bytes of the chunks the backup reads (allocated, or changed since the parent)' },
      bytesRead: { type: 'integer' },
      sizeBytes: { type: 'integer' },
      bytesScanned: { type: 'integer' },
      bytesStored: { type: 'integer' },
      chunksNew: { type: 'integer' },
      chunksReused: { type: 'integer' },
      chunksZero: { type: 'integer' },
    },
  }),
  BackupJob: wireObject<BackupJob>()({
    required: ['id', 'node', 'disks', 'repo', 'tenant', 'rateBytesPerSecond', 'state', 'snapshot', 'bytesRead', 'bytesToRead', 'progress', 'startedMs', 'finishedMs', 'outcomes', 'error'],
    properties: {
      id: { type: 'string', description: '12 hex digits' },
      node: { type: ['string', 'null'], description: 'In a cluster: the node that runs it (the head of its disks); null on a single node' },
      disks: { type: 'array', items: { type: 'string' } },
      repo: { type: 'string', description: 'Repository as the node sees it (never the password or the AWS variables)' },
      tenant: { type: ['string', 'null'] },
      rateBytesPerSecond: { type: ['integer', 'null'] },
      state: { type: 'string', enum: ['running', 'done', 'failed', 'cancelled'] satisfies BackupJobState[] },
      snapshot: { type: ['string', 'null'], description: 'The node snapshot it took, once taken' },
      bytesRead: { type: 'integer', description: 'Bytes read so far, over the disks begun' },
      bytesToRead: { type: 'integer', description: 'Bytes to read of the disks begun' },
      progress: { type: 'array', items: ref('BackupProgress'), description: 'The last progress of each disk begun' },
      startedMs: { type: 'integer' },
      finishedMs: { type: ['integer', 'null'] },
      outcomes: { type: ['array', 'null'], items: { type: 'object' }, description: 'Once done: one per disk, as `tessera backup create --json` prints them' },
      error: {
        type: ['object', 'null'],
        required: ['code', 'message'],
        additionalProperties: false,
        properties: { code: { type: 'string' }, message: { type: 'string' } },
        description: 'Once failed or cancelled: the API code (`CANCELLED` for a job cancelled) and the failure\'s message',
      },
    },
  }),
};
