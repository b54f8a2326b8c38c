/**
 * Tiered archival: `backup archive` by policy and by age, restores from either repository, a
 * dry run that changes nothing, different passwords, tenants, and reruns after a kill.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { after, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { IndexCache, Repository, WorkerPool, archiveRestorePoint, backupFile, copiesIn } from '../../src/backup/index.ts';
import { DirBackend } from '../../src/objstore/dir.ts';
import { cleanup, spawnTracked, testSeed, tesseraBin, writeSeededFile } from '../helpers/index.ts';
import { assertFailure, assertSameFile, cli, cliEnv, ForwardingBackend, join, makeTempDir, openTestRepo, password, smallRepo, writeSeededImage } from './harness.ts';

after(cleanup);

const day = 86_400_000;
const archivePassword = 'a different archive password';

/** Every file under `dir` (relative paths), sorted: to show that nothing changed. */
function tree(dir: string): string[] {
  return (readdirSync(dir, { recursive: true }) as string[]).map(String).sort();
}

/** A primary repository with restore points made `ageDays` ago, and an empty archive repository. */
async function setUp(dir: string, points: { name: string; tenant?: string; ageDays: number; seed: number }[]) {
  const primaryDir = join(dir, 'primary');
  const archiveDir = join(dir, 'archive');
  let clock = Date.now();
  const p = await openTestRepo(primaryDir, { init: smallRepo, now: () => clock });
  const made: { id: string; image: string; name: string }[] = [];
  try {
    for (const pt of points) {
      const image = join(dir, `${pt.name}.img`);
      writeSeededImage(image, pt.seed, { chunks: 30, chunkSizeBytes: smallRepo.chunkSizeBytes!, tailCutBytes: 100 });
      clock = Date.now() - pt.ageDays * day;
      const b = await backupFile(p, image, { name: pt.name, tenant: pt.tenant });
      made.push({ id: b.id, image, name: pt.name });
    }
  } finally {
    await p.close();
  }
  const a = await Repository.init(new DirBackend(archiveDir), archivePassword, { chunkSizeBytes: smallRepo.chunkSizeBytes });
  const env = cliEnv(p.cacheDir, { TESSERA_ARCHIVE_PASSWORD: archivePassword });
  return { primaryDir, archiveDir, primaryId: p.repo.id, archiveId: a.id, made, env };
}

/** `backup list --json`: the restore points in the repository, or with `all` those archived out of it too. */
async function listJson(repoDir: string, env: Record<string, string | undefined>, options: { all?: boolean } = {}): Promise<any[]> {
  const o = await cli(['backup', 'list', '--repo', repoDir, '--json'], env);
  assert.equal(o.code, 0, o.stderr);
  const list = JSON.parse(o.stdout) as { where: string }[];
  return options.all ? list : list.filter((e) => e.where === 'here');
}

