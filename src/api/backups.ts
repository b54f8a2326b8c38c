/**
 * POST /api/v1/backups (docs/api.md, "Backups"): a disk backup the node runs itself, its events
 * streamed back as JSON lines. The node opens the repository with the password (and, for s3://,
 * the AWS variables) the request carries, and keeps them in memory only.
 */
import type { ServerResponse } from 'node:http';
import { awsVariables } from '../hydrate/index.ts';
import { ApiError, ApiErrorCode, toApiError } from './errors.ts';
import type { BackupRunner, Reply, Route, RequestContext } from './route.ts';
import { ApiClient, ClientError } from './client/index.ts';
import { checkBody } from './validate.ts';
import { streamClient, writeJsonLine } from './http.ts';
import { backupOutcomeWire, backupProgressWire } from './to-wire.ts';
import { wireObject } from './schema.ts';
import { API_PREFIX as prefix, type BackupEvent, type BackupProgress, type BackupRequest } from './client/wire.ts';

/** Most disks one backup takes (a consistency group). */
const disksMax = 64;

function service(ctx: RequestContext): BackupRunner {
  if (ctx.backups === null) throw new ApiError(ApiErrorCode.NO_ROUTE, 'This server runs no backups');
  return ctx.backups;
}

/** The optional fields of a backup request, checked; the required ones go to checkBody. */
function checkRequest(raw: unknown): BackupRequest & { env: Record<string, string> } {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ApiError(ApiErrorCode.BAD_REQUEST, 'The body must be a JSON object');
  const { env, tenant, ...rest } = raw as Record<string, unknown>;
  const fields = checkBody(rest, { disks: 'strings', repo: 'string', password: 'string' });
  if (fields.disks.length === 0 || fields.disks.length > disksMax) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field 'disks' must name 1 to ${disksMax} disks`);
  if (new Set(fields.disks).size !== fields.disks.length) throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'disks' names a disk twice");
  if (env !== undefined && (env === null || typeof env !== 'object' || Array.isArray(env) || !Object.values(env).every((v) => typeof v === 'string'))) {
    throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'env' must be an object of strings");
  }
  const unknown = Object.keys(env ?? {}).find((k) => !(awsVariables as readonly string[]).includes(k));
  if (unknown !== undefined) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Variable ${unknown} is not one the node takes; expected some of ${awsVariables.join(', ')}`);
  if (tenant !== undefined && typeof tenant !== 'string') throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'tenant' must be a string");
  return { ...fields, env: (env ?? {}) as Record<string, string>, ...(tenant !== undefined ? { tenant } : {}) };
}

/** The event to send for one the runner reported, converted to the wire's shape. */
function eventWire(e: { event: string } & Record<string, unknown>): BackupEvent | null {
  if (e.event === 'snapshot') return { event: 'snapshot', name: String(e.name) };
  if (e.event === 'progress') return { event: 'progress', progress: backupProgressWire(e.progress as BackupProgress) };
  if (e.event === 'note') return { event: 'note', message: String(e.message) };
  return null;
}

/** Writes one JSON line (an event of the backup); resolves once the socket took it. */
const writeLine = (res: ServerResponse, value: BackupEvent): Promise<void> => writeJsonLine(res, value);

