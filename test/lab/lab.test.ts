/**
 * `tessera lab`: up, exec, show, set, down, as a user drives them (needs root, iproute2, ping).
 * The accuracy of the links is accuracy.test.ts's.
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { asNobody, cleanup, makeTempDir, run, runOk, spawnTracked, tesseraBin, until } from '../helpers/index.ts';
import { downAllLabs, Lab, median, namespacesLike, processesWith, requireLabTools } from '../helpers/lab.ts';

after(async () => {
  await downAllLabs();
  await cleanup();
});

/** Whether `pid` runs (a zombie, exited and not yet reaped by init, does not). */
function running(pid: number): boolean {
  try {
    return !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const twoHosts = { hosts: [{ name: 'a' }, { name: 'b' }], links: [{ name: 'a-b', endpoints: ['a', 'b'], delay: '5ms' }] };

test('lab up prints each host\'s address; exec runs in the host with the caller\'s cwd, environment and exit status, and passes SIGTERM on; show lists hosts and links', async () => {
  requireLabTools();
  const dir = makeTempDir('tessera-lab-');
  const file = join(dir, 'two.json');
  writeFileSync(file, JSON.stringify(twoHosts));
  const stateDir = join(dir, 'state');
  const up = await run(tesseraBin, ['lab', 'up', file, '--state', stateDir]);
  try {
    assert.equal(up.code, 0, up.stderr);
    assert.match(up.stdout, /^Lab up: 2 hosts, 1 link/);
    assert.match(up.stdout, /^a\s+10\.200\.0\.1\s+tlab-[0-9a-f]{6}-a$/m);
    assert.match(up.stdout, /^b\s+10\.200\.0\.2\s+tlab-[0-9a-f]{6}-b$/m);

    const cwd = makeTempDir('tessera-lab-cwd-');
    const r = await run(tesseraBin, ['lab', 'exec', 'a', '--state', stateDir, '--', 'sh', '-c', 'pwd; echo "$LAB_TEST_VAR"; ip -o -4 addr show dev lo; exit 7'], {
      cwd,
      env: { ...process.env, LAB_TEST_VAR: 'kept' },
    });
    assert.equal(r.code, 7, r.stderr);
    const [pwd, v, ...addrs] = r.stdout.trim().split('\n');
    assert.equal(pwd, cwd);
    assert.equal(v, 'kept');
    assert.ok(addrs.some((l) => l.includes('10.200.0.1/32')), addrs.join('\n'));
    // Host a reaches b, and nothing but its lab: no route to the machine's own networks.
    const ping = await run(tesseraBin, ['lab', 'exec', 'a', '--state', stateDir, '--', 'ping', '-n', '-c', '3', '-i', '0.05', '10.200.0.2']);
    assert.equal(ping.code, 0, ping.stdout);
    const routes = await runOk(tesseraBin, ['lab', 'exec', 'a', '--state', stateDir, '--', 'ip', '-4', 'route', 'show']);
    assert.equal(routes.trim(), '10.200.0.2 dev a-b scope link src 10.200.0.1');

    // SIGTERM to `tessera lab exec` goes on to its command, whose status it then exits with.
    const sleeper = spawnTracked(tesseraBin, ['lab', 'exec', 'a', '--state', stateDir, '--', 'sleep', '987653']);
    const sleeps = async () => (await processesWith('sleep 987653')).filter((l) => /^\S+\s+sleep 987653$/.test(l.trim()));
    await until(async () => (await sleeps()).length === 1, 10_000, 'the sleep to start', 20);
    const exited = new Promise((resolve) => sleeper.once('exit', (code, sig) => resolve(code ?? sig)));
    sleeper.kill('SIGTERM');
    assert.equal(await exited, 143);
    assert.deepEqual(await sleeps(), []);

    const show = await run(tesseraBin, ['lab', 'show', '--state', stateDir]);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /^a-b\s+a <-> b\s+5ms\s+0\s+none\s+0%\s+1000\s+\d+ \/ \d+\s+0 \/ 0\s+running$/m);
    const json = JSON.parse((await run(tesseraBin, ['lab', 'show', '--state', stateDir, '--json'])).stdout);
    assert.equal(json.links[0].directions[0].from, 'a');
    assert.ok(json.links[0].directions[0].packets >= 3);
  } finally {
    const down = await run(tesseraBin, ['lab', 'down', '--state', stateDir]);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(down.stdout, 'Lab down: removed 2 namespaces and 1 link\n');
  }
});

test('lab set changes a running link in both directions; a bad value or link is one line', async () => {
  const lab = await Lab.up(twoHosts);
  const before = median(await lab.ping('a', 'b', 10));
  // Loose bounds (accuracy.test.ts holds the tight ones): a busy machine must not fail this test,
  // and the stage may release a packet up to its wake-up latency (at most 0.2 ms) early.
  assert.ok(before >= 9 && before < 40, `5 ms each way: ${before} ms`);
  await lab.set('a-b', { delay: '40ms' });
  const slowed = median(await lab.ping('a', 'b', 10));
  assert.ok(slowed >= 79 && slowed < 120, `40 ms each way: ${slowed} ms`);
  // Jitter: each packet 20 ms ± 5 ms each way, so round trips spread over 30..50 ms.
  await lab.set('a-b', { delay: '20ms', jitter: '5ms' });
  const jittered = await lab.ping('a', 'b', 30, 0.06);
  assert.ok(Math.min(...jittered) >= 29, `no round trip under 2 × 15 ms (less the early release): ${jittered.join(' ')}`);
  assert.ok(Math.max(...jittered) - Math.min(...jittered) > 4, `round trips spread: ${jittered.join(' ')}`);
  await lab.set('a-b', { loss: '100%' });
  assert.deepEqual(await lab.ping('a', 'b', 5, 0.05), [], 'every packet lost');
  await lab.set('a-b', { loss: '0', delay: '1ms', rate: '10mbit', queue: '50', jitter: '0' });
  assert.equal((await lab.ping('a', 'b', 5, 0.05)).length, 5);
  const show = await lab.show();
  assert.deepEqual(
    { delay: show.links[0].delay, rate: show.links[0].rate, loss: show.links[0].loss, queue: show.links[0].queue },
    { delay: '1ms', rate: '10mbit', loss: '0%', queue: 50 },
  );
  assert.ok(show.links[0].directions[0].lost >= 5, 'the stage counted the lost pings');

  const bad = await lab.tessera(['lab', 'set', 'a-b', '--delay', 'soon']);
  assert.equal(bad.code, 2);
  assert.equal(bad.stderr, "tessera: error: link 'a-b': delay 'soon' is not a delay such as 50ms or 500us (us, ms or s; at most 60s)\n");
  const unknown = await lab.tessera(['lab', 'set', 'x-y', '--delay', '1ms']);
  assert.equal(unknown.code, 1);
  assert.equal(unknown.stderr, "tessera: error: no link 'x-y' in the lab (links: a-b)\n");
  const nothing = await lab.tessera(['lab', 'set', 'a-b']);
  assert.equal(nothing.code, 2);
  assert.match(nothing.stderr, /^tessera: error: nothing to change: give at least one of --delay/);
  await lab.down();
});

test("a link's queue bounds what waits on a saturated link: what does not fit is dropped, and the delay it adds is the queue at the rate", async (t) => {
  const lab = await Lab.up({ hosts: [{ name: 'a' }, { name: 'b' }], links: [{ name: 'a-b', endpoints: ['a', 'b'], delay: '1ms', rate: '10mbit', queue: 10 }] });
  await lab.iperfServer('b', 5201);
  // 15 Mbit/s of UDP into a 10 Mbit/s link for 4 s, pings alongside: 10 packets of 1500 bytes
  // at 10 Mbit/s are 12 ms of queue, so a ping waits at most that (or finds the queue full: a
  // third of what comes is dropped).
  const flood = lab.iperf('a', 'b', 5201, ['-u', '-b', '15M', '-t', '4']);
  await new Promise((r) => setTimeout(r, 1000));
  const rtts = await lab.ping('a', 'b', 40, 0.05);
  await flood;
  const { directions } = (await lab.show()).links[0];
  assert.ok(directions[0].queueDrops > 500, `a third of the flood dropped at the queue: ${JSON.stringify(directions[0])}`);
  t.diagnostic(`ping behind the flood: median ${median(rtts)} ms over ${rtts.length} replies; ${directions[0].queueDrops} packets dropped at the queue`);
  assert.ok(rtts.length > 0, 'some pings got through');
  // Loose (a busy machine must not fail it); without the bound, 1000 packets would be 1.2 s.
  assert.ok(median(rtts) < 2 + 12 + 20, `a ping waits behind at most 10 packets: median ${median(rtts)} ms`);
  await lab.down();
});

/** Sends raw bytes to a stage's control socket; resolves to everything it answered. */
function controlRaw(path: string, bytes: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let answer = '';
    sock.setEncoding('utf8').on('data', (c: string) => (answer += c));
    sock.on('error', reject);
    sock.on('end', () => resolve(answer));
    sock.end(bytes);
  });
}