test('backup archive by policy moves old restore points of a tenant, verified, into an archive with another password; restores work from both repositories', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-archive-');
  const s = await setUp(dir, [
    { name: 'acme-old', tenant: 'acme', ageDays: 45, seed },
    { name: 'acme-older', tenant: 'acme', ageDays: 60, seed: seed + 1 },
    { name: 'acme-new', tenant: 'acme', ageDays: 2, seed: seed + 2 },
    { name: 'other-old', tenant: 'other', ageDays: 90, seed: seed + 3 },
    { name: 'untagged-old', ageDays: 90, seed: seed + 4 },
  ]);
  const [acmeOld, acmeOlder, acmeNew, otherOld, untagged] = s.made;
  const policy = join(dir, 'policy.json');
  writeFileSync(policy, JSON.stringify({ version: 1, tenants: { acme: { archiveAfterDays: 30, archive: s.archiveDir } } }));

  // A dry run names what is due and changes nothing in either repository.
  const before = [tree(s.primaryDir), tree(s.archiveDir)];
  const dry = await cli(['backup', 'archive', '--repo', s.primaryDir, '--policy', policy, '--dry-run', '--json'], s.env);
  assert.equal(dry.code, 0, dry.stderr);
  const dryOut = JSON.parse(dry.stdout);
  assert.equal(dryOut.dryRun, true);
  assert.deepEqual(dryOut.archived.map((l: any) => l.id), [acmeOlder.id, acmeOld.id], 'the two old acme restore points, oldest first');
  assert.deepEqual([tree(s.primaryDir), tree(s.archiveDir)], before, 'the dry run wrote nothing');

  const run = await cli(['backup', 'archive', '--repo', s.primaryDir, '--policy', policy, '--json'], s.env);
  assert.equal(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout).archived;
  assert.deepEqual(out.map((l: any) => [l.id, l.tenant, l.copied]), [[acmeOlder.id, 'acme', true], [acmeOld.id, 'acme', true]]);
  for (const l of out) assert.ok(l.chunksVerified > 0, 'the copy was read back and checked');

  const primary = await listJson(s.primaryDir, s.env);
  assert.deepEqual(primary.map((e) => e.id).sort(), [acmeNew.id, otherOld.id, untagged.id].sort(), 'archived restore points are gone from the primary');
  assert.deepEqual(primary.map((e) => e.tenant).sort(), ['acme', 'default', 'other']);
  const archived = await listJson(s.archiveDir, { ...s.env, TESSERA_PASSWORD: archivePassword });
  assert.equal(archived.length, 2);
  for (const e of archived) {
    const original = out.find((l: any) => l.archiveId === e.id);
    assert.ok(original, 'every copy is one the run reported');
    assert.deepEqual(e.archivedFrom, { repository: s.primaryId, id: original.id });
    assert.equal(e.time, original.time, 'the copy keeps the original time');
    assert.equal(e.tenant, 'acme');
  }

  // Restore through the primary (its archived record leads to the archive), from the archive by
  // the original's id, and from the archive by the copy's own id.
  const viaPrimary = join(dir, 'via-primary');
  const r1 = await cli(['backup', 'restore', acmeOld.id.slice(0, 8), '--repo', s.primaryDir, '--to-file', viaPrimary, '--json'], s.env);
  assert.equal(r1.code, 0, r1.stderr);
  assert.equal(JSON.parse(r1.stdout).archive, s.archiveDir);
  assertSameFile(viaPrimary, acmeOld.image);
  const archiveEnv = { ...s.env, TESSERA_PASSWORD: archivePassword };
  const viaArchive = join(dir, 'via-archive');
  const r2 = await cli(['backup', 'restore', acmeOlder.id.slice(0, 8), '--repo', s.archiveDir, '--to-file', viaArchive], archiveEnv);
  assert.equal(r2.code, 0, r2.stderr);
  assertSameFile(viaArchive, acmeOlder.image);
  const copyId = out.find((l: any) => l.id === acmeOld.id).archiveId;
  const viaCopyId = join(dir, 'via-copy-id');
  assert.equal((await cli(['backup', 'restore', copyId, '--repo', s.archiveDir, '--to-file', viaCopyId], archiveEnv)).code, 0);
  assertSameFile(viaCopyId, acmeOld.image);

  // Both repositories verify clean; the archive with every byte read.
  for (const [repo, env] of [[s.primaryDir, s.env], [s.archiveDir, archiveEnv]] as const) {
    const v = await cli(['backup', 'verify', '--read-data', '--repo', repo], env);
    assert.equal(v.code, 0, v.stdout + v.stderr);
  }

  // A rerun has nothing to do.
  const again = await cli(['backup', 'archive', '--repo', s.primaryDir, '--policy', policy, '--json'], s.env);
  assert.deepEqual(JSON.parse(again.stdout).archived, []);

  // By age, for one tenant, without a policy file: only that tenant's restore point moves.
  const byAge = await cli(['backup', 'archive', '--repo', s.primaryDir, '--archive-repo', s.archiveDir, '--older-than', '60d', '--tenant', 'other', '--json'], s.env);
  assert.equal(byAge.code, 0, byAge.stderr);
  assert.deepEqual(JSON.parse(byAge.stdout).archived.map((l: any) => l.id), [otherOld.id]);
  assert.deepEqual((await listJson(s.primaryDir, s.env)).map((e) => e.id).sort(), [acmeNew.id, untagged.id].sort());

  // The archive's password is its own: the primary's does not open it.
  const wrong = await cli(['backup', 'archive', '--repo', s.primaryDir, '--archive-repo', s.archiveDir, '--older-than', '1d'], { ...s.env, TESSERA_ARCHIVE_PASSWORD: undefined });
  assertFailure(wrong, 1, /Wrong password for the repository at .*archive.*TESSERA_ARCHIVE_PASSWORD/);
  assert.equal((await listJson(s.primaryDir, s.env)).length, 2, 'a failed archive run leaves the primary as it was');
});

