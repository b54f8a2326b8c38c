import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { BackupError, BackupErrorCode, Repository } from '../../src/backup/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { cleanup, writeSeededFile } from '../helpers/index.ts';
import { assertFailure, assertSameFile, cli, cliEnv, join, makeTempDir, tessera, writeSeededImage } from './harness.ts';

after(cleanup);

describe('backup CLI', () => {
  let dir: string;
  let repoDir: string;
  let env: Record<string, string | undefined>;
  let image: string;
  let id: string;

  before(async () => {
    dir = makeTempDir('tessera-backup-cli-');
    repoDir = join(dir, 'repo');
    env = cliEnv(makeTempDir('tessera-backup-cache-'));
    const init = await cli(['backup', 'init', '--repo', repoDir, '--chunk-size', '64K'], env);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /^Created backup repository [0-9a-f]{8} at .* \(chunks of 64\.0 KiB\)\n$/);
    image = join(dir, 'image');
    writeSeededImage(image, 7, { chunks: 20, chunkSizeBytes: 64 * 1024, tailCutBytes: 512 });
    const b = await cli(['backup', 'file', image, '--repo', repoDir, '--name', 'vm1', '--json'], env);
    assert.equal(b.code, 0, b.stderr);
    id = JSON.parse(b.stdout).id;
  });

  test('backup list shows the restore point as a table and as JSON', async () => {
    const text = await cli(['backup', 'list', '--repo', repoDir], env);
    assert.equal(text.code, 0);
    assert.match(text.stdout, /^ID\s+TIME\s+KIND\s+NAME\s+SIZE\s+ADDED\s+WHERE\n/);
    assert.match(text.stdout, new RegExp(`${id.slice(0, 8)}  \\S+Z  file  vm1 .* here\n`));
    const json = JSON.parse((await cli(['backup', 'list', '--json'], { ...env, TESSERA_REPO: repoDir })).stdout);
    assert.equal(json.length, 1);
    assert.equal(json[0].id, id);
    assert.equal(json[0].sizeBytes, 20 * 64 * 1024 - 512);
    assert.equal(json[0].where, 'here');
    assert.equal(json[0].archive, null);
  });

  test('backup restore by id prefix writes the image; an existing target is refused', async () => {
    const out = join(dir, 'restored');
    const r = await cli(['backup', 'restore', id.slice(0, 8), '--repo', repoDir, '--to-file', out], env);
    assert.equal(r.code, 0, r.stderr);
    assertSameFile(out, image);
    assertFailure(await cli(['backup', 'restore', id, '--repo', repoDir, '--to-file', out], env), 1, /exists already/);
    assertFailure(await cli(['backup', 'restore', 'ffff', '--repo', repoDir, '--to-file', join(dir, 'x')], env), 1, /No restore point ffff/);
  });

  test('backup restore --sync syncs the file before it reports success; without it the file is left to the kernel', async () => {
    const plain = JSON.parse((await cli(['backup', 'restore', id, '--repo', repoDir, '--to-file', join(dir, 'unsynced'), '--json'], env)).stdout);
    assert.equal(plain.writes.synced, false);
    assertSameFile(join(dir, 'unsynced'), image);
    const synced = await cli(['backup', 'restore', id, '--repo', repoDir, '--to-file', join(dir, 'synced'), '--sync'], env);
    assert.equal(synced.code, 0, synced.stderr);
    assert.match(synced.stdout, /, synced\n$/);
    assertSameFile(join(dir, 'synced'), image);
    const json = JSON.parse((await cli(['backup', 'restore', id, '--repo', repoDir, '--to-file', join(dir, 'synced-json'), '--sync', '--json'], env)).stdout);
    assert.equal(json.writes.synced, true);
    assertFailure(await cli(['backup', 'restore', id, '--repo', repoDir, '--to-disk', 'vm1', '--sync'], env), 2, /--sync goes with --to-file/);
  });

  test('a wrong password is BACKUP_WRONG_PASSWORD, and the CLI exits 1 with one line', async () => {
    await assert.rejects(Repository.open(new DirBackend(repoDir), 'not the password'), (err: unknown) => err instanceof BackupError && err.code === BackupErrorCode.WRONG_PASSWORD);
    const o = await tessera(['backup', 'list', '--repo', repoDir], { ...env, TESSERA_PASSWORD: 'not the password' });
    assertFailure(o, 1, /^tessera: error: Wrong password for the repository at /);
  });

  test('no password and no terminal is one clear error line', async () => {
    const o = await tessera(['backup', 'list', '--repo', repoDir], { ...env, TESSERA_PASSWORD: undefined });
    assertFailure(o, 1, /no password: set TESSERA_PASSWORD or run on a terminal/);
  });

  test('a missing repository, a missing --repo, an unknown URL scheme and a missing image are one clear error line each', async () => {
    assertFailure(await cli(['backup', 'list', '--repo', join(dir, 'nowhere')], env), 1, /No backup repository at .*nowhere/);
    assertFailure(await cli(['backup', 'list'], env), 2, /missing --repo PATH \(or set TESSERA_REPO\)/);
    assertFailure(await cli(['backup', 'list', '--repo', 'ftp://host/repo'], env), 1, /Unsupported repository URL ftp:\/\/host\/repo/);
    assertFailure(await cli(['backup', 'file', join(dir, 'no-image'), '--repo', repoDir, '--name', 'x'], env), 1, /Cannot open .*no-image: ENOENT/);
    assertFailure(await cli(['backup', 'file', image, '--repo', repoDir], env), 2, /missing --name NAME/);
  });

  test('init refuses an existing repository and a non-empty directory', async () => {
    assertFailure(await cli(['backup', 'init', '--repo', repoDir], env), 1, /A backup repository exists at .* already/);
    const other = join(dir, 'other');
    makeDirWithFile(other);
    assertFailure(await cli(['backup', 'init', '--repo', other], env), 1, /is not empty and holds no backup repository/);
    assertFailure(await cli(['backup', 'init', '--repo', join(dir, 'odd'), '--chunk-size', '100K'], env), 1, /Chunk size 102400 is not a power of two/);
  });

  test('a damaged repository is one clear error line: marker, config, no key files', async () => {
    const copy = (name: string) => {
      const d = join(dir, name);
      cpSync(repoDir, d, { recursive: true });
      return d;
    };
    const badMarker = copy('bad-marker');
    writeFileSync(join(badMarker, 'tessera-repository'), '{not json');
    assertFailure(await cli(['backup', 'list', '--repo', badMarker], env), 1, /repository marker at .* is damaged/);
    const v2 = copy('v2');
    writeFileSync(join(v2, 'tessera-repository'), JSON.stringify({ format: 'tessera-backup-repository', version: 2, id: 'a'.repeat(64) }));
    assertFailure(await cli(['backup', 'list', '--repo', v2], env), 1, /has format version 2; this Tessera reads version 1/);
    const badConfig = copy('bad-config');
    flipByte(join(badConfig, 'config'), 20);
    assertFailure(await cli(['backup', 'list', '--repo', badConfig], env), 1, /config of .* fails its authentication check/);
    const noKeys = copy('no-keys');
    rmSync(join(noKeys, 'keys'), { recursive: true });
    assertFailure(await cli(['backup', 'list', '--repo', noKeys], env), 1, /has no key files/);
  });

  test('backup key add lets a second password open the repository; key rm removes it but never the last', async () => {
    const keyDir = join(dir, 'keys-repo');
    assert.equal((await cli(['backup', 'init', '--repo', keyDir], env)).code, 0);
    const add = await cli(['backup', 'key', 'add', '--repo', keyDir], { ...env, TESSERA_NEW_PASSWORD: 'second password' });
    assert.equal(add.code, 0, add.stderr);
    const newId = /^Added key ([0-9a-f]{8})\n$/.exec(add.stdout)![1];
    const list = JSON.parse((await cli(['backup', 'key', 'list', '--repo', keyDir, '--json'], { ...env, TESSERA_PASSWORD: 'second password' })).stdout);
    assert.equal(list.length, 2);
    assert.equal(list.find((k: { current: boolean }) => k.current).id.slice(0, 8), newId);
    const oldId = list.find((k: { current: boolean }) => !k.current).id as string;
    assert.equal((await cli(['backup', 'key', 'rm', oldId.slice(0, 8), '--repo', keyDir], { ...env, TESSERA_PASSWORD: 'second password' })).code, 0);
    assertFailure(await cli(['backup', 'list', '--repo', keyDir], env), 1, /Wrong password/);
    assertFailure(await cli(['backup', 'key', 'rm', newId, '--repo', keyDir], { ...env, TESSERA_PASSWORD: 'second password' }), 1, /Cannot remove the last key/);
  });

  test('unknown backup subcommands are usage errors naming the choices', async () => {
    assertFailure(await cli(['backup', 'key'], env), 2, /`tessera backup key` takes one of: add, list, rm/);
    assertFailure(await cli(['backup', 'nope'], env), 2, /unknown command 'backup nope'/);
    assertFailure(await cli(['backup', 'prune', '--repo', repoDir, '--grace', '5x'], env), 2, /invalid duration '5x'/);
  });
});

