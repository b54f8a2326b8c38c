import { ApiError, ApiErrorCode } from './errors.ts';

/** Type of one body field, as the boundary checks it. */
type FieldType = 'string' | 'sizeBytes';

/** What a request body must hold: field name → type. Every field is required. */
export type BodySpec = Record<string, FieldType>;

/** The body a spec describes, once checked. */
export type BodyOf<S extends BodySpec> = { [K in keyof S]: S[K] extends 'string' ? string : number };

/**
 * Checks a parsed JSON body against `spec`, once, at the boundary: it must be an object with
 * exactly the spec's fields (an unknown field is more likely a typo than an extension) of the
 * right types. Sizes must be non-negative safe integers; whether they suit a disk (a multiple
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
    if (value === undefined) throw new ApiError(ApiErrorCode.BAD_REQUEST, `Missing field '${key}'`);
    if (type === 'string' && typeof value !== 'string') {
      throw new ApiError(ApiErrorCode.BAD_REQUEST, `Field '${key}' must be a string`);
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
