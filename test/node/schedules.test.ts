/**
 * The node's schedules in process, on a clock the test moves (no real waiting): a snapshot
 * schedule keeps its newest N of its own snapshots and touches no other; a backup schedule runs
 * the node's real backups into a real repository, forgets by its policy, prunes and verifies on
 * its period; due times missed while the node was down (closed, or killed mid-run) run once at the
 * start; runs never overlap and wait for a backup running; a password file others may read is
 * refused at add and at each run; the schedule file survives a damaged copy and a read-only node.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Store } from '../../src/engine/index.ts';
import { NodeBackups } from '../../src/node/backups.ts';
import { NodeSchedules, snapshotPrefix, type ScheduledBackups } from '../../src/node/schedules.ts';
import type { OpenScheduleRepository } from '../../src/node/schedule-repository.ts';
import { Logger } from '../../src/observe/index.ts';
import { ApiError } from '../../src/api/index.ts';
import { BackupError } from '../../src/backup/index.ts';
import { cleanup, makeTempDir, until } from '../helpers/index.ts';
import { FakeClock, settle } from '../helpers/fake-clock.ts';
import { openTestRepo, password } from '../backup/harness.ts';

after(cleanup);

const minute = 60_000;
const hour = 60 * minute;
const T0 = Date.parse('2026-03-02T10:00:00Z');
const MiB = 1 << 20;

/** A store with disk vm1 (4 MiB, some data) in a fresh directory. */
async function newStore(dir: string): Promise<Store> {
  const store = await Store.open({ dir: join(dir, 'store') });
  await store.createDisk('vm1', 4 * MiB);
  await write(store, 0, 0x11);
  return store;
}

async function write(store: Store, offset: number, byte: number): Promise<void> {
  const vol = store.openVolume('vm1', null);
  try {
    await vol.write(offset, Buffer.alloc(64 * 1024, byte));
  } finally {
    vol.close();
  }
}

/** A password file of `mode` holding the test repositories' password. */
function passwordFile(dir: string, mode: number): string {
  const path = join(dir, `password-${mode.toString(8)}`);
  writeFileSync(path, `${password}\n`);
  chmodSync(path, mode);
  return path;
}

/** A repository that is not there: what a schedule's retention would do is counted, nothing read. */
function fakeRepository(calls: string[]): OpenScheduleRepository {
  return async () => ({
    forget: async () => {
      calls.push('forget');
      return 0;
    },
    prune: async () => {
      calls.push('prune');
      return { packsMarked: 0, packsDeleted: 0, bytesFreed: 0 };
    },
    verify: async () => {
      calls.push('verify');
      return { faults: 0, first: null };
    },
    close: async () => {},
  });
}

/** The node's backups as a stand-in: each backup job is held until the test releases it (or it is cancelled); they are counted. */
function heldBackups() {
  const releases: Array<() => void> = [];
  let running = 0;
  let runningMax = 0;
  const runs: string[][] = [];
  const backups: ScheduledBackups & { runs: string[][]; release(): void; releaseAll(): void; runningMax(): number } = {
    get busy() {
      return running > 0;
    },
    start(req) {
      if (running > 0) throw new Error('a second backup at once');
      running++;
      runningMax = Math.max(runningMax, running);
      runs.push(req.disks);
      const n = runs.length;
      let cancelled!: () => void;
      const finished = new Promise<{ state: 'done'; outcomes: object[] } | { state: 'cancelled'; error: Error }>((resolve) => {
        releases.push(() => resolve({ state: 'done', outcomes: req.disks.map((d) => ({ id: `rp-${d}-${n}` })) }));
        cancelled = () => resolve({ state: 'cancelled', error: new Error('The backup was cancelled') });
      });
      void finished.then(() => running--);
      return {
        id: `job-${n}`,
        finished,
        follow: () => () => {},
        cancel: async () => {
          cancelled();
          return finished;
        },
      };
    },
    runs,
    release: () => releases.shift()!(),
    releaseAll: () => releases.splice(0).forEach((r) => r()),
    runningMax: () => runningMax,
  };
  return backups;
}