function makeDirWithFile(d: string): void {
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'notes.txt'), 'mine');
}

function flipByte(path: string, at: number): void {
  const b = readFileSync(path);
  b[at] ^= 0xff;
  writeFileSync(path, b);
}

test('backup file into a full disk fails with one line; the repository still verifies and a later run completes', async () => {
  const dir = makeTempDir('tessera-backup-full-');
  const mnt = join(dir, 'mnt');
  mkdirSync(mnt);
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tessera-test', mnt], { stdio: 'pipe' });
  } catch (err) {
    assert.fail(`this test mounts a 3 MiB tmpfs to fill it and needs root (or CAP_SYS_ADMIN): ${(err as Error).message}`);
  }
  try {
    const env = cliEnv(makeTempDir('tessera-backup-cache-'));
    const repoDir = join(mnt, 'repo');
    assert.equal((await cli(['backup', 'init', '--repo', repoDir, '--chunk-size', '64K'], env)).code, 0);
    const image = join(dir, 'image');
    await writeSeededFile(image, 11, 'full', 8 << 20);
    const full = await tessera(['backup', 'file', image, '--repo', repoDir, '--name', 'big'], env);
    assertFailure(full, 1, /^tessera: error: Cannot write data\/[0-9a-f]{2}\/[0-9a-f]{64} in .*: ENOSPC$/);
    const v = await cli(['backup', 'verify', '--repo', repoDir, '--read-data'], env);
    assert.equal(v.code, 0, v.stdout + v.stderr);
    // With room again (a smaller image here), the same repository takes a backup.
    const small = join(dir, 'small');
    await writeSeededFile(small, 12, 'small', 256 << 10);
    assert.equal((await cli(['backup', 'prune', '--repo', repoDir, '--grace', '0'], env)).code, 0);
    assert.equal((await cli(['backup', 'prune', '--repo', repoDir, '--grace', '0'], env)).code, 0);
    const ok = await cli(['backup', 'file', small, '--repo', repoDir, '--name', 'small'], env);
    assert.equal(ok.code, 0, ok.stderr);
  } finally {
    execFileSync('umount', [mnt]);
  }
});
