/**
 * The API's replies are its wire types as the OpenAPI document describes them: every JSON reply
 * of a real server, driven through the API client, holds exactly the properties its schema
 * names (none of the engine's own fields slip through), of the schema's types.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ApiClient, ClientError } from '../../src/api/client/index.ts';
import { createApiServer } from '../../src/api/index.ts';
import { openApiDocument } from '../../src/api/openapi.ts';
import { Store } from '../../src/engine/index.ts';
import { BackupError, BackupErrorCode } from '../../src/backup/index.ts';
import type { BackupEvent, BackupJob as BackupJobWire, BackupProgress } from '../../src/api/client/index.ts';
import { BackupJob } from '../../src/node/backups.ts';
import { cleanup, makeTempDir } from '../helpers/index.ts';

after(cleanup);

type Schema = { $ref?: string; type?: string | readonly string[]; required?: readonly string[]; properties?: Record<string, Schema>; items?: Schema; oneOf?: readonly Schema[]; enum?: readonly unknown[] };

const schemas = openApiDocument.components.schemas as unknown as Record<string, Schema>;

/** Where `value` breaks `schema`, or null: types, required and no other properties, enums, items. */
function mismatch(value: unknown, schema: Schema, at: string): string | null {
  if (schema.$ref !== undefined) return mismatch(value, schemas[schema.$ref.split('/').at(-1)!], at);
  if (schema.oneOf !== undefined) return schema.oneOf.some((s) => mismatch(value, s, at) === null) ? null : `${at}: matches none of oneOf`;
  const types = schema.type === undefined ? [] : typeof schema.type === 'string' ? [schema.type] : schema.type;
  const typeOf = value === null ? 'null' : Array.isArray(value) ? 'array' : Number.isInteger(value) ? 'integer' : typeof value;
  if (types.length > 0 && !types.includes(typeOf) && !(typeOf === 'integer' && types.includes('number'))) return `${at}: ${typeOf}, not ${types.join(' or ')}`;
  if (schema.enum !== undefined && !schema.enum.includes(value)) return `${at}: ${String(value)} is not one of ${schema.enum.join(', ')}`;
  if (typeOf === 'array' && schema.items !== undefined) {
    for (const [i, v] of (value as unknown[]).entries()) {
      const m = mismatch(v, schema.items, `${at}[${i}]`);
      if (m !== null) return m;
    }
  }
  if (typeOf === 'object' && schema.properties !== undefined) {
    const o = value as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!Object.hasOwn(schema.properties, k)) return `${at}.${k}: not in the schema`;
    for (const k of schema.required ?? []) if (!Object.hasOwn(o, k)) return `${at}.${k}: missing`;
    for (const [k, s] of Object.entries(schema.properties)) {
      if (!Object.hasOwn(o, k)) continue;
      const m = mismatch(o[k], s, `${at}.${k}`);
      if (m !== null) return m;
    }
  }
  return null;
}

function conforms(value: unknown, schema: string): void {
  assert.equal(mismatch(value, schemas[schema], schema), null);
}

test('mismatch finds a property the schema does not name, one missing, and a wrong type', () => {
  const disk = { name: 'd', sizeBytes: 512, allocatedBytes: 0, snapshots: [], origin: null, createdMs: 1 };
  assert.equal(mismatch(disk, schemas.DiskInfo, 'DiskInfo'), null);
  assert.match(mismatch({ ...disk, id: 7 }, schemas.DiskInfo, 'DiskInfo')!, /DiskInfo\.id: not in the schema/);
  const { origin: _, ...noOrigin } = disk;
  assert.match(mismatch(noOrigin, schemas.DiskInfo, 'DiskInfo')!, /origin: missing/);
  assert.match(mismatch({ ...disk, sizeBytes: '512' }, schemas.DiskInfo, 'DiskInfo')!, /sizeBytes: string/);
});

