/**
 * An object store under a key prefix of an S3 bucket (AWS or any S3-compatible server: Ceph RGW,
 * MinIO, Garage…), through @aws-sdk/client-s3.
 *
 * S3 already gives what the Backend contract asks: a PUT is atomic (readers see the old object,
 * or the new one whole) and durable once answered. What this file adds is the mapping of S3's
 * failures onto ObjstoreError codes, retries of the transient ones, and limits: at most
 * `inFlightMax` requests at once, connect and idle timeouts, a bounded number of attempts.
 */
import { createHash } from 'node:crypto';
import type { Agent as HttpAgent } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import { http as nodeHttp, https as nodeHttps } from '../util/node-http.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { createRequire } from 'node:module';
import type * as S3Sdk from '@aws-sdk/client-s3';
import { Backend, objectBytesMax, pathBytesMax, type ByteRange, type ObjectInfo } from './backend.ts';
import { ObjstoreError, ObjstoreErrorCode } from './errors.ts';

/**
 * The AWS SDK, loaded when the first S3 backend is made: it takes longer to load than the rest of
 * the CLI, and most commands never need it.
 */
let sdkLoaded: typeof S3Sdk | null = null;
function sdk(): typeof S3Sdk {
  sdkLoaded ??= createRequire(import.meta.url)('@aws-sdk/client-s3') as typeof S3Sdk;
  return sdkLoaded;
}

/** Where an object store is in S3: `s3://BUCKET/PREFIX`. */
export interface S3Location {
  bucket: string;
  /** Key prefix without leading or trailing `/`; empty for the bucket's root. */
  prefix: string;
}

/** Static S3 credentials. */
export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

/** Options of S3Backend. Limits have defaults; see docs/objstore.md, "S3". */
export interface S3BackendOptions extends S3Location {
  /** Endpoint URL of an S3-compatible server, e.g. `http://127.0.0.1:7480`; AWS when omitted. */
  endpoint?: string;
  /** Region requests are signed for. Default `us-east-1`. */
  region?: string;
  /** Credentials; when omitted, the AWS SDK's default chain (environment, ~/.aws, instance role). */
  credentials?: S3Credentials;
  /** Bucket in the URL path rather than the host name. Default: true when `endpoint` is set. */
  forcePathStyle?: boolean;
  /** Bound on establishing a connection. Default 10 s. */
  connectTimeoutMs?: number;
  /** Bound on a connection with a request in flight staying silent. Default 60 s. */
  idleTimeoutMs?: number;
  /** Attempts of one request, the first included, before a transient failure is reported. Default 5. */
  attemptsMax?: number;
  /** First delay between attempts; each retry doubles it (with jitter), up to retryDelayMsMax. Default 200 ms. */
  retryDelayMs?: number;
  /** Longest delay between attempts. Default 10 s. */
  retryDelayMsMax?: number;
  /** Requests in flight at once (also the connection pool's size). Default 16. */
  inFlightMax?: number;
  /** Requests waiting for a free slot; one more is refused with OBJSTORE_STORAGE. Default 4096. */
  waitingMax?: number;
}

/** Longest key prefix: S3 keys are at most 1024 bytes, object paths at most pathBytesMax. */
export const s3PrefixBytesMax = 1024 - pathBytesMax - 1;

const bucketPattern = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
const prefixSegmentPattern = /^[A-Za-z0-9_.-]+$/;

