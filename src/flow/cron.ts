/**
 * Standard 5-field cron expressions (crontab(5), as Vixie cron reads them), evaluated in UTC:
 * `minute hour day-of-month month day-of-week`, each `*`, a value, a range `a-b`, a step `*\/n`,
 * `a-b/n` or `a/n` (from a to the field's end), or a comma-separated list of those; months and
 * weekdays also by their English three-letter names (`jan`, `mon-fri`), weekday 0 and 7 both
 * Sunday. When both day fields are restricted (neither starts with `*`), a day matches if either
 * does; otherwise both must (Vixie's rule). `@hourly`, `@daily` (`@midnight`), `@weekly`,
 * `@monthly`, `@yearly` (`@annually`) stand for their usual expressions.
 *
 * UTC, not the host's zone: no hour is skipped or repeated at a daylight-saving change, and days
 * are the days backup retention counts in (docs/backup.md, "Prune").
 */
import { CodedError } from '../util/coded-error.ts';

/** A parsed expression: the values each field allows. */
export interface Cron {
  /** The expression as given (trimmed). */
  readonly source: string;
  readonly minutes: readonly number[];
  readonly hours: readonly number[];
  readonly daysOfMonth: readonly number[];
  readonly months: readonly number[];
  /** 0 (Sunday) to 6; a 7 given is folded into 0. */
  readonly daysOfWeek: readonly number[];
  /** Whether the day-of-month and day-of-week fields start with `*` (then both must match, else either). */
  readonly domStar: boolean;
  readonly dowStar: boolean;
}

/** Why an expression was refused (parseCron), with the one code `FLOW_CRON_INVALID`. */
export class CronError extends CodedError<'FLOW_CRON_INVALID'> {
  constructor(message: string) {
    super('FLOW_CRON_INVALID', message);
  }
}

/** Longest expression taken. */
const sourceCharsMax = 256;

const monthNames = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const dayNames = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

/** The five fields: name for messages, bounds, and names standing for values. */
const fields: readonly { name: string; min: number; max: number; names: readonly string[] | null; first: number }[] = [
  { name: 'minute', min: 0, max: 59, names: null, first: 0 },
  { name: 'hour', min: 0, max: 23, names: null, first: 0 },
  { name: 'day of month', min: 1, max: 31, names: null, first: 0 },
  { name: 'month', min: 1, max: 12, names: monthNames, first: 1 },
  { name: 'day of week', min: 0, max: 7, names: dayNames, first: 0 },
];

const macros: Record<string, string> = {
  '@hourly': '0 * * * *',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@weekly': '0 0 * * 0',
  '@monthly': '0 0 1 * *',
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
};

/** Days in each month at most (February in a leap year). */
const daysInMonthMax = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

/** Parses a cron expression; throws CronError saying which field is wrong and why. */
export function parseCron(text: string): Cron {
  const source = text.trim();
  if (source.length === 0) throw new CronError('Empty cron expression');
  if (source.length > sourceCharsMax) throw new CronError(`Cron expression longer than ${sourceCharsMax} characters`);
  let expr = source;
  if (expr.startsWith('@')) {
    const m = macros[expr.toLowerCase()];
    if (m === undefined) throw new CronError(`Unknown cron macro ${expr}; expected one of ${Object.keys(macros).join(', ')}`);
    expr = m;
  }
  const parts = expr.split(/\s+/);
  if (parts.length !== 5) throw new CronError(`Cron expression '${source}' has ${parts.length} fields; expected 5: minute hour day-of-month month day-of-week`);
  const values = parts.map((p, i) => parseField(p, i));
  const daysOfWeek = [...new Set(values[4].map((d) => d % 7))].sort((a, b) => a - b);
  const cron: Cron = {
    source,
    minutes: values[0],
    hours: values[1],
    daysOfMonth: values[2],
    months: values[3],
    daysOfWeek,
    domStar: parts[2].startsWith('*'),
    dowStar: parts[4].startsWith('*'),
  };
  // A day of the month no allowed month has (`30 2`, `31 4,6`) would never come: refused here,
  // not searched for ever. With the weekday field restricted too, a day matches by either field.
  if (cron.dowStar || cron.domStar) {
    const possible = cron.months.some((m) => cron.daysOfMonth.some((d) => d <= daysInMonthMax[m - 1]));
    if (!possible) throw new CronError(`Cron expression '${source}' names no day that its months have`);
  }
  return cron;
}