/** Whether no run of `s` is under way: for FakeClock.advance to wait on runs doing real I/O. */
const idle = (s: NodeSchedules) => (): boolean => s.samples().every((x) => !x.running);

function schedules(opts: { store: Store; dir: string; clock: FakeClock; backups?: ScheduledBackups; openRepository?: OpenScheduleRepository; readOnly?: boolean; checkDisk?: (disk: string, what: string) => void }): NodeSchedules {
  return new NodeSchedules({
    store: opts.store,
    backups: opts.backups ?? heldBackups(),
    file: join(opts.dir, 'schedules.json'),
    clock: opts.clock,
    log: Logger.silent(),
    readOnly: opts.readOnly,
    openRepository: opts.openRepository,
    busyPollMs: minute,
    checkDisk: opts.checkDisk,
  });
}

test('schedules: a snapshot schedule keeps the newest N of its own snapshots, named sched-ID-TIME, and no other snapshot is touched', async () => {
  const dir = makeTempDir('tessera-sched-');
  const store = await newStore(dir);
  const clock = new FakeClock(T0);
  const s = schedules({ store, dir, clock });
  try {
    await s.load();
    s.start();
    await store.createSnapshot('vm1', 'mine');
    await store.createSnapshot('vm1', 'sched-ffffffff-2026-01-01T00-00-00-000Z'); // another schedule's
    const added = await s.addSnapshot({ disk: 'vm1', everyMs: 15 * minute, keep: 3 });
    assert.match(added.id, /^[0-9a-f]{8}$/);
    assert.equal(added.snapshotPrefix, `sched-${added.id}-`);
    assert.equal(added.nextRunMs, T0 + 15 * minute);
    assert.equal(added.lastRun, null);
    await clock.advance(2 * hour, { idle: idle(s) });
    const info = s.getSnapshot(added.id);
    assert.equal(info.runsOk, 8);
    assert.equal(info.runsFailed, 0);
    const names = store.listSnapshots('vm1').map((x) => x.name);
    const ours = [6, 7, 8].map((k) => `${snapshotPrefix(added.id)}${new Date(T0 + k * 15 * minute).toISOString().replace(/[:.]/g, '-')}`);
    assert.deepEqual(names, ['mine', 'sched-ffffffff-2026-01-01T00-00-00-000Z', ...ours], 'its newest 3, and the others untouched');
    assert.deepEqual(info.lastRun, {
      startedMs: T0 + 2 * hour,
      finishedMs: T0 + 2 * hour,
      result: 'ok',
      error: null,
      snapshot: ours[2],
      deleted: [`${snapshotPrefix(added.id)}${new Date(T0 + 5 * 15 * minute).toISOString().replace(/[:.]/g, '-')}`],
    });
    assert.equal(info.nextRunMs, T0 + 2 * hour + 15 * minute);
    assert.deepEqual(s.samples(), [{ id: added.id, kind: 'snapshot', lastRunMs: T0 + 2 * hour, lastOk: true, lastDurationMs: 0, nextRunMs: T0 + 2 * hour + 15 * minute, running: false, runsOk: 8, runsFailed: 0 }]);
    // A snapshot it cannot delete (open) fails the run, saying which; the next run deletes it.
    const held = store.openVolume('vm1', ours[0]);
    await clock.advance(15 * minute, { idle: idle(s) });
    assert.equal(s.getSnapshot(added.id).lastRun!.result, 'failed');
    assert.match(s.getSnapshot(added.id).lastRun!.error!, new RegExp(`^retention: cannot delete ${ours[0]}: `));
    held.close();
    await clock.advance(15 * minute, { idle: idle(s) });
    assert.equal(s.getSnapshot(added.id).lastRun!.result, 'ok');
    assert.equal(store.listSnapshots('vm1').filter((x) => x.name.startsWith(added.snapshotPrefix)).length, 3);
    // Removed: it runs no more; its snapshots stay.
    await s.removeSnapshot(added.id);
    await clock.advance(hour, { idle: idle(s) });
    assert.equal(store.listSnapshots('vm1').filter((x) => x.name.startsWith(added.snapshotPrefix)).length, 3);
    assert.throws(() => s.getSnapshot(added.id), (err: unknown) => err instanceof ApiError && err.code === 'NOT_FOUND');
    await assert.rejects(s.addSnapshot({ disk: 'nope', everyMs: hour, keep: 1 }), /nope/);
  } finally {
    await s.close();
    await store.close();
  }
});

