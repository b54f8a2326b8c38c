/**
 * Scheduled protection on a real node (`tessera serve`), driven by the real CLI, on the test's
 * hook TESSERA_SCHEDULE_SPEED: the node's schedules run on a clock 3600 times as fast as the
 * system's from the test's start (an hour of a schedule is a second), nothing else changes. A
 * `--every 1h` backup schedule runs within seconds and its retention forgets and prunes; a
 * `--every 15m` snapshot schedule keeps its own newest 3; `list --json` and /metrics show each
 * one's last and next run; due times missed while the node was down (kill -9) run once at its
 * start; a password file others may read is refused at add and fails the run it is found at.
 */
import assert from 'node:assert/strict';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { makeTempDir, promtoolCheck, qemuIo, until, useNode } from '../helpers/index.ts';
import { join, openTestRepo, password } from '../backup/harness.ts';
import type { BackupScheduleInfo, SnapshotScheduleInfo } from '../../src/api/client/index.ts';

const speed = 3600;
const since = Date.now();
const hour = 3_600_000;
const minute = 60_000;
const node = useNode({
  env: { TESSERA_SCHEDULE_SPEED: `${speed}@${since}` },
  setup: async (n) => {
    await n.cliOk(['disk', 'create', 'vm1', '--size', '16M']);
    assert.equal((await qemuIo(n.nbdUri('vm1'), ['write -q -P 0x11 0 3M', 'write -q -P 0x22 8M 1M'])).code, 0);
  },
});
const dir = makeTempDir('tessera-sched-node-');
const cacheDir = makeTempDir('tessera-sched-cache-');
const cliEnv = { ...process.env, TESSERA_PASSWORD: password, TESSERA_CACHE_DIR: cacheDir };

/** The schedules' clock now, as the node reads it. */
const scheduleNow = (): number => since + (Date.now() - since) * speed;

function passwordFile(name: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, `${password}\n`);
  chmodSync(path, mode);
  return path;
}

async function newRepo(name: string): Promise<string> {
  const r = await openTestRepo(join(dir, name), { init: { chunkSizeBytes: 64 * 1024 }, cacheDir });
  await r.close();
  return r.dir;
}

const backupSchedules = (): Promise<BackupScheduleInfo[]> => node.cliJson(['backup', 'schedule', 'list']);
const snapshotSchedules = (): Promise<SnapshotScheduleInfo[]> => node.cliJson(['snap', 'schedule', 'list']);

/** The names of `disk`'s snapshots. */
async function snapshots(disk: string): Promise<string[]> {
  return ((await node.cliJson(['snap', 'list', disk])) as { name: string }[]).map((s) => s.name);
}

/** The time a snapshot schedule's snapshot was taken at, from its name (`sched-ID-2026-01-01T10-15-00-000Z`). */
function timeOf(name: string, prefix: string): number {
  const t = name.slice(prefix.length).replace(/^(\d{4}-\d\d-\d\dT\d\d)-(\d\d)-(\d\d)-(\d{3})Z(-\d+)?$/, '$1:$2:$3.$4Z');
  const ms = Date.parse(t);
  assert.ok(Number.isFinite(ms), `a time in ${name}`);
  return ms;
}

/** The vm1 restore points of a repository, by the real CLI. */
async function restorePoints(repo: string): Promise<string[]> {
  const r = await node.cli(['backup', 'list', '--repo', repo, '--json'], { env: cliEnv });
  assert.equal(r.code, 0, r.stderr);
  return (JSON.parse(r.stdout) as { id: string; name: string }[]).filter((e) => e.name === 'vm1').map((e) => e.id);
}

/** Waits until the node's log says every run of schedule `id` it started has ended. */
async function runsEnded(id: string): Promise<void> {
  await eventually(async () => {
    const records = await node.logRecords();
    const started = records.filter((r) => r.schedule === id && / runs: /.test(String(r.msg))).length;
    const ended = records.filter((r) => r.schedule === id && / (ran|failed): /.test(String(r.msg))).length;
    return started === ended;
  }, 30_000, `the runs of ${id} ended`, 50);
}

/** `until`, its failure carrying the end of the node's log. */
async function eventually(predicate: () => Promise<boolean>, ms: number, what: string, pollMs = 100): Promise<void> {
  try {
    await until(predicate, ms, what, pollMs);
  } catch (err) {
    throw new Error(`${(err as Error).message}\nnode log: ${node.logTail().slice(-4000)}`, { cause: err });
  }
}

