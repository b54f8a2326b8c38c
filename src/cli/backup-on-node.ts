/**
 * `tessera backup create` (without --local): the node runs the backup as a job (ApiClient.runBackup,
 * POST /api/v1/backups, docs/api.md) and streams its events back; this process runs the --pre and
 * --post hooks around the node's snapshot and draws the progress. The job goes on if this process
 * goes away (then --post does not run). The password (and, for s3://, the AWS variables) go to
 * the node in the request, as for an instant restore.
 */
import { ClientError, ClientErrorCode, type ApiClient, type BackupJob, type BackupOutcome, type BackupProgress } from '../api/client/index.ts';
import { awsEnv, nodeLocation } from './backup-options.ts';
import { runHook } from './hooks.ts';
import type { Io } from './commands.ts';
import { CliError, CliErrorCode } from './errors.ts';

/**
 * Backs up `disks` on the node of `client` into `repo`; resolves to the outcomes and a failed
 * --post hook's message (the backup itself completed).
 */
export async function backupOnNode(
  client: ApiClient,
  io: Io,
  run: {
    disks: string[];
    repo: string;
    password: string;
    pre?: string;
    post?: string;
    tenant?: string;
    rateBytesPerSecond?: number;
    /** Hears the job once the node has started it. */
    onJob?: (job: BackupJob) => void;
    onProgress?: (p: BackupProgress) => void;
  },
): Promise<{ outcomes: BackupOutcome[]; postError: string | null }> {
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
  let outcomes: BackupOutcome[];
  let jobId: string | null = null;
  const req = {
    disks: run.disks,
    repo,
    password: run.password,
    env: awsEnv(io, repo),
    ...(run.tenant !== undefined ? { tenant: run.tenant } : {}),
    ...(run.rateBytesPerSecond !== undefined ? { rateBytesPerSecond: run.rateBytesPerSecond } : {}),
  };
  try {
    outcomes = await client.runBackup(req, async (e) => {
      if (e.event === 'job') {
        jobId = e.job.id;
        run.onJob?.(e.job);
      } else if (e.event === 'snapshot') await post(e.name);
      else if (e.event === 'progress') run.onProgress?.(e.progress);
      else if (e.event === 'note') io.stderr(`tessera: ${e.message}\n`);
    });
  } catch (err) {
    // The stream went, not necessarily the job: it may still run on the node.
    if (err instanceof ClientError && err.code === ClientErrorCode.LOST && jobId !== null) {
      throw new ClientError(ClientErrorCode.LOST, `${err.message}; backup job ${jobId} may go on there (tessera backup jobs)`, { cause: err });
    }
    throw err;
  } finally {
    await post('');
  }
  return { outcomes, postError };
}
