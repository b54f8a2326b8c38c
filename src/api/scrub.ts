/**
 * POST /api/v1/scrub (docs/api.md, "Scrub"): checks the stored data of some disks or all of
 * them, its progress streamed back as JSON lines and its report last, as POST /backups streams
 * a backup. Closing the connection stops the scrub.
 */
import type { ServerResponse } from 'node:http';
import type { ScrubProgress as EngineScrubProgress } from '../engine/index.ts';
import { ApiError, ApiErrorCode, toApiError } from './errors.ts';
import { streamClient, writeJsonLine } from './http.ts';
import type { Route } from './route.ts';
import { scrubProgressWire, scrubReportWire } from './to-wire.ts';
import { wireObject } from './schema.ts';
import { API_PREFIX as prefix } from './client/wire.ts';
import type { DamagedExtent, DamageReason, ScrubEvent, ScrubProgress, ScrubReport, ScrubRequest, ScrubStatus } from './client/wire.ts';

/** Most disks one scrub names. */
const disksMax = 256;

/**
 * The request, checked: an object with at most `disks` (1 to disksMax names, each once) and
 * `rateBytesPerSecond` (a positive whole number).
 */
function checkRequest(raw: unknown): ScrubRequest {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ApiError(ApiErrorCode.BAD_REQUEST, "The body must be a JSON object: {} or {\"disks\": [...]}");
  const { disks, rateBytesPerSecond: rate, ...rest } = raw as Record<string, unknown>;
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Unknown field '${unknown}'; expected 'disks', 'rateBytesPerSecond'`);
  const req: ScrubRequest = {};
  if (rate !== undefined) {
    if (typeof rate !== 'number' || !Number.isSafeInteger(rate) || rate <= 0) throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'rateBytesPerSecond' must be a positive whole number of bytes a second");
    req.rateBytesPerSecond = rate;
  }
  if (disks === undefined) return req;
  if (!Array.isArray(disks) || !disks.every((d) => typeof d === 'string')) throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'disks' must be an array of strings");
  if (disks.length === 0 || disks.length > disksMax) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field 'disks' must name 1 to ${disksMax} disks; leave it out for all`);
  if (new Set(disks).size !== disks.length) throw new ApiError(ApiErrorCode.BAD_REQUEST, "Field 'disks' names a disk twice");
  return { ...req, disks };
}

const writeLine = (res: ServerResponse, value: ScrubEvent): Promise<void> => writeJsonLine(res, value);

/** The scrub route. */
export const scrubRoutes: Route[] = [
  {
    method: 'POST',
    path: `${prefix}/scrub`,
    // Read as JSON; checked by checkRequest (both fields are optional).
    body: { disks: 'strings' },
    handle: (_p, raw, ctx) => {
      const req = checkRequest(raw);
      // An unknown disk is refused before the reply starts (404, not a line of a 200).
      for (const d of req.disks ?? []) ctx.store.getDisk(d);
      return {
        status: 200,
        headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' },
        async stream(res: ServerResponse) {
          const client = streamClient(res);
          const { signal } = client;
          const onProgress = (p: EngineScrubProgress): void => {
            if (client.progressDue()) void writeLine(res, { event: 'progress', progress: scrubProgressWire(p) });
          };
          try {
            const report = ctx.scrubs !== null ? await ctx.scrubs.run(req, onProgress, signal) : await ctx.store.scrub({ ...req, onProgress, signal });
            await writeLine(res, { event: 'done', report: scrubReportWire(report) });
          } catch (err) {
            if (signal.aborted) return; // the client went away: nobody to tell
            // The reply is under way (200): the error goes in its last line, and in the log by the same request id.
            const { error } = toApiError(err);
            const message = (err as Error)?.message ?? String(err);
            ctx.log.warn(`scrub failed: ${message}`, { code: error.code, disks: req.disks, err });
            await writeLine(res, { event: 'error', code: error.code, message, requestId: ctx.requestId });
          }
          res.end();
        },
      };
    },
  },
];

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });

/** OpenAPI paths of the scrub route. */
export const scrubPaths = {
  '/api/v1/scrub': {
    post: {
      operationId: 'scrub',
      summary: "Check the stored data of some disks or all of them; the scrub's progress and report stream back as JSON lines",
      description:
        'Reads every write log record that holds live blocks of the disks asked (all when `disks` is left out) and checks its checksums, at full speed unless `rateBytesPerSecond` says otherwise. ' +
        'Answers with lines: `{"event":"progress","progress"}` (a `ScrubProgress`) at most 4 times a second, then `{"event":"done","report"}` (a `ScrubReport`, ' +
        'what `tessera scrub --json` prints) or `{"event":"error","code","message","requestId"}`. Damage is in the report, not an error: a clean store has ' +
        '`damaged: []`. Closing the connection stops the scrub. A scrub of every disk also counts as the node\'s last pass (`scrub` in GET /api/v1/node).',
      requestBody: { required: true, ...json(ref('ScrubRequest')) },
      responses: {
        '200': { description: "The scrub's events, one JSON object per line", content: { 'application/x-ndjson': { schema: { type: 'string' } } } },
        '400': errorRef('BadRequest'),
        '404': errorRef('NotFound'),
        '413': errorRef('BodyTooLarge'),
        '415': errorRef('UnsupportedMediaType'),
        '500': errorRef('Internal'),
        '503': errorRef('Unavailable'),
      },
    },
  },
};

