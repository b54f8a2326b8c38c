/**
 * `tessera backup schedule …` and `tessera snap schedule …` (docs/cli.md, "Schedules"): clients
 * of the node's schedule routes (docs/api.md). The node keeps the schedules and runs them; these
 * commands load only the API client.
 */
import { resolve } from 'node:path';
import type { BackupScheduleInfo, BackupScheduleRequest, SnapshotScheduleInfo } from '../api/client/index.ts';
import { nodeLocation, repoLocation, repoOption } from './backup-options.ts';
import type { Command, CommandContext, OptionSpec } from './commands.ts';
import { usageError } from './errors.ts';
import { formatTime, jsonOption, printJson } from './output.ts';
import { formatTable } from './table.ts';

const units = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000 } as const;

/** `90s`, `15m`, `1h`, `7d` → ms (a positive whole number of one unit). */
export function parsePeriod(option: string, text: string): number {
  const m = /^(\d{1,9})([smhd])$/.exec(text);
  if (m === null || Number(m[1]) === 0) throw usageError(`invalid --${option} '${text}': expected a positive whole number of s, m, h or d, e.g. 15m, 1h, 7d`);
  return Number(m[1]) * units[m[2] as keyof typeof units];
}

/** A period for people: in the largest unit that measures it whole (`1h`, `90m`, `1500ms`). */
export function formatPeriod(ms: number): string {
  for (const [unit, size] of Object.entries(units)) if (ms % size === 0) return `${ms / size}${unit}`;
  return `${ms}ms`;
}

/** A whole number from an option, or undefined if absent. */
function count(ctx: CommandContext, name: string): number | undefined {
  const v = ctx.values[name];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^\d{1,9}$/.test(v)) throw usageError(`invalid --${name} '${String(v)}': expected a whole number`);
  return Number(v);
}

/** `--every` or `--cron`, exactly one. */
function recurrence(ctx: CommandContext): { everyMs: number } | { cron: string } {
  const every = ctx.values.every;
  const cron = ctx.values.cron;
  if ((typeof every === 'string') === (typeof cron === 'string')) throw usageError('give one of --every DURATION and --cron EXPR');
  return typeof every === 'string' ? { everyMs: parsePeriod('every', every) } : { cron: cron as string };
}

/** When a schedule runs, for people. */
function when(s: { everyMs: number | null; cron: string | null }): string {
  return s.everyMs !== null ? `every ${formatPeriod(s.everyMs)}` : `cron '${s.cron}' (UTC)`;
}

/** The last run in a cell: `TIME ok`, `TIME failed`, or `-`. */
function lastCell(r: { startedMs: number; result: string } | null, running: boolean): string {
  const last = r === null ? 'never' : `${formatTime(r.startedMs)} ${r.result}`;
  return running ? `${last}, running` : last;
}

function keepText(s: BackupScheduleInfo): string {
  const rules = [s.keepLast !== null ? `last ${s.keepLast}` : null, s.keepDaily !== null ? `daily ${s.keepDaily}` : null, s.keepWeekly !== null ? `weekly ${s.keepWeekly}` : null].filter((x) => x !== null);
  return rules.length === 0 ? 'all' : rules.join(', ');
}

/** The failures of the last runs, one line each, under a table. */
function failureLines(list: Array<{ id: string; lastRun: { result: string; error: string | null } | null }>): string {
  return list
    .filter((s) => s.lastRun?.result === 'failed')
    .map((s) => `${s.id}: last run failed: ${s.lastRun!.error}\n`)
    .join('');
}

const everyOption: OptionSpec = { type: 'string', valueName: 'DURATION', description: 'Run every DURATION from now on: a number of s, m, h or d (15m, 1h, 7d)' };
const cronOption: OptionSpec = { type: 'string', valueName: 'EXPR', description: "Run at the minutes of a 5-field cron expression, in UTC ('0 2 * * *', '*/15 * * * mon-fri', '@daily')" };
const keep = (what: string): OptionSpec => ({ type: 'string', valueName: 'N', description: `Retention after each run: keep ${what} of each disk (as backup forget)` });