test('schedules: a backup schedule runs real backups, forgets by its policy among its disks, prunes, and verifies on its period', async () => {
  const dir = makeTempDir('tessera-sched-');
  const store = await newStore(dir);
  const r = await openTestRepo(join(dir, 'repo'), { init: { chunkSizeBytes: 64 * 1024 } });
  await r.close();
  const backups = new NodeBackups({ store, dataDir: dir });
  const clock = new FakeClock(T0);
  const s = schedules({ store, dir, clock, backups });
  try {
    await s.load();
    s.start();
    const added = await s.addBackup({ disks: ['vm1'], repo: r.dir, passwordFile: passwordFile(dir, 0o600), everyMs: hour, keepLast: 2, verifyEveryMs: 2 * hour });
    assert.equal(added.nextRunMs, T0 + hour);
    const runs = async (n: number): Promise<void> => {
      await clock.advance(hour);
      await until(() => s.getBackup(added.id).runsOk + s.getBackup(added.id).runsFailed === n, 60_000, `run ${n}`);
    };
    const made: string[] = [];
    for (let n = 1; n <= 4; n++) {
      await write(store, 0, n); // the same chunk each time: a forgotten restore point's copy of it is freed
      await runs(n);
      const last = s.getBackup(added.id).lastRun!;
      assert.equal(last.result, 'ok', String(last.error));
      made.push(...last.restorePoints);
      assert.equal(last.restorePoints.length, 1);
      assert.equal(last.forgotten, n > 2 ? 1 : 0, `run ${n}`);
      assert.ok(last.prune !== null, 'a prune after each run with a policy');
      if (n > 2) assert.ok(last.prune.packsMarked >= 1, `run ${n}: the pack of the forgotten restore point's own chunk is marked`);
      // Verify at the first run, then when 2 h have passed since: runs 1 and 3.
      assert.deepEqual(last.verify, n % 2 === 1 ? { readData: false, faults: 0 } : null, `run ${n}`);
    }
    const info = s.getBackup(added.id);
    assert.equal(info.lastVerifyMs, T0 + 3 * hour);
    const check = await openTestRepo(r.dir);
    try {
      const left = (await check.repo.readSnapshots()).snapshots.map((e) => e.id).sort();
      assert.deepEqual(left, made.slice(2).sort(), 'the newest 2 restore points are kept');
    } finally {
      await check.close();
    }
    assert.deepEqual(store.listSnapshots('vm1').map((x) => x.name.slice(0, 7)), ['backup-'], 'the base snapshot of the next incremental, only');
  } finally {
    await s.close();
    await backups.close();
    await store.close();
  }
});