test("a stage's control socket answers bad requests with one error line, changes nothing, and keeps forwarding", async () => {
  const lab = await Lab.up(twoHosts);
  const control = join(lab.stateDir, 'l0.sock');
  const cases: Array<[string, string]> = [
    ['hello\n', 'error unknown request\n'],
    ['set delay_ns=abc\n', 'error bad delay_ns\n'],
    ['set delay_ns=1000 loss=2\n', 'error bad loss\n'],
    ['set queue=0\n', 'error bad queue\n'],
    ['set rate_bps=-5\n', 'error bad rate_bps\n'],
    ['set colour=blue\n', 'error unknown parameter\n'],
    ['set delay_ns\n', 'error expected key=value\n'],
    ['x'.repeat(511), 'error line too long\n'], // its whole buffer, and no end of line
    ['stats', ''], // no end of line before the client's end: no answer
  ];
  for (const [request, answer] of cases) assert.equal(await controlRaw(control, request), answer, JSON.stringify(request));
  const stats = JSON.parse(await controlRaw(control, 'stats\n'));
  assert.equal(stats.delay_ns, 5_000_000, 'no refused set changed anything');
  assert.equal(stats.loss, 0);
  assert.equal((await lab.ping('a', 'b', 3)).length, 3);
  await lab.down();
});

