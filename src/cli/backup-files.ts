/**
 * `tessera backup ls|cat|restore-file`: file-level access to the filesystems inside a restore
 * point, through its file catalog (docs/backup.md, "File catalogs"; docs/cli.md).
 */
import { lstat, lutimes, mkdir, open, symlink, utimes, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { BackupError, BackupErrorCode, Catalog, normalisePath, readCatalogFile, type CatalogEntry, type IndexCache, type Repository, type SnapshotEntry, type WorkerPool } from '../backup/index.ts';
import { repoOption, withRestorePoint } from './backup-common.ts';
import { formatTime, isoTime, jsonOption, printJson } from './output.ts';
import type { Command, CommandContext } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { formatSize } from './size.ts';
import { formatTable } from './table.ts';
import { writeAll } from '../util/write-all.ts';

type Ctx = { repo: Repository; cache: IndexCache; pool: WorkerPool };

/** Opens the catalog of restore point `entry` of `r`, with the index cache synced. */
async function openCatalog(r: Ctx, entry: SnapshotEntry): Promise<Catalog> {
  await r.cache.sync(r.repo);
  return Catalog.open(r, entry.snapshot, entry.id);
}

/** A path argument, normalised; a bad one is a usage error. */
function pathArg(text: string): string {
  try {
    return normalisePath(text);
  } catch (err) {
    if (err instanceof BackupError) throw usageError(err.message);
    throw err;
  }
}

const typeChar: Record<CatalogEntry['type'], string> = { f: '-', d: 'd', l: 'l', c: 'c', b: 'b', p: 'p', s: 's' };

/** `drwxr-xr-x`, with setuid/setgid/sticky as ls shows them. */
export function modeString(e: CatalogEntry): string {
  const m = e.mode;
  const rwx = (bits: number, special: boolean, ch: string) =>
    (bits & 4 ? 'r' : '-') + (bits & 2 ? 'w' : '-') + (special ? (bits & 1 ? ch : ch.toUpperCase()) : bits & 1 ? 'x' : '-');
  return typeChar[e.type] + rwx(m >> 6, (m & 0o4000) !== 0, 's') + rwx(m >> 3, (m & 0o2000) !== 0, 's') + rwx(m, (m & 0o1000) !== 0, 't');
}

function entryJson(dir: string, e: CatalogEntry): object {
  return {
    name: e.name,
    path: dir === '/' ? `/${e.name}` : e.name === '' ? dir : `${dir}/${e.name}`,
    type: e.type,
    mode: e.mode,
    uid: e.uid,
    gid: e.gid,
    sizeBytes: e.sizeBytes,
    mtime: isoTime(e.mtimeMs),
    target: e.target,
  };
}

/** A one-line note on a volume that has no (complete) listing. */
function volumeNote(cat: Catalog, path: string): string | null {
  const vol = cat.volumeOf(path);
  if (vol === null || vol.status === 'ok') return null;
  const where = vol.partition !== null ? `partition ${vol.partition.number}` : 'the image';
  return vol.status === 'unrecognised' ? `${where} holds no filesystem Tessera reads (ext2/3/4, FAT)` : `the catalog of ${where} is incomplete: ${vol.error}`;
}

/** Restores `entry` at catalog path `path` to `dest`; counts what it made. */
async function restoreTree(r: Ctx, cat: Catalog, path: string, entry: CatalogEntry, dest: string, counts: { files: number; dirs: number; links: number; skipped: number; bytes: number }): Promise<void> {
  switch (entry.type) {
    case 'f': {
      const fh = await open(dest, 'wx', 0o600);
      try {
        await readCatalogFile(r, cat.snapshot, entry, (b) => writeAll(fh, b, null));
      } finally {
        await fh.close();
      }
      await chmod(dest, entry.mode);
      await utimes(dest, entry.mtimeMs / 1000, entry.mtimeMs / 1000);
      counts.files++;
      counts.bytes += entry.sizeBytes;
      return;
    }
    case 'l':
      await symlink(entry.target ?? '', dest);
      await lutimes(dest, entry.mtimeMs / 1000, entry.mtimeMs / 1000);
      counts.links++;
      return;
    case 'd': {
      await mkdir(dest, { mode: 0o700 });
      for (const child of (await cat.listing(path)) ?? []) {
        await restoreTree(r, cat, path === '/' ? `/${child.name}` : `${path}/${child.name}`, child, join(dest, child.name), counts);
      }
      await chmod(dest, entry.mode);
      if (entry.mtimeMs !== 0) await utimes(dest, entry.mtimeMs / 1000, entry.mtimeMs / 1000);
      counts.dirs++;
      return;
    }
    default:
      counts.skipped++; // devices, fifos, sockets: not made by a restore into a directory
  }
}

/** Maps a file system error of restore-file to one line. */
function fsFailure(err: unknown, dest: string): never {
  const code = (err as NodeJS.ErrnoException)?.code;
  if (code === 'EEXIST') throw new BackupError(BackupErrorCode.EXISTS, `${(err as NodeJS.ErrnoException).path ?? dest} exists already; restore-file makes new files only`, { cause: err });
  if (typeof code === 'string') throw new BackupError(BackupErrorCode.STORAGE, `Cannot write ${(err as NodeJS.ErrnoException).path ?? dest}: ${code}`, { cause: err });
  throw err;
}

/** The file-level backup commands. */
export const backupFileCommands: Command[] = [
  {
    name: 'backup ls',
    args: ['ID', '[DIR]'],
    summary: "List a directory of a restore point's filesystems, from its file catalog (no image data is read)",
    options: { repo: repoOption, long: { type: 'boolean', short: 'l', description: 'Show type, mode, owner, size and time' }, json: jsonOption },
    examples: ['tessera backup ls 3f2a9c1e /etc --repo /srv/backups', 'tessera backup ls 3f2a9c1e /p2/home --repo /srv/backups --long'],
    usesApi: false,
    async run(ctx: CommandContext) {
      const dir = pathArg(ctx.args[1] ?? '/');
      // Here as everywhere a restore point is read: one moved to an archive is read there.
      const { entries, note, isDir } = await withRestorePoint(ctx, ctx.args[0], async (r, found) => {
        const cat = await openCatalog(r, found);
        const { entry, entries } = await cat.list(dir);
        return { entries, note: entries.length === 0 ? volumeNote(cat, dir) : null, isDir: entry.type === 'd' };
      });
      const parent = isDir ? dir : dir.slice(0, dir.lastIndexOf('/')) || '/';
      if (note !== null) ctx.io.stderr(`tessera: note: ${note}\n`);
      if (ctx.values.json) return printJson(ctx.io, entries.map((e) => entryJson(parent, e)));
      if (!ctx.values.long) {
        ctx.io.stdout(entries.map((e) => (e.type === 'd' ? `${e.name}/` : e.name) + '\n').join(''));
        return;
      }
      const rows = entries.map((e) => [modeString(e), String(e.uid), String(e.gid), e.type === 'f' ? String(e.sizeBytes) : '-', e.mtimeMs === 0 ? '-' : formatTime(e.mtimeMs), e.type === 'l' ? `${e.name} -> ${e.target}` : e.name]);
      ctx.io.stdout(formatTable({ headers: ['MODE', 'UID', 'GID', 'SIZE', 'MTIME', 'NAME'], rows, align: ['left', 'right', 'right', 'right', 'left', 'left'] }));
    },
  },
  {
    name: 'backup cat',
    args: ['ID', 'FILE'],
    summary: 'Write a file of a restore point to stdout, reading only the chunks it covers',
    options: { repo: repoOption },
    examples: ['tessera backup cat 3f2a9c1e /etc/fstab --repo /srv/backups', 'tessera backup cat 3f2a9c1e /p1/var/log/syslog --repo /srv/backups > syslog'],
    usesApi: false,
    async run(ctx: CommandContext) {
      const write = ctx.io.writeBytes;
      if (write === undefined) throw new CliError(CliErrorCode.FAILED, 'backup cat needs a stdout that takes bytes');
      const path = pathArg(ctx.args[1]);
      await withRestorePoint(ctx, ctx.args[0], async (r, found) => {
        const cat = await openCatalog(r, found);
        const entry = await cat.stat(path);
        if (entry.type === 'd') throw new BackupError(BackupErrorCode.INVALID, `${path} is a directory`);
        if (entry.type !== 'f') throw new BackupError(BackupErrorCode.INVALID, `${path} is not a regular file (${entry.type === 'l' ? `a symlink to ${entry.target}` : 'a special file'})`);
        await readCatalogFile(r, cat.snapshot, entry, (b) => write(b));
      });
    },
  },
  {
    name: 'backup restore-file',
    args: ['ID', 'PATH'],
    summary: 'Restore a file or directory tree of a restore point into a directory (modes and times kept)',
    options: { repo: repoOption, to: { type: 'string', valueName: 'DIR', description: 'Existing directory to restore into (required)' }, json: jsonOption },
    examples: ['tessera backup restore-file 3f2a9c1e /home/alice --repo /srv/backups --to /tmp/restored'],
    usesApi: false,
    async run(ctx: CommandContext) {
      const to = ctx.values.to;
      if (typeof to !== 'string' || to === '') throw usageError('missing --to DIR');
      const path = pathArg(ctx.args[1]);
      const counts = { files: 0, dirs: 0, links: 0, skipped: 0, bytes: 0 };
      const dest = path === '/' ? join(to, 'root') : join(to, path.slice(path.lastIndexOf('/') + 1));
      await withRestorePoint(ctx, ctx.args[0], async (r, found) => {
        const st = await lstat(to).catch(() => null);
        if (st === null || !st.isDirectory()) throw new BackupError(BackupErrorCode.NOT_FOUND, `${to} is not a directory`);
        const cat = await openCatalog(r, found);
        const entry = await cat.stat(path);
        await restoreTree(r, cat, path, entry, dest, counts).catch((err) => fsFailure(err, dest));
      });
      if (ctx.values.json) return printJson(ctx.io, { path, to: dest, ...counts });
      const skipped = counts.skipped > 0 ? `, ${counts.skipped} special files skipped` : '';
      ctx.io.stdout(`Restored ${path} to ${dest}: ${counts.files} files (${formatSize(counts.bytes)}), ${counts.dirs} directories, ${counts.links} symlinks${skipped}\n`);
    },
  },
];
