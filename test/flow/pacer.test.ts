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

test('pacer: a share of a half rests about as long as the slice ran', async () => {
  const pacer = new Pacer(0.5);
  spin(6);
  const rest = pacer.pause()!;
  let done = false;
  void rest.then(() => (done = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(done, false, 'not done after one turn of the loop: it waits on a timer');
  assert.equal(await rest, true);
});
