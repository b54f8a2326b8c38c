/**
 * The latency split on loopback: a receiver slowed on purpose (its writes held back by the test
 * hook TESSERA_TRANSFER_TEST_HOLD_MS) shows as application time, not network time.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, MiB, testSeed, writeSeededFile } from '../helpers/index.ts';
import { startReceiver, startSender } from './harness.ts';

after(cleanup);

interface Percentiles {
  p50: number;
  p90: number;
}

test('a receiver slow to write shows as hold (application) time, and the report blames the receiver', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'slow.img');
  await writeSeededFile(file, seed, 'slow', 16 * MiB);
  const holdMs = 60;
  const receiver = await startReceiver(dir, { env: { TESSERA_TRANSFER_TEST_HOLD_MS: String(holdMs) } });
  const sender = startSender(file, receiver.port, ['--connections', '2', '--log-frames']);
  assert.equal((await sender.exited).code, 0, `transfer send; stderr: ${sender.stderr}`);
  const report = sender.events.find((e) => e.event === 'done')!;
  // The per-frame log: every data frame, each with its split.
  const frames = sender.events.filter((e) => e.event === 'frame');
  assert.equal(frames.length, 64, '16 MiB in frames of 256 KiB');
  assert.ok(frames.every((f) => (f.holdMs as number) >= holdMs - 1 && (f.transitMs as number) >= 0 && (f.bytes as number) === 262144));
  assert.ok(new Set(frames.map((f) => f.connection)).size <= 2);
  const transit = report.transitMs as Percentiles;
  const hold = report.holdMs as Percentiles;
  t.diagnostic(`transit ${JSON.stringify(transit)}; hold ${JSON.stringify(hold)}; connections ${String(report.connectionsActiveMin)}..${String(report.connectionsActiveMax)}`);
  // Every write waits the hook's time (a timer fires no sooner, give or take a millisecond).
  assert.ok(hold.p50 >= holdMs - 1, `hold p50 ${hold.p50} ms, at least the ${holdMs} ms the receiver waits`);
  // The round trip is the hold plus the rest: the hold must not leak into transit.
  assert.ok(transit.p50 < hold.p50, `transit p50 ${transit.p50} ms below hold p50 ${hold.p50} ms`);
  assert.equal(report.limitedBy, 'receiver');
});