test('lab: a topology with a seed loses the same packets on every run', async () => {
  const seeded = (seed: number) => ({ ...twoHosts, seed, links: [{ name: 'a-b', endpoints: ['a', 'b'], loss: '20%' }] });
  /** The sequence numbers of the pings that came back. */
  const survivors = async (lab: Lab) => {
    const r = await lab.exec('a', ['ping', '-n', '-c', '100', '-i', '0.01', '-W', '1', lab.address('b')]);
    return [...r.stdout.matchAll(/icmp_seq=(\d+) /g)].map((m) => Number(m[1]));
  };
  const first = await Lab.up(seeded(42));
  const second = await Lab.up(seeded(42));
  const third = await Lab.up(seeded(43));
  const [a, b, c] = [await survivors(first), await survivors(second), await survivors(third)];
  assert.ok(a.length > 40 && a.length < 90, `20% each way: ${a.length} of 100 round trips`);
  assert.deepEqual(a, b, 'seed 42 twice: the same pings lost');
  assert.notDeepEqual(a, c, 'seed 43: others');
  for (const lab of [first, second, third]) await lab.down();
});

test('lab: two sites joined by a WAN link route through their routers (docs/lab.md\'s example)', async () => {
  const lab = await Lab.up({
    hosts: [{ name: 'a1' }, { name: 'a2' }, { name: 'ra' }, { name: 'rb' }, { name: 'b1' }],
    links: [
      { name: 'a1-ra', endpoints: ['a1', 'ra'], rate: '1gbit' },
      { name: 'a2-ra', endpoints: ['a2', 'ra'], rate: '1gbit' },
      { name: 'wan', endpoints: ['ra', 'rb'], delay: '20ms', rate: '100mbit' },
      { name: 'rb-b1', endpoints: ['rb', 'b1'], rate: '1gbit' },
    ],
  });
  const r = await lab.exec('a1', ['ping', '-n', '-c', '5', '-i', '0.05', lab.address('b1')]);
  assert.equal(r.code, 0, r.stdout);
  // Two routers on the way back: the reply's TTL is 64 less two.
  assert.match(r.stdout, /ttl=62 /);
  const rtts = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  assert.ok(median(rtts) >= 39 && median(rtts) < 60, `20 ms each way over the WAN: ${median(rtts)} ms`);
  assert.equal((await lab.ping('a2', 'a1', 3)).length, 3, 'a1 and a2 reach each other through ra');
  await lab.down();
});

