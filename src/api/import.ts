/**
 * POST /api/v1/disks/{name}/import (docs/api.md, "Import"): the node creates disk NAME, sized as
 * the source, and copies the source in itself, over several streams (NBD connections or file
 * readers) at once, reading only what the source reports allocated and writing only what is not
 * all zeroes. Progress streams back as JSON lines, as a scrub's does. A copy that fails or is
 * abandoned deletes the disk it made, so no half-imported disk looks complete.
 */
import type { ServerResponse } from 'node:http';
import type { Volume } from '../engine/index.ts';
import { ApiError, ApiErrorCode, toApiError } from './errors.ts';
import { streamClient, writeJsonLine } from './http.ts';
import type { ImportReader, RequestContext, Route } from './route.ts';
import { checkBody } from './validate.ts';
import { createDiskOf } from './create-disk.ts';
import { wireObject } from './schema.ts';
import { API_PREFIX as prefix, IMPORT_STREAMS_MAX } from './client/wire.ts';
import type { ImportEvent, ImportProgress, ImportRequest, ImportResult } from './client/wire.ts';

/** Imports a node runs at once (each holds a buffer of up to 4 MiB per stream); more are refused with BUSY. */
const importsMax = 4;
/** Imports running on this process's API. */
let running = 0;
/** Streams an import runs at most, and when the request says none. */
const importStreamsMax = IMPORT_STREAMS_MAX;
const importStreamsDefault = 4;
/** The copy reads and writes pieces of at most this size, each stream one at a time. */
const pieceBytes = 4 << 20;
/** Allocation runs an import keeps of its source; a source more fragmented is copied in coarser runs. */
const runsMax = 1 << 20;
/** How long the new disk of a cluster may take to open at this node (its record reaching the node's cache). */
const openWaitMs = 15_000;

/** Zero blocks of this size inside a piece are not written. */
const zeroBlockBytes = 64 * 1024;
const zeroes = Buffer.alloc(zeroBlockBytes);

/** The runs [from, to) of `data` that are not whole zero blocks (blocks counted from the start of `data`). */
export function nonZeroRuns(data: Buffer): Array<[number, number]> {
  const runs: Array<[number, number]> = [];
  for (let at = 0; at < data.length; at += zeroBlockBytes) {
    const end = Math.min(at + zeroBlockBytes, data.length);
    if (zeroes.compare(data, at, end, 0, end - at) === 0) continue;
    const last = runs.at(-1);
    if (last !== undefined && last[1] === at) last[1] = end;
    else runs.push([at, end]);
  }
  return runs;
}

/** The data runs of a source: the runs it reports not to read as zeroes, merged, in order. */
async function dataRunsOf(reader: ImportReader, signal: AbortSignal): Promise<Array<{ offset: number; length: number }>> {
  const runs: Array<{ offset: number; length: number }> = [];
  let at = 0;
  while (at < reader.sizeBytes) {
    if (signal.aborted) throw new ApiError(ApiErrorCode.SOURCE, 'The import was abandoned by its client');
    const extents = await reader.extents(at, reader.sizeBytes - at);
    for (const e of extents) {
      if (e.offset !== at || e.length <= 0) throw new ApiError(ApiErrorCode.SOURCE, `The source reported a run at ${e.offset} where one at ${at} was due`);
      at += e.length;
      if (e.zero) continue;
      const last = runs.at(-1);
      // Adjacent runs are read as one; past runsMax, everything after joins the last run (the zero check still skips its zeroes).
      if (last !== undefined && (last.offset + last.length === e.offset || runs.length >= runsMax)) last.length = e.offset + e.length - last.offset;
      else runs.push({ offset: e.offset, length: e.length });
    }
  }
  return runs;
}

/** Whether a disk of this name exists here or in the cluster. */
function diskExists(ctx: RequestContext, name: string): boolean {
  return ctx.cluster !== null ? ctx.cluster.list().some((d) => d.name === name) : ctx.store.listDisks().some((d) => d.name === name);
}