async function metrics(): Promise<string> {
  const res = await fetch(`${node.api}/metrics`);
  assert.equal(res.status, 200);
  return res.text();
}

test('a --every 1h backup schedule runs within seconds on the fast clock, forgets beyond --keep-last 2 and prunes; list and metrics show its runs', async () => {
  const repo = await newRepo('repo-a');
  const args = ['backup', 'schedule', 'add', 'vm1', '--every', '1h', '--repo', repo, '--keep-last', '2'];
  // A password file others may read is refused, with what to do.
  const loose = passwordFile('loose.key', 0o644);
  const refused = await node.cli([...args, '--password-file', loose]);
  assert.equal(refused.code, 1);
  assert.equal(refused.stderr, `tessera: error: Password file ${loose} may be read or written by group or others (mode 0644): it must be readable by its owner only (chmod 600 ${loose})\n`);
  assert.deepEqual(await backupSchedules(), []);
  // A wrong password is refused too: the node opens the repository before it keeps the schedule.
  const wrong = join(dir, 'wrong.key');
  writeFileSync(wrong, 'not the password\n', { mode: 0o600 });
  const wrongPw = await node.cli([...args, '--password-file', wrong]);
  assert.equal(wrongPw.code, 1);
  assert.match(wrongPw.stderr, /^tessera: error: Wrong password for the repository at /);

  const addedAfter = scheduleNow();
  const added = (await node.cliJson([...args, '--password-file', passwordFile('a.key', 0o600)])) as BackupScheduleInfo;
  const addedBefore = scheduleNow();
  assert.match(added.id, /^[0-9a-f]{8}$/);
  assert.deepEqual([added.disks, added.repo, added.everyMs, added.keepLast, added.lastRun, added.runsOk], [['vm1'], repo, hour, 2, null, 0]);
  assert.ok(added.createdMs >= addedAfter && added.createdMs <= addedBefore, "created on the schedules' clock");
  assert.equal(added.nextRunMs, added.createdMs + hour);
  // Three runs: three real seconds.
  await eventually(async () => (await backupSchedules())[0].runsOk >= 3, 60_000, 'three runs', 200);
  const [info] = await backupSchedules();
  assert.equal(info.runsFailed, 0, JSON.stringify(info.lastRun));
  const last = info.lastRun!;
  assert.equal(last.result, 'ok');
  assert.equal(last.error, null);
  assert.equal(last.restorePoints.length, 1);
  // Each run's backup is a job of the node's, listed with the others.
  const jobs = (await node.cliJson(['backup', 'jobs'])) as { id: string; state: string; outcomes: { id: string }[] | null }[];
  const job = jobs.find((j) => j.id === last.job);
  assert.ok(job !== undefined, `the run's job ${last.job} in backup jobs`);
  assert.equal(job.state, 'done');
  assert.deepEqual(job.outcomes!.map((o) => o.id), last.restorePoints);
  assert.equal(last.forgotten, 1, 'one past the newest 2 forgotten at each run from the third on');
  assert.ok(last.prune !== null && last.prune.packsMarked >= 0, 'a prune after the retention');
  assert.ok(info.nextRunMs! > last.startedMs && (info.nextRunMs! - info.createdMs) % hour === 0, 'the next run on the hour of its creation');
  const text = await node.cliOk(['backup', 'schedule', 'list']);
  assert.match(text, new RegExp(`^${info.id}\\s+vm1\\s+${repo.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}\\s+every 1h\\s+last 2\\s+\\S+Z ok`, 'm'));
  const m = await metrics();
  assert.match(m, new RegExp(`^tessera_schedule_last_success\\{schedule="${info.id}",kind="backup"\\} 1$`, 'm'));
  assert.match(m, new RegExp(`^tessera_schedule_runs_total\\{schedule="${info.id}",kind="backup",result="ok"\\} \\d+$`, 'm'));
  assert.match(m, new RegExp(`^tessera_schedule_next_run_timestamp_seconds\\{schedule="${info.id}",kind="backup"\\} \\d+(\\.\\d+)?$`, 'm'));
  assert.match(m, new RegExp(`^tessera_schedule_last_run_timestamp_seconds\\{schedule="${info.id}",kind="backup"\\} \\d+(\\.\\d+)?$`, 'm'));
  const { code, output } = await promtoolCheck(m);
  assert.equal(code, 0, output);

  await node.cliOk(['backup', 'schedule', 'rm', info.id]);
  assert.deepEqual(await backupSchedules(), []);
  await runsEnded(info.id);
  const kept = await restorePoints(repo);
  assert.equal(kept.length, 2, 'the retention kept the newest 2 restore points');
  assert.ok(kept.includes(last.restorePoints[0]));
  assert.deepEqual((await snapshots('vm1')).filter((n) => n.startsWith('backup-')).length, 1, 'one node snapshot: the base of the next incremental');
  const verify = await node.cli(['backup', 'verify', '--repo', repo], { env: cliEnv });
  assert.equal(verify.code, 0, verify.stdout + verify.stderr);
});

