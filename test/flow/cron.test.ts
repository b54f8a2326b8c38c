/**
 * Cron expressions: what each field form allows, the errors that name the field, and the next
 * matching minute, by hand-worked cases and against a minute-by-minute model on seeded random
 * expressions.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CronError, nextCronMs, parseCron } from '../../src/flow/index.ts';
import { Rng, testSeed } from '../helpers/data.ts';

const at = (iso: string): number => Date.parse(iso);
const iso = (ms: number): string => new Date(ms).toISOString();
const next = (expr: string, after: string): string => iso(nextCronMs(parseCron(expr), at(after)));

test('cron: lists, ranges, steps and names become the values each field allows; weekday 7 is Sunday', () => {
  const c = parseCron(' 5,10-12,*/20 0-23/6 1,15 jan,Mar-may,12 MON-fri,7 ');
  assert.equal(c.source, '5,10-12,*/20 0-23/6 1,15 jan,Mar-may,12 MON-fri,7');
  assert.deepEqual(c.minutes, [0, 5, 10, 11, 12, 20, 40]);
  assert.deepEqual(c.hours, [0, 6, 12, 18]);
  assert.deepEqual(c.daysOfMonth, [1, 15]);
  assert.deepEqual(c.months, [1, 3, 4, 5, 12]);
  assert.deepEqual(c.daysOfWeek, [0, 1, 2, 3, 4, 5]);
  assert.equal(c.domStar, false);
  assert.equal(c.dowStar, false);
  const star = parseCron('* * * * *');
  assert.equal(star.minutes.length, 60);
  assert.deepEqual(star.daysOfWeek, [0, 1, 2, 3, 4, 5, 6], '0-7 folds 7 into 0');
  assert.ok(star.domStar && star.dowStar);
  assert.deepEqual(parseCron('10/15 * * * *').minutes, [10, 25, 40, 55], 'a/n runs from a to the end of the field');
  assert.deepEqual(parseCron('*/2 * * * *').minutes.length, 30);
  assert.equal(parseCron('0 0 */2 * 1').domStar, true, 'a step over * counts as a star for the day rule');
});

test('cron: the macros stand for their usual expressions', () => {
  const same = (a: string, b: string) => {
    const { source: _a, ...x } = parseCron(a);
    const { source: _b, ...y } = parseCron(b);
    assert.deepEqual(x, y, a);
  };
  same('@hourly', '0 * * * *');
  same('@daily', '0 0 * * *');
  same('@midnight', '0 0 * * *');
  same('@weekly', '0 0 * * 0');
  same('@monthly', '0 0 1 * *');
  same('@yearly', '0 0 1 1 *');
  same('@ANNUALLY', '0 0 1 1 *');
});

