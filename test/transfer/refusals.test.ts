/**
 * What `transfer send` refuses, and how: secrets (required once configured, on either side),
 * an unreachable receiver, a receiver whose disk is full, bad arguments. Each failure is one
 * line `tessera: error: …`, a non-zero exit, and nothing in the receiving directory that looks
 * like a received file.
 */
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { cleanup, freePort, makeTempDir, MiB, mountTmpfs, testSeed, writeSeededFile } from '../helpers/index.ts';
import { sendOk, sha256Of, startReceiver, startSender, type JsonChild } from './harness.ts';

after(cleanup);

let src: string;
let file: string;
let secretA: string;
let secretB: string;

before(async () => {
  src = makeTempDir();
  file = join(src, 'small.img');
  await writeSeededFile(file, 1234, 'refusals', 6 * MiB);
  secretA = join(src, 'a.secret');
  secretB = join(src, 'b.secret');
  writeFileSync(secretA, 'correct horse battery staple\n');
  writeFileSync(secretB, 'another secret entirely\n');
});

/** Runs a send expected to fail: exit `code`, one error line matching `pattern`. */
async function sendFails(args: string[], port: number, code: number, pattern: RegExp): Promise<JsonChild> {
  const s = startSender(args[0], port, args.slice(1));
  const exit = await s.exited;
  const lines = s.stderr.split('\n').filter((l) => l !== '');
  assert.equal(exit.code, code, `exit status; stderr: ${s.stderr}`);
  assert.equal(lines.length, 1, `one line on stderr, got: ${s.stderr}`);
  assert.match(lines[0], /^tessera: error: /);
  assert.match(lines[0], pattern);
  assert.ok(!s.events.some((e) => e.event === 'done'), 'no report of success');
  return s;
}

/** Names in `dir` a user would take for received files (the hidden state directory aside). */
function visible(dir: string): string[] {
  return readdirSync(dir).filter((n) => n !== '.tessera-transfer' && n !== 'lost+found');
}

test('secrets: the same on both ends goes through; the receiver\'s secret is required of the sender', async () => {
  const dir = makeTempDir();
  const receiver = await startReceiver(dir, { secretFile: secretA });
  await sendFails([file], receiver.port, 1, /the receiver requires a secret: give --secret-file/);
  await sendFails([file, '--secret-file', secretB], receiver.port, 1, /authentication failed: the receiver at 127\.0\.0\.1:\d+ holds a different secret/);
  assert.deepEqual(visible(dir), []);
  const report = await sendOk(file, receiver.port, ['--secret-file', secretA]);
  assert.equal(await sha256Of(join(dir, 'small.img')), report.sha256);
});

test('secrets: a sender given one refuses a receiver without one', async () => {
  const dir = makeTempDir();
  const receiver = await startReceiver(dir);
  await sendFails([file, '--secret-file', secretA], receiver.port, 1, /the receiver at 127\.0\.0\.1:\d+ has no secret, but this sender was given one/);
  assert.deepEqual(visible(dir), []);
});

test('an unreachable receiver is reported at once, not retried', async () => {
  const port = await freePort();
  const started = performance.now();
  await sendFails([file, '--retry-ms', '60000'], port, 1, /cannot reach the receiver at 127\.0\.0\.1:\d+: connect ECONNREFUSED/);
  assert.ok(performance.now() - started < 30_000, 'not held up by the retry deadline');
});

test('a receiver whose disk is too small refuses the file before any data, and nothing looks received', async (t) => {
  const seed = testSeed(t);
  const dir = mountTmpfs(t, 4 * MiB);
  const big = join(src, 'too-big.img');
  await writeSeededFile(big, seed, 'too-big', 8 * MiB);
  const receiver = await startReceiver(dir);
  const s = await sendFails([big], receiver.port, 1, /the receiver's disk is full: too-big\.img needs 8388608 more bytes, \d+ are free/);
  assert.ok(!s.events.some((e) => e.event === 'progress' && (e.bytesDone as number) > 0));
  assert.deepEqual(visible(dir), []);
  const failed = await receiver.waitFor((e) => e.event === 'failed', 'the receiver reporting the failure');
  assert.equal(failed.code, 'TRANSFER_NO_SPACE');
  // The receiver goes on serving: a file that fits arrives.
  const fits = join(src, 'fits.img');
  await writeSeededFile(fits, seed, 'fits', 2 * MiB);
  const report = await sendOk(fits, receiver.port);
  assert.equal(report.sizeBytes, 2 * MiB);
  assert.deepEqual(visible(dir), ['fits.img']);
});

test('a disk that fills during the transfer ends it with the same error; nothing looks received', async (t) => {
  const seed = testSeed(t);
  const dir = mountTmpfs(t, 16 * MiB);
  const mid = join(src, 'fills.img');
  await writeSeededFile(mid, seed, 'fills', 10 * MiB);
  const receiver = await startReceiver(dir);
  const sender = startSender(mid, receiver.port, ['--rate-max', '4M', '--connections', '1']);
  await sender.waitFor((e) => e.event === 'progress' && (e.bytesDone as number) > 0, 'data flowing');
  // Something else takes the room the transfer was counting on.
  await writeSeededFile(join(dir, 'other'), seed, 'other', 9 * MiB).catch(() => {});
  const exit = await sender.exited;
  const lines = sender.stderr.split('\n').filter((l) => l !== '');
  assert.equal(exit.code, 1, `exit status; stderr: ${sender.stderr}`);
  assert.equal(lines.length, 1, `one line on stderr, got: ${sender.stderr}`);
  assert.match(lines[0], /^tessera: error: the receiver's disk is full/);
  assert.deepEqual(visible(dir).filter((n) => n !== 'other'), []);
});

test('bad arguments are usage errors (exit 2); a missing file fails (exit 1)', async () => {
  const port = await freePort();
  await sendFails([file, '--class', 'gold'], port, 2, /--class must be one of bulk, replication, interactive, got 'gold'/);
  await sendFails([file, '--connections', '17'], port, 2, /--connections must be a whole number from 1 to 16/);
  await sendFails([file, '--dscp', '64'], port, 2, /--dscp must be a whole number from 0 to 63/);
  await sendFails([join(src, 'nope.img')], port, 1, /cannot read .*nope\.img: ENOENT/);
});
