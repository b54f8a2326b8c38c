/**
 * The backup commands' options and output helpers that need no backup code: the commands that
 * only talk to a node (`backup create`, which the node runs) load this, not backup-common.ts.
 */
import { resolve } from 'node:path';
import type { CommandContext, Io, OptionSpec } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { formatSize } from './size.ts';

import { percent, progressLine } from './output.ts';

export { percent, progressLine };

/** The `--repo` option of every backup command. */
export const repoOption: OptionSpec = { type: 'string', valueName: 'PATH', description: 'Repository: a directory or s3://BUCKET/PREFIX (default: $TESSERA_REPO)' };

/** The repository location from --repo or $TESSERA_REPO. */
export function repoLocation(ctx: CommandContext): string {
  const repo = (ctx.values.repo as string | undefined) ?? ctx.io.env.TESSERA_REPO;
  if (repo === undefined || repo === '') throw usageError('missing --repo PATH (or set TESSERA_REPO)');
  return repo;
}

/** The password from $TESSERA_PASSWORD, else asked on the terminal. */
export async function password(io: Io, options: { confirm?: boolean; envName?: string; prompt?: string } = {}): Promise<string> {
  const envName = options.envName ?? 'TESSERA_PASSWORD';
  const fromEnv = io.env[envName];
  if (fromEnv !== undefined && fromEnv !== '') return fromEnv;
  if (io.readSecret === undefined) throw new CliError(CliErrorCode.FAILED, `no password: set ${envName} or run on a terminal`);
  const prompt = options.prompt ?? 'Repository password';
  const first = await io.readSecret(`${prompt}: `);
  if (first === '') throw new CliError(CliErrorCode.FAILED, 'the password must not be empty');
  if (options.confirm && (await io.readSecret(`${prompt} again: `)) !== first) throw new CliError(CliErrorCode.FAILED, 'the passwords do not match');
  return first;
}

/** `90s`, `30m`, `1h`, `7d`, `0` → ms. */
export function parseDuration(text: string): number {
  const m = /^(\d{1,9})(ms|s|m|h|d)?$/.exec(text);
  if (m === null || (m[2] === undefined && m[1] !== '0')) throw usageError(`invalid duration '${text}': expected e.g. 0, 90s, 30m, 1h, 2d`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] ?? 'ms']!;
  return Number(m[1]) * unit;
}

/** A repository location as the node opens it: a directory made absolute, as the node's working directory is not ours. */
export function nodeLocation(location: string): string {
  return location.startsWith('s3://') ? location : resolve(location);
}

/**
 * The AWS variables a node takes with a restore (the node's list, `awsVariables` of src/hydrate,
 * is the one that decides; repeated here so that client commands do not load the engine); an
 * instant restore and a backup run by the node take them.
 */
const awsVariables = ['AWS_ENDPOINT_URL_S3', 'AWS_ENDPOINT_URL', 'AWS_REGION', 'AWS_DEFAULT_REGION', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'];

/** The AWS variables of this environment that are set: the node needs them for an s3:// repository. */
export function awsEnv(io: Io, repo: string): Record<string, string> {
  const env: Record<string, string> = {};
  if (!repo.startsWith('s3://')) return env;
  for (const k of awsVariables) {
    const v = io.env[k];
    if (v !== undefined && v !== '') env[k] = v;
  }
  return env;
}

/** The line `backup create` prints per disk. */
export function backedUpLine(disk: string, id: string, incremental: boolean, s: { bytesScanned: number; bytesNew: number; bytesStored: number; chunksReused: number; chunksZero: number; durationMs: number }): string {
  return (
    `Backed up ${disk} as restore point ${id.slice(0, 8)} (${incremental ? 'incremental' : 'full'}): ${formatSize(s.bytesScanned)} read, ` +
    `${formatSize(s.bytesNew)} new stored as ${formatSize(s.bytesStored)}, ${s.chunksReused} chunks reused, ${s.chunksZero} zero, in ${(s.durationMs / 1000).toFixed(1)} s\n`
  );
}

/** The progress line of a disk backup (`backup create`, run here or by the node). */
export function progressText(p: { disk: string; bytesRead: number; bytesToRead: number; bytesStored: number }): string {
  return `backup ${p.disk} ${percent(p.bytesRead, p.bytesToRead)}  ${formatSize(p.bytesRead)} of ${formatSize(p.bytesToRead)} read, ${formatSize(p.bytesStored)} stored`;
}