test('lab down leaves no namespace, link or process behind, and leaves another lab alone', async () => {
  // Other labs (another test file's) may come and go meanwhile: the machine's own namespaces are the others.
  const machineNetns = async () => (await runOk('ip', ['netns', 'list'])).split('\n').filter((l) => !l.startsWith('tlab-'));
  const linksBefore = await runOk('ip', ['-o', 'link', 'show']);
  const netnsBefore = await machineNetns();
  const one = await Lab.up(twoHosts);
  const other = await Lab.up(twoHosts);
  const { id, hosts, links } = await one.show();
  assert.notEqual(id, other.show0.id);
  // A process left running in a host, as a test's server would be.
  one.spawn('b', ['sleep', '987654']);
  await new Promise((r) => setTimeout(r, 300));
  // The sleep itself, not the `tessera lab exec` that waits for it (it goes once the sleep is gone).
  const sleeps = async () => (await processesWith('sleep 987654')).filter((l) => /^\S+\s+sleep 987654$/.test(l.trim()));
  assert.equal((await sleeps()).length, 1);
  await one.down();
  assert.deepEqual(await namespacesLike(`tlab-${id}-`), []);
  assert.deepEqual(await processesWith(one.stateDir), [], 'no stage of the lab is left');
  assert.deepEqual(await sleeps(), [], 'the process left in host b is gone');
  assert.equal(existsSync(one.stateDir), false, 'the state directory lab up made is gone');
  for (const l of links) assert.equal(running(l.pid), false, `the stage of ${l.name} (pid ${l.pid}) is gone`);
  assert.equal(hosts.length, 2);
  // The other lab still forwards; the machine's own links are as they were.
  assert.equal((await other.ping('a', 'b', 3)).length, 3);
  await other.down();
  assert.equal(await runOk('ip', ['-o', 'link', 'show']), linksBefore);
  assert.deepEqual(await machineNetns(), netnsBefore);
  // Down again: nothing is up, which is said, not an error.
  const again = await one.tessera(['lab', 'down']);
  assert.equal(again.code, 0);
  assert.match(again.stdout, /^No lab is up in /);
});

test('lab: bad topology input, a second lab in one state directory and a user who is not root each get one clear line', async () => {
  requireLabTools();
  const dir = makeTempDir('tessera-lab-');
  const stateDir = join(dir, 'state');
  const cases: Array<[string, RegExp]> = [
    ['{"hosts":[{"name":"a"}],"links":[{"name":"l","endpoints":["a","c"]}]}', /^tessera: error: .*bad\.json: link 'l': endpoint 'c' is not a host of the topology\n$/],
    ['{"hosts":[{"name":"a"},{"name":"b"}],"links":[{"name":"l","endpoints":["a","b"],"rate":"fast"}]}', /^tessera: error: .*bad\.json: link 'l': rate 'fast' is not a rate such as 100mbit/],
    ['{"hosts": [', /^tessera: error: .*bad\.json: not JSON: /],
  ];
  for (const [text, message] of cases) {
    const file = join(dir, 'bad.json');
    writeFileSync(file, text);
    const r = await run(tesseraBin, ['lab', 'up', file, '--state', stateDir]);
    assert.equal(r.code, 2, text);
    assert.match(r.stderr, message);
    assert.equal(r.stderr.split('\n').length, 2, `one line: ${r.stderr}`);
    assert.equal(existsSync(stateDir), false, 'nothing made');
  }
  const missing = await run(tesseraBin, ['lab', 'up', join(dir, 'nope.json'), '--state', stateDir]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /^tessera: error: cannot read .*nope\.json: ENOENT/);

  const lab = await Lab.up(twoHosts);
  const file = join(dir, 'two.json');
  writeFileSync(file, JSON.stringify(twoHosts));
  const twice = await run(tesseraBin, ['lab', 'up', file, '--state', lab.stateDir]);
  assert.equal(twice.code, 1);
  assert.match(twice.stderr, /^tessera: error: a lab is already up in .*: run `tessera lab down` first, or give another --state DIR\n$/);
  assert.equal((await lab.ping('a', 'b', 2)).length, 2, 'the lab that was up is untouched');
  const noHost = await lab.exec('c', ['true']);
  assert.equal(noHost.code, 1);
  assert.equal(noHost.stderr, "tessera: error: no host 'c' in the lab (hosts: a, b)\n");
  await lab.down();

  const [cmd, args] = asNobody(tesseraBin, ['lab', 'up', file, '--state', stateDir]);
  const notRoot = await run(cmd, args, { env: { ...process.env, NODE_COMPILE_CACHE: '' } });
  assert.equal(notRoot.code, 1);
  assert.match(notRoot.stderr, /tessera: error: tessera lab needs root \(it makes network namespaces and TUN devices\): run it as root, e\.g\. with sudo\n$/);
});