/** The backup routes. */
export const backupRoutes: Route[] = [
  {
    method: 'POST',
    path: `${prefix}/backups`,
    // Read as JSON; checked by checkRequest (`env` and `tenant` are optional).
    body: { disks: 'strings', repo: 'string', password: 'string' },
    handle: async (_p, raw, ctx) => {
      const runner = service(ctx);
      const req = checkRequest(raw);
      // In a cluster a backup runs at the head of its disks (it snapshots them through their
      // chains): here if this node heads them all, else at their head, its lines passed on.
      const head = headOf(ctx, req.disks);
      if (head !== null) return proxied(head, req, ctx);
      if (runner.busy) throw new ApiError(ApiErrorCode.BUSY, 'A backup is running on this node already; try again when it is done');
      return {
        status: 200,
        headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' },
        async stream(res: ServerResponse) {
          // A client that goes away cancels the backup (it fails as a backup killed half-way
          // would not: its new snapshots are deleted again).
          const client = streamClient(res);
          try {
            const { outcomes } = await runner.run(
              req,
              (e) => {
                if (e.event === 'progress' && !client.progressDue()) return;
                const wire = eventWire(e);
                if (wire !== null) void writeLine(res, wire);
              },
              client.signal,
            );
            await writeLine(res, { event: 'done', outcomes: outcomes.map(backupOutcomeWire) });
          } catch (err) {
            // The code a client sees is the API's, as in an error reply (errors.ts maps it); the
            // message stays the backup's own, which says what failed. The reply is under way
            // (200): the error goes in its last line, and in the log by the same request id.
            const { error } = toApiError(err);
            const message = (err as Error)?.message ?? String(err);
            ctx.log.warn(`backup failed: ${message}`, { code: error.code, disks: req.disks, err });
            await writeLine(res, { event: 'error', code: error.code, message, requestId: ctx.requestId });
          }
          res.end();
        },
      };
    },
  },
];

/** The API address of the one node that heads every disk of a cluster backup, null when it is this node (or there is no cluster). */
function headOf(ctx: RequestContext, disks: string[]): string | null {
  const r = ctx.cluster;
  if (r === null) return null;
  const heads = new Set(disks.map((d) => {
    r.info(d);
    return r.headApi(d);
  }));
  if (heads.size > 1) throw new ApiError(ApiErrorCode.INVALID, `the disks ${disks.join(', ')} have different heads: back them up one at a time (a backup runs at the head of its disks)`);
  return [...heads][0] ?? null;
}

/** A backup run at the head: its lines passed on as they come. */
function proxied(head: string, req: ReturnType<typeof checkRequest>, ctx: RequestContext): Reply {
  return {
    status: 200,
    headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' },
    async stream(res: ServerResponse) {
      try {
        const outcomes = await new ApiClient(`http://${head}`).runBackup(req, (e) => void writeLine(res, e));
        await writeLine(res, { event: 'done', outcomes });
      } catch (err) {
        const code = err instanceof ClientError && err.nodeCode !== null ? err.nodeCode : ApiErrorCode.UNAVAILABLE;
        await writeLine(res, { event: 'error', code, message: `at the disks' head ${head}: ${(err as Error).message}`, requestId: ctx.requestId });
      }
      res.end();
    },
  };
}

const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });

/** OpenAPI paths of the backup routes. */
export const backupPaths = {
  '/api/v1/backups': {
    post: {
      operationId: 'runBackup',
      summary: 'Back up disks of this node into a repository, run by the node; its events stream back as JSON lines',
      description:
        'The node takes one snapshot of the disks, backs each up (incrementally from the newest restore point of the disk whose base snapshot it still has) ' +
        'and answers with lines: `{"event":"snapshot","name"}` once the snapshot is taken, `{"event":"progress","progress"}` at most 4 times a second, ' +
        '`{"event":"note","message"}`, then `{"event":"done","outcomes":[…]}` (what `tessera backup create --json` prints) or `{"event":"error","code","message"}`. ' +
        'Closing the connection cancels the backup. One backup runs at a time; the repository and its worker threads stay open for a minute after one.',
      requestBody: {
        required: true,
        ...json(
          wireObject<BackupRequest>()({
            required: ['disks', 'repo', 'password'],
            additionalProperties: false,
            properties: {
              disks: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: disksMax },
              repo: { type: 'string', description: 'Repository as the node sees it: an absolute directory path or s3://bucket/prefix' },
              password: { type: 'string', description: 'Repository password; kept in memory only' },
              env: { type: 'object', additionalProperties: { type: 'string' }, description: 'AWS_* variables for an s3:// repository' },
              tenant: { type: 'string' },
            },
          }),
        ),
      },
      responses: {
        '200': { description: 'The backup\'s events, one JSON object per line', content: { 'application/x-ndjson': { schema: { type: 'string' } } } },
        '400': errorRef('BadRequest'),
        '503': errorRef('Unavailable'),
        '500': errorRef('Internal'),
      },
    },
  },
};
