import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { cleanup, spawnTracked, testSeed, tesseraBin, writeSeededFile } from '../helpers/index.ts';
import { assertSameFile, cli, cliEnv, join, makeTempDir, openTestRepo, smallRepo } from './harness.ts';

after(cleanup);

function count(dir: string): number {
  try {
    return readdirSync(dir, { recursive: true }).filter((n) => !String(n).includes('.tmp-') && /[0-9a-f]{64}$/.test(String(n))).length;
  } catch {
    return 0;
  }
}

test('backup file killed with SIGKILL leaves a repository that verifies clean; a rerun reuses what was uploaded; prune removes the leftovers', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-backup-kill-');
  const repoDir = join(dir, 'repo');
  const image = join(dir, 'image');
  const size = 64 << 20;
  await writeSeededFile(image, seed, 'image', size); // random: every chunk new, nothing compresses
  const r = await openTestRepo(repoDir, { init: smallRepo }); // 64 KiB chunks, 256 KiB packs
  await r.close();
  const env = cliEnv(r.cacheDir);

  const child = spawnTracked(tesseraBin, ['backup', 'file', image, '--repo', repoDir, '--name', 'big'], { env: { ...process.env, ...env } as NodeJS.ProcessEnv });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let killedAtIndexFiles = 0;
  for (let i = 0; i < 6000 && child.exitCode === null; i++) {
    if (count(join(repoDir, 'index')) >= 4) {
      child.kill('SIGKILL');
      killedAtIndexFiles = count(join(repoDir, 'index'));
      break;
    }
    await sleep(5);
  }
  await exited;
  assert.ok(killedAtIndexFiles >= 4, `killed after index files were written (the backup finished first or failed: ${stderr})`);
  assert.equal(count(join(repoDir, 'snapshots')), 0, 'killed before the restore point');
  assert.ok(count(join(repoDir, 'writers')) === 1, 'the dead backup left its marker');

  const v = await cli(['backup', 'verify', '--repo', repoDir, '--read-data'], env);
  assert.equal(v.code, 0, `verify is clean after the kill: ${v.stdout}${v.stderr}`);

  const rerun = await cli(['backup', 'file', image, '--repo', repoDir, '--name', 'big', '--json'], env);
  assert.equal(rerun.code, 0, rerun.stderr);
  const stats = JSON.parse(rerun.stdout).stats;
  const chunks = size / smallRepo.chunkSizeBytes!;
  // Each index file the killed run wrote lists 8 packs of about 4 chunks.
  assert.ok(stats.chunksReused >= killedAtIndexFiles * 8 * 3, `reused ${stats.chunksReused} chunks after ${killedAtIndexFiles} index files`);
  assert.equal(stats.chunksReused + stats.chunksNew, chunks);
  t.diagnostic(`killed after ${killedAtIndexFiles} index files; the rerun reused ${stats.chunksReused} of ${chunks} chunks`);

  const out = join(dir, 'restored');
  const restore = await cli(['backup', 'restore', JSON.parse(rerun.stdout).id, '--repo', repoDir, '--to-file', out], env);
  assert.equal(restore.code, 0, restore.stderr);
  assertSameFile(out, image);

  // The killed run's last packs are in no index: prune marks them, and a later prune deletes them.
  const first = await cli(['backup', 'prune', '--repo', repoDir, '--grace', '0', '--json'], env);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(JSON.parse(first.stdout).writersRemoved, 1, 'the marker of the dead backup (same host, no such pid) is removed');
  assert.ok(JSON.parse(first.stdout).packsMarked > 0, 'the unindexed packs are marked');
  const second = await cli(['backup', 'prune', '--repo', repoDir, '--grace', '0', '--json'], env);
  assert.equal(second.code, 0, second.stderr);
  assert.ok(JSON.parse(second.stdout).packsDeleted > 0, 'and deleted by the next prune');
  assert.equal(count(join(repoDir, 'writers')), 0);
  const temporaries = readdirSync(repoDir, { recursive: true }).filter((n) => String(n).split('/').pop()!.startsWith('.tmp-'));
  assert.deepEqual(temporaries, [], 'no temporary file of the killed backup is left');
  t.diagnostic(`the killed backup's temporary files removed by prune: ${JSON.parse(first.stdout).temporariesRemoved}`);
  const final = await cli(['backup', 'verify', '--repo', repoDir, '--read-data', '--json'], env);
  assert.equal(final.code, 0, final.stdout);
  assert.equal(JSON.parse(final.stdout).unindexedPacks, 0);
  const out2 = join(dir, 'restored-after-prune');
  assert.equal((await cli(['backup', 'restore', JSON.parse(rerun.stdout).id, '--repo', repoDir, '--to-file', out2], env)).code, 0);
  assertSameFile(out2, image);
});
