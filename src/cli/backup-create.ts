/**
 * `tessera backup create` (docs/cli.md): by default the node runs the backup as a job
 * (backup-on-node.ts), and this command only needs the modules of a client of the node; with
 * `--local` it runs here (createLocally of backup.ts, loaded then).
 */
import { backupOnNode } from './backup-on-node.ts';
import { backedUpLine, password, progressLine, progressText, repoLocation, repoOption } from './backup-options.ts';
import { jsonOption, printJson } from './output.ts';
import type { Command } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { parseSize } from './size.ts';

/** `tessera backup create` (docs/cli.md). */
export const backupCreateCommand: Command = {
  name: 'backup create',
  args: ['DISK...'],
  summary: 'Back up disks of the node (the node runs it as a job): a snapshot, then only allocated data (first time) or changed chunks',
  options: {
    repo: repoOption,
    pre: { type: 'string', valueName: 'CMD', description: 'Shell command run before the snapshot (e.g. fsfreeze -f); failing aborts' },
    post: { type: 'string', valueName: 'CMD', description: 'Shell command run after the snapshot, even if it failed (e.g. fsfreeze -u)' },
    tenant: { type: 'string', valueName: 'NAME', description: 'Tenant the restore points belong to, for archival policies (default: default)' },
    rate: { type: 'string', valueName: 'SIZE', description: 'Bytes a second the node reads of the disks at most, e.g. 100M, to spare a busy node (default: full speed)' },
    local: { type: 'boolean', description: 'Run the backup in this process, not on the node (the password stays here; for a repository only this host reaches)' },
    json: jsonOption,
  },
  examples: [
    'tessera backup create vm1 --repo /srv/backups',
    "tessera backup create vm1 --repo /srv/backups --local   # this process reads the node's disk and writes the repository",
    'tessera backup create vm1-root vm1-data --repo /srv/backups   # one consistency group',
    "tessera backup create vm1 --pre 'ssh vm1 fsfreeze -f /srv' --post 'ssh vm1 fsfreeze -u /srv'",
    'tessera backup create vm1 --repo /srv/backups --tenant acme',
    'tessera backup create vm1 --repo /srv/backups --rate 100M',
  ],
  usesApi: true,
  async run(ctx) {
    const disks = ctx.args;
    const dup = disks.find((d, i) => disks.indexOf(d) !== i);
    if (dup !== undefined) throw usageError(`disk ${dup} is named twice`);
    const rate = typeof ctx.values.rate === 'string' ? parseSize(ctx.values.rate) : undefined;
    if (rate === 0) throw usageError('invalid --rate 0: leave --rate out for full speed');
    if (ctx.values.local === true) {
      if (rate !== undefined) throw usageError('--rate paces a backup the node runs: leave it out with --local');
      // The key is derived while the backup modules load (see key-ahead.ts).
      (await import('./key-ahead.ts')).deriveKeyFor((ctx.values.repo as string | undefined) ?? ctx.io.env.TESSERA_REPO, ctx.io.env);
      const { createLocally } = await import('./backup.ts');
      return createLocally(ctx);
    }
    const progress = progressLine(ctx.io);
    const done = await backupOnNode(ctx.client(), ctx.io, {
      disks,
      repo: repoLocation(ctx),
      password: await password(ctx.io),
      pre: ctx.values.pre as string | undefined,
      post: ctx.values.post as string | undefined,
      tenant: typeof ctx.values.tenant === 'string' ? ctx.values.tenant : undefined,
      rateBytesPerSecond: rate,
      // On a terminal, where Ctrl-C is at hand: stopping this command does not stop the job.
      onJob: (job) => {
        if (ctx.io.stderrIsTty) ctx.io.stderr(`tessera: backup job ${job.id} on the node; it goes on if this command stops (tessera backup job cancel ${job.id} stops it)\n`);
      },
      onProgress: (p) => progress.update(() => progressText(p)),
    }).finally(() => progress.done());
    if (ctx.values.json) printJson(ctx.io, done.outcomes);
    else for (const o of done.outcomes) ctx.io.stdout(backedUpLine(o.name, o.id, o.incremental, o.stats));
    if (done.postError !== null) throw new CliError(CliErrorCode.FAILED, `${done.postError} (the backup itself completed)`);
  },
};