test('backup archive rejects a bad policy file and bad option combinations with one line', async () => {
  const dir = makeTempDir('tessera-archive-bad-');
  const s = await setUp(dir, [{ name: 'x', ageDays: 1, seed: 1 }]);
  const policy = join(dir, 'policy.json');
  writeFileSync(policy, JSON.stringify({ version: 1, tenants: { acme: { archiveAfterDays: -1, archive: s.archiveDir } } }));
  assertFailure(await cli(['backup', 'archive', '--repo', s.primaryDir, '--policy', policy], s.env), 1, /archiveAfterDays must be a whole number/);
  writeFileSync(policy, '{"version": 1, "tenants": {}, "extra": 1}');
  assertFailure(await cli(['backup', 'archive', '--repo', s.primaryDir, '--policy', policy], s.env), 1, /unknown field 'extra'/);
  assertFailure(await cli(['backup', 'archive', '--repo', s.primaryDir, '--older-than', '3d'], s.env), 2, /--archive-repo URL with --older-than/);
  assertFailure(await cli(['backup', 'archive', '--repo', s.primaryDir, '--archive-repo', s.archiveDir, '--older-than', '1d', '--tenant', 'no spaces'], s.env), 2, /Bad tenant/);
  const samePassword = { ...s.env, TESSERA_ARCHIVE_PASSWORD: password };
  assertFailure(await cli(['backup', 'archive', '--repo', s.primaryDir, '--archive-repo', s.primaryDir, '--older-than', '0'], samePassword), 1, /is the primary repository itself/);
});

/** A backend over a directory whose puts of archived records fail, as if the process died there. */
class DiesBeforeRecord extends ForwardingBackend {
  protected override async _put(path: string, data: Buffer): Promise<void> {
    if (path.startsWith('archived/')) throw new Error('killed');
    return this.inner.put(path, data);
  }
}

/** A backend over a directory whose deletes of restore points fail: the process died after the record, before the forget. */
class DiesBeforeForget extends ForwardingBackend {
  protected override async _delete(path: string): Promise<void> {
    if (path.startsWith('snapshots/')) throw new Error('killed');
    return this.inner.delete(path);
  }
}

/** Archives restore point `id` of a set-up primary, opened through `primary` (a backend that fails somewhere), into its archive. */
async function archiveThrough(s: { archiveDir: string }, primaryBackend: ForwardingBackend, id: string): Promise<void> {
  const primary = await Repository.open(primaryBackend, password);
  const archive = await Repository.open(new DirBackend(s.archiveDir), archivePassword);
  const cacheDir = makeTempDir('tessera-backup-cache-');
  const p = { repo: primary, cache: IndexCache.open(primary.id, cacheDir), pool: new WorkerPool(primary.keys, { workers: 1 }) };
  const a = { repo: archive, cache: IndexCache.open(archive.id, cacheDir), pool: new WorkerPool(archive.keys, { workers: 1 }) };
  try {
    await archiveRestorePoint(p, a, await primary.findSnapshot(id), s.archiveDir, await copiesIn(archive));
  } finally {
    for (const r of [p, a]) {
      await r.pool.close();
      await r.cache.close();
    }
  }
}