test('schedules: due times missed while the node was down run once at its start, then the next due time; a run cut short by a kill runs again', async () => {
  const dir = makeTempDir('tessera-sched-');
  const store = await newStore(dir);
  const open: NodeSchedules[] = [];
  const held: Array<ReturnType<typeof heldBackups>> = [];
  try {
    const clock = new FakeClock(T0);
    const first = schedules({ store, dir, clock });
    open.push(first);
    await first.load();
    first.start();
    const snap = await first.addSnapshot({ disk: 'vm1', everyMs: hour, keep: 10 });
    await clock.advance(hour, { idle: idle(first) });
    assert.equal(first.getSnapshot(snap.id).runsOk, 1);
    await first.close();
    // The node comes back at 5 h 30 min: due times at 2, 3, 4 and 5 h passed while it was down.
    const later = new FakeClock(T0 + 5 * hour + 30 * minute);
    const second = schedules({ store, dir, clock: later });
    open.push(second);
    await second.load();
    assert.equal(second.getSnapshot(snap.id).runsOk, 1, 'kept across the restart');
    assert.equal(second.getSnapshot(snap.id).nextRunMs, null, 'not timed before start');
    second.start();
    await later.advance(0, { idle: idle(second) });
    const info = second.getSnapshot(snap.id);
    assert.equal(info.runsOk, 2, 'one run for the four missed');
    assert.equal(info.lastRun!.startedMs, T0 + 5 * hour + 30 * minute);
    assert.equal(info.nextRunMs, T0 + 6 * hour);
    assert.equal(store.listSnapshots('vm1').filter((x) => x.name.startsWith(snap.snapshotPrefix)).length, 2);
    await later.advance(30 * minute, { idle: idle(second) });
    assert.equal(second.getSnapshot(snap.id).runsOk, 3);
    await second.close();
    await second.removeSnapshot(snap.id);

    // A backup schedule whose run is under way when the node is killed (not closed): the run is
    // not kept, so the next start runs it again, once.
    const backups = heldBackups();
    held.push(backups);
    const calls: string[] = [];
    const clock3 = new FakeClock(T0 + 7 * hour);
    const third = schedules({ store, dir, clock: clock3, backups, openRepository: fakeRepository(calls) });
    open.push(third);
    await third.load();
    third.start();
    const b = await third.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: passwordFile(dir, 0o600), everyMs: hour });
    await clock3.advance(hour);
    await until(() => backups.runs.length === 1, 5000, 'the backup started');
    assert.equal(third.getBackup(b.id).running, true);
    // Killed: `third` is left as it is. The next process reads the file.
    const backups4 = heldBackups();
    held.push(backups4);
    const clock4 = new FakeClock(T0 + 8 * hour + 10 * minute);
    const fourth = schedules({ store, dir, clock: clock4, backups: backups4, openRepository: fakeRepository(calls) });
    open.push(fourth);
    await fourth.load();
    assert.equal(fourth.getBackup(b.id).lastRun, null, 'the killed run left no outcome');
    fourth.start();
    await until(() => backups4.runs.length === 1, 5000, 'it runs again at the start');
    await clock4.advance(30 * minute);
    assert.equal(backups4.runs.length, 1, 'once');
    backups4.release();
    await until(() => fourth.getBackup(b.id).runsOk === 1, 5000, 'the run kept');
    assert.equal(fourth.getBackup(b.id).nextRunMs, T0 + 9 * hour);
    assert.deepEqual(calls, [], 'no policy, no verify: the repository is not opened after the backup');
  } finally {
    for (const h of held) h.releaseAll();
    for (const x of open) await x.close();
    await store.close();
  }
});

