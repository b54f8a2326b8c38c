/**
 * Routes of instant restores (docs/api.md, "Instant restores"): start, list, status, resume,
 * cancel; the mapping of their errors; and which requests would change a disk being restored.
 */
import type { InstantRestores } from '../hydrate/index.ts';
import { ApiError, ApiErrorCode } from './errors.ts';
import { checkBody, type BodySpec } from './validate.ts';
import type { RequestContext, Route } from './route.ts';
import { instantRestoreWire } from './to-wire.ts';
import { wireObject } from './schema.ts';
import type { ArchivedOrigin, InstantRestoreInfo, InstantRestoreRequest, InstantRestoreState, ResumeRequest } from './client/wire.ts';

const prefix = '/api/v1';

function service(ctx: RequestContext): InstantRestores {
  if (ctx.restores === null) throw new ApiError(ApiErrorCode.NO_ROUTE, 'This server has no instant restores');
  return ctx.restores;
}

/** Takes the optional object field `name` out of a body; the rest goes to checkBody. */
function takeObject(raw: unknown, name: string, what: string): { rest: unknown; value: Record<string, unknown> | undefined } {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw) || !Object.hasOwn(raw, name)) return { rest: raw, value: undefined };
  const { [name]: value, ...rest } = raw as Record<string, unknown>;
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field '${name}' must be ${what}`);
  return { rest, value: value as Record<string, unknown> };
}

/**
 * Checks a body with string fields `spec` plus an optional `env` object of strings (the AWS
 * variables; the hydrate subsystem decides which names it takes).
 */
function checkRestoreBody<S extends BodySpec>(raw: unknown, spec: S): { fields: Record<keyof S, string>; env: Record<string, unknown> } {
  const { rest, value } = takeObject(raw, 'env', 'an object of strings');
  return { fields: checkBody(rest, spec) as Record<keyof S, string>, env: value ?? {} };
}

const startBody = { disk: 'string', repo: 'string', snapshot: 'string', password: 'string' } as const;
const resumeBody = { password: 'string' } as const;
/** `archivedFrom` of a start: the primary repository and restore point id (whether the id is one, the hydrate subsystem checks). */
const archivedFromBody = { repo: 'string', snapshot: 'string' } as const;

/** The optional `archivedFrom` of a start body, checked; the rest of the body. */
function takeArchivedFrom(raw: unknown): { rest: unknown; archivedFrom: { repo: string; snapshot: string } | undefined } {
  const { rest, value } = takeObject(raw, 'archivedFrom', 'an object {repo, snapshot}');
  if (value === undefined) return { rest, archivedFrom: undefined };
  try {
    return { rest, archivedFrom: checkBody(value, archivedFromBody) };
  } catch (err) {
    if (err instanceof ApiError) throw new ApiError(err.code, `In 'archivedFrom': ${err.message}`);
    throw err;
  }
}

const location = (disk: string): Record<string, string> => ({ location: `${prefix}/instant-restores/${encodeURIComponent(disk)}` });

/** The instant restore routes. */
export const instantRestoreRoutes: Route[] = [
  {
    method: 'GET',
    path: `${prefix}/instant-restores`,
    body: null,
    handle: (_p, _b, ctx) => ({ status: 200, body: service(ctx).list().map(instantRestoreWire) }),
  },
  {
    method: 'POST',
    path: `${prefix}/instant-restores`,
    body: startBody,
    handle: async (_p, raw, ctx) => {
      const { rest, archivedFrom } = takeArchivedFrom(raw);
      const { fields, env } = checkRestoreBody(rest, startBody);
      const info = await service(ctx).start({ ...fields, env, archivedFrom });
      return { status: 201, body: instantRestoreWire(info), headers: location(info.disk) };
    },
  },
  {
    method: 'GET',
    path: `${prefix}/instant-restores/{disk}`,
    body: null,
    handle: (p, _b, ctx) => ({ status: 200, body: instantRestoreWire(service(ctx).get(p.disk)) }),
  },
  {
    method: 'POST',
    path: `${prefix}/instant-restores/{disk}/resume`,
    body: resumeBody,
    handle: async (p, raw, ctx) => {
      const { fields, env } = checkRestoreBody(raw, resumeBody);
      return { status: 200, body: instantRestoreWire(await service(ctx).resume(p.disk, { password: fields.password, env })) };
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
 * group snapshot or a backup (which takes one).
 */
export function disksChangedBy(method: string, path: string, params: Record<string, string>, body: unknown): string[] {
  if (method === 'GET') return [];
  if (path === `${prefix}/snapshots` || path === `${prefix}/backups`) {
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
        'creates the disk and starts copying. When the reply comes the disk is exported over NBD and reads and writes work. ' +
        'For a restore point moved to an archive repository, `repo` and `snapshot` name the archive and the copy there, and `archivedFrom` the original.',
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
      responses: { '200': { description: 'The restore', ...json(ref('InstantRestoreInfo')) }, '400': errorRef('BadRequest'), '404': errorRef('NotFound'), '409': errorRef('Conflict'), ...repoErrors, ...common },
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
  InstantRestoreRequest: wireObject<InstantRestoreRequest>()({
    required: ['disk', 'repo', 'snapshot', 'password'],
    additionalProperties: false,
    properties: {
      disk: { type: 'string', description: 'Name of the new disk' },
      repo: { type: 'string', description: 'Repository: an absolute directory path or s3://bucket/prefix' },
      snapshot: { type: 'string', description: 'Restore point id or a unique prefix of at least 4 hex digits' },
      password: { type: 'string', description: 'Repository password; kept in memory only' },
      env: envSchema,
      archivedFrom: ref('ArchivedOrigin'),
    },
  }),
  ArchivedOrigin: wireObject<ArchivedOrigin>()({
    required: ['repo', 'snapshot'],
    additionalProperties: false,
    description: 'For a restore from an archive repository: the primary repository and the id of the restore point there that `repo`/`snapshot` is the archived copy of',
    properties: {
      repo: { type: 'string', description: 'Primary repository location' },
      snapshot: { type: 'string', description: 'Restore point id in the primary repository (64 hex digits)' },
    },
  }),
  ResumeRequest: wireObject<ResumeRequest>()({
    required: ['password'],
    additionalProperties: false,
    properties: { password: { type: 'string' }, env: envSchema },
  }),
  InstantRestoreInfo: wireObject<InstantRestoreInfo>()({
    required: ['disk', 'repo', 'snapshot', 'state', 'imageBytes', 'chunkSizeBytes', 'chunks', 'chunksZero', 'chunksCopied', 'chunksMissing', 'bytesCopied', 'chunksFetchedForClients', 'bytesRead', 'startedMs', 'finishedMs', 'lastError', 'archivedFrom'],
    properties: {
      disk: { type: 'string' },
      repo: { type: 'string' },
      snapshot: { type: ['string', 'null'], description: 'Restore point id (null for a damaged state file)' },
      state: { type: 'string', enum: ['copying', 'retrying', 'needs-password', 'done', 'damaged'] satisfies InstantRestoreState[] },
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
      archivedFrom: { oneOf: [ref('ArchivedOrigin'), { type: 'null' }], description: 'Set for a restore from an archive repository' },
    },
  }),
};
