/**
 * Transfers through a relay standing in for a WAN link (proxy.ts): a slow link shows as network
 * transit, not receiver time; a link cut mid-way and restored is resumed by the running sender,
 * sending only what had not arrived.
 */
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cleanup, makeTempDir, MiB, testSeed, until, writeSeededFile } from '../helpers/index.ts';
import { sendOk, sha256Of, startReceiver, startSender } from './harness.ts';
import { Relay } from './proxy.ts';

const relays: Relay[] = [];
after(async () => {
  for (const r of relays) r.close();
  await cleanup();
});

interface Percentiles {
  p50: number;
}

test('a link slowed to 40 ms of round trip shows as network transit, and the receiver\'s hold stays small', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'far.img');
  await writeSeededFile(file, seed, 'far', 16 * MiB);
  const receiver = await startReceiver(dir);
  const relay = new Relay(receiver.port, { delayMs: 20 });
  relays.push(relay);
  const report = await sendOk(file, await relay.listen(), ['--connections', '2']);
  const transit = report.transitMs as Percentiles;
  const hold = report.holdMs as Percentiles;
  t.diagnostic(`transit ${JSON.stringify(report.transitMs)}; hold ${JSON.stringify(report.holdMs)}; min RTT ${String(report.minRttMs)} ms`);
  // The relay holds each byte 20 ms each way: no frame comes back sooner than 40 ms.
  assert.ok((report.minRttMs as number) >= 39, `min RTT ${String(report.minRttMs)} ms`);
  assert.ok(transit.p50 >= 39, `transit p50 ${transit.p50} ms`);
  assert.ok(hold.p50 < transit.p50, `hold p50 ${hold.p50} ms below transit p50 ${transit.p50} ms`);
  assert.equal(report.limitedBy, 'network');
  assert.equal(await sha256Of(join(dir, 'far.img')), report.sha256);
});

test('a link cut mid-way and restored: the running sender goes on, sending only what had not arrived', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'cut-link.img');
  const size = 96 * MiB;
  await writeSeededFile(file, seed, 'cut-link', size);
  const receiver = await startReceiver(dir);
  const relay = new Relay(receiver.port);
  relays.push(relay);
  const sender = startSender(file, await relay.listen(), ['--rate-max', '24M', '--connections', '3', '--retry-ms', '60000']);
  const seen = await sender.waitFor((e) => e.event === 'progress' && (e.bytesDone as number) >= 24 * MiB, 'a quarter confirmed');
  relay.cut();
  await sender.waitFor((e) => e.event === 'retry', 'the sender noticing the cut');
  // Down long enough for attempts to fail against it, then back.
  await until(() => sender.events.filter((e) => e.event === 'retry').length >= 2, 60_000, 'a second retry');
  relay.restore();
  const { code } = await sender.exited;
  assert.equal(code, 0, `the sender finished; stderr: ${sender.stderr}`);
  const report = sender.events.find((e) => e.event === 'done')!;
  const received = await receiver.waitFor((e) => e.event === 'received', 'the receiver reporting the file');
  t.diagnostic(`confirmed before the cut: ${String(seen.bytesDone)}; attempts ${String(report.attempts)}; after the cut the receiver held ${String(received.bytesResumed)} and received ${String(received.bytesReceived)}; sent ${String(report.bytesSent)}`);
  assert.ok((report.attempts as number) >= 3);
  assert.ok((received.bytesResumed as number) >= (seen.bytesDone as number), 'what was confirmed was kept');
  assert.equal((received.bytesResumed as number) + (received.bytesReceived as number), size, 'after the cut only the rest came');
  assert.ok((report.bytesSent as number) <= size + 3 * 2 * 4 * MiB, `bytes sent ${String(report.bytesSent)}: the file once, plus at most the chunks in flight at the cut`);
  assert.equal(await sha256Of(join(dir, 'cut-link.img')), await sha256Of(file));
});