test('schedules: a backup run that outlasts its period is not overlapped; due backups wait for the one running, one at a time', async () => {
  const dir = makeTempDir('tessera-sched-');
  const store = await newStore(dir);
  await store.createDisk('vm2', MiB);
  const clock = new FakeClock(T0);
  const backups = heldBackups();
  const calls: string[] = [];
  const s = schedules({ store, dir, clock, backups, openRepository: fakeRepository(calls) });
  try {
    await s.load();
    s.start();
    const pw = passwordFile(dir, 0o600);
    // a is due at 1 h, 2 h, …; b, added half an hour later, at 1 h 30, 2 h 30, …
    const a = await s.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: pw, everyMs: hour, keepLast: 3 });
    await clock.advance(30 * minute);
    const b = await s.addBackup({ disks: ['vm2'], repo: join(dir, 'repo'), passwordFile: pw, everyMs: hour });
    await clock.advance(30 * minute);
    await until(() => backups.runs.length === 1, 5000, "a's backup started");
    await clock.advance(30 * minute);
    await until(() => s.getBackup(b.id).running, 5000, "b's run under way");
    assert.deepEqual(backups.runs, [['vm1']], 'b is due, and waits for the backup running');
    // a's backup takes until 4 h 30: due times of both pass; nothing starts beside it.
    await clock.advance(3 * hour);
    assert.deepEqual(backups.runs, [['vm1']]);
    backups.release();
    await until(() => backups.runs.length === 2, 5000, "b's backup started");
    assert.deepEqual(backups.runs, [['vm1'], ['vm2']], 'then b runs');
    await until(() => s.getBackup(a.id).running && s.getBackup(a.id).runsOk === 1, 5000, "a's next run under way");
    assert.deepEqual(calls, ['forget', 'prune'], "a's retention once its backup was done");
    assert.equal(s.getBackup(a.id).lastRun!.startedMs, T0 + hour);
    backups.release();
    // a's due times it outlasted (2 h, 3 h, 4 h): one run, after b's backup.
    await until(() => backups.runs.length === 3, 5000, "a's catch-up backup started");
    assert.deepEqual(backups.runs, [['vm1'], ['vm2'], ['vm1']]);
    backups.release();
    // b's due times that passed while it waited (2 h 30, 3 h 30, 4 h 30): one run, after a's.
    await until(() => backups.runs.length === 4, 5000, "b's catch-up backup started");
    assert.deepEqual(backups.runs, [['vm1'], ['vm2'], ['vm1'], ['vm2']]);
    backups.release();
    await until(() => !s.getBackup(b.id).running && !s.getBackup(a.id).running, 5000, 'the runs ended');
    assert.equal(backups.runningMax(), 1, 'never two backups at once');
    assert.equal(s.getBackup(a.id).runsOk, 2);
    assert.equal(s.getBackup(b.id).runsOk, 2);
    assert.equal(s.getBackup(a.id).nextRunMs, T0 + 5 * hour);
    assert.equal(s.getBackup(b.id).nextRunMs, T0 + 5 * hour + 30 * minute);
    await clock.advance(30 * minute);
    await until(() => backups.runs.length === 5, 5000, 'then on time again: a at 5 h');
    assert.equal(s.getBackup(a.id).nextRunMs, T0 + 6 * hour);
  } finally {
    await s.close();
    await store.close();
  }
});

test('schedules: a password file group or others may read is refused when added and at each run; the run fails with the reason', async () => {
  const dir = makeTempDir('tessera-sched-');
  const store = await newStore(dir);
  const clock = new FakeClock(T0);
  const backups = heldBackups();
  const s = schedules({ store, dir, clock, backups, openRepository: fakeRepository([]) });
  try {
    await s.load();
    s.start();
    const loose = passwordFile(dir, 0o644);
    await assert.rejects(
      s.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: loose, everyMs: hour }),
      (err: unknown) => err instanceof BackupError && err.code === 'BACKUP_INVALID' && err.message === `Password file ${loose} may be read or written by group or others (mode 0644): it must be readable by its owner only (chmod 600 ${loose})`,
    );
    for (const mode of [0o640, 0o604, 0o620, 0o660]) await assert.rejects(s.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: passwordFile(dir, mode), everyMs: hour }), /group or others/);
    await assert.rejects(s.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: join(dir, 'none'), everyMs: hour }), /does not exist on the node/);
    const empty = join(dir, 'empty');
    writeFileSync(empty, '\n', { mode: 0o600 });
    await assert.rejects(s.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: empty, everyMs: hour }), /is empty/);
    await assert.rejects(s.addBackup({ disks: ['nope'], repo: join(dir, 'repo'), passwordFile: passwordFile(dir, 0o400), everyMs: hour }), /nope/);
    assert.deepEqual(s.listBackup(), [], 'nothing kept');
    const file = passwordFile(dir, 0o600);
    const added = await s.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: file, everyMs: hour });
    assert.equal(added.passwordFile, file);
    assert.ok(!readFileSync(join(dir, 'schedules.json'), 'utf8').includes(password), 'the password is not in the node\'s metadata');
    chmodSync(file, 0o644);
    await clock.advance(hour);
    await until(() => s.getBackup(added.id).runsFailed === 1, 5000, 'the run failed');
    const info = s.getBackup(added.id);
    assert.equal(backups.runs.length, 0, 'no backup with a password others may read');
    assert.equal(info.runsFailed, 1);
    assert.equal(info.lastRun!.result, 'failed');
    assert.match(info.lastRun!.error!, /^backup: Password file .* may be read or written by group or others \(mode 0644\)/);
    assert.equal(s.samples()[0].lastOk, false);
  } finally {
    await s.close();
    await store.close();
  }
});