test('backup archive stopped after the copy, before the primary forgets, finishes on a rerun without a second copy', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-archive-stop-');
  const s = await setUp(dir, [{ name: 'vm', ageDays: 10, seed }]);
  await assert.rejects(archiveThrough(s, new DiesBeforeRecord(s.primaryDir), s.made[0].id), /killed/);
  assert.equal((await copiesIn(await Repository.open(new DirBackend(s.archiveDir), archivePassword))).size, 1, 'the copy is in the archive');
  assert.equal((await listJson(s.primaryDir, s.env, { all: true })).length, 1, 'and the original still in the primary, with no record');
  const rerun = await cli(['backup', 'archive', '--repo', s.primaryDir, '--archive-repo', s.archiveDir, '--older-than', '7d', '--json'], s.env);
  assert.equal(rerun.code, 0, rerun.stderr);
  const lines = JSON.parse(rerun.stdout).archived;
  assert.equal(lines.length, 1);
  assert.equal(lines[0].copied, false, 'the rerun found the copy and did not make another');
  assert.ok(lines[0].chunksVerified > 0, 'but verified it again');
  assert.equal((await listJson(s.archiveDir, { ...s.env, TESSERA_PASSWORD: archivePassword })).length, 1, 'one copy in the archive');
  assert.equal((await listJson(s.primaryDir, s.env)).length, 0);
  const out = join(dir, 'restored');
  assert.equal((await cli(['backup', 'restore', s.made[0].id, '--repo', s.primaryDir, '--to-file', out], s.env)).code, 0);
  assertSameFile(out, s.made[0].image);
});

test('backup list shows restore points archived out of the repository and where they went; one an interrupted run did not forget yet is listed once, as here', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-archive-list-');
  const s = await setUp(dir, [
    { name: 'older', ageDays: 60, seed },
    { name: 'old', ageDays: 50, seed: seed + 1, tenant: 'acme' },
    { name: 'recent', ageDays: 1, seed: seed + 2 },
  ]);
  const [older, old, recent] = s.made;
  const run = await cli(['backup', 'archive', '--repo', s.primaryDir, '--archive-repo', s.archiveDir, '--older-than', '55d', '--json'], s.env);
  assert.equal(run.code, 0, run.stderr);
  const copyId = JSON.parse(run.stdout).archived[0].archiveId;
  // The run archiving `old` dies after its record, before it forgets the restore point.
  await assert.rejects(archiveThrough(s, new DiesBeforeForget(s.primaryDir), old.id), /killed/);

  const all = await listJson(s.primaryDir, s.env, { all: true });
  assert.deepEqual(all.map((e) => [e.id, e.where]), [[older.id, 'archived'], [old.id, 'here'], [recent.id, 'here']], 'oldest first; the one not yet forgotten once, as here');
  const [copy] = await listJson(s.archiveDir, { ...s.env, TESSERA_PASSWORD: archivePassword });
  assert.deepEqual(all[0], {
    id: older.id, time: copy.time, kind: null, name: 'older', hostname: null, sizeBytes: null, chunkSizeBytes: null, parent: null, source: null,
    group: null, tenant: 'default', archivedFrom: null, stats: null, where: 'archived',
    archive: { location: s.archiveDir, repository: s.archiveId, id: copyId, time: all[0].archive.time },
  });
  assert.equal(copy.id, copyId);
  assert.ok(Date.parse(all[0].archive.time) > Date.parse(copy.time), 'archived after it was made');
  assert.equal(all[1].archive, null);
  assert.equal(all[1].tenant, 'acme');

  const text = await cli(['backup', 'list', '--repo', s.primaryDir], s.env);
  assert.equal(text.code, 0, text.stderr);
  const lines = text.stdout.trimEnd().split('\n');
  assert.match(lines[0], /^ID +TIME +KIND +NAME +SIZE +ADDED +WHERE$/);
  assert.match(lines[1], new RegExp(`^${older.id.slice(0, 8)}  ${copy.time.replace(/\.\d+Z$/, 'Z')}  -     older  +-  +-  archived → ${s.archiveDir}$`));
  assert.match(lines[2], new RegExp(`^${old.id.slice(0, 8)}  \\S+Z  file  old  .*  here$`));
  assert.match(lines[3], new RegExp(`^${recent.id.slice(0, 8)}  \\S+Z  file  recent  .*  here$`));
  assert.equal(lines.length, 4);
});