test('cron: a malformed expression is refused with a message naming the field and why', () => {
  const refused = (expr: string, why: RegExp) => {
    assert.throws(() => parseCron(expr), (err: unknown) => err instanceof CronError && err.code === 'FLOW_CRON_INVALID' && why.test(err.message), expr);
  };
  refused('', /^Empty cron expression$/);
  refused('* * * *', /has 4 fields; expected 5: minute hour day-of-month month day-of-week/);
  refused('* * * * * *', /has 6 fields/);
  refused('60 * * * *', /^The minute 60 is out of range 0-59$/);
  refused('* 24 * * *', /hour 24 is out of range 0-23/);
  refused('* * 0 * *', /day of month 0 is out of range 1-31/);
  refused('* * * 13 *', /month 13 is out of range 1-12/);
  refused('* * * * 8', /day of week 8 is out of range 0-7/);
  refused('5-1 * * * *', /^Bad range in minute '5-1': 5 is after 1$/);
  refused('*/0 * * * *', /Bad step in minute '\*\/0'/);
  refused('1,,2 * * * *', /Empty item in the minute field/);
  refused('* * * foo *', /Bad month 'foo': expected 1-12 or a name \(jan, feb/);
  refused('* * * * sunday', /Bad day of week 'sunday'/);
  refused('jan * * * *', /Bad minute 'jan'$/);
  refused('-1 * * * *', /Bad minute ''/);
  refused('*/5/2 * * * *', /Bad minute/);
  refused('@reboot', /Unknown cron macro @reboot/);
  refused('0 0 30 2 *', /names no day that its months have/);
  refused('0 0 31 4,6,9,11 *', /names no day that its months have/);
  refused(`${'1,'.repeat(200)}1 * * * *`, /longer than 256 characters/);
  // With the weekday restricted too, a day matches by either field: not refused.
  assert.doesNotThrow(() => parseCron('0 0 30 2 mon'));
});

test('cron: the next minute is strictly after the time given, in UTC', () => {
  assert.equal(next('*/15 * * * *', '2026-01-01T10:07:30Z'), '2026-01-01T10:15:00.000Z');
  assert.equal(next('*/15 * * * *', '2026-01-01T10:15:00Z'), '2026-01-01T10:30:00.000Z', 'not the minute given');
  assert.equal(next('*/15 * * * *', '2026-01-01T10:14:59.999Z'), '2026-01-01T10:15:00.000Z');
  assert.equal(next('*/15 * * * *', '2026-01-01T23:50:00Z'), '2026-01-02T00:00:00.000Z');
  assert.equal(next('0 2 * * *', '2026-01-01T02:00:00Z'), '2026-01-02T02:00:00.000Z');
  assert.equal(next('0 2 * * *', '2026-01-01T01:59:00Z'), '2026-01-01T02:00:00.000Z');
  assert.equal(next('0 0 1 1 *', '2026-06-01T00:00:00Z'), '2027-01-01T00:00:00.000Z');
  assert.equal(next('0 12 31 * *', '2026-04-01T00:00:00Z'), '2026-05-31T12:00:00.000Z', 'April has no 31st');
  assert.equal(next('0 0 29 2 *', '2026-03-01T00:00:00Z'), '2028-02-29T00:00:00.000Z');
  assert.equal(next('0 0 29 2 *', '2096-03-01T00:00:00Z'), '2104-02-29T00:00:00.000Z', '2100 is no leap year');
  assert.equal(next('@weekly', '2026-01-01T00:00:00Z'), '2026-01-04T00:00:00.000Z', '2026-01-04 is a Sunday');
  assert.equal(next('0 0 * * mon-fri', '2026-01-02T00:00:00Z'), '2026-01-05T00:00:00.000Z', 'Friday to Monday');
  // Both day fields restricted: either matches. 2026-01-01 is a Thursday; the 2nd a Friday.
  assert.equal(next('30 4 1,15 * 5', '2026-01-01T05:00:00Z'), '2026-01-02T04:30:00.000Z');
  assert.equal(next('30 4 1,15 * 5', '2026-01-10T05:00:00Z'), '2026-01-15T04:30:00.000Z');
  // A starred day field: both must match. Odd days that are Mondays.
  assert.equal(next('0 0 */2 * 1', '2026-01-01T00:00:00Z'), '2026-01-05T00:00:00.000Z');
  assert.equal(next('0 0 */2 * 1', '2026-01-05T00:00:00Z'), '2026-01-19T00:00:00.000Z');
  assert.equal(next('59 23 31 12 *', '2026-12-31T23:59:00Z'), '2027-12-31T23:59:00.000Z');
  // Rare days come, however far: Tuesday the 1st, 8th, ... of September; a 29th of February that is a Sunday.
  assert.equal(next('13 2 */7 9 2', '2027-01-01T00:00:00Z'), '2037-09-01T02:13:00.000Z');
  assert.equal(next('0 0 29 2 */7', '2033-01-01T00:00:00Z'), '2060-02-29T00:00:00.000Z');
});

/**
 * One field generated as text, with the values it allows worked out alongside: `*` forms cover
 * min to `starMax` (the field's end), values and ranges stay within min to max.
 */
function genField(rng: Rng, min: number, max: number, starMax = max): { text: string; values: Set<number>; star: boolean } {
  const values = new Set<number>();
  const kind = rng.int(6);
  if (kind === 0) {
    for (let v = min; v <= starMax; v++) values.add(v);
    return { text: '*', values, star: true };
  }
  if (kind === 1) {
    const step = rng.range(1, Math.max(1, Math.floor((starMax - min) / 2)));
    for (let v = min; v <= starMax; v += step) values.add(v);
    return { text: `*/${step}`, values, star: true };
  }
  const items: string[] = [];
  for (let n = rng.range(1, 3); n > 0; n--) {
    const a = rng.range(min, max);
    const b = rng.range(a, max);
    if (rng.int(2) === 0) {
      items.push(String(a));
      values.add(a);
    } else {
      const step = rng.range(1, 5);
      items.push(step === 1 ? `${a}-${b}` : `${a}-${b}/${step}`);
      for (let v = a; v <= b; v += step) values.add(v);
    }
  }
  return { text: items.join(','), values, star: false };
}

test('cron: the next minute agrees with a minute-by-minute model on seeded random expressions', (t) => {
  const seed = testSeed(t);
  const rng = new Rng(seed);
  for (let i = 0; i < 300; i++) {
    const minute = genField(rng, 0, 59);
    const hour = genField(rng, 0, 23);
    const dom = genField(rng, 1, 28, 31); // values every month has: no expression the parser refuses
    // Months mostly `*`, else lists that keep the search within a year.
    const month = rng.int(3) === 0 ? genField(rng, 1, 12) : { text: '*', values: new Set([...Array(12).keys()].map((m) => m + 1)), star: true };
    const dow = genField(rng, 0, 6); // `*` is 0-7, the same days
    const expr = [minute, hour, dom, month, dow].map((f) => f.text).join(' ');
    const dayMatches = (d: Date): boolean => {
      const dayOk = dom.star || dow.star ? dom.values.has(d.getUTCDate()) && dow.values.has(d.getUTCDay()) : dom.values.has(d.getUTCDate()) || dow.values.has(d.getUTCDay());
      return dayOk && month.values.has(d.getUTCMonth() + 1);
    };
    const matches = (ms: number): boolean => {
      const d = new Date(ms);
      return dayMatches(d) && minute.values.has(d.getUTCMinutes()) && hour.values.has(d.getUTCHours());
    };
    const after = Date.UTC(2026, 0, 1) + rng.int(4 * 365 * 24 * 60) * 60_000 + rng.int(60_000);
    const got = nextCronMs(parseCron(expr), after);
    const context = `seed ${seed}, case ${i}: '${expr}' after ${iso(after)} gave ${iso(got)}`;
    assert.ok(got > after && got % 60_000 === 0, context);
    assert.ok(matches(got), `${context}: which it does not match`);
    // No minute between matches: days that cannot match are stepped over whole.
    let t0 = Math.floor(after / 60_000) * 60_000 + 60_000;
    while (t0 < got) {
      const d = new Date(t0);
      if (!dayMatches(d)) {
        t0 = Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1);
        continue;
      }
      assert.ok(!matches(t0), `${context}, but ${iso(t0)} matches before it`);
      t0 += 60_000;
    }
  }
});
