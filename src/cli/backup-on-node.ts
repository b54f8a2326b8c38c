/**
 * `tessera backup create` (without --local): the node runs the backup (POST /api/v1/backups, docs/api.md)
 * and streams its events back; this process runs the --pre and --post hooks around the node's
 * snapshot and draws the progress. The password (and, for s3://, the AWS variables) go to the
 * node in the request, as for an instant restore.
 */
import type { IncomingMessage } from 'node:http';
import { http, https } from '../util/node-http.ts';
import { awsEnv, nodeLocation } from './backup-options.ts';
import { runHook } from './hooks.ts';
import type { Io } from './commands.ts';
import { CliError, CliErrorCode } from './errors.ts';

/** A disk backup's outcome as the node sends it (what `backup create --json` prints). */
export interface OutcomeJson {
  id: string;
  name: string;
  incremental: boolean;
  stats: { bytesScanned: number; bytesNew: number; bytesStored: number; chunksReused: number; chunksZero: number; durationMs: number };
  [field: string]: unknown;
}

/** Progress as the node sends it. */
export interface NodeProgress {
  disk: string;
  bytesRead: number;
  bytesToRead: number;
  bytesStored: number;
}

/** One JSON line of the node's reply is at most this long. */
const lineBytesMax = 16 << 20;

/**
 * Backs up `disks` on the node at `apiUrl` into `repo`; resolves to the outcomes and a failed
 * --post hook's message (the backup itself completed).
 */
export async function backupOnNode(
  apiUrl: string,
  io: Io,
  run: { disks: string[]; repo: string; password: string; pre?: string; post?: string; tenant?: string; onProgress?: (p: NodeProgress) => void },
): Promise<{ outcomes: OutcomeJson[]; postError: string | null }> {
  const repo = nodeLocation(run.repo);
  const hookEnv = (which: 'pre' | 'post', snapshot: string) => ({ TESSERA_DISKS: run.disks.join(' '), TESSERA_SNAPSHOT: snapshot, TESSERA_HOOK: which });
  if (run.pre !== undefined) {
    // The snapshot's name is the node's to choose: the hooks before it do not know it yet.
    const preError = await runHook(io, 'pre', run.pre, hookEnv('pre', ''));
    if (preError !== null) {
      const postError = run.post !== undefined ? await runHook(io, 'post', run.post, hookEnv('post', '')) : null;
      throw new CliError(CliErrorCode.FAILED, `${preError}; no snapshot taken${postError !== null ? `; and ${postError}` : ''}`);
    }
  }
  let postRan = false;
  let postError: string | null = null;
  const post = async (snapshot: string): Promise<void> => {
    if (postRan || run.post === undefined) return;
    postRan = true;
    postError = await runHook(io, 'post', run.post, hookEnv('post', snapshot));
  };
  const body = Buffer.from(JSON.stringify({ disks: run.disks, repo, password: run.password, env: awsEnv(io, repo), ...(run.tenant !== undefined ? { tenant: run.tenant } : {}) }));
  let outcomes: OutcomeJson[] | null = null;
  try {
    const res = await send(apiUrl, body);
    if (res.statusCode !== 200) throw await replyError(res);
    for await (const line of lines(res)) {
      let e: { event?: string; [k: string]: any };
      try {
        e = JSON.parse(line);
      } catch {
        throw new CliError(CliErrorCode.FAILED, 'the node sent a line of its backup that is not JSON');
      }
      if (e.event === 'snapshot') await post(String(e.name));
      else if (e.event === 'progress') run.onProgress?.(e.progress as NodeProgress);
      else if (e.event === 'note') io.stderr(`tessera: ${String(e.message)}\n`);
      else if (e.event === 'error') throw new CliError(CliErrorCode.FAILED, String(e.message));
      else if (e.event === 'done') outcomes = e.outcomes as OutcomeJson[];
    }
  } finally {
    await post('');
  }
  if (outcomes === null) throw new CliError(CliErrorCode.FAILED, 'the node closed the connection before the backup was done');
  return { outcomes, postError };
}

/** POSTs the request to /api/v1/backups; resolves once the reply's head came. */
function send(apiUrl: string, body: Buffer): Promise<IncomingMessage> {
  const url = new URL('/api/v1/backups', apiUrl);
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': String(body.length) } }, resolve);
    req.on('error', (err: NodeJS.ErrnoException) => {
      reject(new CliError(CliErrorCode.UNREACHABLE, `cannot reach the Tessera node at ${apiUrl}: is \`tessera serve\` running? (${err.code ?? err.message})`));
    });
    req.end(body);
  });
}

/** The node's error reply as a CliError with its message. */
async function replyError(res: IncomingMessage): Promise<CliError> {
  let text = '';
  for await (const chunk of res) text += chunk;
  try {
    const message = JSON.parse(text)?.error?.message;
    if (typeof message === 'string') return new CliError(CliErrorCode.FAILED, message);
  } catch {
    // not JSON: the status says what failed
  }
  return new CliError(CliErrorCode.FAILED, `the node answered HTTP ${res.statusCode} to POST /api/v1/backups`);
}

/** The reply's lines, as they come. */
async function* lines(res: IncomingMessage): AsyncGenerator<string> {
  let rest = '';
  res.setEncoding('utf8');
  for await (const chunk of res as AsyncIterable<string>) {
    rest += chunk;
    let nl: number;
    while ((nl = rest.indexOf('\n')) >= 0) {
      const line = rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      if (line !== '') yield line;
    }
    if (rest.length > lineBytesMax) throw new CliError(CliErrorCode.FAILED, 'the node sent a line of its backup over 16 MiB');
  }
  if (rest !== '') yield rest;
}
