/**
 * Disk backups the node runs itself as jobs (`tessera backup create`, POST /api/v1/backups,
 * `backup jobs`, `backup job cancel`): full and incremental backups that restore byte-exact, the
 * same JSON as a backup the CLI runs, hooks around the node's snapshot, errors as one line each;
 * a job that goes on when its CLI is killed, a second backup refused while one runs, a job
 * cancelled (its snapshot deleted, the repository verifies, the next backup completes), a node
 * stopped mid-job (it cancels the job), and a node killed mid-job (the same after a restart).
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { test } from 'node:test';
import { ApiClient, type BackupJob } from '../../src/api/client/index.ts';
import { nbdcopy, qemuIo, run, spawnTracked, until, useNode, tesseraBin, type RunResult } from '../helpers/index.ts';
import { cliEnv, join, makeTempDir, openTestRepo, password } from './harness.ts';

const node = useNode();
const dir = makeTempDir('tessera-on-node-');
const MiB = 1 << 20;

async function newRepo(name: string): Promise<{ repo: string; env: NodeJS.ProcessEnv }> {
  const repo = join(dir, name);
  const r = await openTestRepo(repo, { init: {} });
  await r.close();
  return { repo, env: { ...process.env, ...cliEnv(r.cacheDir) } as NodeJS.ProcessEnv };
}

/** Runs `tessera args`, with `--api NODE` for the commands that talk to the node. */
function tessera(env: NodeJS.ProcessEnv, args: string[]): Promise<RunResult> {
  const api = args[1] === 'create' || args[1] === 'restore' ? ['--api', node.api] : [];
  return run(tesseraBin, [...api, ...args], { env, timeoutMs: 300_000 });
}

async function createJson(env: NodeJS.ProcessEnv, args: string[]): Promise<any[]> {
  const r = await tessera(env, ['backup', 'create', ...args, '--json']);
  assert.equal(r.code, 0, `${r.stderr}\nnode log: ${node.logTail().slice(-2000)}`);
  return JSON.parse(r.stdout);
}

async function snapshotsOf(disk: string): Promise<string[]> {
  return ((await node.cliJson(['snap', 'list', disk])) as { name: string }[]).map((s) => s.name);
}

/**
 * A new disk of 64 MiB holding `mib` MiB of random data (it does not compress): a backup paced
 * by `--rate` reads it for as long as the test needs it running, loaded machine or not.
 */
async function randomDisk(disk: string, mib: number): Promise<void> {
  await node.cliOk(['disk', 'create', disk, '--size', '64M']);
  const data = join(dir, `${disk}.random`);
  await run('sh', ['-c', `head -c ${mib * MiB} /dev/urandom > ${data}`], { timeoutMs: 60_000 });
  const copied = await run('nbdcopy', [data, node.nbdUri(disk)], { timeoutMs: 120_000 });
  assert.equal(copied.code, 0, copied.stderr);
}

/** The node's backup jobs (GET /api/v1/backup-jobs: cheaper to poll than a CLI process). */
async function jobsNow(): Promise<BackupJob[]> {
  return (await fetch(`${node.api}/api/v1/backup-jobs`)).json() as Promise<BackupJob[]>;
}

/** The running job of `disk` once it has taken its snapshot and read `bytes` (polled for up to 60 s). */
async function runningJob(disk: string, bytes = 0): Promise<BackupJob> {
  let job: BackupJob | undefined;
  await until(async () => {
    job = (await jobsNow()).find((j) => j.disks.includes(disk) && j.state === 'running' && j.snapshot !== null && j.bytesRead >= bytes);
    return job !== undefined;
  }, 60_000, `a running backup job of ${disk}`, 25);
  return job!;
}

/** POST /api/v1/backups with `body`: the status, and the error message of a JSON reply. */
async function postBackup(body: unknown): Promise<{ status: number; message: string }> {
  const res = await fetch(`${node.api}/api/v1/backups`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: res.status, message: ((await res.json()) as { error: { message: string } }).error.message };
}

/** Restores `id` to a file and compares it with the disk's bytes now. */
async function assertRestores(env: NodeJS.ProcessEnv, repo: string, id: string, disk: string): Promise<void> {
  const out = join(dir, `${id.slice(0, 8)}.raw`);
  const r = await tessera(env, ['backup', 'restore', id, '--repo', repo, '--to-file', out]);
  assert.equal(r.code, 0, r.stderr);
  const now = join(dir, `${disk}-now.raw`);
  await nbdcopy(node.nbdUri(disk), now);
  assert.ok((await readFile(out)).equals(await readFile(now)), `restore point ${id.slice(0, 8)} restores ${disk} byte for byte`);
}

