/**
 * `tessera backup instant-restore ...` (docs/cli.md, "Instant restore"): clients of the node's
 * /instant-restores routes. The node reads the repository, so the password (and, for s3://, the
 * AWS variables) go to it in the request; it keeps them in memory only. The command looks the
 * restore point up first, so that one moved to an archive is restored from the archive.
 */
import type { InstantRestoreInfo, InstantRestoreRequest } from '../api/client/index.ts';
import { archivePassword, awsEnv, locateInRepo, nodeLocation, password, percent, repoLocation, repoOption } from './backup-common.ts';
import type { Command } from './commands.ts';
import { usageError } from './errors.ts';
import { jsonOption, printJson } from './output.ts';
import { formatSize } from './size.ts';
import { formatTable } from './table.ts';

/** One line of progress: `1.2 GiB of 2.0 GiB copied (60%), 3 chunks for clients`. */
function progressText(r: InstantRestoreInfo): string {
  const toCopy = r.chunks - r.chunksZero;
  return `${r.chunksCopied} of ${toCopy} chunks copied (${percent(r.chunksCopied, toCopy)}, ${formatSize(r.bytesCopied)}), ${r.chunksFetchedForClients} fetched for clients first`;
}

/** The instant restore commands. */
export const instantRestoreCommands: Command[] = [
  {
    name: 'backup instant-restore',
    args: ['ID'],
    summary: 'Create a disk from a restore point and serve it over NBD at once; the node copies the data in behind the reads',
    options: {
      repo: repoOption,
      'to-disk': { type: 'string', valueName: 'NAME', description: 'New disk to create (required)' },
      json: jsonOption,
    },
    examples: ['tessera backup instant-restore 34c4 --repo /srv/backups --to-disk vm1-restored', 'tessera backup instant-restore status'],
    usesApi: true,
    async run(ctx) {
      const disk = ctx.values['to-disk'];
      if (typeof disk !== 'string' || disk === '') throw usageError('missing --to-disk NAME');
      const repo = nodeLocation(repoLocation(ctx));
      // Looked up here, with the repository's password: a restore point moved to an archive
      // repository is restored from its copy there, and the node is sent the archive's location
      // and password only (never the primary's).
      const { located, password: pw } = await locateInRepo(ctx, ctx.args[0], repo);
      let body: InstantRestoreRequest;
      if ('entry' in located) {
        body = { disk, repo, snapshot: located.entry.id, password: pw, env: awsEnv(ctx.io, repo) };
      } else {
        const rec = located.archived;
        const archive = nodeLocation(rec.archive.location);
        body = { disk, repo: archive, snapshot: rec.archive.id, password: await archivePassword(ctx.io), env: awsEnv(ctx.io, archive), archivedFrom: { repo, snapshot: rec.id } };
      }
      const r = await ctx.client().startInstantRestore(body);
      if (ctx.values.json) return printJson(ctx.io, r);
      const what = r.archivedFrom ? `${r.archivedFrom.snapshot.slice(0, 8)}, archived to ${r.repo} as ${r.snapshot!.slice(0, 8)}` : r.snapshot!.slice(0, 8);
      ctx.io.stdout(
        `Disk ${r.disk} is served from restore point ${what} (${formatSize(r.imageBytes)}); ` +
          `copying ${r.chunks - r.chunksZero - r.chunksCopied} chunks in the background (tessera backup instant-restore status)\n`,
      );
    },
  },
  {
    name: 'backup instant-restore status',
    args: [],
    summary: "The node's instant restores and their progress",
    options: { json: jsonOption },
    examples: ['tessera backup instant-restore status', 'tessera backup instant-restore status --json'],
    usesApi: true,
    async run(ctx) {
      const list = await ctx.client().listInstantRestores();
      if (ctx.values.json) return printJson(ctx.io, list);
      const rows = list.map((r) => [
        r.disk,
        r.snapshot?.slice(0, 8) ?? '-',
        r.state,
        formatSize(r.imageBytes),
        percent(r.chunksCopied, r.chunks - r.chunksZero),
        `${r.chunksCopied}/${r.chunks - r.chunksZero}`,
        String(r.chunksFetchedForClients),
        r.finishedMs === null ? '-' : `${((r.finishedMs - r.startedMs) / 1000).toFixed(1)} s`,
        r.lastError ?? '',
      ]);
      ctx.io.stdout(formatTable({ headers: ['DISK', 'FROM', 'STATE', 'SIZE', 'COPIED', 'CHUNKS', 'FOR CLIENTS', 'TOOK', 'ERROR'], rows, align: ['left', 'left', 'left', 'right', 'right', 'right', 'right', 'right'] }));
    },
  },
  {
    name: 'backup instant-restore resume',
    args: ['DISK'],
    summary: 'Give the password again to an instant restore that waits for it after a node restart',
    options: { json: jsonOption },
    examples: ['TESSERA_PASSWORD=... tessera backup instant-restore resume vm1-restored', 'TESSERA_ARCHIVE_PASSWORD=... tessera backup instant-restore resume vm1-restored   # restored from an archive'],
    usesApi: true,
    async run(ctx) {
      const disk = ctx.args[0];
      const current = await ctx.client().getInstantRestore(disk);
      // The restore reads the repository it started with: an archive's takes the archive's password.
      const pw = current.archivedFrom ? await archivePassword(ctx.io) : await password(ctx.io);
      const r = await ctx.client().resumeInstantRestore(disk, { password: pw, env: awsEnv(ctx.io, current.repo) });
      if (ctx.values.json) return printJson(ctx.io, r);
      ctx.io.stdout(`Resumed the instant restore of disk ${r.disk}: ${progressText(r)}\n`);
    },
  },
  {
    name: 'backup instant-restore cancel',
    args: ['DISK'],
    summary: 'Stop an unfinished instant restore and delete its disk',
    options: {},
    examples: ['tessera backup instant-restore cancel vm1-restored'],
    usesApi: true,
    async run(ctx) {
      await ctx.client().cancelInstantRestore(ctx.args[0]);
      ctx.io.stdout(`Cancelled the instant restore of disk ${ctx.args[0]} and deleted the disk\n`);
    },
  },
];
