/**
 * A real node's observability (docs/observability.md): /metrics checked by promtool, counters that
 * move with the work real clients do (nbdcopy, the API, a backup), the probes, JSON and text
 * logs in which every error a client sees is found by its id, and the Grafana dashboard's
 * metric names.
 */
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { makeTempDir, MiB, nbdcopy, promtoolCheck, run, runOk, seededBytes, spawnTracked, startNode, tesseraBin, useNode, type TesseraNode } from '../helpers/index.ts';
import { cliEnv, join, openTestRepo, smallRepo } from '../backup/harness.ts';
import { NbdClient } from '../nbd/client.ts';
import { Errno } from '../../src/nbd/protocol.ts';

const repoRoot = fileURLToPath(new URL('../../', import.meta.url));

/** The samples of a Prometheus text: `name{labels}` as printed → value. */
function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const at = line.lastIndexOf(' ');
    out.set(line.slice(0, at), Number(line.slice(at + 1)));
  }
  return out;
}

/** The names of the metric families of a Prometheus text (its `# TYPE` lines). */
function families(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1], m[2]]));
}

async function scrape(node: TesseraNode): Promise<{ text: string; values: Map<string, number> }> {
  const res = await fetch(`${node.api}/metrics`);
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
  const text = await res.text();
  return { text, values: parseMetrics(text) };
}

/** One sample's value; fails naming the sample when it is absent. */
function value(values: Map<string, number>, sample: string): number {
  const v = values.get(sample);
  assert.ok(v !== undefined, `no sample ${sample} in /metrics`);
  return v;
}

/** The node's log records so far (stderr, JSON lines). */
async function logRecords(node: TesseraNode): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(node.logPath, 'utf8');
  return text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>);
}

// The file's node: JSON logs (stderr is no terminal), one 64 MiB disk.
const node = useNode({ setup: (n) => n.cliOk(['disk', 'create', 'vm1', '--size', '64M']).then(() => {}) });
const dir = makeTempDir('tessera-observe-');