test('backup create on the node: a full and an incremental backup restore byte-exact, with the JSON of a backup the CLI runs', async () => {
  const { repo, env } = await newRepo('repo-a');
  await node.cliOk(['disk', 'create', 'on1', '--size', '64M']);
  assert.equal((await qemuIo(node.nbdUri('on1'), ['write -q -P 0x11 1M 5M', 'write -q -P 0x22 40M 3M'])).code, 0);
  const [full] = await createJson(env, ['on1', '--repo', repo]);
  assert.equal(full.incremental, false);
  assert.equal(full.stats.bytesScanned, 8 * MiB, 'only the allocated chunks are read');
  await assertRestores(env, repo, full.id, 'on1');

  assert.equal((await qemuIo(node.nbdUri('on1'), ['write -q -P 0x33 2M 8k', 'write -q -P 0x44 60M 4k'])).code, 0);
  const [incr] = await createJson(env, ['on1', '--repo', repo]);
  assert.equal(incr.incremental, true);
  assert.equal(incr.parent, full.id);
  assert.equal(incr.stats.bytesScanned, 2 * MiB, 'only the two chunks with changed blocks are read');
  assert.deepEqual(await snapshotsOf('on1'), [incr.source.snapshot], 'the old base is deleted, the new one kept');
  await assertRestores(env, repo, incr.id, 'on1');

  // The CLI can take over from a backup the node ran (one repository format, one base), and the
  // objects it prints have the same fields.
  assert.equal((await qemuIo(node.nbdUri('on1'), ['write -q -P 0x55 10M 4k'])).code, 0);
  const [local] = await createJson(env, ['on1', '--repo', repo, '--local']);
  assert.equal(local.incremental, true);
  assert.equal(local.parent, incr.id);
  assert.deepEqual(Object.keys(incr).sort(), Object.keys(local).sort());
  const text = await tessera(env, ['backup', 'create', 'on1', '--repo', repo]);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, /^Backed up on1 as restore point [0-9a-f]{8} \(incremental\): 0 B read/);
});

