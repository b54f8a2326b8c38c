/**
 * `tessera backup jobs` and `backup job cancel ID` (docs/cli.md): the backups the node runs as
 * jobs (GET /api/v1/backup-jobs, POST /api/v1/backup-jobs/{id}/cancel). Clients of the node only:
 * they load none of the backup code.
 */
import type { BackupJob } from '../api/client/index.ts';
import type { Command } from './commands.ts';
import { CliError, CliErrorCode } from './errors.ts';
import { formatTime, jsonOption, printJson } from './output.ts';
import { formatSize } from './size.ts';
import { formatTable } from './table.ts';

/** What a job came to, in a table cell: its restore points, or its error. */
function resultText(j: BackupJob): string {
  if (j.outcomes !== null) return j.outcomes.map((o) => `${o.name} ${o.id.slice(0, 8)}`).join(', ');
  if (j.error !== null) return j.error.message;
  return j.snapshot === null ? '-' : `snapshot ${j.snapshot}`;
}

/** How long a job ran (or has been running, at `now`). */
function tookText(j: BackupJob, now: number): string {
  return `${(((j.finishedMs ?? now) - j.startedMs) / 1000).toFixed(1)} s`;
}

/** The jobs as a table; a NODE column in a cluster. */
function jobsTable(jobs: BackupJob[], now: number): string {
  const cluster = jobs.some((j) => j.node !== null);
  const rows = jobs.map((j) => [
    j.id,
    ...(cluster ? [j.node ?? '-'] : []),
    j.state,
    j.disks.join(' '),
    j.repo,
    `${formatSize(j.bytesRead)} of ${formatSize(j.bytesToRead)}`,
    formatTime(j.startedMs),
    tookText(j, now),
    resultText(j),
  ]);
  const headers = ['ID', ...(cluster ? ['NODE'] : []), 'STATE', 'DISKS', 'REPO', 'READ', 'STARTED', 'TOOK', 'RESULT'];
  const align = headers.map((h) => (h === 'READ' || h === 'TOOK' ? 'right' : 'left') as 'left' | 'right');
  return formatTable({ headers, rows, align });
}

/** The backup job commands. */
export const backupJobCommands: Command[] = [
  {
    name: 'backup jobs',
    args: [],
    summary: 'Backups the node runs: the running one and the last finished (in a cluster, every node\'s)',
    options: { json: jsonOption },
    examples: ['tessera backup jobs', 'tessera backup jobs --json'],
    usesApi: true,
    async run(ctx) {
      const jobs = await ctx.client().listBackupJobs();
      if (ctx.values.json) return printJson(ctx.io, jobs);
      ctx.io.stdout(jobs.length === 0 ? 'No backup jobs (finished ones are kept for a while, and not across a restart of the node)\n' : jobsTable(jobs, Date.now()));
    },
  },
  {
    name: 'backup job cancel',
    args: ['ID'],
    summary: 'Cancel a backup the node runs: it fails as a failed backup does (its new snapshot deleted); waits until it has ended',
    options: { json: jsonOption },
    examples: ['tessera backup job cancel 3f9a2c7d41b0', 'tessera backup job cancel 3f9a   # a unique prefix'],
    usesApi: true,
    async run(ctx) {
      const job = await ctx.client().cancelBackupJob(ctx.args[0]);
      if (job.state !== 'cancelled') {
        const how = job.state === 'done' ? `done: ${resultText(job)}` : `${job.state}: ${job.error?.message ?? '?'}`;
        throw new CliError(CliErrorCode.FAILED, `backup job ${job.id} had ended already (${how})`);
      }
      if (ctx.values.json) return printJson(ctx.io, job);
      ctx.io.stdout(`Cancelled backup job ${job.id} (${job.disks.join(' ')}) after ${formatSize(job.bytesRead)} read\n`);
    },
  },
];