describe('a node with JSON logs', () => {
  test('/metrics passes promtool check metrics and has exactly the tessera_ metrics docs/observability.md lists', async () => {
    const { text } = await scrape(node);
    const { code, output } = await promtoolCheck(text);
    assert.equal(code, 0, output);
    const served = [...families(text).keys()].filter((n) => n.startsWith('tessera_')).sort();
    const doc = await readFile(join(repoRoot, 'docs', 'observability.md'), 'utf8');
    // A single node serves every metric but those of cluster mode (test/cluster checks those).
    const documented = [...new Set([...doc.matchAll(/^\| `(tessera_[a-z0-9_]+)`.*$/gm)].filter((m) => !m[0].includes('in cluster mode only')).map((m) => m[1]))].sort();
    assert.deepEqual(served, documented);
  });

  test('64 MiB written with nbdcopy grow the write bytes by exactly 64 MiB; read back, the read bytes', async () => {
    const image = join(dir, 'image.raw');
    await writeFile(image, seededBytes(17, 'observe', 64 * MiB));
    const before = (await scrape(node)).values;
    await nbdcopy(image, node.nbdUri('vm1'), ['--flush']);
    const mid = (await scrape(node)).values;
    const grew = (sample: string, a = before, b = mid) => value(b, sample) - (a.get(sample) ?? 0);
    assert.equal(grew('tessera_disk_bytes_total{disk="vm1",op="write"}'), 64 * MiB);
    const writes = grew('tessera_disk_ops_total{disk="vm1",op="write"}');
    assert.ok(writes >= 2, `${writes} writes`);
    assert.equal(grew('tessera_disk_op_duration_seconds_count{disk="vm1",op="write"}'), writes, 'every write is in the latency histogram');
    assert.equal(grew('tessera_disk_op_duration_seconds_bucket{disk="vm1",op="write",le="+Inf"}'), writes);
    assert.ok(grew('tessera_disk_ops_total{disk="vm1",op="flush"}') >= 1, 'nbdcopy --flush flushed');
    assert.equal(grew('tessera_disk_op_errors_total{disk="vm1",op="write"}'), 0);
    assert.equal(value(mid, 'tessera_disk_requests_in_flight{disk="vm1"}'), 0);
    assert.ok(grew('tessera_nbd_connections_accepted_total') >= 1);
    assert.ok(grew('tessera_engine_appended_bytes_total') >= 64 * MiB, 'the log took the data');

    await nbdcopy(node.nbdUri('vm1'), join(dir, 'back.raw'));
    const end = (await scrape(node)).values;
    assert.equal(grew('tessera_disk_bytes_total{disk="vm1",op="read"}', mid, end), 64 * MiB);
    assert.equal(grew('tessera_disk_bytes_total{disk="vm1",op="write"}', mid, end), 0);
    assert.deepEqual(await readFile(join(dir, 'back.raw')), await readFile(image));
  });

  test("the API's data routes count as disk I/O too", async () => {
    const before = (await scrape(node)).values;
    const res = await fetch(`${node.api}/api/v1/disks/vm1/data?offset=0`, { method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: Buffer.alloc(MiB, 1) });
    assert.equal(res.status, 204);
    const got = await fetch(`${node.api}/api/v1/disks/vm1/snapshots/none/data?offset=0&length=4096`);
    assert.equal(got.status, 404, 'a snapshot that does not exist is no read');
    const after = (await scrape(node)).values;
    assert.equal(value(after, 'tessera_disk_bytes_total{disk="vm1",op="write"}') - value(before, 'tessera_disk_bytes_total{disk="vm1",op="write"}'), MiB);
    assert.equal(value(after, 'tessera_disk_bytes_total{disk="vm1",op="read"}') - value(before, 'tessera_disk_bytes_total{disk="vm1",op="read"}'), 0);
    assert.ok(value(after, 'tessera_api_requests_total{method="PUT",route="/api/v1/disks/{name}/data",status="204"}') >= 1);
  });

  test('the NBD connections gauge counts a connection while it is open', async () => {
    const client = await NbdClient.connect({ host: node.nbdHost, port: node.nbdPort }, { exportName: 'vm1' });
    try {
      assert.equal(value((await scrape(node)).values, 'tessera_nbd_connections'), 1);
    } finally {
      await client.disconnect();
    }
    const deadline = Date.now() + 5000;
    while (value((await scrape(node)).values, 'tessera_nbd_connections') !== 0) {
      assert.ok(Date.now() < deadline, 'the connection is gone from the gauge within 5 s');
      await new Promise((r) => setTimeout(r, 20));
    }
  });

  test('a backup run by the node moves the backup counters; an unchanged second one stores almost nothing and dedupes all', async () => {
    const repoDir = join(dir, 'repo');
    const repo = await openTestRepo(repoDir, { init: smallRepo });
    await repo.close();
    const env = { ...process.env, ...cliEnv(repo.cacheDir) } as NodeJS.ProcessEnv;
    const backup = async () => {
      const r = await run(tesseraBin, ['--api', node.api, 'backup', 'create', 'vm1', '--repo', repoDir, '--json'], { env, timeoutMs: 300_000 });
      assert.equal(r.code, 0, `${r.stderr}\nnode log: ${node.logTail().slice(-2000)}`);
    };
    const allocated = ((await node.cliJson(['disk', 'info', 'vm1'])) as { allocatedBytes: number }).allocatedBytes;
    const s0 = (await scrape(node)).values;
    await backup();
    const s1 = (await scrape(node)).values;
    const grew = (sample: string, a: Map<string, number>, b: Map<string, number>) => value(b, sample) - value(a, sample);
    assert.equal(grew('tessera_backup_runs_total{result="succeeded"}', s0, s1), 1);
    assert.equal(grew('tessera_backup_runs_total{result="failed"}', s0, s1), 0);
    assert.equal(value(s1, 'tessera_backup_running'), 0);
    assert.equal(grew('tessera_backup_read_bytes_total', s0, s1), allocated, 'a full backup reads the allocated data');
    const stored = grew('tessera_backup_stored_bytes_total', s0, s1);
    assert.ok(stored > MiB && stored < allocated + 4 * MiB, `stored ${stored} of ${allocated} (random data does not compress)`);
    await backup();
    const s2 = (await scrape(node)).values;
    assert.equal(grew('tessera_backup_runs_total{result="succeeded"}', s1, s2), 1);
    assert.equal(grew('tessera_backup_read_bytes_total', s1, s2), 0, 'nothing changed: nothing read');
    assert.ok(grew('tessera_backup_stored_bytes_total', s1, s2) < MiB, 'only metadata stored');
    assert.equal(grew('tessera_backup_deduped_bytes_total', s1, s2), allocated, 'every chunk was in the repository');
  });

  test('every log line is a JSON object with time, level, component, msg and hlc, the clock rising line by line', async () => {
    const records = await logRecords(node);
    assert.ok(records.length >= 3, `${records.length} records`);
    let last = -1n;
    for (const r of records) {
      assert.ok(!Number.isNaN(Date.parse(String(r.time))), JSON.stringify(r));
      assert.ok(['debug', 'info', 'warn', 'error'].includes(String(r.level)), JSON.stringify(r));
      assert.equal(typeof r.component, 'string');
      assert.equal(typeof r.msg, 'string');
      // The node's clock opens as its data directory is locked, before its first record.
      assert.match(String(r.hlc), /^[1-9][0-9]{17,19}$/, JSON.stringify(r));
      assert.ok(BigInt(String(r.hlc)) > last, `hlc rises: ${JSON.stringify(r)} after ${last}`);
      last = BigInt(String(r.hlc));
    }
    assert.ok(records.some((r) => r.component === 'node' && String(r.msg).startsWith('serving ')));
  });

  test("an API error's request id, from the reply, finds it in the log; a client's own id is kept", async () => {
    const res = await fetch(`${node.api}/api/v1/disks/no-such-disk`);
    assert.equal(res.status, 404);
    const body = (await res.json()) as { error: { code: string; requestId: string } };
    const id = res.headers.get('x-request-id');
    assert.ok(id !== null && id.length >= 8);
    assert.equal(body.error.requestId, id);
    const own = await fetch(`${node.api}/api/v1/disks`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-request-id': 'client-id-42' }, body: '{"name": 1}' });
    assert.equal(own.status, 400);
    assert.equal(own.headers.get('x-request-id'), 'client-id-42');
    const ok = await fetch(`${node.api}/api/v1/disks`);
    assert.ok(ok.headers.get('x-request-id'), 'every reply has an id');
    // The node writes its log as it goes; give the lines a moment to reach the file.
    const deadline = Date.now() + 5000;
    let records = await logRecords(node);
    while (!records.some((r) => r.requestId === 'client-id-42') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      records = await logRecords(node);
    }
    const found = records.find((r) => r.requestId === id);
    assert.ok(found, `request ${id} is in the log`);
    assert.equal(found.component, 'api');
    assert.equal(found.level, 'warn');
    assert.equal(found.status, 404);
    assert.equal(found.code, 'NOT_FOUND');
    assert.equal(records.find((r) => r.requestId === 'client-id-42')?.code, 'BAD_REQUEST');
  });

  test('a failed NBD request is in the log with its connection id and handle', async () => {
    const client = await NbdClient.connect({ host: node.nbdHost, port: node.nbdPort }, { exportName: 'vm1' });
    let errno: number;
    try {
      await client.read(0, 4096); // handle 1
      errno = (await client.request(0 /* NBD_CMD_READ */, 0, 64 * MiB, 4096)).errno; // handle 2, past the end
    } finally {
      await client.disconnect();
    }
    assert.equal(errno, Errno.EINVAL);
    const deadline = Date.now() + 5000;
    let found: Record<string, unknown> | undefined;
    while (found === undefined && Date.now() < deadline) {
      found = (await logRecords(node)).find((r) => r.component === 'nbd' && r.disk === 'vm1' && r.handle === '2' && r.offset === 64 * MiB);
      if (found === undefined) await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(found, 'the failed read is in the log');
    assert.equal(typeof found.conn, 'number');
    assert.equal(found.errno, 'EINVAL');
    assert.equal(found.command, 'NBD_CMD_READ');
    assert.equal(found.level, 'warn');
  });

  test('/healthz and /readyz answer 200 on a running node; tessera_ready is 1', async () => {
    const health = await fetch(`${node.api}/healthz`);
    assert.equal(health.status, 200);
    const ready = await fetch(`${node.api}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(await ready.json(), { status: 'ready' });
    assert.equal(value((await scrape(node)).values, 'tessera_ready'), 1);
    assert.equal((await fetch(`${node.api}/readyz`, { method: 'POST' })).status, 405);
  });

  test('the Grafana dashboard is a dashboard whose every metric is in /metrics', async () => {
    const dash = JSON.parse(await readFile(join(repoRoot, 'deploy', 'grafana', 'tessera-dashboard.json'), 'utf8'));
    assert.equal(typeof dash.title, 'string');
    assert.equal(typeof dash.uid, 'string');
    assert.ok(Number.isInteger(dash.schemaVersion) && dash.schemaVersion >= 30);
    assert.ok(Array.isArray(dash.panels) && Array.isArray(dash.templating?.list));
    const exprs: string[] = [];
    const ids = new Set<number>();
    for (const p of dash.panels) {
      assert.ok(!ids.has(p.id), `panel id ${p.id} is unique`);
      ids.add(p.id);
      assert.ok(p.gridPos && Number.isInteger(p.gridPos.w) && Number.isInteger(p.gridPos.h), `panel ${p.title} has a gridPos`);
      for (const t of p.targets ?? []) exprs.push(t.expr);
    }
    for (const v of dash.templating.list) if (typeof v.definition === 'string') exprs.push(v.definition);
    assert.ok(exprs.length >= 20, `${exprs.length} queries`);
    const { text } = await scrape(node);
    const served = new Set<string>();
    for (const [name, type] of families(text)) {
      served.add(name);
      if (type === 'histogram') for (const suffix of ['_bucket', '_sum', '_count']) served.add(name + suffix);
    }
    const functions = new Set(['sum', 'max', 'by', 'rate', 'increase', 'histogram_quantile', 'label_values', 'le', 'op', 'disk', 'instance', 'state', 'result', 'status', 'version', 'kind', 'role']);
    const used = new Set(exprs.flatMap((e) => [...e.replace(/"[^"]*"/g, '').replace(/\$\w+/g, '').matchAll(/\b[a-z_][a-z0-9_]*\b/g)].map((m) => m[0])).filter((n) => n.includes('_') && !functions.has(n)));
    assert.ok(used.has('tessera_disk_bytes_total'));
    // The cluster's panels read metrics only a node in a cluster serves (test/cluster/replication checks those).
    const missing = [...used].filter((n) => !served.has(n) && !/^tessera_(cluster|etcd)_/.test(n));
    assert.deepEqual(missing, [], 'metrics the dashboard uses that /metrics lacks');
  });
});

describe('a node with text logs at level warn', () => {
  test('serve --log-format text --log-level warn: readable lines, no info records, errors with their request id', async () => {
    const node = await startNode({ args: ['--log-format', 'text', '--log-level', 'warn'] });
    try {
      const res = await fetch(`${node.api}/api/v1/disks/nope`);
      const id = res.headers.get('x-request-id')!;
      await node.stop();
      const lines = (await readFile(node.logPath, 'utf8')).split('\n').filter((l) => l !== '');
      assert.ok(lines.length >= 1);
      for (const l of lines) {
        assert.throws(() => JSON.parse(l), SyntaxError, 'not JSON');
        if (!l.startsWith(' ')) assert.match(l, /^\d{4}-\d\d-\d\dT\S+Z (WARN |ERROR) [a-z]+: /);
      }
      assert.ok(lines.some((l) => l.includes(`requestId=${id}`) && l.includes(' WARN  api: ')), lines.join('\n'));
      assert.ok(!lines.some((l) => l.includes(' INFO ')), 'info records are not written at level warn');
    } finally {
      await node.stop();
    }
  });

  test('serve refuses an unknown log level', async () => {
    const r = await run(tesseraBin, ['serve', '--log-level', 'loud', '--data', makeTempDir('tessera-observe-bad-')]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /invalid --log-level: Unknown log level 'loud'/);
  });
});

describe('readiness while the store recovers', () => {
  test('/readyz answers 503 with the reason while a long log tail is replayed, API routes 503 NOT_READY, then 200', async () => {
    const dataDir = makeTempDir('tessera-observe-ready-');
    const records = 20_000;
    const made = await runOk(process.execPath, [fileURLToPath(new URL('./make-log-tail.ts', import.meta.url)), join(dataDir, 'store'), 'tail', String(records)]);
    assert.equal(made.trim(), String(records));
    const child = spawnTracked(tesseraBin, ['serve', '--data', dataDir, '--nbd-port', '0', '--api-port', '0', '--host', '127.0.0.1']);
    child.stdin!.end();
    try {
      // The first log record names the API's address, written before the store is opened.
      const api = await new Promise<string>((resolve, reject) => {
        let text = '';
        child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
          text += chunk;
          const m = /"msg":"API listening on (http:\/\/[^;"]+);/.exec(text);
          if (m) resolve(m[1]);
        });
        child.once('exit', (code) => reject(new Error(`serve exited ${code}: ${text}`)));
      });
      const routeWhileStarting = await fetch(`${api}/api/v1/disks`);
      const first = await fetch(`${api}/readyz`);
      const firstBody = (await first.json()) as { status: string; reason?: string };
      const metrics = await (await fetch(`${api}/metrics`)).text();
      const health = await fetch(`${api}/healthz`);
      assert.equal(first.status, 503, `the node was ready before it could be asked (recovery of ${records} records too quick?)`);
      assert.equal(firstBody.status, 'not ready');
      assert.match(firstBody.reason ?? '', /^recovering the store/);
      // Asked before /readyz said 503, so asked while not ready too.
      assert.equal(routeWhileStarting.status, 503);
      assert.equal(((await routeWhileStarting.json()) as { error: { code: string } }).error.code, 'NOT_READY');
      assert.equal(health.status, 200, 'alive while recovering');
      assert.match(metrics, /^tessera_ready 0$/m);
      const deadline = Date.now() + 60_000;
      let status = 503;
      while (status === 503) {
        assert.ok(Date.now() < deadline, 'ready within a minute');
        await new Promise((r) => setTimeout(r, 20));
        status = (await fetch(`${api}/readyz`)).status;
      }
      assert.equal(status, 200);
      const after = parseMetrics(await (await fetch(`${api}/metrics`)).text());
      assert.equal(after.get('tessera_ready'), 1);
      assert.equal(after.get('tessera_engine_recovery_replayed_records'), records);
      assert.equal((await fetch(`${api}/api/v1/disks`)).status, 200);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  });
});