/** Opens the new disk's head; in a cluster it may take a moment to reach this node. */
async function openNewDisk(ctx: RequestContext, name: string): Promise<Volume> {
  const until = Date.now() + openWaitMs;
  for (;;) {
    try {
      return ctx.openVolume(name, null);
    } catch (err) {
      const { error } = toApiError(err);
      if (ctx.cluster === null || Date.now() > until || (error.code !== ApiErrorCode.NOT_FOUND && error.code !== ApiErrorCode.UNAVAILABLE)) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

/** Deletes a disk an import made and could not fill; the reason why it could not, or null. */
async function dropDisk(ctx: RequestContext, name: string): Promise<string | null> {
  try {
    if (ctx.cluster !== null) await ctx.cluster.deleteDisk(name);
    else await ctx.store.deleteDisk(name);
    return null;
  } catch (err) {
    return (err as Error).message;
  }
}

/** The import route. */
export const importRoutes: Route[] = [
  {
    method: 'POST',
    path: `${prefix}/disks/{name}/import`,
    body: { source: 'string', streams: 'count?' },
    handle: async (p, raw, ctx) => {
      const req = checkBody(raw, { source: 'string', streams: 'count?' }) as ImportRequest;
      const streams = req.streams ?? importStreamsDefault;
      if (streams < 1 || streams > importStreamsMax) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field 'streams' must be 1 to ${importStreamsMax}`);
      if (ctx.importSources === null) throw new ApiError(ApiErrorCode.INVALID, 'This API server imports nothing: it runs without a node');
      const name = p.name;
      // Refused before the source is touched.
      if (diskExists(ctx, name)) throw new ApiError(ApiErrorCode.EXISTS, `A disk named "${name}" exists already`);
      if (running >= importsMax) throw new ApiError(ApiErrorCode.BUSY, `${importsMax} imports run on this node already; try again once one is done`);
      running++;
      const readers: ImportReader[] = [];
      const closeReaders = async () => void (await Promise.allSettled(readers.map((r) => r.close())));
      let volume: Volume | null = null;
      let created = false;
      const gone = new AbortController();
      try {
        readers.push(await ctx.importSources.open(req.source));
        const first = readers[0];
        if (first.sizeBytes <= 0) throw new ApiError(ApiErrorCode.INVALID, `The source ${req.source} is empty`);
        const sizeBytes = Math.ceil(first.sizeBytes / 512) * 512;
        const runs = await dataRunsOf(first, gone.signal);
        const bytesToRead = runs.reduce((n, r) => n + r.length, 0);
        // The data must fit: what the source holds against what this node has left (in a
        // cluster each replica's node checks its own writes as they come).
        const { space } = await ctx.nodeInfo();
        if (space !== null && space !== undefined) {
          const freeBytes = Math.max(0, Math.floor(space.usableBytes * space.fullRatio) - space.usedBytes);
          if (bytesToRead > freeBytes) {
            throw new ApiError(ApiErrorCode.NO_SPACE, `The source holds ${bytesToRead} bytes of data; this node can take ${freeBytes} more before it is full`);
          }
        }
        for (let i = 1; i < streams; i++) readers.push(await ctx.importSources.open(req.source));
        for (const r of readers) {
          if (r.sizeBytes !== first.sizeBytes) throw new ApiError(ApiErrorCode.SOURCE, `The source ${req.source} changed size while it was opened (${first.sizeBytes}, then ${r.sizeBytes} bytes)`);
        }
        await createDiskOf(ctx, { name, sizeBytes });
        created = true;
        const sources = ctx.importSources;
        await sources.begin(name);
        volume = await openNewDisk(ctx, name);
        const vol = volume;
        // The copy, once the reply (200) has begun: its failures are the reply's last line.
        const copyAndReply = async (res: ServerResponse): Promise<void> => {
          const client = streamClient(res);
          client.signal.addEventListener('abort', () => gone.abort(), { once: true });
          const startedMs = Date.now();
          const progress: ImportProgress = { sizeBytes, bytesToRead, bytesRead: 0, bytesCopied: 0 };
          const line = (e: ImportEvent) => writeJsonLine(res, e);
          try {
            // Pieces in order; each stream takes the next one as it is free.
            let run = 0;
            let at = runs[0]?.offset ?? 0;
            const pieceLimit = Math.min(pieceBytes, ...readers.map((r) => r.readBytesMax));
            const next = (): { offset: number; length: number } | null => {
              while (run < runs.length && at >= runs[run].offset + runs[run].length) {
                run++;
                at = runs[run]?.offset ?? at;
              }
              if (run >= runs.length) return null;
              const end = runs[run].offset + runs[run].length;
              // Pieces end on multiples of the piece size where they can, so writes stay block-aligned.
              const length = Math.min(end - at, pieceLimit - (at % pieceLimit));
              const piece = { offset: at, length };
              at += length;
              return piece;
            };
            let failed: unknown = null;
            const worker = async (reader: ImportReader) => {
              // One buffer per stream, read into and written from again and again: the volume
              // holds no reference to it once a write settles, and fresh ones cost garbage collection.
              const buf = Buffer.allocUnsafe(pieceLimit);
              for (let piece = next(); piece !== null && failed === null; piece = next()) {
                if (gone.signal.aborted) throw new ApiError(ApiErrorCode.SOURCE, 'The import was abandoned by its client');
                const data = await reader.read(piece.offset, piece.length, buf);
                progress.bytesRead += data.length;
                // The disk is new and reads as zeroes: zero blocks of a piece need no write.
                for (const [from, to] of nonZeroRuns(data)) {
                  await vol.write(piece.offset + from, data.subarray(from, to));
                  progress.bytesCopied += to - from;
                }
                if (client.progressDue()) void line({ event: 'progress', progress: { ...progress } });
              }
            };
            await Promise.all(
              readers.map((r) =>
                worker(r).catch((err: unknown) => {
                  failed ??= err;
                }),
              ),
            );
            if (failed !== null) throw failed;
            await vol.flush();
            const result: ImportResult = {
              disk: name,
              source: req.source,
              sizeBytes,
              bytesCopied: progress.bytesCopied,
              bytesSkipped: sizeBytes - progress.bytesCopied,
              bytesRead: progress.bytesRead,
              sparse: first.sparse,
              streams,
              durationMs: Date.now() - startedMs,
            };
            vol.close();
            await closeReaders();
            await sources.end(name);
            ctx.log.info('import done', { ...result });
            await line({ event: 'done', result });
          } catch (err) {
            vol.close();
            await closeReaders();
            const dropped = await dropDisk(ctx, name);
            // A disk that could not be deleted stays noted: the node deletes it at its next start.
            if (dropped === null) await sources.end(name);
            const { error, bug } = toApiError(err);
            if (bug) throw err;
            const message = `${(err as Error)?.message ?? String(err)}; ${dropped === null ? `disk ${name} was deleted` : `disk ${name} is incomplete and could not be deleted (${dropped}); the node deletes it when it starts again`}`;
            ctx.log.warn(`import failed: ${message}`, { code: error.code, disk: name, source: req.source });
            if (!client.signal.aborted) await line({ event: 'error', code: error.code, message, requestId: ctx.requestId });
          }
          res.end();
        };
        return {
          status: 200,
          headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' },
          async stream(res: ServerResponse) {
            try {
              await copyAndReply(res);
            } finally {
              running--;
            }
          },
        };
      } catch (err) {
        running--;
        volume?.close();
        await closeReaders();
        if (created) {
          const dropped = await dropDisk(ctx, name);
          if (dropped !== null) ctx.log.warn(`import: disk ${name} could not be deleted: ${dropped}`, { disk: name });
          else await ctx.importSources?.end(name);
        }
        throw err;
      }
    },
  },
];

const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: unknown) => ({ content: { 'application/json': { schema } } });
const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });

/** OpenAPI paths of the import route. */
export const importPaths = {
  '/api/v1/disks/{name}/import': {
    post: {
      operationId: 'importDisk',
      summary: 'Create disk {name} sized as a source (an NBD export, a raw image on the node) and copy the source in; progress and result stream back as JSON lines',
      description:
        'The node reads the source itself over `streams` connections (or file readers) at once, only the runs the source reports allocated (NBD `base:allocation`, SEEK_DATA/SEEK_HOLE), ' +
        'and writes only what is not all zeroes. Answers with lines: `{"event":"progress","progress"}` (an `ImportProgress`) at most 4 times a second, then `{"event":"done","result"}` (an `ImportResult`) ' +
        'or `{"event":"error","code","message","requestId"}`, after which the disk has been deleted. Closing the connection stops the import and deletes the disk. A disk of that name (409 EXISTS), a source ' +
        'that cannot be reached or read (502 SOURCE), one not found (404) and one with more data than the node can take (507 NO_SPACE) are refused before the reply starts.',
      parameters: [{ name: 'name', in: 'path', required: true, schema: { type: 'string' } }],
      requestBody: { required: true, ...json(ref('ImportRequest')) },
      responses: {
        '200': { description: "The import's events, one JSON object per line", content: { 'application/x-ndjson': { schema: { type: 'string' } } } },
        '400': errorRef('BadRequest'),
        '404': errorRef('NotFound'),
        '409': errorRef('Conflict'),
        '413': errorRef('BodyTooLarge'),
        '415': errorRef('UnsupportedMediaType'),
        '500': errorRef('Internal'),
        '502': errorRef('Source'),
        '503': errorRef('Unavailable'),
        '507': errorRef('NoSpace'),
      },
    },
  },
};

/** OpenAPI schemas of the import route. */
export const importSchemas = {
  ImportRequest: wireObject<ImportRequest>()({
    required: ['source'],
    additionalProperties: false,
    properties: {
      source: { type: 'string', description: '`nbd://HOST[:PORT]/EXPORT`, `nbd+unix:///EXPORT?socket=PATH`, or the absolute path of a raw image file on the node' },
      streams: { type: 'integer', minimum: 1, maximum: importStreamsMax, description: `Connections (or readers) copying at once; default ${importStreamsDefault}` },
    },
  }),
  ImportProgress: wireObject<ImportProgress>()({
    required: ['sizeBytes', 'bytesToRead', 'bytesRead', 'bytesCopied'],
    properties: {
      sizeBytes: { type: 'integer', description: "The new disk's size: the source's, rounded up to 512 bytes" },
      bytesToRead: { type: 'integer', description: 'Bytes the source reports allocated (all of it when it cannot say)' },
      bytesRead: { type: 'integer' },
      bytesCopied: { type: 'integer', description: 'Bytes written to the disk (read data that is not all zeroes)' },
    },
  }),
  ImportResult: wireObject<ImportResult>()({
    required: ['disk', 'source', 'sizeBytes', 'bytesCopied', 'bytesSkipped', 'bytesRead', 'sparse', 'streams', 'durationMs'],
    properties: {
      disk: { type: 'string' },
      source: { type: 'string' },
      sizeBytes: { type: 'integer' },
      bytesCopied: { type: 'integer', description: 'Bytes written to the disk' },
      bytesSkipped: { type: 'integer', description: 'Bytes not written: holes and zeroes' },
      bytesRead: { type: 'integer', description: 'Bytes read from the source' },
      sparse: { type: 'boolean', description: 'Whether the source reported its allocation' },
      streams: { type: 'integer' },
      durationMs: { type: 'integer' },
    },
  }),
};
