import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LabError, LabErrorCode, parseTopology, routesOf } from '../../src/lab/index.ts';
import { formatDelay, formatLoss, formatRate, parseDelay, parseLoss, parseQueue, parseRate } from '../../src/lab/units.ts';

test('lab units read delays in us/ms/s, rates in kbit/mbit/gbit and loss in %', () => {
  assert.deepEqual(parseDelay('50ms'), { ok: true, value: 50_000_000 });
  assert.deepEqual(parseDelay('500us'), { ok: true, value: 500_000 });
  assert.deepEqual(parseDelay('1.5ms'), { ok: true, value: 1_500_000 });
  assert.deepEqual(parseDelay('2s'), { ok: true, value: 2_000_000_000 });
  assert.deepEqual(parseDelay('0'), { ok: true, value: 0 });
  for (const bad of ['50', '50 ms', '-1ms', 'ms', '61s', '1h']) assert.equal(parseDelay(bad).ok, false, bad);
  assert.deepEqual(parseRate('100mbit'), { ok: true, value: 100_000_000 });
  assert.deepEqual(parseRate('1gbit'), { ok: true, value: 1_000_000_000 });
  assert.deepEqual(parseRate('512kbit'), { ok: true, value: 512_000 });
  assert.deepEqual(parseRate('1.5Gbit'), { ok: true, value: 1_500_000_000 });
  assert.deepEqual(parseRate('none'), { ok: true, value: 0 });
  for (const bad of ['100', '100mbps', '100MB', '1bit', '2000gbit']) assert.equal(parseRate(bad).ok, false, bad);
  assert.deepEqual(parseLoss('1%'), { ok: true, value: 0.01 });
  assert.deepEqual(parseLoss('0.1%'), { ok: true, value: 0.001 });
  assert.deepEqual(parseLoss('0'), { ok: true, value: 0 });
  for (const bad of ['1', '101%', '-1%', 'some']) assert.equal(parseLoss(bad).ok, false, bad);
  assert.deepEqual(parseQueue('100'), { ok: true, value: 100 });
  for (const bad of ['0', '1.5', '99999', 'x']) assert.equal(parseQueue(bad).ok, false, bad);
  assert.equal(formatDelay(50_000_000), '50ms');
  assert.equal(formatDelay(250_000), '250us');
  assert.equal(formatDelay(1_500_000), '1.5ms');
  assert.equal(formatRate(100_000_000), '100mbit');
  assert.equal(formatRate(1_500_000_000), '1.5gbit');
  assert.equal(formatRate(0), 'none');
  assert.equal(formatLoss(0.001), '0.1%');
});

test('lab topology: the issue\'s format, addresses numbered in order, defaults for what is left out', () => {
  const t = parseTopology('{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"a-b","endpoints":["a","b"],"delay":"50ms","rate":"100mbit","loss":"1%"}]}');
  assert.deepEqual(t.hosts, [{ name: 'a', address: '10.200.0.1' }, { name: 'b', address: '10.200.0.2' }]);
  assert.deepEqual(t.links, [{ name: 'a-b', endpoints: ['a', 'b'], params: { delayNs: 50_000_000, jitterNs: 0, rateBps: 100_000_000, loss: 0.01, queue: 1000 } }]);
  // A given address is kept and skipped by the numbering; a link's name defaults to its endpoints.
  const u = parseTopology('{"hosts":[{"name":"x","address":"10.200.0.1"},{"name":"y"}],"links":[{"endpoints":["x","y"],"jitter":"2ms","queue":50}]}');
  assert.deepEqual(u.hosts.map((h) => h.address), ['10.200.0.1', '10.200.0.2']);
  assert.equal(u.links[0].name, 'x-y');
  assert.equal(u.links[0].params.jitterNs, 2_000_000);
  assert.equal(u.links[0].params.queue, 50);
  assert.equal(u.seed, undefined);
  assert.equal(parseTopology('{"hosts":[{"name":"a"}],"seed":7}').seed, 7);
});