/** OpenAPI schemas of the scrub route and of the node's scrub state. */
export const scrubSchemas = {
  ScrubRequest: wireObject<ScrubRequest>()({
    required: [],
    additionalProperties: false,
    properties: {
      disks: { type: 'array', items: { type: 'string' }, minItems: 1, maxItems: disksMax, uniqueItems: true, description: 'Disks to check; all when left out' },
      rateBytesPerSecond: { type: 'integer', minimum: 1, description: 'Bytes a second the scrub reads at most; full speed when left out' },
    },
  }),
  ScrubProgress: wireObject<ScrubProgress>()({
    required: ['segments', 'segmentsDone', 'bytesToRead', 'bytesRead'],
    properties: {
      segments: { type: 'integer', description: 'Write log segments to read' },
      segmentsDone: { type: 'integer' },
      bytesToRead: { type: 'integer' },
      bytesRead: { type: 'integer' },
    },
  }),
  DamagedExtent: wireObject<DamagedExtent>()({
    required: ['disk', 'offset', 'length', 'head', 'snapshots', 'segment', 'recordOffset', 'reason'],
    properties: {
      disk: { type: 'string' },
      offset: { type: 'integer', description: 'Byte offset in the disk, a multiple of 4096' },
      length: { type: 'integer', description: 'Bytes: whole 4 KiB blocks, cut at the size of the views that see them' },
      head: { type: 'boolean', description: "Whether the disk's head reads these blocks" },
      snapshots: { type: 'array', items: { type: 'string' }, description: 'Snapshots of the disk that read them too, oldest first' },
      segment: { type: 'integer', description: 'Write log segment of the damaged record' },
      recordOffset: { type: ['integer', 'null'], description: 'Offset of the record (or of the unreadable stretch) in the segment; null when none could be placed' },
      reason: {
        type: 'string',
        enum: ['checksum', 'unreadable', 'missing-segment', 'truncated'] satisfies DamageReason[],
        description: 'checksum: the record fails its checksum; unreadable: the drive failed the read; missing-segment: the segment file is gone; truncated: the segment ends before the block',
      },
    },
  }),
  ScrubReport: wireObject<ScrubReport>()({
    required: ['disks', 'segments', 'segmentsSkipped', 'records', 'bytesChecked', 'bytesRead', 'durationMs', 'damagedBlocks', 'damagedDisks', 'damagedExtents', 'damaged'],
    properties: {
      disks: { type: 'array', items: { type: 'string' }, description: 'The disks checked' },
      segments: { type: 'integer', description: 'Write log segments read' },
      segmentsSkipped: { type: 'integer', description: 'Segments compaction removed while the scrub ran (their blocks had moved)' },
      records: { type: 'integer', description: 'Records holding live blocks whose checksums were checked' },
      bytesChecked: { type: 'integer' },
      bytesRead: { type: 'integer' },
      durationMs: { type: 'integer' },
      damagedBlocks: { type: 'integer', description: 'Damaged block versions some disk or snapshot reads' },
      damagedDisks: { type: 'array', items: { type: 'string' }, description: 'The disks that read some of them' },
      damagedExtents: { type: 'integer', description: 'Extents they make, listed or not' },
      damaged: { type: 'array', items: ref('DamagedExtent'), maxItems: 10000, description: 'The damaged blocks as each disk sees them, by disk and offset: the first 10,000 extents' },
    },
  }),
  ScrubStatus: wireObject<ScrubStatus>()({
    type: ['object', 'null'],
    required: ['rateBytesPerSecond', 'intervalMs', 'running', 'nextStartMs', 'lastStartedMs', 'lastFinishedMs', 'damagedBlocks', 'damagedDisks', 'bytesChecked', 'lastError'],
    properties: {
      rateBytesPerSecond: { type: 'integer', description: 'Bytes a second the background scrub reads at most; 0 when it is off' },
      intervalMs: { type: 'integer', description: 'Time between the starts of two background passes' },
      running: { type: 'boolean', description: 'Whether a pass over every disk is running' },
      nextStartMs: { type: ['integer', 'null'], description: 'When the next background pass starts' },
      lastStartedMs: { type: ['integer', 'null'] },
      lastFinishedMs: { type: ['integer', 'null'], description: 'When the last pass over every disk finished' },
      damagedBlocks: { type: ['integer', 'null'], description: 'Damaged blocks the last finished pass found' },
      damagedDisks: { type: 'array', items: { type: 'string' }, description: 'Disks with damaged blocks in the last finished pass' },
      bytesChecked: { type: ['integer', 'null'] },
      lastError: { type: ['string', 'null'], description: 'Why the last pass stopped short' },
    },
  }),
};