test('replies of a real server hold exactly what the OpenAPI document says', async () => {
  const dir = makeTempDir('tessera-wire-');
  const store = await Store.open({ dir: join(dir, 'store') });
  const server = createApiServer({ store, nodeFacts: () => ({ version: '0.0.0', dataDir: dir, nbd: { tcp: { host: '127.0.0.1', port: 10809 }, socket: null, connections: 0 } }) });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  const client = new ApiClient(`http://127.0.0.1:${port}`);
  try {
    conforms(await client.createDisk({ name: 'vm1', sizeBytes: 1 << 20 }), 'DiskInfo');
    conforms(await client.createSnapshot('vm1', 's1'), 'SnapshotInfo');
    await fetch(`http://127.0.0.1:${port}/api/v1/disks/vm1/data?offset=0`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(8192, 1) });
    conforms(await client.cloneDisk('vm1', { snapshot: 's1', name: 'vm2' }), 'DiskInfo');
    for (const d of await client.listDisks()) conforms(d, 'DiskInfo');
    conforms(await client.getDisk('vm2'), 'DiskInfo');
    conforms(await client.resizeDisk('vm1', 2 << 20), 'DiskInfo');
    for (const s of await client.listSnapshots('vm1')) conforms(s, 'SnapshotInfo');
    for (const s of await client.snapshotGroup({ name: 'g', disks: ['vm1', 'vm2'] })) conforms(s, 'SnapshotInfo');
    conforms(await client.revertDisk('vm1', 's1'), 'DiskInfo');
    conforms(await client.request('GET', '/disks/vm1/snapshots/s1/extents'), 'ExtentsReply');
    conforms(await client.nodeInfo(), 'NodeInfo');
    conforms(await client.compact(), 'CompactStats');
    const progress: unknown[] = [];
    const report = await client.scrub({}, (p) => void progress.push(p));
    conforms(report, 'ScrubReport');
    assert.ok(progress.length > 0, 'a progress line first');
    for (const p of progress) conforms(p, 'ScrubProgress');
    conforms(await client.scrub({ disks: ['vm2'] }), 'ScrubReport');
    const unknownDisk = await client.scrub({ disks: ['nope'] }).catch((err: unknown) => err);
    assert.ok(unknownDisk instanceof ClientError && unknownDisk.status === 404 && unknownDisk.nodeCode === 'NOT_FOUND', String(unknownDisk));
    const twice = await client.scrub({ disks: ['vm1', 'vm1'] }).catch((err: unknown) => err);
    assert.ok(twice instanceof ClientError && twice.status === 400, String(twice));
    conforms(await client.scrub({ rateBytesPerSecond: 1 << 30 }), 'ScrubReport');
    const noRate = await client.scrub({ rateBytesPerSecond: 0 }).catch((err: unknown) => err);
    assert.ok(noRate instanceof ClientError && noRate.status === 400, String(noRate));
    const refused = await client.getDisk('nope').catch((err: unknown) => err);
    assert.ok(refused instanceof ClientError && refused.nodeCode === 'NOT_FOUND', String(refused));
    const raw = await fetch(`http://127.0.0.1:${port}/api/v1/disks/nope`);
    conforms(await raw.json(), 'Error');
  } finally {
    await server.close();
    await store.close();
  }
});