test('lab topology: each mistake is one line naming the file, the host or link and the rule', () => {
  const cases: Array<[string, RegExp]> = [
    ['{', /^t\.json: not JSON/],
    ['[]', /expected an object with "hosts" and "links"/],
    ['{"hosts":[]}', /"hosts" must be a non-empty array/],
    ['{"hosts":[{"name":"a"}],"nodes":[]}', /unknown field 'nodes'/],
    ['{"hosts":[{"name":"a"}],"seed":-1}', /seed -1 must be a whole number/],
    ['{"hosts":[{"name":"a"}],"seed":"x"}', /seed "x" must be a whole number/],
    ['{"hosts":[{"name":"a"},{"name":"a"}]}', /host 'a' is named twice/],
    ['{"hosts":[{"name":"1a"}]}', /host 1: name "1a" must be/],
    ['{"hosts":[{"name":"a","address":"300.1.1.1"}]}', /address "300.1.1.1" is not an IPv4 host address/],
    ['{"hosts":[{"name":"a","address":"10.0.0.1"},{"name":"b","address":"10.0.0.1"}]}', /hosts 'a' and 'b' have the same address 10\.0\.0\.1/],
    ['{"hosts":[{"name":"a"}],"links":[{"name":"l","endpoints":["a","c"]}]}', /link 'l': endpoint 'c' is not a host/],
    ['{"hosts":[{"name":"a"}],"links":[{"name":"l","endpoints":["a","a"]}]}', /link 'l': both endpoints are 'a'/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"l","endpoints":["a","b"],"delay":"50 parsecs"}]}', /link 'l': delay '50 parsecs' is not a delay such as 50ms/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"l","endpoints":["a","b"],"rate":"100mbps"}]}', /link 'l': rate '100mbps' is not a rate/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"l","endpoints":["a","b"],"loss":"2"}]}', /link 'l': loss '2' is not a loss such as 1%/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"l","endpoints":["a","b"],"dealy":"5ms"}]}', /link 'l': unknown field 'dealy'/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"a-very-long-link-name","endpoints":["a","b"]}]}', /must be 1-15 letters/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"l","endpoints":["a","b"]},{"name":"m","endpoints":["b","a"]}]}', /links 'l' and 'm' both join/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"l","endpoints":["a","b"]},{"name":"l","endpoints":["a","b"]}]}', /link 'l' is named twice/],
  ];
  for (const [text, message] of cases) {
    assert.throws(
      () => parseTopology(text, 't.json'),
      (err: unknown) => err instanceof LabError && err.code === LabErrorCode.INVALID && message.test(err.message) && !err.message.includes('\n'),
      text,
    );
  }
});

test('lab routes: every host reaches every other through the first link of a shortest path', () => {
  // Two sites joined by a WAN link between their routers, as docs/lab.md's example.
  const t = parseTopology(JSON.stringify({
    hosts: [{ name: 'a1' }, { name: 'a2' }, { name: 'ra' }, { name: 'rb' }, { name: 'b1' }, { name: 'lonely' }],
    links: [
      { name: 'a1-ra', endpoints: ['a1', 'ra'] },
      { name: 'a2-ra', endpoints: ['a2', 'ra'] },
      { name: 'wan', endpoints: ['ra', 'rb'], delay: '50ms' },
      { name: 'rb-b1', endpoints: ['rb', 'b1'] },
    ],
  }));
  const routes = routesOf(t);
  const of = (h: string) => Object.fromEntries(routes.get(h)!.map((r) => [r.to, r.dev]));
  assert.deepEqual(of('a1'), { ra: 'a1-ra', a2: 'a1-ra', rb: 'a1-ra', b1: 'a1-ra' });
  assert.deepEqual(of('ra'), { a1: 'a1-ra', a2: 'a2-ra', rb: 'wan', b1: 'wan' });
  assert.deepEqual(of('b1'), { rb: 'rb-b1', ra: 'rb-b1', a1: 'rb-b1', a2: 'rb-b1' });
  assert.deepEqual(of('lonely'), {});
  assert.equal(routes.get('a1')!.find((r) => r.to === 'b1')!.address, '10.200.0.5');
});
