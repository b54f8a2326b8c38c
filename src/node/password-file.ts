/**
 * The key file of a backup schedule (docs/backup.md, "Schedules"): a file on the node holding a
 * repository's password, which the node reads when the schedule is added and at each of its
 * runs, and never copies into its own metadata. Like ssh with a private key, the node refuses a
 * file that group or others may read or write: the password would be as good as public.
 */
import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { isAbsolute } from 'node:path';
import { BackupError, BackupErrorCode } from '../backup/index.ts';

/** Largest password file read. */
const passwordFileBytesMax = 4096;

/**
 * The password in the file at `path` (an absolute path): its text, one final newline (LF or
 * CRLF) dropped. Refused (INVALID, naming the file and what to do): a relative path, a missing or
 * unreadable file, not a regular file, a mode that gives group or others any access, an empty
 * password, a file over 4 KiB. The mode is read from the file opened (fstat), so what is read is
 * what was checked.
 */
export async function readPasswordFile(path: string): Promise<string> {
  const refuse = (why: string, cause?: unknown): BackupError => new BackupError(BackupErrorCode.INVALID, `Password file ${path} ${why}`, { cause });
  if (!isAbsolute(path)) throw refuse('is not an absolute path (the node reads it: a path as the node sees it)');
  let fh;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw refuse('does not exist on the node', err);
    if (code === 'EACCES' || code === 'EPERM') throw refuse(`cannot be read by the node (it runs as uid ${process.getuid?.() ?? '?'})`, err);
    throw refuse(`cannot be opened: ${(err as Error).message}`, err);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw refuse('is not a regular file');
    const mode = st.mode & 0o777;
    if ((mode & 0o077) !== 0) {
      const octal = mode.toString(8).padStart(4, '0');
      throw refuse(`may be read or written by group or others (mode ${octal}): it must be readable by its owner only (chmod 600 ${path})`);
    }
    if (st.size > passwordFileBytesMax) throw refuse(`is larger than ${passwordFileBytesMax} bytes: is it a password file?`);
    const text = (await fh.readFile({ encoding: 'utf8' })).replace(/\r?\n$/, '');
    if (text === '') throw refuse('is empty');
    return text;
  } finally {
    await fh.close();
  }
}