test('backup create on the node: hooks run around the node\'s snapshot; errors are one line and leave no snapshot', async () => {
  const { repo, env } = await newRepo('repo-b');
  await node.cliOk(['disk', 'create', 'on2', '--size', '16M']);
  assert.equal((await qemuIo(node.nbdUri('on2'), ['write -q -P 0x66 0 1M'])).code, 0);
  const log = join(dir, 'hooks.log');
  await writeFile(log, '');
  const hook = (which: string) => `echo ${which} "$TESSERA_HOOK" "$TESSERA_DISKS" "$TESSERA_SNAPSHOT" >> ${log}`;
  const [made] = await createJson(env, ['on2', '--repo', repo, '--pre', hook('pre'), '--post', hook('post')]);
  assert.deepEqual((await readFile(log, 'utf8')).trim().split('\n'), ['pre pre on2 ', `post post on2 ${made.source.snapshot}`], 'pre does not know the name the node will choose');

  // A failing pre hook: no request, the post hook undoes it, nothing is taken.
  const before = await snapshotsOf('on2');
  const failed = await tessera(env, ['backup', 'create', 'on2', '--repo', repo, '--pre', 'exit 3', '--post', `echo undo >> ${log}`]);
  assert.equal(failed.code, 1);
  assert.match(failed.stderr, /^tessera: error: the --pre hook failed \(exit 3\): exit 3; no snapshot taken\n$/);
  assert.deepEqual(await snapshotsOf('on2'), before);
  assert.match(await readFile(log, 'utf8'), /undo\n$/);

  // The node's errors: an unknown disk (the post hook still runs), a wrong password, no repository.
  const unknown = await tessera(env, ['backup', 'create', 'on2', 'nope', '--repo', repo, '--post', `echo post2 >> ${log}`]);
  assert.equal(unknown.code, 1);
  assert.match(unknown.stderr, /^tessera: error: No disk named "nope"\n$/);
  assert.deepEqual(await snapshotsOf('on2'), before, 'the group snapshot is not taken');
  assert.match(await readFile(log, 'utf8'), /post2\n$/);
  const wrong = await tessera({ ...env, TESSERA_PASSWORD: 'wrong' }, ['backup', 'create', 'on2', '--repo', repo]);
  assert.equal(wrong.code, 1);
  assert.match(wrong.stderr, /^tessera: error: .*password/i);
  const missing = await tessera(env, ['backup', 'create', 'on2', '--repo', join(dir, 'no-such-repo')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /^tessera: error: No backup repository at /);
  assert.deepEqual(await snapshotsOf('on2'), before);

  // A malformed request is the API's 400, before anything runs.
  const bad = await postBackup({ disks: [], repo, password });
  assert.equal(bad.status, 400);
  assert.match(bad.message, /must name 1 to/);
  const badEnv = await postBackup({ disks: ['on2'], repo, password, env: { PATH: '/tmp' } });
  assert.equal(badEnv.status, 400);
  assert.match(badEnv.message, /Variable PATH is not one the node takes/);
  assert.deepEqual(await snapshotsOf('on2'), before);
});

test('backup create on the node: the CLI killed with SIGKILL mid-backup, its job goes on to the end; backup jobs shows it; another backup is refused meanwhile', async () => {
  const { repo, env } = await newRepo('repo-c');
  await randomDisk('on3', 48);

  // 48 MiB at 6 MiB/s: about 8 s of reading, so the job is mid-way when its CLI goes, however loaded the machine.
  const child = spawnTracked(tesseraBin, ['--api', node.api, 'backup', 'create', 'on3', '--repo', repo, '--rate', '6M', '--json'], { env });
  const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_code, signal) => resolve(signal)));
  const job = await runningJob('on3');
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL');

  // The job goes on, listed as running by the API and by `backup jobs`, without its password.
  const listed = (await jobsNow()).find((j) => j.id === job.id);
  assert.equal(listed?.state, 'running', 'killing the CLI did not stop the job');
  assert.deepEqual({ disks: listed.disks, repo: listed.repo, rateBytesPerSecond: listed.rateBytesPerSecond, node: listed.node }, { disks: ['on3'], repo, rateBytesPerSecond: 6 * MiB, node: null });
  // One backup at a time.
  const second = await postBackup({ disks: ['on3'], repo, password });
  assert.equal(second.status, 503);
  assert.match(second.message, /A backup is running on this node already/);
  const table = await node.cliOk(['backup', 'jobs']);
  assert.match(table, /^ID +STATE +DISKS +REPO +READ +STARTED +TOOK +RESULT\n/);
  assert.match(table, new RegExp(`^${job.id} +running +on3 +${repo.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} `, 'm'));
  assert.ok(!table.includes(password) && !JSON.stringify(listed).includes(password), 'the password is not listed');

  // Another client follows it to its end (GET /backup-jobs/{id}?follow=true): what it did so far, then the rest.
  const events: string[] = [];
  const [made] = await new ApiClient(node.api).followBackupJob(job.id.slice(0, 6), (e) => void events.push(e.event));
  assert.deepEqual(events.slice(0, 2), ['job', 'snapshot']);
  assert.equal(made.stats.bytesScanned, 48 * MiB);
  assert.deepEqual(made.source, { snapshot: job.snapshot });
  const done = (JSON.parse(await node.cliOk(['backup', 'jobs', '--json'])) as BackupJob[]).find((j) => j.id === job.id);
  assert.equal(done?.state, 'done');
  assert.equal(done.outcomes?.[0].id, made.id);
  assert.equal(done.bytesRead, 48 * MiB);
  assert.ok(done.finishedMs !== null && done.finishedMs > done.startedMs);
  assert.deepEqual(await snapshotsOf('on3'), [job.snapshot], 'its snapshot is the next base');
  const late = await node.cli(['backup', 'job', 'cancel', job.id]);
  assert.equal(late.code, 1);
  assert.equal(late.stderr, `tessera: error: backup job ${job.id} had ended already (done: on3 ${made.id.slice(0, 8)})\n`);
  await assertRestores(env, repo, made.id, 'on3');
  assert.ok(!JSON.stringify(await node.logRecords()).includes(password), 'the password is in no log record');
});

