import { ApiError, ApiErrorCode } from './errors.ts';

/** Type of one body field, as the boundary checks it. */
type FieldType = 'string' | 'sizeBytes' | 'strings' | 'string?' | 'count?' | 'json';

/** What a request body must hold: field name → type. Fields whose type ends in `?` may be left out. */
export type BodySpec = Record<string, FieldType>;

/** The body a spec describes, once checked. */
export type BodyOf<S extends BodySpec> = {
  [K in keyof S]: S[K] extends 'json' ? unknown : S[K] extends 'string' ? string : S[K] extends 'strings' ? string[] : S[K] extends 'string?' ? string | undefined : S[K] extends 'count?' ? number | undefined : number;
};

/**
 * Checks a parsed JSON body against `spec`, once, at the boundary: it must be an object with
 * exactly the spec's fields (an unknown field is more likely a typo than an extension) of the
 * right types (`json`: any value, for the handler's own gate to check). Sizes must be non-negative safe integers; whether they suit a disk (a multiple
 * of 512, within limits) is for the engine to say.
 */
export function checkBody<S extends BodySpec>(body: unknown, spec: S): BodyOf<S> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new ApiError(ApiErrorCode.BAD_REQUEST, `Request body must be a JSON object with fields ${fieldList(spec)}`);
  }
  const record = body as Record<string, unknown>;
  for (const key of Object.keys(record)) {
    if (!Object.hasOwn(spec, key)) {
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Unknown field '${key}'; expected ${fieldList(spec)}`);
    }
  }
  for (const [key, type] of Object.entries(spec)) {
    const value = record[key];
    if (value === undefined && type.endsWith('?')) continue;
    if (value === undefined) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Missing field '${key}'`);
    if (type === 'string?' && typeof value !== 'string') {
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field '${key}' must be a string`);
    }
    if (type === 'count?' && !(typeof value === 'number' && Number.isSafeInteger(value) && value >= 0)) {
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field '${key}' must be a non-negative integer`);
    }
    if (type === 'string' && typeof value !== 'string') {
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field '${key}' must be a string`);
    }
    if (type === 'strings' && !(Array.isArray(value) && value.every((v) => typeof v === 'string'))) {
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field '${key}' must be an array of strings`);
    }
    if (type === 'sizeBytes' && !(typeof value === 'number' && Number.isSafeInteger(value) && value >= 0)) {
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field '${key}' must be a non-negative integer number of bytes`);
    }
  }
  return record as BodyOf<S>;
}

function fieldList(spec: BodySpec): string {
  return Object.keys(spec).map((k) => `'${k}'`).join(', ');
}

/** Type of one query parameter: a byte count or offset, or a name. */
type QueryType = 'bytes' | 'string';

/** What a query string may hold: parameter → type and whether it is required. */
export type QuerySpec = Record<string, { type: QueryType; required: boolean }>;

/** The query a spec describes, once checked; absent optional parameters are undefined. */
export type QueryOf<Q extends QuerySpec> = { [K in keyof Q]: (Q[K]['type'] extends 'bytes' ? number : string) | (Q[K]['required'] extends true ? never : undefined) };

/**
 * Checks a query string against `spec`, once, at the boundary: no unknown or repeated
 * parameters, every required one present; byte counts are decimal safe integers.
 */
export function checkQuery<Q extends QuerySpec>(query: URLSearchParams, spec: Q): QueryOf<Q> {
  const out: Record<string, string | number | undefined> = {};
  for (const key of new Set(query.keys())) {
    if (!Object.hasOwn(spec, key)) {
      const known = Object.keys(spec).map((k) => `'${k}'`).join(', ');
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Unknown query parameter '${key}'${known === '' ? '' : `; expected ${known}`}`);
    }
    if (query.getAll(key).length > 1) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Query parameter '${key}' is given more than once`);
  }
  for (const [key, { type, required }] of Object.entries(spec)) {
    const raw = query.get(key);
    if (raw === null) {
      if (required) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Missing query parameter '${key}'`);
      continue;
    }
    if (type === 'bytes') {
      const n = /^\d{1,16}$/.test(raw) ? Number(raw) : NaN;
      if (!Number.isSafeInteger(n)) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Query parameter '${key}' must be a non-negative integer number of bytes`);
      out[key] = n;
    } else {
      if (raw === '') throw new ApiError(ApiErrorCode.BAD_REQUEST, `Query parameter '${key}' must not be empty`);
      out[key] = raw;
    }
  }
  return out as QueryOf<Q>;
}
