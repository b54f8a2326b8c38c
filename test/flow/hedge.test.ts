/** Hedged requests: a request past its deadline is sent again, the first result wins, budgets are held until the loser ends. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Hedger } from '../../src/flow/index.ts';

test('hedger: a request past its deadline is sent again and the first result wins; a failed attempt lets the other win', async () => {
  const h = new Hedger({ samplesMin: 4, deadlineMsMin: 5, factor: 1 });
  for (let i = 0; i < 4; i++) await h.run(async () => i, () => () => {});
  let released = 0;
  let calls = 0;
  let holdFirst!: (v: string) => void;
  const r = await h.run(
    () => (++calls === 1 ? new Promise<string>((resolve) => (holdFirst = resolve)) : Promise.resolve('second')),
    () => () => released++,
  );
  assert.deepEqual(r, { value: 'second', timedOut: true });
  assert.equal(h.stats().abandoned, 1, 'the first request still runs, abandoned');
  assert.equal(released, 0, "the hedge's budget is held while the loser's bytes may still arrive");
  holdFirst('first');
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(h.stats().abandoned, 0);
  assert.equal(released, 1);

  calls = 0;
  let failFirst!: (e: Error) => void;
  const r2 = await h.run(
    () => (++calls === 1 ? new Promise<string>((_, reject) => (failFirst = reject)) : new Promise<string>((resolve) => setTimeout(() => resolve('hedge'), 20))),
    () => () => {},
  );
  void failFirst;
  assert.equal(r2.value, 'hedge');
  await assert.rejects(
    h.run(() => Promise.reject(new Error('both fail')), () => () => {}),
    /both fail/,
  );
  assert.equal(h.stats().hedgesWon, 2);
});

test('hedger: no second request before samplesMin latencies are known, nor when extra() refuses', async () => {
  const h = new Hedger({ samplesMin: 4, deadlineMsMin: 5, factor: 1 });
  assert.equal(h.deadlineMs(), null);
  let calls = 0;
  // The first requests have no deadline to pass: a slow one is never hedged.
  const r = await h.run(() => (++calls, new Promise<string>((resolve) => setTimeout(() => resolve('slow'), 30))), () => () => {});
  assert.deepEqual(r, { value: 'slow', timedOut: false });
  assert.equal(calls, 1);
  // Fast latencies only (the slow one above would set the deadline): the deadline is deadlineMsMin.
  const fast = new Hedger({ samplesMin: 4, deadlineMsMin: 5, factor: 1 });
  for (let i = 0; i < 4; i++) await fast.run(async () => i, () => () => {});
  const deadline = fast.deadlineMs();
  assert.ok(deadline !== null && deadline < 100, `deadline ${deadline}`);
  calls = 0;
  const refused = await fast.run(() => (++calls, new Promise<string>((resolve) => setTimeout(() => resolve('alone'), 200))), () => null);
  assert.deepEqual(refused, { value: 'alone', timedOut: true });
  assert.equal(calls, 1, 'no budget for a second request: none was sent');
  assert.ok(fast.stats().hedgesSkipped >= 1);
});
