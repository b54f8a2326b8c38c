/**
 * `tessera backup create` (without --local): the node runs the backup (ApiClient.runBackup, POST
 * /api/v1/backups, docs/api.md) and streams its events back; this process runs the --pre and
 * --post hooks around the node's snapshot and draws the progress. The password (and, for s3://,
 * the AWS variables) go to the node in the request, as for an instant restore.
 */
import type { ApiClient, BackupOutcome, BackupProgress } from '../api/client/index.ts';
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
  run: { disks: string[]; repo: string; password: string; pre?: string; post?: string; tenant?: string; onProgress?: (p: BackupProgress) => void },
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
  try {
    outcomes = await client.runBackup({ disks: run.disks, repo, password: run.password, env: awsEnv(io, repo), ...(run.tenant !== undefined ? { tenant: run.tenant } : {}) }, async (e) => {
      if (e.event === 'snapshot') await post(e.name);
      else if (e.event === 'progress') run.onProgress?.(e.progress);
      else if (e.event === 'note') io.stderr(`tessera: ${e.message}\n`);
    });
  } finally {
    await post('');
  }
  return { outcomes, postError };
}
