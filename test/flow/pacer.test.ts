/** The pacer: no pause within a slice; after one, a rest, or a stop when the share is 0. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Pacer } from '../../src/flow/index.ts';

/** Keeps the thread busy for `ms`, as a slice of background work would. */
function spin(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until);
}

test('pacer: null within a slice, a pause after it; a share asked anew after each slice, 0 stops the work', async () => {
  let share = 1;
  const pacer = new Pacer(() => share);
  assert.equal(pacer.pause(), null, 'a slice has just begun');
  spin(6);
  const rest = pacer.pause();
  assert.ok(rest !== null, 'the slice is over');
  assert.equal(await rest, true);
  assert.equal(pacer.pause(), null, 'a new slice began after the rest');
  spin(6);
  share = 0;
  assert.equal(await pacer.pause(), false);
});

test('pacer: a share of a tenth rests about nine times as long as the slice ran', async () => {
  const pacer = new Pacer(0.1);
  const began = performance.now();
  spin(6);
  // Measured before pause(): the pacer's own slice began at its construction and ends inside
  // pause(), so it is at least this long however the machine schedules this thread.
  const ran = performance.now() - began;
  // Taken before pause() starts the rest's timer: a stall between the two (a collection, another
  // process on a loaded machine) then counts in `rested`, never against it.
  const restStart = performance.now();
  const rest = pacer.pause()!;
  assert.ok(rest !== null);
  assert.equal(await rest, true);
  // A lower bound only: the rest is a timer, which never fires early (give or take a ms of rounding).
  const rested = performance.now() - restStart;
  assert.ok(rested >= 9 * ran - 2, `rested ${rested.toFixed(1)} ms after a slice of ${ran.toFixed(1)} ms`);
});