/** Parses `s3://BUCKET[/PREFIX][/]`; anything else is OBJSTORE_INVALID. */
export function parseS3Url(url: string): S3Location {
  const m = /^s3:\/\/([^/]*)(?:\/(.*))?$/.exec(url);
  const bad = (why: string) => new ObjstoreError(ObjstoreErrorCode.INVALID, `Bad S3 repository URL ${JSON.stringify(url)}: ${why}`);
  if (!m) throw bad('expected s3://BUCKET/PREFIX');
  const bucket = m[1];
  if (!bucketPattern.test(bucket) || bucket.includes('..')) throw bad(`bucket name ${JSON.stringify(bucket)} is not a valid S3 bucket name`);
  const prefix = (m[2] ?? '').replace(/\/$/, '');
  if (prefix !== '') {
    for (const seg of prefix.split('/')) {
      if (!prefixSegmentPattern.test(seg) || seg === '.' || seg === '..') throw bad('the prefix takes letters, digits, ".", "_", "-" and single "/" between names');
    }
    if (prefix.length > s3PrefixBytesMax) throw bad(`the prefix is over ${s3PrefixBytesMax} bytes`);
  }
  return { bucket, prefix };
}

/**
 * Options for the store at `url` (`s3://BUCKET/PREFIX`) from the usual AWS environment
 * variables: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION or AWS_DEFAULT_REGION,
 * AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN.
 */
export function s3OptionsFromEnv(url: string, env: NodeJS.ProcessEnv = process.env): S3BackendOptions {
  const location = parseS3Url(url);
  const endpointVar = env.AWS_ENDPOINT_URL_S3 ? 'AWS_ENDPOINT_URL_S3' : 'AWS_ENDPOINT_URL';
  const endpoint = env[endpointVar] || undefined;
  if (endpoint !== undefined && !/^https?:\/\/[^/]+\/?$/.test(endpoint)) {
    throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Bad S3 endpoint ${JSON.stringify(endpoint)} in ${endpointVar}: expected http(s)://HOST[:PORT]`);
  }
  const region = env.AWS_REGION || env.AWS_DEFAULT_REGION || undefined;
  const accessKeyId = env.AWS_ACCESS_KEY_ID || undefined;
  const secretAccessKey = env.AWS_SECRET_ACCESS_KEY || undefined;
  if ((accessKeyId === undefined) !== (secretAccessKey === undefined)) {
    const missing = accessKeyId === undefined ? 'AWS_ACCESS_KEY_ID' : 'AWS_SECRET_ACCESS_KEY';
    throw new ObjstoreError(ObjstoreErrorCode.INVALID, `${missing} is not set while its pair is: set both, or neither to use the AWS SDK's credential chain`);
  }
  const credentials = accessKeyId !== undefined && secretAccessKey !== undefined
    ? { accessKeyId, secretAccessKey, ...(env.AWS_SESSION_TOKEN ? { sessionToken: env.AWS_SESSION_TOKEN } : {}) }
    : undefined;
  return { ...location, endpoint, region, credentials };
}

/** The S3 backend of the store at `url`, configured from the AWS environment variables. */
export function openS3Backend(url: string, env: NodeJS.ProcessEnv = process.env): S3Backend {
  return new S3Backend(s3OptionsFromEnv(url, env));
}

/** Network error codes worth another attempt: the server or the path to it may come back. */
const transientErrnos = new Set([
  'ECONNRESET', 'ECONNREFUSED', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EAI_AGAIN', 'EHOSTUNREACH',
  'ENETUNREACH', 'ENETDOWN', 'EHOSTDOWN', 'ERR_STREAM_PREMATURE_CLOSE', 'UND_ERR_SOCKET',
]);

/** S3 error names worth another attempt (throttling, server-side trouble, a body damaged in transit). */
const transientNames = new Set([
  'TimeoutError', 'RequestTimeout', 'RequestTimeoutException', 'SlowDown', 'Throttling',
  'ThrottlingException', 'RequestThrottled', 'InternalError', 'ServiceUnavailable', 'BadDigest',
  'IncompleteBody', 'TruncatedBody',
]);

/** Status codes worth another attempt. */
const transientStatuses = new Set([408, 429, 500, 502, 503, 504]);

interface ErrorShape {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
  $retryable?: unknown;
  cause?: unknown;
}

function httpStatus(err: unknown): number | undefined {
  return (err as ErrorShape | null)?.$metadata?.httpStatusCode;
}

