/**
 * The timetable on a clock the test moves: due times of both kinds of recurrence, due times
 * missed while the process was down run once at the start, a run that outlasts its period is
 * never overlapped (what passed meanwhile is one run after it), failures, removal and close.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Timetable, nextDueMs, parseCron, type Recurrence, type RunTimes } from '../../src/flow/index.ts';
import { FakeClock, settle } from '../helpers/fake-clock.ts';

const hour = 3_600_000;
const minute = 60_000;
const T0 = Date.parse('2026-01-01T00:00:30Z');
const iso = (ms: number): string => new Date(ms).toISOString();
const every = (everyMs: number, anchorMs = T0): Recurrence => ({ kind: 'every', everyMs, anchorMs });

/** A timetable whose work records its runs and, if `hold` is set, waits until released. */
function recorder(clock: FakeClock, opts: { hold?: boolean; fail?: boolean } = {}) {
  const runs: Array<{ id: string } & RunTimes> = [];
  const releases: Array<() => void> = [];
  const errors: unknown[] = [];
  let inFlight = 0;
  let inFlightMax = 0;
  const table = new Timetable({
    clock,
    onError: (_id, err) => void errors.push(err),
    run: async (id, times) => {
      runs.push({ id, ...times });
      inFlight++;
      inFlightMax = Math.max(inFlightMax, inFlight);
      try {
        if (opts.hold) await new Promise<void>((resolve) => releases.push(resolve));
        if (opts.fail) throw new Error(`run of ${id} failed`);
      } finally {
        inFlight--;
      }
    },
  });
  return { table, runs, releases, errors, maxConcurrent: () => inFlightMax };
}

test('timetable: due times are anchor + k × every, strictly after the time asked', () => {
  assert.equal(nextDueMs(every(hour), T0), T0 + hour);
  assert.equal(nextDueMs(every(hour), T0 + hour - 1), T0 + hour);
  assert.equal(nextDueMs(every(hour), T0 + hour), T0 + 2 * hour);
  assert.equal(nextDueMs(every(hour), T0 - 10 * hour - 1), T0 - 10 * hour, 'before the anchor too');
  assert.equal(nextDueMs({ kind: 'cron', cron: parseCron('*/15 * * * *') }, T0), Date.parse('2026-01-01T00:15:00Z'));
});

test('timetable: an entry of every hour runs at each hour after its creation; a cron entry at its minutes', async () => {
  const clock = new FakeClock(T0);
  const r = recorder(clock);
  r.table.add('hourly', every(hour), T0);
  r.table.add('quarter', { kind: 'cron', cron: parseCron('*/15 * * * *') }, T0);
  assert.equal(r.table.nextMs('hourly'), T0 + hour);
  await clock.advance(hour - 31_000);
  assert.deepEqual(r.runs.filter((x) => x.id === 'hourly'), [], 'nothing before the first hour');
  await clock.advance(3 * hour);
  const hourly = r.runs.filter((x) => x.id === 'hourly');
  assert.deepEqual(hourly.map((x) => x.startedMs - T0), [hour, 2 * hour, 3 * hour]);
  assert.deepEqual(hourly.map((x) => x.dueMs), hourly.map((x) => x.startedMs), 'on time');
  const quarter = r.runs.filter((x) => x.id === 'quarter').map((x) => iso(x.startedMs));
  assert.equal(quarter.length, 15);
  assert.equal(quarter[0], '2026-01-01T00:15:00.000Z');
  assert.equal(quarter.at(-1), '2026-01-01T03:45:00.000Z', 'up to 03:59:59, where the clock stands');
  assert.equal(r.table.nextMs('hourly'), T0 + 4 * hour);
  assert.equal(r.table.nextMs('nope'), null);
  await r.table.close();
  assert.equal(clock.pending, 0, 'close leaves no timer');
});

test('timetable: due times missed while the process was down are one run at once, then the next due time after it', async () => {
  // The last run started at T0 + 1 h; the process comes back at T0 + 5 h 30 min: 4 due times missed.
  const clock = new FakeClock(T0 + 5 * hour + 30 * minute);
  const r = recorder(clock);
  r.table.add('a', every(hour), T0 + hour);
  await settle();
  assert.equal(r.runs.length, 1, 'one run for all the missed due times');
  assert.deepEqual(r.runs[0], { id: 'a', dueMs: T0 + 2 * hour, startedMs: T0 + 5 * hour + 30 * minute });
  assert.equal(r.table.nextMs('a'), T0 + 6 * hour, 'then the next due time after the start, not the missed ones');
  await clock.advance(29 * minute);
  assert.equal(r.runs.length, 1);
  await clock.advance(minute);
  assert.equal(r.runs.length, 2);
  assert.equal(r.runs[1].startedMs, T0 + 6 * hour);
  // One whose due time has not come yet waits for it.
  const fresh = recorder(new FakeClock(T0 + 30 * minute));
  fresh.table.add('b', every(hour), T0);
  await settle();
  assert.equal(fresh.runs.length, 0);
  await r.table.close();
  await fresh.table.close();
});