test('backup job cancel: the job fails as a failed backup does (its snapshot deleted, no restore point), the repository verifies, the next backup completes', async () => {
  const { repo, env } = await newRepo('repo-e');
  await randomDisk('on5', 48);
  const following = tessera(env, ['backup', 'create', 'on5', '--repo', repo, '--rate', '8M']);
  // Cancelled once it has read a good part: chunks sealed, perhaps packs uploaded, that the next backup reuses or prune removes.
  const job = await runningJob('on5', 8 * MiB);
  const cancel = await node.cli(['backup', 'job', 'cancel', job.id.slice(0, 6)]);
  assert.equal(cancel.code, 0, cancel.stderr);
  assert.match(cancel.stdout, new RegExp(`^Cancelled backup job ${job.id} \\(on5\\) after [0-9.]+ MiB read\\n$`));
  const followed = await following;
  assert.equal(followed.code, 1, followed.stdout + followed.stderr);
  assert.match(followed.stderr, /^tessera: error: The backup was cancelled\n$/);

  const ended = (await jobsNow()).find((j) => j.id === job.id);
  assert.equal(ended?.state, 'cancelled');
  assert.deepEqual(ended.error, { code: 'CANCELLED', message: 'The backup was cancelled' });
  assert.deepEqual((await snapshotsOf('on5')).filter((n) => n.startsWith('backup-')), [], 'its snapshot is deleted');
  const list = await tessera(env, ['backup', 'list', '--repo', repo, '--json']);
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(JSON.parse(list.stdout), [], 'and no restore point written');
  const verify = await tessera(env, ['backup', 'verify', '--repo', repo]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
  const again = await node.cli(['backup', 'job', 'cancel', job.id]);
  assert.equal(again.code, 0, 'cancelling it again changes nothing');

  // The next backup completes: a full one (the old base stays the base; here there was none), byte-exact.
  const [made] = await createJson(env, ['on5', '--repo', repo]);
  assert.equal(made.incremental, false);
  assert.equal(made.stats.bytesScanned, 48 * MiB);
  await assertRestores(env, repo, made.id, 'on5');
});

test('a node stopped (SIGTERM) mid-job cancels the job first: its snapshot is deleted, the old base stays', async () => {
  const { repo, env } = await newRepo('repo-f');
  await randomDisk('on6', 48);
  const [base] = await createJson(env, ['on6', '--repo', repo]);
  assert.equal((await qemuIo(node.nbdUri('on6'), ['write -q -P 0x77 0 40M'])).code, 0);
  const following = tessera(env, ['backup', 'create', 'on6', '--repo', repo, '--rate', '8M']);
  const job = await runningJob('on6', 4 * MiB);
  await node.restart('SIGTERM');
  assert.equal((await following).code, 1);
  assert.deepEqual(await snapshotsOf('on6'), [base.source.snapshot], `the stopping node deleted ${job.snapshot}`);
  const [next] = await createJson(env, ['on6', '--repo', repo]);
  assert.equal(next.parent, base.id, 'the next backup is incremental from the old base');
});

test('backup create on the node: a node killed with SIGKILL mid-job leaves its snapshot, which the next backup removes; that one restores byte-exact, verify is clean', async () => {
  const { repo, env } = await newRepo('repo-d');
  await randomDisk('on4', 48);

  const child = spawnTracked(tesseraBin, ['--api', node.api, 'backup', 'create', 'on4', '--repo', repo, '--rate', '8M'], { env });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const job = await runningJob('on4', 4 * MiB);
  await node.kill('SIGKILL');
  assert.equal(await exited, 1, 'the client fails with the node');
  assert.match(stderr, new RegExp(`backup job ${job.id} may go on there \\(tessera backup jobs\\)`));
  await node.start();
  assert.deepEqual(await snapshotsOf('on4'), [job.snapshot], 'the killed backup left its snapshot');
  assert.deepEqual(await jobsNow(), [], 'job records are kept in memory: a restarted node has none');
  const verifyBefore = await tessera(env, ['backup', 'verify', '--repo', repo]);
  assert.equal(verifyBefore.code, 0, verifyBefore.stdout + verifyBefore.stderr);

  const r = await tessera(env, ['backup', 'create', 'on4', '--repo', repo, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`removed on4@${job.snapshot}, left by an interrupted backup into this repository`));
  const [made] = JSON.parse(r.stdout);
  assert.deepEqual(made.staleSnapshotsRemoved, [job.snapshot]);
  assert.deepEqual(await snapshotsOf('on4'), [made.source.snapshot]);
  await assertRestores(env, repo, made.id, 'on4');
  const verify = await tessera(env, ['backup', 'verify', '--repo', repo]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