test('backup verify reads every archived record: a damaged one is a fault naming its restore point, and backup list names it', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-archive-verify-');
  const s = await setUp(dir, [
    { name: 'older', ageDays: 60, seed },
    { name: 'recent', ageDays: 1, seed: seed + 1 },
  ]);
  const [older] = s.made;
  const run = await cli(['backup', 'archive', '--repo', s.primaryDir, '--archive-repo', s.archiveDir, '--older-than', '30d'], s.env);
  assert.equal(run.code, 0, run.stderr);
  const clean = await cli(['backup', 'verify', '--repo', s.primaryDir], s.env);
  assert.equal(clean.code, 0, clean.stdout + clean.stderr);
  assert.match(clean.stdout, /^Checked 1 restore points, 1 archived records, .*: no faults$/m);

  // One byte of the record flipped: it no longer authenticates.
  const record = join(s.primaryDir, 'archived', older.id);
  const bytes = readFileSync(record);
  bytes[bytes.length >> 1] ^= 0x40;
  writeFileSync(record, bytes);
  const v = await cli(['backup', 'verify', '--repo', s.primaryDir, '--json'], s.env);
  assert.equal(v.code, 1, v.stdout + v.stderr);
  const report = JSON.parse(v.stdout);
  assert.equal(report.archivedRecords, 1);
  assert.deepEqual(report.faults.map((f: any) => [f.subject, f.restorePoints]), [[`archived record ${older.id}`, [older.id]]]);
  assertFailure(v, 1, /verify found 1 faults affecting 1 restore points/);
  assertFailure(await cli(['backup', 'list', '--repo', s.primaryDir], s.env), 1, new RegExp(`Archived record ${older.id}`));
});

test('backup archive killed with SIGKILL while copying: a rerun reuses what was uploaded, makes one copy and restores byte-exact', async (t) => {
  const seed = testSeed(t);
  const dir = makeTempDir('tessera-archive-kill-');
  const primaryDir = join(dir, 'primary');
  const archiveDir = join(dir, 'archive');
  const image = join(dir, 'big.img');
  await writeSeededFile(image, seed, 'image', 48 << 20); // random: every chunk new in the archive
  let clock = Date.now() - 40 * day;
  const p = await openTestRepo(primaryDir, { init: smallRepo, now: () => clock });
  const b = await backupFile(p, image, { name: 'big' });
  await p.close();
  clock = Date.now();
  await Repository.init(new DirBackend(archiveDir), archivePassword, smallRepo);
  const env = cliEnv(p.cacheDir, { TESSERA_ARCHIVE_PASSWORD: archivePassword });
  const args = ['backup', 'archive', '--repo', primaryDir, '--archive-repo', archiveDir, '--older-than', '30d', '--json'];

  const child = spawnTracked(tesseraBin, args, { env: { ...process.env, ...env } as NodeJS.ProcessEnv });
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const indexFiles = () => {
    try {
      return readdirSync(join(archiveDir, 'index')).filter((n) => /^[0-9a-f]{64}$/.test(n)).length;
    } catch {
      return 0;
    }
  };
  let killedAt = 0;
  for (let i = 0; i < 6000 && child.exitCode === null; i++) {
    if (indexFiles() >= 3) {
      child.kill('SIGKILL');
      killedAt = indexFiles();
      break;
    }
    await sleep(5);
  }
  await exited;
  assert.ok(killedAt >= 3, `killed while copying (the run finished first or failed: ${stderr})`);
  const archiveEnv = { ...env, TESSERA_PASSWORD: archivePassword };
  assert.equal((await listJson(archiveDir, archiveEnv)).length, 0, 'killed before the copy was complete');
  assert.equal((await listJson(primaryDir, env)).length, 1);

  const rerun = await cli(args, env);
  assert.equal(rerun.code, 0, rerun.stderr);
  const [line] = JSON.parse(rerun.stdout).archived;
  assert.equal(line.id, b.id);
  const copies = await listJson(archiveDir, archiveEnv);
  assert.equal(copies.length, 1, 'one copy, not two');
  assert.ok(copies[0].stats.chunksReused >= killedAt * 8 * 3, `the rerun reused the packs of the killed run (${copies[0].stats.chunksReused} chunks)`);
  assert.equal((await listJson(primaryDir, env)).length, 0);
  const out = join(dir, 'restored');
  const r = await cli(['backup', 'restore', b.id, '--repo', primaryDir, '--to-file', out], env);
  assert.equal(r.code, 0, r.stderr);
  assertSameFile(out, image);
  const v = await cli(['backup', 'verify', '--repo', archiveDir], archiveEnv);
  assert.equal(v.code, 0, v.stdout);
});
