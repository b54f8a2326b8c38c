import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { after, test } from 'node:test';
import { parseHlc, hlcWallMs } from '../../src/cluster/hlc.ts';
import { cleanup, makeTempDir, requireTool, spawnTracked } from '../helpers/process.ts';
import { until } from '../helpers/wait.ts';

after(cleanup);

const child = new URL('./hlc-child.ts', import.meta.url).pathname;

/** Collects a child's stdout lines; complete lines only (a kill can cut the last one). */
function lines(proc: ChildProcess): string[] {
  const out: string[] = [];
  let partial = '';
  proc.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const parts = (partial + chunk).split('\n');
    partial = parts.pop()!;
    out.push(...parts);
  });
  return out;
}

function exited(proc: ChildProcess): Promise<void> {
  return new Promise((resolve) => (proc.exitCode !== null || proc.signalCode !== null ? resolve() : proc.once('exit', () => resolve())));
}

// Debian's faketime (libfaketime through LD_PRELOAD) does fake Node 24's Date.now. It fakes
// CLOCK_MONOTONIC too unless told not to (--exclude-monotonic, or FAKETIME_DONT_FAKE_MONOTONIC=1),
// which Node's timers run on; the clock under test reads only the wall clock, so the monotonic
// one is left alone. -m: the thread-safe library, Node being multi-threaded. faketime runs the
// program as its child, so the test kills the pid the program prints, not faketime's.
test('HLC values never go backwards across kill -9 and a system clock set back an hour', { timeout: 120_000 }, async () => {
  const faketime = requireTool('faketime', 'faketime');
  const dir = makeTempDir('hlc-proc-');
  const windowMs = 1_000;

  const first = spawnTracked(process.execPath, [child, dir, String(windowMs)]);
  const before = lines(first);
  // Long enough to cross several windows: the bound was written ahead in the background.
  await until(() => before.length > 1 && hlcWallMs(parseHlc(before.at(-1)!)) - Number(before[0]!.split(' ')[1]) > 2.5 * windowMs, 60_000, 'the first clock to run 2.5 windows', 20);
  first.kill('SIGKILL');
  await exited(first);
  const lastBefore = parseHlc(before.at(-1)!);

  const second = spawnTracked(faketime, ['-m', '--exclude-monotonic', '-f', '-1h', process.execPath, child, dir, String(windowMs)]);
  const afterKill = lines(second);
  let stderr = '';
  second.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  await until(() => afterKill.length >= 3, 60_000, `the restarted clock to print (stderr: ${stderr})`, 20);
  process.kill(Number(afterKill[0]!.split(' ')[2]), 'SIGKILL');
  await exited(second);

  const fakeWall = Number(afterKill[0]!.split(' ')[1]);
  assert.ok(Date.now() - fakeWall > 3_500_000, `faketime did not set the child's clock back: it read ${fakeWall}, now is ${Date.now()}`);
  const firstAfter = parseHlc(afterKill[1]!);
  assert.ok(firstAfter > lastBefore, `first value after restart ${firstAfter} is not above the last before kill ${lastBefore}`);
  for (let i = 2; i < afterKill.length; i++) assert.ok(parseHlc(afterKill[i]!) > parseHlc(afterKill[i - 1]!));
  for (let i = 2; i < before.length; i++) assert.ok(parseHlc(before[i]!) > parseHlc(before[i - 1]!));
});
