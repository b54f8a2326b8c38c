/**
 * Small real file systems for tests: a tmpfs or a loop-mounted image of a given size, mounted on
 * a fresh directory and unmounted after the test, filled up or turned read-only. Mounting needs
 * root (or CAP_SYS_ADMIN); a test that cannot mount fails saying so.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** What node:test's `t` offers that a mount needs. */
interface AfterHook {
  after(fn: () => void | Promise<void>): void;
}

/** Mount points of mountTmpfs not unmounted yet. */
const mounted = new Set<string>();

/** Mounts a tmpfs of `sizeBytes` (a multiple of 4 KiB) and returns its directory; unmounted after the test. */
export function mountTmpfs(t: AfterHook, sizeBytes: number): string {
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-fs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tessera-test', mnt], { stdio: 'pipe' });
  } catch (err) {
    fs.rmSync(mnt, { recursive: true, force: true });
    assert.fail(`this test mounts a ${sizeBytes}-byte tmpfs and needs root (or CAP_SYS_ADMIN): ${(err as Error).message}`);
  }
  mounted.add(mnt);
  t.after(() => {
    mounted.delete(mnt);
    // A node killed by the test may still hold files for a moment (and lmdb-js never closes an
    // index it opened read-only on a read-only file system): a lazy unmount does not wait.
    execFileSync('umount', ['-l', mnt]);
    fs.rmSync(mnt, { recursive: true, force: true });
  });
  return mnt;
}

/**
 * Makes a file system of `sizeBytes` in an image file (mkfs, then a loop mount) and returns its
 * directory; unmounted and removed after the test. For what tmpfs does not show: delayed
 * allocation, metadata blocks, a journal.
 */
export function mountLoop(t: AfterHook, sizeBytes: number, type: 'ext4' | 'xfs'): string {
  const mnt = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-fs-'));
  const image = `${mnt}.img`;
  fs.writeFileSync(image, '');
  fs.truncateSync(image, sizeBytes);
  try {
    execFileSync(`mkfs.${type}`, type === 'ext4' ? ['-q', '-F', image] : ['-q', '-f', image], { stdio: 'pipe' });
  } catch (err) {
    fs.rmSync(image, { force: true });
    fs.rmSync(mnt, { recursive: true, force: true });
    assert.fail(`this test makes an ${type} file system with mkfs.${type} (apt-get install ${type === 'ext4' ? 'e2fsprogs' : 'xfsprogs'}): ${(err as Error).message}`);
  }
  try {
    execFileSync('mount', ['-o', 'loop', image, mnt], { stdio: 'pipe' });
  } catch (err) {
    fs.rmSync(image, { force: true });
    fs.rmSync(mnt, { recursive: true, force: true });
    assert.fail(`this test loop-mounts an ${type} image and needs root and loop devices: ${(err as Error).message}`);
  }
  t.after(() => {
    execFileSync('umount', ['-l', mnt]);
    fs.rmSync(mnt, { recursive: true, force: true });
    fs.rmSync(image, { force: true });
  });
  return mnt;
}

/** Remounts a file system mounted by mountTmpfs read-only, or read-write again. */
export function remount(mnt: string, mode: 'ro' | 'rw'): void {
  assert.ok(mounted.has(mnt), `${mnt} was mounted by mountTmpfs`);
  execFileSync('mount', ['-o', `remount,${mode}`, mnt], { stdio: 'pipe' });
}

/** Fills the file system under `dir` with a ballast file until at most `leaveBytes` are free; returns its path. */
export function fillTo(dir: string, leaveBytes: number, name = 'ballast'): string {
  const file = path.join(dir, name);
  const s = fs.statfsSync(dir);
  const free = s.bavail * s.bsize;
  const bytes = Math.max(0, free - leaveBytes);
  const fd = fs.openSync(file, 'a');
  try {
    const chunk = Buffer.alloc(1 << 20, 0x5a);
    for (let done = 0; done < bytes; ) {
      const n = Math.min(chunk.length, bytes - done);
      fs.writeSync(fd, chunk, 0, n);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return file;
}

/** Bytes free for an unprivileged writer on the file system under `dir`. */
export function freeBytes(dir: string): number {
  const s = fs.statfsSync(dir);
  return s.bavail * s.bsize;
}
