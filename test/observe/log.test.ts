/** The logger: JSON lines with time, level, component and bound fields; levels; the text format for terminals. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Logger, ObserveError, ObserveErrorCode, parseLogFormat, parseLogLevel } from '../../src/observe/index.ts';

const fixedNow = () => new Date('2030-01-02T03:04:05.678Z');

function capture(level: 'debug' | 'info' | 'warn' | 'error' = 'info', format: 'json' | 'text' = 'json'): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  return { log: Logger.create({ level, format, write: (line) => lines.push(line), now: fixedNow }), lines };
}

test('logger writes one JSON object per line with time, level, component, msg and the bound fields', () => {
  const { log, lines } = capture();
  const api = log.child({ component: 'api' }).child({ requestId: 'r-1', disk: 'vm1' });
  api.info('request failed', { status: 404 });
  assert.equal(lines.length, 1);
  assert.ok(lines[0].endsWith('\n') && !lines[0].slice(0, -1).includes('\n'), 'one line');
  assert.deepEqual(JSON.parse(lines[0]), { time: '2030-01-02T03:04:05.678Z', level: 'info', component: 'api', msg: 'request failed', requestId: 'r-1', disk: 'vm1', status: 404 });
  // The first keys are the fixed ones, in this order, so lines read alike.
  assert.deepEqual(Object.keys(JSON.parse(lines[0])).slice(0, 4), ['time', 'level', 'component', 'msg']);
});

test('logger drops records below its level and writes those at or above it', () => {
  const { log, lines } = capture('warn');
  log.debug('d');
  log.info('i');
  log.warn('w');
  log.error('e');
  assert.deepEqual(lines.map((l) => JSON.parse(l).level), ['warn', 'error']);
  assert.equal(log.enabled('info'), false);
  assert.equal(log.enabled('warn'), true);
  assert.equal(Logger.silent().enabled('error'), false);
});

test('logger writes errors with their code, message and stack, and bigints as strings', () => {
  const { log, lines } = capture();
  const err = new ObserveError(ObserveErrorCode.INVALID, 'bad thing');
  log.child({ component: 'nbd' }).error('failed', { err, handle: 42n });
  const r = JSON.parse(lines[0]);
  assert.equal(r.err.code, 'OBSERVE_INVALID');
  assert.equal(r.err.message, 'bad thing');
  assert.match(r.err.stack, /ObserveError: bad thing/);
  assert.equal(r.handle, '42');
});

test('a record whose fields do not serialise is still written, with its message', () => {
  const { log, lines } = capture();
  const cycle: Record<string, unknown> = {};
  cycle.self = cycle;
  log.info('odd', { cycle });
  const r = JSON.parse(lines[0]);
  assert.equal(r.msg, 'odd');
  assert.equal(r.logError, 'fields not serialisable');
});

test('the text format is one readable line per record: time, level, component, message, fields', () => {
  const { log, lines } = capture('debug', 'text');
  log.child({ component: 'api', requestId: 'abc' }).warn('request failed: No disk', { status: 404, path: '/api/v1/disks/x y' });
  assert.equal(lines[0], '2030-01-02T03:04:05.678Z WARN  api: request failed: No disk requestId=abc status=404 path="/api/v1/disks/x y"\n');
  log.error('boom', { err: new Error('inner') });
  assert.match(lines[1], /^2030-01-02T03:04:05\.678Z ERROR tessera: boom err=inner\n {4}Error: inner\n {5,}at /);
});

test('level and format names from a user are checked', () => {
  assert.equal(parseLogLevel('debug'), 'debug');
  assert.equal(parseLogFormat('text'), 'text');
  assert.throws(() => parseLogLevel('verbose'), (err: unknown) => err instanceof ObserveError && /expected one of debug, info, warn, error/.test(err.message));
  assert.throws(() => parseLogFormat('yaml'), (err: unknown) => err instanceof ObserveError && err.code === ObserveErrorCode.INVALID);
});

test('once the logger has a clock, every record of its root and children carries a new hlc value', () => {
  const { log, lines } = capture('debug', 'json');
  const nbd = log.child({ component: 'nbd' });
  nbd.info('before the clock');
  let n = 117047296000000005n;
  let reads = 0;
  log.setClock(() => {
    reads++;
    return String(n++);
  });
  nbd.debug('one', { conn: 1 });
  log.warn('two');
  nbd.child({ conn: 2 }).error('three');
  const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.equal(records[0].hlc, undefined, 'no clock, no hlc');
  assert.deepEqual(records.slice(1).map((r) => r.hlc), ['117047296000000005', '117047296000000006', '117047296000000007']);
  // After the four fixed keys, before the record's own fields.
  assert.deepEqual(Object.keys(records[1]), ['time', 'level', 'component', 'msg', 'hlc', 'conn']);
  // A record below the level reads no clock value.
  const quiet = capture('warn');
  let quietReads = 0;
  quiet.log.setClock(() => String(++quietReads));
  quiet.log.info('dropped');
  assert.equal(quietReads, 0);
  assert.equal(reads, 3);
  // The text format shows it as a field.
  const text = capture('info', 'text');
  text.log.setClock(() => '117047296000000005');
  text.log.child({ component: 'cluster' }).info('joined', { node: 'n1' });
  assert.equal(text.lines[0], '2030-01-02T03:04:05.678Z INFO  cluster: joined hlc=117047296000000005 node=n1\n');
  // And a clock can be given at creation.
  const made: string[] = [];
  Logger.create({ write: (l) => made.push(l), now: fixedNow, hlc: () => '9' }).info('x');
  assert.equal(JSON.parse(made[0]).hlc, '9');
});
