import { http, https } from '../util/node-http.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';

/** Default API URL when neither --api nor TESSERA_API is given. */
export const DEFAULT_API_URL = 'http://127.0.0.1:7480';

/** Options of a request. */
interface RequestOptions {
  /** JSON body to send. */
  body?: unknown;
  /** Give up after this long. */
  timeoutMs?: number;
}

/** A small client of the node's HTTP API; every failure is a CliError with a one-line message. */
export class ApiClient {
  /** Base URL without a trailing slash, e.g. `http://127.0.0.1:7480`. */
  readonly baseUrl: string;

  constructor(baseUrl: string) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw usageError(`invalid API URL '${baseUrl}': expected e.g. ${DEFAULT_API_URL}`);
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw usageError(`invalid API URL '${baseUrl}': expected an http:// or https:// URL`);
    }
    this.baseUrl = url.href.replace(/\/+$/, '');
  }

  /** Sends a request to `/api/v1` + `path` and returns the parsed JSON reply (undefined for 204). */
  async request(method: string, path: string, opts: RequestOptions = {}): Promise<any> {
    const timeoutMs = opts.timeoutMs ?? 60_000;
    let status: number;
    let text: string;
    try {
      ({ status, text } = await send(new URL(`${this.baseUrl}/api/v1${path}`), method, opts.body === undefined ? undefined : JSON.stringify(opts.body), timeoutMs));
    } catch (err) {
      if (err instanceof TimeoutError) {
        throw new CliError(CliErrorCode.FAILED, `the Tessera node at ${this.baseUrl} did not answer within ${timeoutMs / 1000} s`, { cause: err });
      }
      throw new CliError(CliErrorCode.UNREACHABLE, `cannot reach the Tessera node at ${this.baseUrl}: is \`tessera serve\` running?`, { cause: err });
    }
    if (status === 204) return undefined;
    let reply: any;
    try {
      reply = JSON.parse(text);
    } catch {
      throw new CliError(CliErrorCode.FAILED, `unexpected reply from ${this.baseUrl} (HTTP ${status}, not JSON): is it a Tessera node?`);
    }
    if (status < 200 || status >= 300) throw replyError(status, reply, `${method} ${path}`);
    return reply;
  }
}

/** The error of a reply that is not a success: the node's `error.message`, else its status and `what` was asked. */
export function replyError(status: number, body: unknown, what: string): CliError {
  const message = (body as { error?: { message?: unknown } } | null)?.error?.message;
  return new CliError(CliErrorCode.FAILED, typeof message === 'string' ? message : `the node answered HTTP ${status} to ${what}`);
}

/** A request that took longer than its time limit. */
class TimeoutError extends Error {}

/**
 * One HTTP request, on a connection of its own, with a limit on its whole duration. node:http,
 * not fetch: a command's first fetch loads undici and compiles its WebAssembly HTTP parser,
 * ~70 ms of every command's start.
 */
function send(url: URL, method: string, body: string | undefined, timeoutMs: number): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | number> = body === undefined ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) };
    const req = (url.protocol === 'https:' ? https : http).request(url, { method, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8') });
      });
      res.on('error', fail);
    });
    const timer = setTimeout(() => req.destroy(new TimeoutError(`no answer within ${timeoutMs} ms`)), timeoutMs);
    function fail(err: Error): void {
      clearTimeout(timer);
      reject(err);
    }
    req.on('error', fail);
    req.end(body);
  });
}