/** The errno-style code of a network error, looking through causes the SDK wraps it in. */
function errnoOf(err: unknown): string | undefined {
  for (let e = err as ErrorShape | undefined, depth = 0; e && depth < 5; e = e.cause as ErrorShape | undefined, depth++) {
    if (typeof e.code === 'string' && /^[A-Z_]+$/.test(e.code)) return e.code;
  }
  return undefined;
}

function isTransient(err: unknown): boolean {
  const e = err as ErrorShape;
  if (e?.name === 'AbortError') return false;
  const status = httpStatus(err);
  if (status !== undefined && transientStatuses.has(status)) return true;
  if (e?.name && transientNames.has(e.name)) return true;
  const errno = errnoOf(err);
  if (errno && transientErrnos.has(errno)) return true;
  // Responses with a status (403, 404, 400…) are the server's considered answer.
  return status === undefined && e?.$retryable !== undefined && e.$retryable !== false;
}

/** A short name of what went wrong, for messages: the S3 error code, or the network error's. */
function describeError(err: unknown): string {
  const e = err as ErrorShape;
  const status = httpStatus(err);
  const errno = errnoOf(err);
  if (status !== undefined) {
    const detail = e.message && e.message !== e.name && e.message !== 'UnknownError' ? `: ${e.message}` : '';
    return `${e.name ?? 'error'}${detail} (HTTP ${status})`;
  }
  if (errno) return errno;
  return e?.message ?? String(err);
}

/** A body that ended before its Content-Length: the connection broke, worth another attempt. */
class TruncatedBody extends Error {
  constructor(got: number, expected: number) {
    super(`Response body ended after ${got} of ${expected} bytes`);
    this.name = 'TruncatedBody';
  }
}

/**
 * Reads a response body into one buffer, allocated once from its announced length; a server
 * that announces none (chunked encoding) is read up to objectBytesMax.
 */
async function readBody(body: AsyncIterable<Uint8Array> | undefined, length: number | undefined): Promise<Buffer> {
  if (length === undefined) {
    const chunks: Uint8Array[] = [];
    let total = 0;
    for await (const chunk of body ?? []) {
      total += chunk.length;
      if (total > objectBytesMax) throw new ObjstoreError(ObjstoreErrorCode.STORAGE, `S3 sent a response body over ${objectBytesMax} bytes`);
      chunks.push(chunk);
    }
    return Buffer.concat(chunks, total);
  }
  const buf = Buffer.allocUnsafe(length);
  let done = 0;
  for await (const chunk of body ?? []) {
    if (done + chunk.length > length) throw new ObjstoreError(ObjstoreErrorCode.STORAGE, `S3 sent more than the ${length} bytes it announced`);
    buf.set(chunk, done);
    done += chunk.length;
  }
  if (done !== length) throw new TruncatedBody(done, length);
  return buf;
}

