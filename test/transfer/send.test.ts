/**
 * `tessera transfer send` and `recv` on loopback: a large file over several connections arrives
 * byte-exact, and a transfer cut by kill -9 of either end resumes without resending what arrived.
 */
import assert from 'node:assert/strict';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { cleanup, freePort, makeTempDir, MiB, testSeed, writeSeededFile } from '../helpers/index.ts';
import { sendOk, sha256Of, startReceiver, startSender } from './harness.ts';

after(cleanup);

const CHUNK = 4 * MiB;

test('a file of 320 MiB sent over 4 connections arrives byte-exact, over all 4, its partial state gone', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'vm-disk.img');
  await writeSeededFile(file, seed, 'big', 320 * MiB);
  const receiver = await startReceiver(dir);
  const report = await sendOk(file, receiver.port, ['--connections', '4']);
  t.diagnostic(`320 MiB in ${String(report.seconds)} s: ${JSON.stringify({ transitMs: report.transitMs, holdMs: report.holdMs, connectionsActiveMin: report.connectionsActiveMin })}`);
  assert.equal(report.sizeBytes, 320 * MiB);
  assert.equal(report.bytesSent, 320 * MiB, 'every byte sent once');
  assert.equal(report.bytesSkipped, 0);
  assert.equal(report.attempts, 1);
  assert.equal(report.connections, 4);
  const perConnection = report.chunksPerConnection as number[];
  assert.equal(perConnection.length, 4);
  assert.ok(perConnection.every((n) => n > 0), `chunks went over every connection: ${perConnection.join(', ')}`);
  assert.equal(perConnection.reduce((a, b) => a + b, 0), 80);
  assert.ok((report.primeBytes as number) > 0, 'the connections were primed');
  const sha = await sha256Of(file);
  assert.equal(report.sha256, sha);
  assert.equal(await sha256Of(join(dir, 'vm-disk.img')), sha);
  const received = await receiver.waitFor((e) => e.event === 'received', 'the receiver reporting the file');
  assert.equal(received.sha256, sha);
  assert.deepEqual(readdirSync(join(dir, '.tessera-transfer')), [], 'no partial state left');
});

test('a sender killed -9 mid-way and run again sends only the chunks that had not arrived', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'resume.img');
  const size = 96 * MiB;
  await writeSeededFile(file, seed, 'resume', size);
  const receiver = await startReceiver(dir);
  // Held to 24 MiB/s so that the kill lands mid-way however fast the machine is.
  const first = startSender(file, receiver.port, ['--rate-max', '24M', '--connections', '3']);
  const seen = await first.waitFor((e) => e.event === 'progress' && (e.bytesDone as number) >= 24 * MiB, 'a quarter confirmed');
  await first.kill9();
  assert.ok(!existsSync(join(dir, 'resume.img')), 'nothing under the final name after the kill');
  const report = await sendOk(file, receiver.port, ['--connections', '3']);
  const skipped = report.bytesSkipped as number;
  t.diagnostic(`confirmed before the kill: ${String(seen.bytesDone)}; held at the resume: ${skipped}; sent again: ${String(report.bytesSent)}`);
  assert.ok(skipped >= (seen.bytesDone as number), `the receiver kept at least what it had confirmed (${String(seen.bytesDone)}), got ${skipped}`);
  assert.equal(skipped % CHUNK, 0);
  assert.equal(report.bytesSent, size - skipped, 'only the rest was sent');
  assert.equal(await sha256Of(join(dir, 'resume.img')), await sha256Of(file));
});

test('a receiver killed -9 mid-way and restarted: the running sender connects again and sends only the rest', async (t) => {
  const seed = testSeed(t);
  const src = makeTempDir();
  const dir = makeTempDir();
  const file = join(src, 'cut.img');
  const size = 96 * MiB;
  await writeSeededFile(file, seed, 'cut', size);
  const port = await freePort();
  const receiver = await startReceiver(dir, { port });
  const sender = startSender(file, port, ['--rate-max', '24M', '--connections', '3', '--retry-ms', '60000']);
  const seen = await sender.waitFor((e) => e.event === 'progress' && (e.bytesDone as number) >= 24 * MiB, 'a quarter confirmed');
  await receiver.kill9();
  await sender.waitFor((e) => e.event === 'retry', 'the sender noticing the loss');
  const again = await startReceiver(dir, { port });
  const { code } = await sender.exited;
  assert.equal(code, 0, `the sender finished; stderr: ${sender.stderr}`);
  const report = sender.events.find((e) => e.event === 'done')!;
  const received = await again.waitFor((e) => e.event === 'received', 'the restarted receiver reporting the file');
  t.diagnostic(`confirmed before the kill: ${String(seen.bytesDone)}; the restarted receiver held ${String(received.bytesResumed)} and received ${String(received.bytesReceived)}`);
  assert.ok((report.attempts as number) >= 2);
  assert.ok((received.bytesResumed as number) >= (seen.bytesDone as number), 'what was confirmed was kept');
  assert.equal((received.bytesResumed as number) + (received.bytesReceived as number), size, 'the restarted receiver got only the rest');
  // Sent in all: the file once, plus at most the chunks in flight at the kill (2 a connection).
  assert.ok((report.bytesSent as number) <= size + 3 * 2 * CHUNK, `bytes sent ${String(report.bytesSent)}`);
  assert.equal(await sha256Of(join(dir, 'cut.img')), await sha256Of(file));
});
