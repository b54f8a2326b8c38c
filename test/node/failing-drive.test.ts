/**
 * A node on a failing drive (docs/engine.md, "A failing drive"), in process with a faulty drive
 * under its store (NodeOptions.files): NBD clients get EIO for what failed and keep their
 * connection, reads go on; GET /api/v1/node says `drive: failing`, the metrics and the log say so
 * (once), the API refuses changes with IO_ERROR; a failed read is EIO for that read only, logged with its disk and offset and counted.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { startNode, type RunningNode } from '../../src/node/index.ts';
import { Logger } from '../../src/observe/index.ts';
import { cleanup, makeTempDir, qemuIo, testSeed } from '../helpers/index.ts';
import { FaultyFiles } from '../helpers/faulty-files.ts';

after(cleanup);

interface Started {
  node: RunningNode;
  files: FaultyFiles;
  logs: Record<string, unknown>[];
  api: (method: string, path: string, body?: unknown) => Promise<{ status: number; body: any }>;
  metric: (name: string, labels?: string) => Promise<number | null>;
  uri: (disk: string) => string;
  dataDir: string;
}

async function start(seed: number): Promise<Started> {
  const dataDir = makeTempDir('tessera-failing-node-');
  const files = new FaultyFiles({ seed });
  const logs: Record<string, unknown>[] = [];
  const node = await startNode({
    dataDir, host: '127.0.0.1', nbdPort: 0, apiPort: 0, socketPath: join(dataDir, 'nbd.sock'), files,
    log: Logger.create({ level: 'info', write: (line) => logs.push(JSON.parse(line) as Record<string, unknown>) }),
  });
  const api = async (method: string, path: string, body?: unknown) => {
    const r = await fetch(`${node.api}/api/v1${path}`, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    return { status: r.status, body: text ? JSON.parse(text) : null };
  };
  const metric = async (name: string, labels = '') => {
    const text = await (await fetch(`${node.api}/metrics`)).text();
    const m = new RegExp(`^${name}${labels.replace(/[{}]/g, '\\$&')} (\\S+)$`, 'm').exec(text);
    return m === null ? null : Number(m[1]);
  };
  return { node, files, logs, api, metric, uri: (disk) => `nbd+unix:///${disk}?socket=${node.socket}`, dataDir };
}

test('a node whose drive fails a write: NBD clients get EIO and keep their connection, reads go on, GET /node, the metrics and the log say failing', async (t) => {
  const s = await start(testSeed(t));
  try {
    assert.equal((await s.api('POST', '/disks', { name: 'vm', sizeBytes: 16 << 20 })).status, 201);
    const before = await qemuIo(s.uri('vm'), ['write -P 0x5a 0 1M', 'flush']);
    assert.equal(before.code, 0, before.stdout + before.stderr);
    let info = await s.api('GET', '/node');
    assert.deepEqual(info.body.drive, { state: 'ok', error: null, sinceMs: null });
    assert.equal(await s.metric('tessera_drive_failing'), 0);

    s.files.plan({ writeErrorAt: 1 });
    // One connection: the write fails with EIO, and the reads after it on the same connection work.
    const r = await qemuIo(s.uri('vm'), ['write -P 0x33 2M 64k', 'read -P 0x5a 0 1M', 'write -P 0x34 4M 4k', 'read -P 0x5a 512k 4k']);
    const out = r.stdout + r.stderr;
    assert.match(out, /write failed: Input\/output error/);
    assert.match(out, /read 1048576\/1048576 bytes/, 'a read after the failed write, on the same connection');
    assert.equal(out.match(/write failed: Input\/output error/g)?.length, 2, 'the write after the failure is refused too');
    assert.match(out, /read 4096\/4096 bytes/, 'the connection is still up after the refused write');
    assert.doesNotMatch(out, /Pattern verification failed|Connection|disconnect/i);

    info = await s.api('GET', '/node');
    assert.equal(info.status, 200);
    assert.equal(info.body.drive.state, 'failing');
    assert.match(info.body.drive.error, /I\/O error while appending to the write log: EIO/);
    assert.ok(Math.abs(info.body.drive.sinceMs - Date.now()) < 60_000);
    assert.equal(await s.metric('tessera_drive_failing'), 1);
    const failingLogs = s.logs.filter((l) => l.component === 'node' && /drive under the store is failing/.test(String(l.msg)));
    assert.equal(failingLogs.length, 1, 'logged once');
    assert.equal(failingLogs[0]!.level, 'error');
    // Over the API: changes refused with IO_ERROR (500), reads served.
    const refused = await s.api('POST', '/disks', { name: 'other', sizeBytes: 1 << 20 });
    assert.equal(refused.status, 500);
    assert.equal(refused.body.error.code, 'IO_ERROR');
    assert.equal((await s.api('POST', '/disks/vm/snapshots', { name: 's' })).body.error.code, 'IO_ERROR');
    assert.equal((await s.api('POST', '/disks/vm/flush')).body.error.code, 'IO_ERROR');
    assert.equal((await s.api('GET', '/disks/vm')).status, 200);
    const reads = await qemuIo(s.uri('vm'), ['read -P 0x5a 0 1M'], { readOnly: true });
    assert.equal(reads.code, 0, reads.stdout + reads.stderr);
  } finally {
    await s.node.close();
  }
});

test('a read the drive fails is EIO for that read only, logged with its disk and offset and counted; the drive stays ok', async (t) => {
  const s = await start(testSeed(t));
  try {
    assert.equal((await s.api('POST', '/disks', { name: 'db', sizeBytes: 16 << 20 })).status, 201);
    const w = await qemuIo(s.uri('db'), ['write -P 0x77 1M 256k', 'flush']);
    assert.equal(w.code, 0, w.stdout + w.stderr);
    s.files.plan({ readErrorAt: 1 });
    const r = await qemuIo(s.uri('db'), ['read -P 0x77 1M 4k', 'read -P 0x77 1M 256k'], { readOnly: true });
    const out = r.stdout + r.stderr;
    assert.match(out, /read failed: Input\/output error/);
    assert.match(out, /read 262144\/262144 bytes/, 'the next read on the connection works');
    const logged = s.logs.find((l) => l.component === 'node' && l.disk === 'db' && /^Read of disk "db" failed at byte/.test(String(l.msg)));
    assert.ok(logged, `the node logs the failed read: ${JSON.stringify(s.logs.slice(-5))}`);
    assert.equal(logged.level, 'error');
    assert.equal(logged.offset, 1 << 20);
    assert.equal(await s.metric('tessera_read_errors_total', '{disk="db"}'), 1);
    assert.equal(await s.metric('tessera_drive_failing'), 0);
    assert.equal((await s.api('GET', '/node')).body.drive.state, 'ok');
    const again = await qemuIo(s.uri('db'), ['write -P 0x78 0 4k', 'flush']);
    assert.equal(again.code, 0, again.stdout + again.stderr);
  } finally {
    await s.node.close();
  }
});

test('a read whose bytes fail their record\'s checksum is EIO for that read only, logged as such and counted apart from drive errors', async (t) => {
  const s = await start(testSeed(t));
  try {
    assert.equal((await s.api('POST', '/disks', { name: 'db', sizeBytes: 16 << 20 })).status, 201);
    const w = await qemuIo(s.uri('db'), ['write -P 0x77 1M 256k', 'write -P 0x66 4M 256k', 'flush']);
    assert.equal(w.code, 0, w.stdout + w.stderr);
    // One byte of the first record's payload changes under the store (a bit rot the drive did not report).
    const logDir = join(s.dataDir, 'store', 'log');
    const { readdirSync, readFileSync, openSync, writeSync, closeSync } = await import('node:fs');
    const needle = Buffer.alloc(4096, 0x77);
    const seg = readdirSync(logDir).map((n) => join(logDir, n)).find((f) => readFileSync(f).includes(needle));
    assert.ok(seg !== undefined, 'the written bytes are in a segment');
    const fd = openSync(seg, 'r+');
    writeSync(fd, Buffer.from([0x00]), 0, 1, readFileSync(seg).indexOf(needle) + 5000);
    closeSync(fd);
    const r = await qemuIo(s.uri('db'), ['read -P 0x77 1M 256k', 'read -P 0x66 4M 256k'], { readOnly: true });
    const out = r.stdout + r.stderr;
    assert.match(out, /read failed: Input\/output error/);
    assert.match(out, /read 262144\/262144 bytes at offset 4194304/, 'the next read on the connection works');
    const logged = s.logs.find((l) => l.component === 'node' && l.disk === 'db' && /fail their record's checksum/.test(String(l.msg)));
    assert.ok(logged, `the node logs the checksum failure: ${JSON.stringify(s.logs.slice(-5))}`);
    assert.equal(logged.offset, 1 << 20);
    assert.equal(logged.checksum, true);
    assert.equal(await s.metric('tessera_checksum_errors_total', '{disk="db"}'), 1);
    assert.equal(await s.metric('tessera_read_errors_total', '{disk="db"}'), 0);
    assert.equal((await s.api('GET', '/node')).body.drive.state, 'ok');
  } finally {
    await s.node.close();
  }
});
