import { open, readFile, unlink } from 'node:fs/promises';
import { NodeError, NodeErrorCode } from './errors.ts';

/** A held lock on a data directory. */
export interface DirLock {
  readonly path: string;
  release(): Promise<void>;
}

const heldHere = new Set<string>();

/**
 * Takes the lock file `path`, which holds the owner's pid. A lock left behind by a process
 * that is gone is taken over; one held by a live process is a NodeError naming its pid.
 */
export async function acquireLock(path: string): Promise<DirLock> {
  // A lock file with our own pid is stale (a pid reused after a restart, common in containers)
  // unless this process holds it, which only this set can tell.
  if (heldHere.has(path)) {
    throw new NodeError(NodeErrorCode.LOCKED, `data directory is in use by another Tessera node in this process (lock file ${path})`);
  }
  // Two tries: the second after removing a stale lock. If another process takes the lock in
  // between, its pid is live and the second try reports it.
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(path, 'wx');
      await handle.writeFile(`${process.pid}\n`);
      await handle.close();
      heldHere.add(path);
      return {
        path,
        async release() {
          heldHere.delete(path);
          await unlink(path).catch(() => {});
        },
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number.parseInt(await readFile(path, 'utf8').catch(() => ''), 10);
    if (Number.isSafeInteger(pid) && pid > 0 && pid !== process.pid && isAlive(pid)) {
      throw new NodeError(NodeErrorCode.LOCKED, `data directory is in use by another Tessera node (pid ${pid}, lock file ${path})`);
    }
    if (attempt > 0) {
      throw new NodeError(NodeErrorCode.LOCKED, `cannot take the lock file ${path}; remove it if no Tessera node uses the directory`);
    }
    await unlink(path).catch(() => {});
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: alive, but someone else's.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
