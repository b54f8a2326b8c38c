/**
 * Disk backups the node runs itself (`tessera backup create`, POST /api/v1/backups):
 * full and incremental backups that restore byte-exact, the same JSON as a backup the CLI runs,
 * hooks around the node's snapshot, errors as one line each, a second backup refused while one
 * runs, and a backup whose client goes away cancelled with its snapshot deleted.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { nbdcopy, qemuIo, run, spawnTracked, useNode, tesseraBin, type RunResult } from '../helpers/index.ts';
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

/** A new disk of 512 MiB holding 384 MiB of random data: a backup of it takes a while (it does not compress). */
async function randomDisk(disk: string): Promise<void> {
  await node.cliOk(['disk', 'create', disk, '--size', '512M']);
  const data = join(dir, `${disk}.random`);
  await run('sh', ['-c', `head -c ${384 * MiB} /dev/urandom > ${data}`], { timeoutMs: 60_000 });
  const copied = await run('nbdcopy', [data, node.nbdUri(disk)], { timeoutMs: 120_000 });
  assert.equal(copied.code, 0, copied.stderr);
}

/** The name of the backup snapshot of `disk` once the node has taken it (polled for up to 5 s). */
async function backupSnapshotTaken(disk: string): Promise<string> {
  let snap: string | undefined;
  for (let i = 0; i < 200 && snap === undefined; i++) {
    snap = (await snapshotsOf(disk)).find((n) => n.startsWith('backup-'));
    if (snap === undefined) await sleep(25);
  }
  assert.ok(snap !== undefined, 'the node took the snapshot');
  return snap;
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

test('backup create on the node: one backup at a time; a client that goes away cancels its backup and its snapshot is deleted', async () => {
  const { repo, env } = await newRepo('repo-c');
  await randomDisk('on3');

  const child = spawnTracked(tesseraBin, ['--api', node.api, 'backup', 'create', 'on3', '--repo', repo], { env });
  // Once the node has taken the snapshot, a second backup is refused, and then the first client goes away.
  const snap = await backupSnapshotTaken('on3');
  const second = await postBackup({ disks: ['on3'], repo, password });
  assert.equal(second.status, 503);
  assert.match(second.message, /A backup is running on this node already/);
  child.kill('SIGKILL');
  let left = [snap];
  for (let i = 0; i < 400 && left.length > 0; i++) {
    await sleep(25);
    left = (await snapshotsOf('on3')).filter((n) => n.startsWith('backup-'));
  }
  assert.deepEqual(left, [], 'the cancelled backup deleted its snapshot');
  const list = await tessera(env, ['backup', 'list', '--repo', repo, '--json']);
  assert.equal(list.code, 0, list.stderr);
  assert.deepEqual(JSON.parse(list.stdout), [], 'and wrote no restore point');
  // The node takes the next one.
  const [made] = await createJson(env, ['on3', '--repo', repo]);
  assert.equal(made.stats.bytesScanned, 384 * MiB);
});

test('backup create on the node: a node killed with SIGKILL mid-way leaves its snapshot, which the next backup removes; that one restores byte-exact, verify is clean', async () => {
  const { repo, env } = await newRepo('repo-d');
  await randomDisk('on4');

  const child = spawnTracked(tesseraBin, ['--api', node.api, 'backup', 'create', 'on4', '--repo', repo], { env });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const snap = await backupSnapshotTaken('on4');
  await node.kill('SIGKILL');
  assert.equal(await exited, 1, 'the client fails with the node');
  await node.start();
  assert.deepEqual(await snapshotsOf('on4'), [snap], 'the killed backup left its snapshot');

  const r = await tessera(env, ['backup', 'create', 'on4', '--repo', repo, '--json']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stderr, new RegExp(`removed on4@${snap}, left by an interrupted backup into this repository`));
  const [made] = JSON.parse(r.stdout);
  assert.deepEqual(made.staleSnapshotsRemoved, [snap]);
  assert.deepEqual(await snapshotsOf('on4'), [made.source.snapshot]);
  await assertRestores(env, repo, made.id, 'on4');
  const verify = await tessera(env, ['backup', 'verify', '--repo', repo]);
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});
