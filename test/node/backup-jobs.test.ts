/**
 * Backup jobs in the node (src/node/backup-jobs.ts, NodeBackups): a follower hears what a job
 * did so far and then the rest, up to its end; a cancel ends a job as cancelled and changes
 * nothing once it has ended; the node refuses a second job while one runs and an unknown disk
 * before any job exists, finds jobs by a unique prefix, and keeps the records of the last
 * finishedJobsMax finished jobs. The jobs that run real backups are in test/backup/on-node.test.ts.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { BackupJob, NodeBackups, finishedJobsMax, type BackupJobEvent } from '../../src/node/backups.ts';
import { Store } from '../../src/engine/index.ts';
import type { DiskBackupProgress } from '../../src/backup/index.ts';
import { cleanup, makeTempDir } from '../helpers/index.ts';

after(cleanup);

const facts = { disks: ['vm1'], repo: '/srv/b', tenant: null, rateBytesPerSecond: null };
const progress = (bytesRead: number): DiskBackupProgress => ({ disk: 'vm1', bytesToRead: 8, bytesRead, sizeBytes: 8, bytesScanned: bytesRead, bytesStored: 0, chunksNew: 0, chunksReused: 0, chunksZero: 0 }) as DiskBackupProgress;

/** What a follower heard, in short. */
const short = (e: BackupJobEvent): string => (e.event === 'progress' ? `progress ${e.progress.bytesRead}` : e.event === 'note' ? `note ${e.message}` : e.event === 'snapshot' ? `snapshot ${e.name}` : e.event === 'error' ? `error ${e.state}` : 'done');

test('a backup job: a follower hears what it did so far, then the rest, then its end; one who stops following hears no more', async () => {
  let go!: () => void;
  const gate = new Promise<void>((resolve) => (go = resolve));
  const job = BackupJob.start(facts, async ({ report }) => {
    report({ event: 'note', message: 'full backup of vm1' });
    report({ event: 'snapshot', name: 'backup-1' });
    report({ event: 'progress', progress: progress(2) });
    report({ event: 'progress', progress: progress(4) });
    await gate;
    report({ event: 'progress', progress: progress(8) });
    return [{ id: 'f'.repeat(64) }];
  });
  assert.match(job.id, /^[0-9a-f]{12}$/);
  const early: string[] = [];
  job.follow((e) => void early.push(short(e)));
  await new Promise((resolve) => setImmediate(resolve));
  const late: string[] = [];
  job.follow((e) => void late.push(short(e)));
  const gone: string[] = [];
  job.follow((e) => void gone.push(short(e)))();
  assert.equal(job.state, 'running');
  go();
  const end = await job.finished;
  assert.deepEqual(end, { state: 'done', outcomes: [{ id: 'f'.repeat(64) }] });
  assert.deepEqual(early, ['note full backup of vm1', 'snapshot backup-1', 'progress 2', 'progress 4', 'progress 8', 'done']);
  assert.deepEqual(late, ['snapshot backup-1', 'note full backup of vm1', 'progress 4', 'progress 8', 'done'], 'the snapshot, the notes, the last progress; then live');
  assert.deepEqual(gone, ['snapshot backup-1', 'note full backup of vm1', 'progress 4']);
  const after: string[] = [];
  job.follow((e) => void after.push(short(e)));
  assert.deepEqual(after, ['snapshot backup-1', 'note full backup of vm1', 'progress 8', 'done']);
  assert.equal(job.state, 'done');
  assert.ok(job.finishedMs !== null && job.finishedMs >= job.startedMs);
  assert.deepEqual(await job.cancel(), end, 'a cancel after the end changes nothing');
  assert.equal(job.state, 'done');
});

test('a backup job cancelled ends as cancelled, whatever its work failed with; one that fails on its own is failed', async () => {
  const job = BackupJob.start(facts, ({ signal }) => new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(new Error('read refused')))));
  const heard: string[] = [];
  job.follow((e) => void heard.push(short(e)));
  await new Promise((resolve) => setImmediate(resolve));
  const end = await job.cancel();
  assert.equal(end.state, 'cancelled');
  assert.equal(end.state === 'cancelled' && end.error.message, 'read refused');
  assert.equal(job.state, 'cancelled');
  assert.deepEqual(heard, ['error cancelled']);
  // Cancelled before its work began: the work never runs.
  let ran = false;
  const early = BackupJob.start(facts, async () => {
    ran = true;
    return [];
  });
  const earlyEnd = await early.cancel();
  assert.equal(earlyEnd.state === 'cancelled' && earlyEnd.error.message, 'The backup was cancelled');
  assert.equal(ran, false);
  const failed = await BackupJob.start(facts, async () => {
    throw new Error('no repository');
  }).finished;
  assert.equal(failed.state, 'failed');
  assert.equal(failed.state === 'failed' && failed.error.message, 'no repository');
});

test('NodeBackups: one job at a time, an unknown disk refused before a job exists, jobs found by a unique prefix, the last finished ones kept', async () => {
  const dir = makeTempDir('tessera-backup-jobs-');
  const store = await Store.open({ dir: join(dir, 'store') });
  const backups = new NodeBackups({ store, dataDir: dir });
  try {
    await store.createDisk('vm1', 1 << 20);
    const req = { disks: ['vm1'], repo: join(dir, 'no-repo'), password: 'secret', env: {} };
    assert.throws(() => backups.start({ ...req, disks: ['vm1', 'nope'] }), { code: 'ENGINE_NOT_FOUND' });
    assert.deepEqual(backups.jobs(), []);
    const first = backups.start(req);
    assert.equal(backups.busy, true);
    assert.equal(backups.running, first);
    assert.throws(() => backups.start(req), /A backup is running on this node already/);
    const end = await first.finished;
    assert.equal(end.state, 'failed', 'no repository there');
    assert.equal(backups.busy, false, 'the books are kept before `finished` resolves');
    assert.equal(backups.job(first.id), first);
    assert.equal(backups.job(first.id.slice(0, 4)), first);
    assert.equal(backups.job(first.id.slice(0, 3)), null, 'a prefix is 4 digits at least');
    assert.doesNotMatch(JSON.stringify(first.facts), /secret/);
    for (let i = 0; i < finishedJobsMax + 2; i++) await backups.start(req).finished;
    const jobs = backups.jobs();
    assert.equal(jobs.length, finishedJobsMax);
    assert.ok(!jobs.includes(first), 'the oldest records are forgotten');
    assert.ok(jobs.every((j, i) => i === 0 || j.startedMs <= jobs[i - 1].startedMs), 'newest first');
  } finally {
    await backups.close();
    await store.close();
  }
});