/** The sorted values of field `index` of `text`. */
function parseField(text: string, index: number): number[] {
  const f = fields[index];
  const out = new Set<number>();
  for (const item of text.split(',')) {
    if (item === '') throw new CronError(`Empty item in the ${f.name} field '${text}'`);
    const m = /^([^/]+)(?:\/(\d+))?$/.exec(item);
    if (m === null) throw new CronError(`Bad ${f.name} '${item}'`);
    const [, range, stepText] = m;
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!Number.isSafeInteger(step) || step < 1) throw new CronError(`Bad step in ${f.name} '${item}': expected a whole number from 1`);
    let lo: number;
    let hi: number;
    if (range === '*') {
      lo = f.min;
      hi = f.max;
    } else {
      const dash = range.indexOf('-');
      if (dash < 0) {
        lo = value(range, index);
        // `a/n` runs from a to the field's end; a value alone is itself.
        hi = stepText === undefined ? lo : f.max;
      } else {
        lo = value(range.slice(0, dash), index);
        hi = value(range.slice(dash + 1), index);
        if (lo > hi) throw new CronError(`Bad range in ${f.name} '${item}': ${lo} is after ${hi}`);
      }
    }
    for (let v = lo; v <= hi; v += step) out.add(v);
  }
  return [...out].sort((a, b) => a - b);
}

/** One value of field `index`: a number in its bounds, or one of its names. */
function value(text: string, index: number): number {
  const f = fields[index];
  let n: number;
  if (/^\d{1,2}$/.test(text)) n = Number(text);
  else {
    const at = f.names === null ? -1 : f.names.indexOf(text.toLowerCase());
    if (at < 0) throw new CronError(`Bad ${f.name} '${text}'${f.names === null ? '' : `: expected ${f.min}-${f.max} or a name (${f.names.join(', ')})`}`);
    n = at + f.first;
  }
  if (n < f.min || n > f.max) throw new CronError(`The ${f.name} ${n} is out of range ${f.min}-${f.max}`);
  return n;
}

const minuteMs = 60_000;

/**
 * How far ahead a match is looked for. A date of an allowed month falls on every weekday within
 * the Gregorian calendar's cycle of 400 years (146097 days, whole weeks), so any expression that
 * parseCron takes matches within it, though rarely soon: Tuesday the 1st, 8th, 15th, 22nd or
 * 29th of September (`* * *\/7 9 2`) is 10 years from 2027 to 2037. The search steps over whole
 * months and days, so even that takes few steps.
 */
const searchYearsMax = 401;

/** The first minute strictly after `afterMs` (ms since the epoch) that `cron` matches, in UTC. */
export function nextCronMs(cron: Cron, afterMs: number): number {
  let t = Math.floor(afterMs / minuteMs) * minuteMs + minuteMs;
  const limit = t + searchYearsMax * 366 * 24 * 60 * minuteMs;
  while (t <= limit) {
    const d = new Date(t);
    const year = d.getUTCFullYear();
    const month = d.getUTCMonth();
    const day = d.getUTCDate();
    const hour = d.getUTCHours();
    if (!cron.months.includes(month + 1)) {
      t = Date.UTC(year, month + 1, 1);
      continue;
    }
    if (!dayMatches(cron, day, d.getUTCDay())) {
      t = Date.UTC(year, month, day + 1);
      continue;
    }
    if (!cron.hours.includes(hour)) {
      t = Date.UTC(year, month, day, hour + 1);
      continue;
    }
    const minute = cron.minutes.find((m) => m >= d.getUTCMinutes());
    if (minute === undefined) {
      t = Date.UTC(year, month, day, hour + 1);
      continue;
    }
    return Date.UTC(year, month, day, hour, minute);
  }
  // parseCron refuses expressions that never match; one that does comes within the limit.
  throw new CronError(`Cron expression '${cron.source}' matches no minute within ${searchYearsMax} years`);
}

function dayMatches(cron: Cron, dayOfMonth: number, dayOfWeek: number): boolean {
  const dom = cron.daysOfMonth.includes(dayOfMonth);
  const dow = cron.daysOfWeek.includes(dayOfWeek);
  return cron.domStar || cron.dowStar ? dom && dow : dom || dow;
}