test('a backup job streams wire events: the job first, progress as the API declares it, failures with the API code; a job listed, shown and cancelled is a BackupJob', async () => {
  const dir = makeTempDir('tessera-wire-');
  const store = await Store.open({ dir: join(dir, 'store') });
  const progress: BackupProgress = { disk: 'vm1', bytesToRead: 2, bytesRead: 1, sizeBytes: 4, bytesScanned: 1, bytesStored: 1, chunksNew: 1, chunksReused: 0, chunksZero: 0 };
  // A stand-in for the node's backup service, over the node's own jobs: events as the backup
  // code makes them (with more fields than the API declares), then a failure of the repository;
  // a backup into "/srv/slow" waits until it is cancelled.
  const list: BackupJob[] = [];
  const backups = {
    get busy() {
      return list.some((j) => j.state === 'running');
    },
    start(req: { disks: string[]; repo: string }): BackupJob {
      const job = BackupJob.start({ disks: req.disks, repo: req.repo, tenant: null, rateBytesPerSecond: null }, async ({ signal, report }) => {
        report({ event: 'snapshot', name: 'tessera-1' });
        report({ event: 'progress', progress: { ...progress, movers: { internal: true } } as BackupProgress });
        report({ event: 'note', message: 'full backup of vm1' });
        if (req.repo === '/srv/slow') await new Promise((resolve) => signal.addEventListener('abort', resolve));
        throw new BackupError(BackupErrorCode.WRONG_PASSWORD, 'Wrong password for the repository at /srv/b');
      });
      list.push(job);
      return job;
    },
    jobs: () => [...list].reverse(),
    job: (id: string) => list.find((j) => j.id === id) ?? null,
  };
  const server = createApiServer({ store, backups });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  const client = new ApiClient(`http://127.0.0.1:${port}`);
  try {
    const events: BackupEvent[] = [];
    const failed = await client.runBackup({ disks: ['vm1'], repo: '/srv/b', password: 'pw' }, (e) => void events.push(e)).catch((err: unknown) => err);
    assert.equal(events[0].event, 'job');
    const first = (events[0] as { job: BackupJobWire }).job;
    conforms(first, 'BackupJob');
    assert.equal(first.state, 'running');
    // Heard live, or replayed to a follower that came after them (snapshot, notes, progress).
    const rest = events.slice(1);
    assert.deepEqual(rest.find((e) => e.event === 'progress'), { event: 'progress', progress });
    assert.deepEqual(rest.map((e) => e.event).sort(), ['note', 'progress', 'snapshot']);
    assert.deepEqual(rest[0], { event: 'snapshot', name: 'tessera-1' });
    assert.ok(failed instanceof ClientError, String(failed));
    assert.equal(failed.nodeCode, 'WRONG_PASSWORD');
    assert.equal(failed.message, 'Wrong password for the repository at /srv/b');

    // The job's record: failed, with the API's code, no password anywhere.
    const shown = await client.getBackupJob(first.id);
    conforms(shown, 'BackupJob');
    assert.equal(shown.state, 'failed');
    assert.deepEqual(shown.error, { code: 'WRONG_PASSWORD', message: 'Wrong password for the repository at /srv/b' });
    assert.deepEqual(shown.progress, [progress]);
    assert.doesNotMatch(JSON.stringify(await client.listBackupJobs()), /pw/);

    // Started without following (202), followed later, cancelled: CANCELLED in the record and the stream's last line.
    const slow = await client.startBackupJob({ disks: ['vm1'], repo: '/srv/slow', password: 'pw' });
    conforms(slow, 'BackupJob');
    const followed: string[] = [];
    const following = client.followBackupJob(slow.id, (e) => void followed.push(e.event)).catch((err: unknown) => err);
    const cancelled = await client.cancelBackupJob(slow.id);
    conforms(cancelled, 'BackupJob');
    assert.equal(cancelled.state, 'cancelled');
    assert.equal(cancelled.error?.code, 'CANCELLED');
    const end = await following;
    assert.ok(end instanceof ClientError && end.nodeCode === 'CANCELLED', String(end));
    assert.deepEqual(followed, ['job', 'snapshot', 'note', 'progress'], 'a follower hears what the job did so far');
    const jobs = await client.listBackupJobs();
    assert.deepEqual(jobs.map((j) => j.id), [slow.id, first.id], 'newest first');
    for (const j of jobs) conforms(j, 'BackupJob');
    const again = await client.cancelBackupJob(slow.id);
    assert.equal(again.state, 'cancelled', 'a second cancel changes nothing');
    await assert.rejects(client.getBackupJob('ffffffffffff'), { nodeCode: 'NOT_FOUND' });
  } finally {
    await server.close();
    await store.close();
  }
});

