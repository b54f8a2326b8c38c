/** The metrics registry and the per-disk I/O counters, checked by Prometheus's own promtool. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DiskIoStats, IoOpIndex, MetricsRegistry, ObserveError } from '../../src/observe/index.ts';
import { ioLatencyBoundsSeconds } from '../../src/observe/io-stats.ts';
import { promtoolCheck } from '../helpers/index.ts';

test('registry output passes promtool check metrics, process metrics included', async () => {
  const r = new MetricsRegistry();
  const disks = new DiskIoStats();
  const s = disks.of('vm1');
  s.end(IoOpIndex.write, s.begin(), 4096, false);
  r.counter('tessera_disk_ops_total', 'Operations', () => disks.perOp((x) => x.ops));
  r.histogram('tessera_disk_op_duration_seconds', 'Latency', () => disks.latency());
  r.gauge('tessera_disk_requests_in_flight', 'In flight', () => disks.inFlight());
  const text = await r.text();
  assert.match(text, /^process_cpu_seconds_total /m);
  const { code, output } = await promtoolCheck(text);
  assert.equal(code, 0, output);
});

test('a bad metric name, or a counter without _total, is refused', () => {
  const r = new MetricsRegistry({ processMetrics: false });
  assert.throws(() => r.counter('tessera_ops', 'x', () => []), ObserveError);
  assert.throws(() => r.gauge('tessera_open_total', 'x', () => []), ObserveError);
  assert.throws(() => r.gauge('Tessera-Open', 'x', () => []), ObserveError);
});

test('disk I/O counters: ops, bytes, failures, in flight and cumulative latency buckets', async () => {
  const disks = new DiskIoStats();
  const s = disks.of('vm1');
  const t1 = s.begin();
  const t2 = s.begin();
  assert.equal(s.inFlight, 2);
  s.end(IoOpIndex.read, t1, 65536, false);
  s.end(IoOpIndex.read, t2, 65536, true);
  assert.equal(s.inFlight, 0);
  assert.equal(s.ops[IoOpIndex.read], 2);
  assert.equal(s.errors[IoOpIndex.read], 1);
  assert.equal(s.bytes[IoOpIndex.read], 65536, 'a failed read moved no bytes');
  // Latencies placed by hand: 0.7 ms falls in the 0.001 bucket, 20 s past every bound.
  const t = performance.now();
  s.end(IoOpIndex.flush, t - 0.7, 0, false);
  s.end(IoOpIndex.flush, t - 20_000, 0, false);
  const r = new MetricsRegistry({ processMetrics: false });
  r.histogram('tessera_disk_op_duration_seconds', 'Latency', () => disks.latency());
  const text = await r.text();
  const bucket = (le: string) => Number(new RegExp(`^tessera_disk_op_duration_seconds_bucket\\{disk="vm1",op="flush",le="${le.replace('+', '\\+')}"\\} (\\S+)$`, 'm').exec(text)?.[1]);
  assert.equal(bucket('0.0005'), 0);
  assert.equal(bucket('0.001'), 1);
  assert.equal(bucket(String(ioLatencyBoundsSeconds.at(-1))), 1);
  assert.equal(bucket('+Inf'), 2);
  assert.match(text, /^tessera_disk_op_duration_seconds_count\{disk="vm1",op="flush"\} 2$/m);
  const sum = Number(/^tessera_disk_op_duration_seconds_sum\{disk="vm1",op="flush"\} (\S+)$/m.exec(text)?.[1]);
  assert.ok(sum >= 20.0007 && sum < 21, `sum ${sum}`);
});

test('disk stats of deleted disks are dropped once nobody has them open', () => {
  const disks = new DiskIoStats();
  disks.of('gone').users = 1;
  disks.of('kept');
  disks.prune(new Set(['kept']));
  assert.deepEqual(disks.inFlight().map((s) => s.labels?.disk), ['gone', 'kept'], 'an open volume keeps its disk');
  disks.of('gone').users = 0;
  disks.prune(new Set(['kept']));
  assert.deepEqual(disks.inFlight().map((s) => s.labels?.disk), ['kept']);
});
