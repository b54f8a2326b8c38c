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
  for await (const chunk of req as AsyncIterable<Buffer>) {
    bytes += chunk.length;
    if (bytes > bodyBytesMax) {
      req.resume();
      throw tooLarge(bodyBytesMax);
    }
    chunks.push(chunk);
  }
  const text = Buffer.concat(chunks, bytes).toString('utf8');
  if (text.trim() === '') throw new ApiError(ApiErrorCode.BAD_REQUEST, 'Request body is empty; a JSON object is required');
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new ApiError(ApiErrorCode.BAD_REQUEST, `Request body is not valid JSON: ${(err as Error).message}`, { cause: err });
  }
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

/** Sends the JSON error body every failure of the API uses. */
export function sendError(res: ServerResponse, error: ApiError): void {
  sendJson(res, { status: error.status, body: { error: { code: error.code, message: error.message } }, headers: error.headers });
}