/** The schedule commands. */
export const scheduleCommands: Command[] = [
  {
    name: 'backup schedule add',
    args: ['DISK...'],
    summary: 'Have the node back up disks on a schedule, then apply a retention policy, prune and verify',
    options: {
      every: everyOption,
      cron: cronOption,
      repo: repoOption,
      'password-file': { type: 'string', valueName: 'FILE', description: "File on the node holding the repository's password, mode 0600; the node keeps its path, never the password" },
      'keep-last': keep('the newest N'),
      'keep-daily': keep('the newest of each of the last N days (UTC)'),
      'keep-weekly': keep('the newest of each of the last N ISO weeks'),
      'verify-every': { type: 'string', valueName: 'DURATION', description: 'After a run, verify the repository when the last verify is at least this old (e.g. 7d)' },
      'verify-read-data': { type: 'boolean', description: 'That verify reads every pack too (as backup verify --read-data)' },
      tenant: { type: 'string', valueName: 'NAME', description: 'Tenant of the restore points, for archival policies (default: default)' },
      json: jsonOption,
    },
    examples: [
      'tessera backup schedule add vm1 --every 1h --repo /srv/backups --password-file /etc/tessera/backup.key --keep-last 24 --keep-daily 7 --keep-weekly 4',
      "tessera backup schedule add db-data db-log --cron '30 2 * * *' --repo s3://backups/db --password-file /etc/tessera/db.key --keep-daily 14 --verify-every 7d",
    ],
    usesApi: true,
    async run(ctx) {
      const disks = ctx.args;
      const dup = disks.find((d, i) => disks.indexOf(d) !== i);
      if (dup !== undefined) throw usageError(`disk ${dup} is named twice`);
      const file = ctx.values['password-file'];
      if (typeof file !== 'string' || file === '') throw usageError('missing --password-file FILE: the node reads the password from it at each run');
      const verify = ctx.values['verify-every'];
      if (ctx.values['verify-read-data'] === true && typeof verify !== 'string') throw usageError('--verify-read-data goes with --verify-every');
      const req: BackupScheduleRequest = { disks, repo: nodeLocation(repoLocation(ctx)), passwordFile: resolve(file), ...recurrence(ctx) };
      const keepLast = count(ctx, 'keep-last');
      const keepDaily = count(ctx, 'keep-daily');
      const keepWeekly = count(ctx, 'keep-weekly');
      if (keepLast !== undefined) req.keepLast = keepLast;
      if (keepDaily !== undefined) req.keepDaily = keepDaily;
      if (keepWeekly !== undefined) req.keepWeekly = keepWeekly;
      if (typeof verify === 'string') req.verifyEveryMs = parsePeriod('verify-every', verify);
      if (ctx.values['verify-read-data'] === true) req.verifyReadData = true;
      if (typeof ctx.values.tenant === 'string') req.tenant = ctx.values.tenant;
      const s = await ctx.client().addBackupSchedule(req);
      if (ctx.values.json) return printJson(ctx.io, s);
      ctx.io.stdout(
        `Added backup schedule ${s.id}: ${s.disks.join(', ')} into ${s.repo} ${when(s)}, keeping ${keepText(s)}` +
          `${s.verifyEveryMs !== null ? `, verified every ${formatPeriod(s.verifyEveryMs)}` : ''}; next run ${s.nextRunMs === null ? '-' : formatTime(s.nextRunMs)}\n`,
      );
    },
  },
  {
    name: 'backup schedule list',
    args: [],
    summary: "List the node's backup schedules: when each runs, its last run and result, its next run",
    options: { json: jsonOption },
    examples: ['tessera backup schedule list', 'tessera backup schedule list --json | jq \'.[] | select(.lastRun.result == "failed")\''],
    usesApi: true,
    async run(ctx) {
      const list = await ctx.client().listBackupSchedules();
      if (ctx.values.json) return printJson(ctx.io, list);
      const rows = list.map((s) => [s.id, s.disks.join(','), s.repo, when(s), keepText(s), lastCell(s.lastRun, s.running), s.nextRunMs === null ? '-' : formatTime(s.nextRunMs)]);
      ctx.io.stdout(formatTable({ headers: ['ID', 'DISKS', 'REPO', 'WHEN', 'KEEP', 'LAST RUN', 'NEXT RUN'], rows }) + failureLines(list));
    },
  },
  {
    name: 'backup schedule rm',
    args: ['ID'],
    summary: 'Remove a backup schedule (a run under way goes on to its end; its restore points stay)',
    options: {},
    examples: ['tessera backup schedule rm 3f2a9c1e'],
    usesApi: true,
    async run(ctx) {
      await ctx.client().removeBackupSchedule(ctx.args[0]);
      ctx.io.stdout(`Removed backup schedule ${ctx.args[0]}\n`);
    },
  },
  {
    name: 'snap schedule add',
    args: ['DISK'],
    summary: "Have the node snapshot a disk on a schedule, keeping the newest N of the schedule's own snapshots",
    options: { every: everyOption, cron: cronOption, keep: { type: 'string', valueName: 'N', description: 'How many of its snapshots the schedule keeps (the older ones are deleted after each run)' }, json: jsonOption },
    examples: ['tessera snap schedule add vm1 --every 15m --keep 8', "tessera snap schedule add vm1 --cron '0 * * * *' --keep 24"],
    usesApi: true,
    async run(ctx) {
      const n = count(ctx, 'keep');
      if (n === undefined || n === 0) throw usageError('missing --keep N (at least 1): how many of its snapshots the schedule keeps');
      const s = await ctx.client().addSnapshotSchedule({ disk: ctx.args[0], keep: n, ...recurrence(ctx) });
      if (ctx.values.json) return printJson(ctx.io, s);
      ctx.io.stdout(`Added snapshot schedule ${s.id}: ${s.disk} ${when(s)}, keeping its newest ${s.keep} (named ${s.snapshotPrefix}…); next run ${s.nextRunMs === null ? '-' : formatTime(s.nextRunMs)}\n`);
    },
  },
  {
    name: 'snap schedule list',
    args: [],
    summary: "List the node's snapshot schedules: when each runs, its last run and result, its next run",
    options: { json: jsonOption },
    examples: ['tessera snap schedule list', 'tessera snap schedule list --json'],
    usesApi: true,
    async run(ctx) {
      const list: SnapshotScheduleInfo[] = await ctx.client().listSnapshotSchedules();
      if (ctx.values.json) return printJson(ctx.io, list);
      const rows = list.map((s) => [s.id, s.disk, when(s), String(s.keep), lastCell(s.lastRun, s.running), s.nextRunMs === null ? '-' : formatTime(s.nextRunMs)]);
      ctx.io.stdout(formatTable({ headers: ['ID', 'DISK', 'WHEN', 'KEEP', 'LAST RUN', 'NEXT RUN'], rows }) + failureLines(list));
    },
  },
  {
    name: 'snap schedule rm',
    args: ['ID'],
    summary: 'Remove a snapshot schedule (the snapshots it took stay: snap rm them)',
    options: {},
    examples: ['tessera snap schedule rm 5be0c2d4'],
    usesApi: true,
    async run(ctx) {
      await ctx.client().removeSnapshotSchedule(ctx.args[0]);
      ctx.io.stdout(`Removed snapshot schedule ${ctx.args[0]}\n`);
    },
  },
];