/** Counting semaphore with a bounded queue of waiters. */
class Slots {
  #free: number;
  readonly waitingMax: number;
  readonly #waiting: (() => void)[] = [];
  constructor(count: number, waitingMax: number) {
    this.#free = count;
    this.waitingMax = waitingMax;
  }
  /** Resolves when a slot is ours; false if the queue of waiters is full. */
  acquire(): Promise<boolean> | boolean {
    if (this.#free > 0) {
      this.#free--;
      return true;
    }
    if (this.#waiting.length >= this.waitingMax) return false;
    return new Promise<boolean>((resolve) => this.#waiting.push(() => resolve(true)));
  }
  release(): void {
    const next = this.#waiting.shift();
    if (next) next();
    else this.#free++;
  }
}

/** A Backend over a key prefix of an S3 bucket. */
export class S3Backend extends Backend {
  readonly location: string;
  readonly bucket: string;
  /** Key prefix of every object, `` or `PREFIX/`. */
  readonly keyPrefix: string;
  /** The endpoint, or `AWS S3 (REGION)`, for messages. */
  readonly endpointName: string;
  readonly #client: S3Sdk.S3Client;
  readonly #agent: HttpAgent | HttpsAgent;
  readonly #slots: Slots;
  readonly #inFlightMax: number;
  readonly #attemptsMax: number;
  readonly #retryDelayMs: number;
  readonly #retryDelayMsMax: number;
  readonly #idleTimeoutMs: number;
  /** Set once the bucket was seen to exist, so a 404 of HEAD means the object is missing. */
  #bucketSeen = false;
  #closed = false;

  constructor(opts: S3BackendOptions) {
    super();
    const { bucket, prefix } = parseS3Url(`s3://${opts.bucket}/${opts.prefix}`);
    this.bucket = bucket;
    this.keyPrefix = prefix === '' ? '' : `${prefix}/`;
    this.location = prefix === '' ? `s3://${bucket}` : `s3://${bucket}/${prefix}`;
    const region = opts.region ?? 'us-east-1';
    this.endpointName = opts.endpoint ?? `AWS S3 (${region})`;
    const inFlightMax = positive(opts.inFlightMax ?? 16, 'inFlightMax');
    this.#inFlightMax = inFlightMax;
    this.#slots = new Slots(inFlightMax, positive(opts.waitingMax ?? 4096, 'waitingMax'));
    this.#attemptsMax = positive(opts.attemptsMax ?? 5, 'attemptsMax');
    this.#retryDelayMs = positive(opts.retryDelayMs ?? 200, 'retryDelayMs');
    this.#retryDelayMsMax = positive(opts.retryDelayMsMax ?? 10_000, 'retryDelayMsMax');
    this.#idleTimeoutMs = positive(opts.idleTimeoutMs ?? 60_000, 'idleTimeoutMs');
    const https = opts.endpoint === undefined || opts.endpoint.startsWith('https:');
    // An agent of our own: the SDK would otherwise make an unbounded one for uploads that use
    // `Expect: 100-continue`.
    const agentOpts = { keepAlive: true, maxSockets: inFlightMax, maxFreeSockets: inFlightMax };
    this.#agent = https ? new nodeHttps.Agent(agentOpts) : new nodeHttp.Agent(agentOpts);
    this.#client = new (sdk().S3Client)({
      region,
      endpoint: opts.endpoint,
      forcePathStyle: opts.forcePathStyle ?? opts.endpoint !== undefined,
      credentials: opts.credentials,
      // Retries are ours (below), so they cover reading the body too, and count in one place.
      maxAttempts: 1,
      // Content-MD5 (below) is what every S3-compatible server checks; the SDK's newer CRC
      // checksums are not understood by all of them. Data read back is authenticated anyway.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: https
        ? { httpsAgent: this.#agent as HttpsAgent, connectionTimeout: positive(opts.connectTimeoutMs ?? 10_000, 'connectTimeoutMs'), socketTimeout: this.#idleTimeoutMs }
        : { httpAgent: this.#agent as HttpAgent, connectionTimeout: positive(opts.connectTimeoutMs ?? 10_000, 'connectTimeoutMs'), socketTimeout: this.#idleTimeoutMs },
    });
  }

  /** `inFlightMax`: more requests wait for a slot. */
  override get requestsMax(): number {
    return this.#inFlightMax;
  }

  protected async _get(path: string, range: ByteRange | undefined): Promise<Buffer> {
    const Range = range ? `bytes=${range.offset}-${range.offset + range.length - 1}` : undefined;
    return this.#send('read', path, async () => {
      let out;
      try {
        out = await this.#client.send(new (sdk().GetObjectCommand)({ Bucket: this.bucket, Key: this.keyPrefix + path, Range }));
      } catch (err) {
        if (range && httpStatus(err) === 416) {
          throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Byte range ${range.offset}+${range.length} is past the end of ${path} in ${this.location}`, { cause: err });
        }
        throw err;
      }
      const length = out.ContentLength;
      if (range && length !== undefined && length !== range.length) {
        // S3 answers a range that runs past the end with what there is.
        (out.Body as { destroy?: () => void } | undefined)?.destroy?.();
        const size = /\/(\d+)$/.exec(out.ContentRange ?? '')?.[1] ?? '?';
        throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Byte range ${range.offset}+${range.length} is past the end of ${path} in ${this.location} (${size} bytes)`);
      }
      const data = await readBody(out.Body as AsyncIterable<Uint8Array> | undefined, length);
      if (range && data.length !== range.length) {
        throw new ObjstoreError(ObjstoreErrorCode.INVALID, `Byte range ${range.offset}+${range.length} is past the end of ${path} in ${this.location}`);
      }
      return data;
    });
  }