test('a --every 15m snapshot schedule keeps its own newest 3 and touches no other snapshot', async () => {
  await node.cliOk(['snap', 'create', 'vm1', 'mine']);
  const added = (await node.cliJson(['snap', 'schedule', 'add', 'vm1', '--every', '15m', '--keep', '3'])) as SnapshotScheduleInfo;
  assert.equal(added.snapshotPrefix, `sched-${added.id}-`);
  await eventually(async () => (await snapshotSchedules())[0].runsOk >= 8, 60_000, 'eight runs', 100);
  await eventually(async () => (await snapshots('vm1')).filter((n) => n.startsWith(added.snapshotPrefix)).length === 3, 10_000, 'three of its snapshots', 50);
  const names = await snapshots('vm1');
  assert.ok(names.includes('mine'), 'a snapshot of its own name stays');
  const [info] = await snapshotSchedules();
  assert.equal(info.runsFailed, 0, JSON.stringify(info.lastRun));
  assert.ok(info.lastRun!.deleted.every((n) => n.startsWith(added.snapshotPrefix)));
  const text = await node.cliOk(['snap', 'schedule', 'list']);
  assert.match(text, new RegExp(`^${info.id}\\s+vm1\\s+every 15m\\s+3\\s+\\S+Z ok`, 'm'));
  await node.cliOk(['snap', 'schedule', 'rm', info.id]);
  await runsEnded(info.id);
  // Its snapshots stay once it is removed; they are removed like any other.
  for (const n of (await snapshots('vm1')).filter((x) => x.startsWith(added.snapshotPrefix) || x === 'mine')) await node.cliOk(['snap', 'rm', 'vm1', n]);
});