test('timetable: a run that outlasts its period is not overlapped; the due times it outlasted are one run right after it', async () => {
  const clock = new FakeClock(T0);
  const r = recorder(clock, { hold: true });
  r.table.add('slow', every(hour), T0);
  await clock.advance(hour);
  assert.equal(r.runs.length, 1);
  assert.equal(r.table.running('slow'), true);
  assert.equal(r.table.nextMs('slow'), T0 + 2 * hour, 'while it runs: the first due time after its start');
  // 2 h 30 min more: due times at 2 h, 3 h and 4 h pass while it runs.
  await clock.advance(2 * hour + 30 * minute);
  assert.equal(r.runs.length, 1, 'no second run while the first runs');
  r.releases.shift()!();
  await settle();
  assert.equal(r.runs.length, 2, 'the due times it outlasted: one run, at once');
  assert.deepEqual(r.runs[1], { id: 'slow', dueMs: T0 + 2 * hour, startedMs: T0 + 3 * hour + 30 * minute });
  r.releases.shift()!();
  await settle();
  assert.equal(r.runs.length, 2);
  assert.equal(r.table.running('slow'), false);
  assert.equal(r.table.nextMs('slow'), T0 + 4 * hour);
  await clock.advance(30 * minute);
  assert.equal(r.runs.length, 3);
  r.releases.shift()!();
  await settle();
  assert.equal(r.maxConcurrent(), 1, 'never two runs of the entry at once');
  await r.table.close();
});

test('timetable: a failed run is a run: the error goes to onError and the next due time follows as usual', async () => {
  const clock = new FakeClock(T0);
  const r = recorder(clock, { fail: true });
  r.table.add('f', every(hour), T0);
  await clock.advance(2 * hour);
  assert.equal(r.runs.length, 2);
  assert.deepEqual(r.errors.map((e) => (e as Error).message), ['run of f failed', 'run of f failed']);
  assert.equal(r.table.nextMs('f'), T0 + 3 * hour);
  await r.table.close();
});

test('timetable: a removed entry runs no more; remove resolves once its run under way has ended; close waits for runs', async () => {
  const clock = new FakeClock(T0);
  const r = recorder(clock, { hold: true });
  r.table.add('a', every(hour), T0);
  r.table.add('b', every(hour), T0);
  assert.throws(() => r.table.add('a', every(hour), T0), /exists already/);
  await clock.advance(hour);
  assert.equal(r.runs.length, 2);
  let removed = false;
  const removing = r.table.remove('a').then(() => (removed = true));
  await settle();
  assert.equal(removed, false, 'its run still runs');
  assert.equal(r.table.nextMs('a'), null);
  r.releases.shift()!();
  await removing;
  await clock.advance(3 * hour);
  assert.deepEqual(r.runs.map((x) => x.id), ['a', 'b'], 'a runs no more; b still runs its first');
  let closed = false;
  const closing = r.table.close().then(() => (closed = true));
  await settle();
  assert.equal(closed, false, 'close waits for the run of b');
  r.releases.shift()!();
  await closing;
  await clock.advance(5 * hour);
  assert.deepEqual(r.runs.map((x) => x.id), ['a', 'b'], 'nothing runs after close');
  await r.table.remove('b');
});

test('timetable: timers that fire early (a capped wait) wait again; a clock set forward is noticed within the cap', async () => {
  const clock = new FakeClock(T0, { waitMsMax: minute });
  const r = recorder(clock);
  r.table.add('a', every(24 * hour), T0);
  await clock.advance(23 * hour);
  assert.equal(r.runs.length, 0, 'many early wake-ups, no run');
  clock.set(T0 + 30 * hour); // the wall clock stepped forward past the due time
  await clock.advance(minute);
  assert.equal(r.runs.length, 1);
  assert.equal(r.runs[0].dueMs, T0 + 24 * hour);
  await r.table.close();
});