  protected async _put(path: string, data: Buffer): Promise<void> {
    const md5 = createHash('md5').update(data).digest('base64');
    await this.#send('write', path, () =>
      this.#client.send(new (sdk().PutObjectCommand)({ Bucket: this.bucket, Key: this.keyPrefix + path, Body: data, ContentLength: data.length, ContentMD5: md5 })));
    this.#bucketSeen = true;
  }

  protected async _list(prefix: string): Promise<ObjectInfo[]> {
    const found: ObjectInfo[] = [];
    let token: string | undefined;
    do {
      const page = await this.#send('list', prefix === '' ? '(all)' : `${prefix}*`, () =>
        this.#client.send(new (sdk().ListObjectsV2Command)({ Bucket: this.bucket, Prefix: this.keyPrefix + prefix, ContinuationToken: token, MaxKeys: 1000 })));
      for (const o of page.Contents ?? []) {
        // Keys ending in `/` are the "folders" some S3 consoles create, not objects.
        if (o.Key === undefined || !o.Key.startsWith(this.keyPrefix) || o.Key.endsWith('/')) continue;
        found.push({ path: o.Key.slice(this.keyPrefix.length), sizeBytes: o.Size ?? 0 });
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
      if (page.IsTruncated && !token) {
        throw new ObjstoreError(ObjstoreErrorCode.STORAGE, `S3 at ${this.endpointName} said the listing of ${this.location} goes on but gave no continuation token`);
      }
    } while (token !== undefined);
    this.#bucketSeen = true;
    return found;
  }

  protected async _stat(path: string): Promise<ObjectInfo | null> {
    try {
      const out = await this.#send('stat', path, () => this.#client.send(new (sdk().HeadObjectCommand)({ Bucket: this.bucket, Key: this.keyPrefix + path })));
      this.#bucketSeen = true;
      return { path, sizeBytes: out.ContentLength ?? 0 };
    } catch (err) {
      if (!(err instanceof ObjstoreError) || err.code !== ObjstoreErrorCode.NOT_FOUND) throw err;
    }
    // A HEAD answer has no body to say whether the object or the bucket is missing: ask once.
    if (!this.#bucketSeen) {
      await this.#send('stat', '(bucket)', () => this.#client.send(new (sdk().HeadBucketCommand)({ Bucket: this.bucket })), true);
      this.#bucketSeen = true;
    }
    return null;
  }

  protected async _delete(path: string): Promise<void> {
    try {
      await this.#send('delete', path, () => this.#client.send(new (sdk().DeleteObjectCommand)({ Bucket: this.bucket, Key: this.keyPrefix + path })));
    } catch (err) {
      // S3 answers 204 for a missing key; some compatible servers say 404.
      if (err instanceof ObjstoreError && err.code === ObjstoreErrorCode.NOT_FOUND && (err.cause as ErrorShape | undefined)?.name !== 'NoSuchBucket') return;
      throw err;
    }
  }

  protected override async _close(): Promise<void> {
    this.#closed = true;
    this.#client.destroy();
    this.#agent.destroy();
  }

  /**
   * Runs one S3 request in a slot, retrying transient failures with exponential backoff and
   * full jitter, and turns what fails into an ObjstoreError. `isBucket`: a 404 means the bucket.
   */
  async #send<T>(op: 'read' | 'write' | 'list' | 'stat' | 'delete', path: string, request: () => Promise<T>, isBucket = false): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      if (this.#closed) throw new ObjstoreError(ObjstoreErrorCode.INVALID, `The backend of ${this.location} is closed`);
      if (!(await this.#slots.acquire())) {
        throw new ObjstoreError(ObjstoreErrorCode.STORAGE, `Too many S3 requests waiting for ${this.location}: over the limit of ${this.#slots.waitingMax}`);
      }
      try {
        return await request();
      } catch (err) {
        if (err instanceof ObjstoreError || !isTransient(err) || attempt >= this.#attemptsMax) throw this.#toObjstoreError(op, path, err, attempt, isBucket);
      } finally {
        this.#slots.release();
      }
      // Exponential backoff, the delay drawn from the upper half so retries still spread out.
      const ceiling = Math.min(this.#retryDelayMsMax, this.#retryDelayMs * 2 ** (attempt - 1));
      await sleep(Math.round(ceiling / 2 + (Math.random() * ceiling) / 2));
    }
  }

  #toObjstoreError(op: string, path: string, err: unknown, attempts: number, isBucket: boolean): ObjstoreError {
    if (err instanceof ObjstoreError) return err;
    const e = err as ErrorShape;
    const status = httpStatus(err);
    const where = `${this.location} at ${this.endpointName}`;
    const tries = attempts > 1 ? ` (after ${attempts} attempts)` : '';
    if (e?.name === 'NoSuchBucket' || (isBucket && status === 404)) {
      return new ObjstoreError(ObjstoreErrorCode.NOT_FOUND, `No bucket ${this.bucket} at ${this.endpointName}`, { cause: err });
    }
    if (e?.name === 'NoSuchKey' || (status === 404 && (op === 'read' || op === 'stat' || op === 'delete'))) {
      return new ObjstoreError(ObjstoreErrorCode.NOT_FOUND, `No object ${path} in ${this.location}`, { cause: err });
    }
    if (status === 401 || status === 403) {
      return new ObjstoreError(ObjstoreErrorCode.STORAGE, `S3 refused access to ${where}: ${describeError(err)}; check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and the bucket's permissions`, { cause: err });
    }
    if (status === 301 || e?.name === 'PermanentRedirect' || e?.name === 'AuthorizationHeaderMalformed') {
      return new ObjstoreError(ObjstoreErrorCode.STORAGE, `S3 says bucket ${this.bucket} is not in region being used at ${this.endpointName}: ${describeError(err)}; set AWS_REGION`, { cause: err });
    }
    if (e?.name === 'CredentialsProviderError') {
      return new ObjstoreError(ObjstoreErrorCode.STORAGE, `No S3 credentials for ${where}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (${e.message})`, { cause: err });
    }
    if (e?.name === 'TimeoutError') {
      return new ObjstoreError(ObjstoreErrorCode.STORAGE, `S3 endpoint ${this.endpointName} did not answer in time to ${op} ${path} in ${this.location}${tries}: ${describeError(err)}`, { cause: err });
    }
    if (status === undefined) {
      return new ObjstoreError(ObjstoreErrorCode.STORAGE, `Cannot reach S3 endpoint ${this.endpointName} to ${op} ${path} in ${this.location}${tries}: ${describeError(err)}`, { cause: err });
    }
    return new ObjstoreError(ObjstoreErrorCode.STORAGE, `S3 failed to ${op} ${path} in ${where}${tries}: ${describeError(err)}`, { cause: err });
  }
}

function positive(n: number, name: string): number {
  if (!Number.isSafeInteger(n) || n <= 0) throw new ObjstoreError(ObjstoreErrorCode.INVALID, `S3 backend option ${name} must be a positive integer, got ${n}`);
  return n;
}