test('schedules: a damaged schedule file is moved aside and the node starts with none; a read-only node lists its schedules and runs none', async () => {
  const dir = makeTempDir('tessera-sched-');
  const store = await newStore(dir);
  const file = join(dir, 'schedules.json');
  writeFileSync(file, '{"version":1,"backup":[{"id":');
  const clock = new FakeClock(T0);
  const s = schedules({ store, dir, clock });
  await s.load();
  assert.deepEqual(s.listSnapshot(), []);
  assert.ok(existsSync(`${file}.damaged`) && !existsSync(file), 'moved aside, not overwritten by the next change');
  s.start();
  const snap = await s.addSnapshot({ disk: 'vm1', cron: '0 * * * *', keep: 1 });
  assert.equal(snap.nextRunMs, T0 + hour);
  await s.close();
  const ro = schedules({ store, dir, clock, readOnly: true });
  await ro.load();
  ro.start();
  assert.deepEqual(ro.listSnapshot().map((x) => [x.id, x.nextRunMs]), [[snap.id, null]]);
  await assert.rejects(ro.addSnapshot({ disk: 'vm1', everyMs: hour, keep: 1 }), (err: unknown) => err instanceof ApiError && err.code === 'READ_ONLY');
  await clock.advance(3 * hour);
  assert.equal(store.listSnapshots('vm1').length, 0, 'nothing ran');
  await ro.close();
  await store.close();
});

test('schedules: a disk being restored (instant restore) is neither snapshotted nor backed up by a schedule until it is whole', async () => {
  const dir = makeTempDir('tessera-sched-');
  const store = await newStore(dir);
  const clock = new FakeClock(T0);
  const backups = heldBackups();
  let restoring = true;
  const s = schedules({
    store,
    dir,
    clock,
    backups,
    openRepository: fakeRepository([]),
    checkDisk: (disk, what) => {
      if (restoring) throw new Error(`Disk "${disk}" is being restored from a backup; ${what} waits until the restore is done`);
    },
  });
  try {
    await s.load();
    s.start();
    const snap = await s.addSnapshot({ disk: 'vm1', everyMs: hour, keep: 2 });
    const b = await s.addBackup({ disks: ['vm1'], repo: join(dir, 'repo'), passwordFile: passwordFile(dir, 0o600), everyMs: hour });
    await clock.advance(hour, { idle: idle(s) });
    assert.equal(s.getSnapshot(snap.id).lastRun!.error, 'snapshot: Disk "vm1" is being restored from a backup; a scheduled snapshot waits until the restore is done');
    assert.equal(s.getBackup(b.id).lastRun!.error, 'backup: Disk "vm1" is being restored from a backup; a scheduled backup waits until the restore is done');
    assert.equal(store.listSnapshots('vm1').length, 0);
    assert.equal(backups.runs.length, 0);
    restoring = false;
    await clock.advance(hour);
    await until(() => backups.runs.length === 1 && s.getSnapshot(snap.id).runsOk === 1, 5000, 'the runs once the restore is done');
    backups.release();
    await until(() => s.getBackup(b.id).runsOk === 1, 5000, 'the backup run kept');
  } finally {
    await s.close();
    await store.close();
  }
});