test('the schedule routes answer what the OpenAPI document says; malformed requests are 400 and unknown ids 404', async () => {
  const { NodeSchedules } = await import('../../src/node/schedules.ts');
  const { Logger } = await import('../../src/observe/index.ts');
  const { FakeClock } = await import('../helpers/fake-clock.ts');
  const { chmodSync, writeFileSync } = await import('node:fs');
  const dir = makeTempDir('tessera-wire-');
  const store = await Store.open({ dir: join(dir, 'store') });
  await store.createDisk('vm1', 1 << 20);
  const pw = join(dir, 'pw');
  writeFileSync(pw, 'secret\n');
  chmodSync(pw, 0o600);
  const clock = new FakeClock(Date.parse('2026-03-02T10:00:00Z'));
  // A stand-in for the node's backups and repository: a backup that succeeds at once, a retention, a prune and a verify that find nothing.
  const backups = {
    busy: false,
    start: (req: { disks: string[] }) => ({
      id: '3f9a2c7d41b0',
      finished: Promise.resolve({ state: 'done' as const, outcomes: req.disks.map((d) => ({ id: `${d}-restore-point` })) }),
      follow: () => () => {},
      cancel: async () => {},
    }),
  };
  const schedules = new NodeSchedules({
    store,
    backups,
    file: join(dir, 'schedules.json'),
    clock,
    log: Logger.silent(),
    openRepository: async () => ({ forget: async () => 1, prune: async () => ({ packsMarked: 2, packsDeleted: 0, bytesFreed: 0 }), verify: async () => ({ faults: 0, first: null }), close: async () => {} }),
  });
  await schedules.load();
  schedules.start();
  const server = createApiServer({ store, schedules });
  const { port } = await server.listen({ host: '127.0.0.1', port: 0 });
  const client = new ApiClient(`http://127.0.0.1:${port}`);
  try {
    const b = await client.addBackupSchedule({ disks: ['vm1'], repo: '/srv/b', passwordFile: pw, everyMs: 3_600_000, keepLast: 3, verifyEveryMs: 86_400_000 });
    conforms(b, 'BackupScheduleInfo');
    const s = await client.addSnapshotSchedule({ disk: 'vm1', cron: '*/15 * * * *', keep: 2 });
    conforms(s, 'SnapshotScheduleInfo');
    await clock.advance(3_600_000);
    const { until } = await import('../helpers/index.ts');
    await until(async () => (await client.listBackupSchedules())[0].lastRun !== null, 5000, 'the backup schedule ran');
    const [bl] = await client.listBackupSchedules();
    conforms(bl, 'BackupScheduleInfo');
    assert.deepEqual(bl.lastRun, { startedMs: bl.lastRun!.startedMs, finishedMs: bl.lastRun!.finishedMs, result: 'ok', error: null, job: '3f9a2c7d41b0', restorePoints: ['vm1-restore-point'], forgotten: 1, prune: { packsMarked: 2, packsDeleted: 0, bytesFreed: 0 }, verify: { readData: false, faults: 0 } });
    for (const x of await client.listSnapshotSchedules()) conforms(x, 'SnapshotScheduleInfo');
    conforms(await client.request('GET', `/snapshot-schedules/${s.id}`), 'SnapshotScheduleInfo');
    conforms(await client.request('GET', `/backup-schedules/${b.id}`), 'BackupScheduleInfo');
    const refused = async (path: string, body: unknown, status: number, code: string, message?: RegExp): Promise<void> => {
      const err = await client.request('POST', path, { body }).catch((e: unknown) => e);
      assert.ok(err instanceof ClientError && err.status === status && err.nodeCode === code, `${JSON.stringify(body)}: ${String(err)}`);
      if (message !== undefined) assert.match(err.message, message);
    };
    const ok = { disks: ['vm1'], repo: '/srv/b', passwordFile: pw, everyMs: 3_600_000 };
    await refused('/backup-schedules', { ...ok, everyMs: undefined }, 400, 'BAD_REQUEST', /one of 'everyMs' and 'cron'/);
    await refused('/backup-schedules', { ...ok, cron: '0 * * * *' }, 400, 'BAD_REQUEST', /one of 'everyMs' and 'cron'/);
    await refused('/backup-schedules', { ...ok, everyMs: 999 }, 400, 'BAD_REQUEST', /everyMs/);
    await refused('/backup-schedules', { ...ok, everyMs: undefined, cron: '61 * * * *' }, 400, 'INVALID', /minute 61 is out of range/);
    await refused('/backup-schedules', { ...ok, repo: 'relative/dir' }, 400, 'BAD_REQUEST', /absolute/);
    await refused('/backup-schedules', { ...ok, passwordFile: 'pw' }, 400, 'BAD_REQUEST', /absolute/);
    await refused('/backup-schedules', { ...ok, password: 'secret' }, 400, 'BAD_REQUEST', /Unknown field 'password'/);
    await refused('/backup-schedules', { ...ok, disks: ['vm1', 'vm1'] }, 400, 'BAD_REQUEST', /twice/);
    await refused('/backup-schedules', { ...ok, keepLast: 0 }, 400, 'INVALID', /keeps nothing/);
    await refused('/backup-schedules', { ...ok, verifyReadData: true }, 400, 'BAD_REQUEST', /goes with 'verifyEveryMs'/);
    await refused('/backup-schedules', { ...ok, disks: ['nope'] }, 404, 'NOT_FOUND');
    await refused('/backup-schedules', { ...ok, tenant: 'a b' }, 400, 'INVALID', /tenant/);
    await refused('/snapshot-schedules', { disk: 'vm1', everyMs: 60_000 }, 400, 'BAD_REQUEST', /keep/);
    await refused('/snapshot-schedules', { disk: 'vm1', everyMs: 60_000, keep: 0 }, 400, 'BAD_REQUEST', /keep/);
    await refused('/snapshot-schedules', { disk: 'nope', everyMs: 60_000, keep: 1 }, 404, 'NOT_FOUND');
    for (const path of [`/backup-schedules/${s.id}`, '/snapshot-schedules/00000000']) {
      const err = await client.request('DELETE', path).catch((e: unknown) => e);
      assert.ok(err instanceof ClientError && err.status === 404 && err.nodeCode === 'NOT_FOUND', String(err));
    }
    await client.removeBackupSchedule(b.id);
    await client.removeSnapshotSchedule(s.id);
    assert.deepEqual(await client.listBackupSchedules(), []);
    assert.deepEqual(await client.listSnapshotSchedules(), []);
  } finally {
    await server.close();
    await schedules.close();
    await store.close();
  }
});