test('due times missed while the node was down (kill -9) run once at its start; the schedules outlast the kill', async () => {
  const repo = await newRepo('repo-c');
  const period = 4 * hour;
  const snap = (await node.cliJson(['snap', 'schedule', 'add', 'vm1', '--every', '4h', '--keep', '10'])) as SnapshotScheduleInfo;
  const backup = (await node.cliJson(['backup', 'schedule', 'add', 'vm1', '--every', '4h', '--repo', repo, '--password-file', passwordFile('c.key', 0o600)])) as BackupScheduleInfo;
  await node.kill('SIGKILL');
  // What the killed node had kept (a run may have come before the kill on a slow machine).
  const kept = JSON.parse(readFileSync(join(node.dataDir, 'schedules.json'), 'utf8')) as { backup: Kept[]; snapshot: Kept[] };
  const before = new Map([...kept.backup, ...kept.snapshot].map((x) => [x.id, x]));
  assert.deepEqual([...before.keys()].sort(), [snap.id, backup.id].sort());
  // Down past two due times of each: the first after its last covered time and the one after.
  const nextDue = (x: { createdMs: number }, after: number): number => x.createdMs + (Math.floor((after - x.createdMs) / period) + 1) * period;
  const secondMissed = new Map([...before.values()].map((x) => [x.id, nextDue(x, x.state.coveredMs) + period]));
  const downUntil = since + (Math.max(...secondMissed.values()) + 30 * minute - since) / speed;
  await sleep(Math.max(0, downUntil - Date.now()));
  await node.start();
  await eventually(async () => {
    const runs = [...(await snapshotSchedules()), ...(await backupSchedules())].map((x) => x.runsOk + x.runsFailed - before.get(x.id)!.state.runsOk - before.get(x.id)!.state.runsFailed);
    return runs.length === 2 && runs.every((n) => n >= 1);
  }, 30_000, 'the runs at the start', 50);
  const [s] = await snapshotSchedules();
  const [b] = await backupSchedules();
  assert.deepEqual([s.id, b.id], [snap.id, backup.id], 'kept across the kill');
  for (const x of [s, b]) {
    const first = x.runsOk - before.get(x.id)!.state.runsOk;
    assert.ok(first >= 1, `${x.id} ran after the start`);
    assert.equal(x.lastRun!.result, 'ok', String(x.lastRun!.error));
  }
  // One run for the missed due times, after them; then the due times as before.
  const taken = (await snapshots('vm1')).filter((n) => n.startsWith(snap.snapshotPrefix)).map((n) => timeOf(n, snap.snapshotPrefix)).sort((a, c) => a - c);
  const covered = before.get(snap.id)!.state.coveredMs;
  const afterKill = taken.filter((t) => t > covered);
  assert.ok(afterKill[0] >= secondMissed.get(snap.id)!, 'the first run after the kill came once both due times had passed');
  assert.equal(afterKill.filter((t) => t < nextDue(snap, afterKill[0])).length, 1, 'one snapshot for both missed due times');
  for (const t of afterKill.slice(1)) assert.ok((t - snap.createdMs) % period < 10 * minute, 'then on its due times');
  await node.cliOk(['snap', 'schedule', 'rm', snap.id]);
  await node.cliOk(['backup', 'schedule', 'rm', backup.id]);
  await runsEnded(snap.id);
  await runsEnded(backup.id);
  // The backup schedule's restore points: those before the kill, one for the missed due times, then one per due time.
  const rp = await restorePoints(repo);
  const backupRunsAfter = b.runsOk - before.get(backup.id)!.state.runsOk;
  assert.ok(rp.length >= before.get(backup.id)!.state.runsOk + 1 && rp.length <= before.get(backup.id)!.state.runsOk + backupRunsAfter + 1, `${rp.length} restore points`);
  assert.ok(b.lastRun!.startedMs >= secondMissed.get(backup.id)!, 'its run after the kill came once both due times had passed');
});

/** A schedule as the node keeps it in DATA/schedules.json (docs/backup.md, "Schedules"). */
interface Kept {
  id: string;
  createdMs: number;
  state: { coveredMs: number; runsOk: number; runsFailed: number };
}

test('a password file made readable by others after the schedule was added fails its next run; list --json and the metrics say so', async () => {
  const repo = await newRepo('repo-d');
  const key = passwordFile('d.key', 0o600);
  const added = (await node.cliJson(['backup', 'schedule', 'add', 'vm1', '--every', '2h', '--repo', repo, '--password-file', key])) as BackupScheduleInfo;
  chmodSync(key, 0o640);
  await eventually(async () => (await backupSchedules())[0].runsFailed >= 1, 30_000, 'a failed run', 100);
  const [info] = await backupSchedules();
  assert.equal(info.lastRun!.result, 'failed');
  assert.equal(info.lastRun!.error, `backup: Password file ${key} may be read or written by group or others (mode 0640): it must be readable by its owner only (chmod 600 ${key})`);
  assert.deepEqual(info.lastRun!.restorePoints, []);
  assert.equal(info.runsOk, 0);
  assert.deepEqual(await restorePoints(repo), [], 'no backup ran');
  const text = await node.cliOk(['backup', 'schedule', 'list']);
  assert.match(text, new RegExp(`^${info.id}: last run failed: backup: Password file ${key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} may be read`, 'm'));
  const m = await metrics();
  assert.match(m, new RegExp(`^tessera_schedule_last_success\\{schedule="${added.id}",kind="backup"\\} 0$`, 'm'));
  assert.match(m, new RegExp(`^tessera_schedule_runs_total\\{schedule="${added.id}",kind="backup",result="failed"\\} [1-9]\\d*$`, 'm'));
  // Mended, the next run succeeds.
  chmodSync(key, 0o600);
  await eventually(async () => (await backupSchedules())[0].runsOk >= 1, 30_000, 'a run after the mend', 100);
  assert.equal((await backupSchedules())[0].lastRun!.result, 'ok');
  await node.cliOk(['backup', 'schedule', 'rm', added.id]);
  await runsEnded(added.id);
});
