import assert from 'node:assert/strict';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ApiError, ApiErrorCode } from './errors.ts';

/**
 * Reads a JSON request body of at most `bodyBytesMax` bytes. Only `application/json` is
 * accepted: besides catching clients that send forms by mistake, it keeps browsers from
 * posting to the API cross-origin without a CORS preflight.
 */
export async function readJsonBody(req: IncomingMessage, bodyBytesMax: number): Promise<unknown> {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/json') {
    req.resume();
    const got = type === '' ? 'no Content-Type' : `Content-Type '${type}'`;
    throw new ApiError(ApiErrorCode.UNSUPPORTED_MEDIA_TYPE, `Request body must be application/json, got ${got}`);
  }
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > bodyBytesMax) {
    req.resume();
    throw tooLarge(bodyBytesMax);
  }
  const chunks: Buffer[] = [];
  let bytes = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      if (bytes > bodyBytesMax) {
        req.resume();
        throw tooLarge(bodyBytesMax);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    throw bodyReadError(err);
  }
  const text = Buffer.concat(chunks, bytes).toString('utf8');
  if (text.trim() === '') throw new ApiError(ApiErrorCode.BAD_REQUEST, 'Request body is empty; a JSON object is required');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(ApiErrorCode.BAD_REQUEST, `Request body is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * A body that stopped arriving is the client's doing, not a bug: Node's HTTP parser reports a
 * client that went away mid-body as an untyped `aborted` error. Bugs (a failed assertion) and
 * our own ApiErrors pass unchanged.
 */
function bodyReadError(err: unknown): unknown {
  if (err instanceof ApiError || err instanceof assert.AssertionError) return err;
  const reason = err instanceof Error ? err.message : String(err);
  return new ApiError(ApiErrorCode.BAD_REQUEST, `Request body could not be read: ${reason}`, { cause: err, headers: { connection: 'close' } });
}

function tooLarge(bodyBytesMax: number): ApiError {
  // The rest of an oversized body is not worth reading: answer and hang up.
  return new ApiError(ApiErrorCode.BODY_TOO_LARGE, `Request body is larger than ${bodyBytesMax} bytes`, { headers: { connection: 'close' } });
}

/** What to send: a status, a JSON body (none for 204) and extra headers. */
export interface JsonReply {
  status: number;
  body?: unknown;
  headers?: Record<string, string>;
}

/** A reply whose body the handler writes itself, e.g. disk data (application/octet-stream). */
export interface StreamReply {
  status: number;
  headers: Record<string, string>;
  /** Writes the body and ends `res`, honouring backpressure; a failure after the headers cuts the connection. */
  stream(res: ServerResponse): Promise<void>;
}

/**
 * Reads a binary request body of exactly its Content-Length, which must be given and at most
 * `bytesMax`. Only `application/octet-stream` is accepted.
 */
export async function readOctetsBody(req: IncomingMessage, bytesMax: number): Promise<Buffer> {
  const type = (req.headers['content-type'] ?? '').split(';')[0].trim().toLowerCase();
  if (type !== 'application/octet-stream') {
    req.resume();
    const got = type === '' ? 'no Content-Type' : `Content-Type '${type}'`;
    throw new ApiError(ApiErrorCode.UNSUPPORTED_MEDIA_TYPE, `Request body must be application/octet-stream, got ${got}`);
  }
  const header = req.headers['content-length'];
  const declared = header !== undefined && /^\d{1,16}$/.test(header) ? Number(header) : NaN;
  if (!Number.isSafeInteger(declared)) {
    req.resume();
    throw new ApiError(ApiErrorCode.BAD_REQUEST, 'A binary request body needs a Content-Length', { headers: { connection: 'close' } });
  }
  if (declared > bytesMax) {
    req.resume();
    throw new ApiError(ApiErrorCode.BODY_TOO_LARGE, `Request body is larger than ${bytesMax} bytes`, { headers: { connection: 'close' } });
  }
  const out = Buffer.allocUnsafe(declared);
  let at = 0;
  try {
    for await (const chunk of req as AsyncIterable<Buffer>) {
      // Node's parser never delivers more than Content-Length; past it, bytes would be dropped.
      assert.ok(at + chunk.length <= declared, 'a request body is no longer than its Content-Length');
      at += chunk.copy(out, at);
    }
  } catch (err) {
    throw bodyReadError(err);
  }
  if (at !== declared) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Request body ended after ${at} of ${declared} bytes`);
  return out;
}

/**
 * Resolves true when `res` can take more data, false if the connection closes first (the client
 * went away: nothing to answer, and nothing wrong with the server).
 */
export function drained(res: ServerResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const onDrain = () => {
      res.off('close', onClose);
      resolve(true);
    };
    const onClose = () => {
      res.off('drain', onDrain);
      resolve(false);
    };
    res.once('drain', onDrain);
    res.once('close', onClose);
  });
}

/** Writes one JSON line of a streamed reply (application/x-ndjson); resolves once the socket took it, or at once if it is gone. */
export function writeJsonLine(res: ServerResponse, value: unknown): Promise<void> {
  return new Promise((resolve) => {
    if (res.destroyed) return resolve();
    res.write(JSON.stringify(value) + '\n', () => resolve());
  });
}

/** Progress lines of a streamed reply come at most this often. */
const progressLineEveryMs = 250;

/**
 * What a streamed reply's work needs to know of its client: `signal` aborts when the client goes
 * away before the reply is finished, and `progressDue()` says whether a progress line may be
 * written now (at most one every 250 ms).
 */
export function streamClient(res: ServerResponse): { signal: AbortSignal; progressDue: () => boolean } {
  const gone = new AbortController();
  res.on('close', () => {
    if (!res.writableFinished) gone.abort();
  });
  let lastProgressMs = 0;
  return {
    signal: gone.signal,
    progressDue() {
      const now = Date.now();
      if (now - lastProgressMs < progressLineEveryMs) return false;
      lastProgressMs = now;
      return true;
    },
  };
}

/** Sends a reply as JSON; a 204 is sent without a body. */
export function sendJson(res: ServerResponse, { status, body, headers = {} }: JsonReply): void {
  if (status === 204) {
    res.writeHead(204, headers);
    res.end();
    return;
  }
  const data = Buffer.from(JSON.stringify(body, null, 2) + '\n');
  res.writeHead(status, {
    ...headers,
    'content-type': 'application/json; charset=utf-8',
    'content-length': String(data.length),
    'cache-control': 'no-store',
  });
  res.end(data);
}

/** Sends the JSON error body every failure of the API uses; `requestId` finds it in the node's log. */
export function sendError(res: ServerResponse, error: ApiError, requestId: string): void {
  sendJson(res, { status: error.status, body: { error: { code: error.code, message: error.message, requestId } }, headers: error.headers });
}
