/**
 * Routes of instant restores (docs/api.md, "Instant restores"): start, list, status, resume,
 * cancel; the mapping of their errors; and which requests would change a disk being restored.
 */
import type { InstantRestores } from '../hydrate/index.ts';
import { ApiError, ApiErrorCode } from './errors.ts';
import { checkBody, type BodySpec } from './validate.ts';
import type { RequestContext, Route } from './routes.ts';

const prefix = '/api/v1';

function service(ctx: RequestContext): InstantRestores {
  if (ctx.restores === null) throw new ApiError(ApiErrorCode.NO_ROUTE, 'This server has no instant restores');
  return ctx.restores;
}

/**
 * Checks a body with string fields `spec` plus an optional `env` object of strings (the AWS
 * variables; the hydrate subsystem decides which names it takes).
 */
function checkRestoreBody<S extends BodySpec>(raw: unknown, spec: S): { fields: Record<keyof S, string>; env: Record<string, unknown> } {
  let env: Record<string, unknown> = {};
  if (raw !== null && typeof raw === 'object' && !Array.isArray(raw) && Object.hasOwn(raw, 'env')) {
    const { env: e, ...rest } = raw as Record<string, unknown>;
    if (e === null || typeof e !== 'object' || Array.isArray(e)) throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'env' must be an object of strings");
    env = e as Record<string, unknown>;
    raw = rest;
  }
  return { fields: checkBody(raw, spec) as Record<keyof S, string>, env };
}

const startBody = { disk: 'string', repo: 'string', snapshot: 'string', password: 'string' } as const;
const resumeBody = { password: 'string' } as const;


const location = (disk: string): Record<string, string> => ({ location: `${prefix}/instant-restores/${encodeURIComponent(disk)}` });

/** The instant restore routes. */
export const instantRestoreRoutes: Route[] = [
  {
    method: 'GET',
    path: `${prefix}/instant-restores`,
    body: null,
    handle: (_p, _b, ctx) => ({ status: 200, body: service(ctx).list() }),
  },
  {
    method: 'POST',
    path: `${prefix}/instant-restores`,
    body: startBody,
    handle: async (_p, raw, ctx) => {
      const { fields, env } = checkRestoreBody(raw, startBody);
      const info = await service(ctx).start({ ...fields, env });
      return { status: 201, body: info, headers: location(info.disk) };
    },
  },
  {
    method: 'GET',
    path: `${prefix}/instant-restores/{disk}`,
    body: null,
    handle: (p, _b, ctx) => ({ status: 200, body: service(ctx).get(p.disk) }),
  },
  {
    method: 'POST',
    path: `${prefix}/instant-restores/{disk}/resume`,
    body: resumeBody,
    handle: async (p, raw, ctx) => {
      const { fields, env } = checkRestoreBody(raw, resumeBody);
      return { status: 200, body: await service(ctx).resume(p.disk, { password: fields.password, env }) };
    },
  },
  {
    method: 'DELETE',
    path: `${prefix}/instant-restores/{disk}`,
    body: null,
    handle: async (p, _b, ctx) => {
      await service(ctx).cancel(p.disk);
      return { status: 204 };
    },
  },
];

/**
 * The disks a request would change, for the check that refuses changes to disks being restored:
 * every non-GET route with a `{name}` (but a flush, which changes nothing), and the disks of a
 * group snapshot.
 */
export function disksChangedBy(method: string, path: string, params: Record<string, string>, body: unknown): string[] {
  if (method === 'GET') return [];
  if (path === `${prefix}/snapshots`) {
    const disks = (body as { disks?: unknown } | undefined)?.disks;
    return Array.isArray(disks) ? disks.filter((d): d is string => typeof d === 'string') : [];
  }
  if (params.name === undefined || path.endsWith('/flush')) return [];
  return [params.name];
}

/** Refuses (with the HydrateError toApiError sends) a change to a disk being restored. */
export function guardDisk(restores: InstantRestores, disk: string, what: string): void {
  restores.checkDiskChange(disk, what);
}

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });
const diskParam = { name: 'disk', in: 'path', required: true, description: 'Disk being restored', schema: { type: 'string' } };
const common = { '500': errorRef('Internal'), '503': errorRef('Unavailable') };
const repoErrors = { '403': errorRef('WrongPassword'), '502': errorRef('Repository') };

/** OpenAPI paths of the instant restore routes. */
export const instantRestorePaths = {
  '/api/v1/instant-restores': {
    get: {
      operationId: 'listInstantRestores',
      summary: 'Instant restores of this node: unfinished ones, and those done since the node started',
      responses: { '200': { description: 'Restores by disk name', ...json({ type: 'array', items: ref('InstantRestoreInfo') }) }, ...common },
    },
    post: {
      operationId: 'startInstantRestore',
      summary: 'Create a disk from a restore point and export it at once; chunks are copied in behind the reads',
      description:
        'The node opens the repository with the password (and, for s3://, the AWS variables in `env`), keeps them in memory only, ' +
        'creates the disk and starts copying. When the reply comes the disk is exported over NBD and reads and writes work.',
      requestBody: { required: true, ...json(ref('InstantRestoreRequest')) },
      responses: {
        '201': { description: 'The restore', ...json(ref('InstantRestoreInfo')) },
        '400': errorRef('BadRequest'),
        '404': errorRef('NotFound'),
        '409': errorRef('Conflict'),
        ...repoErrors,
        ...common,
      },
    },
  },
  '/api/v1/instant-restores/{disk}': {
    get: {
      operationId: 'getInstantRestore',
      summary: 'Progress of one restore',
      parameters: [diskParam],
      responses: { '200': { description: 'The restore', ...json(ref('InstantRestoreInfo')) }, '404': errorRef('NotFound'), ...common },
    },
    delete: {
      operationId: 'cancelInstantRestore',
      summary: 'Stop an unfinished restore and delete its disk',
      parameters: [diskParam],
      responses: { '204': { description: 'Cancelled; the disk is deleted' }, '404': errorRef('NotFound'), '409': errorRef('Conflict'), ...common },
    },
  },
  '/api/v1/instant-restores/{disk}/resume': {
    post: {
      operationId: 'resumeInstantRestore',
      summary: 'Give the password again to a restore that waits for it after a node restart',
      parameters: [diskParam],
      requestBody: { required: true, ...json(ref('ResumeRequest')) },
      responses: { '200': { description: 'The restore', ...json(ref('InstantRestoreInfo')) }, '400': errorRef('BadRequest'), '404': errorRef('NotFound'), ...repoErrors, ...common },
    },
  },
};

const envSchema = {
  type: 'object',
  additionalProperties: { type: 'string' },
  description: 'AWS_* variables for an s3:// repository (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, AWS_REGION, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)',
};

/** OpenAPI schemas of the instant restore routes. */
export const instantRestoreSchemas = {
  InstantRestoreRequest: {
    type: 'object',
    required: ['disk', 'repo', 'snapshot', 'password'],
    additionalProperties: false,
    properties: {
      disk: { type: 'string', description: 'Name of the new disk' },
      repo: { type: 'string', description: 'Repository: an absolute directory path or s3://bucket/prefix' },
      snapshot: { type: 'string', description: 'Restore point id or a unique prefix of at least 4 hex digits' },
      password: { type: 'string', description: 'Repository password; kept in memory only' },
      env: envSchema,
    },
  },
  ResumeRequest: {
    type: 'object',
    required: ['password'],
    additionalProperties: false,
    properties: { password: { type: 'string' }, env: envSchema },
  },
  InstantRestoreInfo: {
    type: 'object',
    required: ['disk', 'repo', 'snapshot', 'state', 'imageBytes', 'chunkSizeBytes', 'chunks', 'chunksZero', 'chunksCopied', 'chunksMissing', 'bytesCopied', 'chunksFetchedForClients', 'bytesRead', 'startedMs', 'finishedMs', 'lastError'],
    properties: {
      disk: { type: 'string' },
      repo: { type: 'string' },
      snapshot: { type: ['string', 'null'], description: 'Restore point id (null for a damaged state file)' },
      state: { type: 'string', enum: ['copying', 'retrying', 'needs-password', 'done', 'damaged'] },
      imageBytes: { type: 'integer', description: 'Image size in the restore point' },
      chunkSizeBytes: { type: 'integer' },
      chunks: { type: 'integer' },
      chunksZero: { type: 'integer', description: 'Chunks that are all zeroes: nothing to copy' },
      chunksCopied: { type: 'integer' },
      chunksMissing: { type: 'integer' },
      bytesCopied: { type: 'integer' },
      chunksFetchedForClients: { type: 'integer', description: 'Chunks a client needed before the copier got to them' },
      bytesRead: { type: 'integer', description: 'Bytes read from the repository since the node started' },
      startedMs: { type: 'integer' },
      finishedMs: { type: ['integer', 'null'] },
      lastError: { type: ['string', 'null'], description: 'Why the copier is retrying (or the state is damaged)' },
    },
  },
};
