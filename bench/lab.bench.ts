/**
 * `npm run bench:lab`: what the lab's forwarding stage does on this machine (docs/lab.md,
 * docs/benchmarks.md): its floor (ping's round trip with no delay), how close a delayed round
 * trip is to twice the delay plus the floor, the most it carries with no limit at three round
 * trips, how close iperf3 comes to a configured rate, and loss over 10,000 UDP datagrams.
 * Needs root, iproute2, ping and iperf3. Not a test: it asserts nothing.
 *
 *   npm run bench:lab                 # a table on stdout (~4 min)
 *   npm run --silent bench:lab -- --json
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { cleanup } from '../test/helpers/index.ts';
import { downAllLabs, Lab, median } from '../test/helpers/lab.ts';

const { values } = parseArgs({ options: { json: { type: 'boolean' }, seconds: { type: 'string', default: '10' } } });
const seconds = Number(values.seconds);
const port = 5201;
const say = (text: string) => process.stderr.write(text + '\n');

/** The p-th percentile of xs (nearest rank). */
function percentile(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** CPU seconds a process has used (user + system). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

const os = await import('node:os');
const results: Record<string, unknown> = { date: new Date().toISOString(), cpus: os.cpus().length, loadAverageStart: os.loadavg()[0] };

/** Packets `dev` in `host` received and sent, as its kernel counts them. */
async function deviceCounters(lab: Lab, host: string, dev: string): Promise<{ rx: number; tx: number }> {
  const r = await lab.exec(host, ['ip', '-s', '-j', 'link', 'show', 'dev', dev]);
  const [{ stats64 }] = JSON.parse(r.stdout) as Array<{ stats64: { rx: { packets: number }; tx: { packets: number } } }>;
  return { rx: stats64.rx.packets, tx: stats64.tx.packets };
}
try {
  const lab = await Lab.up({ hosts: [{ name: 'a' }, { name: 'b' }], links: [{ name: 'a-b', endpoints: ['a', 'b'] }] });
  const stagePid = lab.show0.links[0].pid;
  await lab.iperfServer('b', port);

  say('floor...');
  await lab.ping('a', 'b', 20, 0.01);
  const floorRtts = await lab.ping('a', 'b', 300, 0.01);
  const floor = { medianMs: median(floorRtts), p10Ms: percentile(floorRtts, 10), p90Ms: percentile(floorRtts, 90), maxMs: Math.max(...floorRtts) };
  results.floor = floor;

  const delays = [];
  for (const ms of [1, 10, 50]) {
    say(`delay ${ms}ms...`);
    await lab.set('a-b', { delay: `${ms}ms` });
    const rtts = await lab.ping('a', 'b', 100, 0.02);
    const expected = 2 * ms + floor.medianMs;
    delays.push({ delayMs: ms, medianMs: median(rtts), expectedMs: expected, errorPct: ((median(rtts) - expected) / expected) * 100, p10Ms: percentile(rtts, 10), p90Ms: percentile(rtts, 90) });
  }
  results.delays = delays;

  const capacity = [];
  for (const ms of [0, 5, 50]) {
    say(`capacity at delay ${ms}ms...`);
    await lab.set('a-b', { delay: `${ms}ms`, rate: 'none' });
    for (const streams of [1, 4]) {
      const cpu0 = cpuSeconds(stagePid);
      const t0 = Date.now();
      const r = await lab.iperf('a', 'b', port, ['-P', String(streams), '-t', String(seconds), '-O', '2']);
      const cpu = (cpuSeconds(stagePid) - cpu0) / ((Date.now() - t0) / 1000);
      capacity.push({ delayMs: ms, streams, mbit: r.end.sum_received!.bits_per_second / 1e6, retransmits: r.end.sum_sent!.retransmits ?? 0, stageCpu: cpu });
    }
  }
  results.capacity = capacity;

  const rates = [];
  for (const mbit of [100, 200, 300, 500]) {
    say(`rate ${mbit}mbit at 100 ms RTT...`);
    await lab.set('a-b', { delay: '50ms', rate: `${mbit}mbit`, queue: '2000' });
    const r = await lab.iperf('a', 'b', port, ['-P', '4', '-t', String(seconds), '-O', '3']);
    const got = r.end.sum_received!.bits_per_second / 1e6;
    rates.push({ rateMbit: mbit, rttMs: 100, streams: 4, mbit: got, pct: (got / mbit) * 100 });
  }
  results.rates = rates;

  const losses = [];
  await lab.set('a-b', { delay: '1ms', rate: 'none', queue: '1000' });
  for (const pct of [1, 5]) {
    say(`loss ${pct}%...`);
    await lab.set('a-b', { loss: `${pct}%` });
    const [sent0, came0] = [await deviceCounters(lab, 'a', 'a-b'), await deviceCounters(lab, 'b', 'a-b')];
    const r = await lab.iperf('a', 'b', port, ['-u', '-b', '16M', '-l', '1000', '-k', '10000', '-w', '4M']);
    const [sent1, came1] = [await deviceCounters(lab, 'a', 'a-b'), await deviceCounters(lab, 'b', 'a-b')];
    const linkSent = sent1.tx - sent0.tx;
    const linkLost = linkSent - (came1.rx - came0.rx);
    losses.push({ lossPct: pct, packets: r.end.sum!.packets, lost: r.end.sum!.lost_packets, lostPct: r.end.sum!.lost_percent, linkSent, linkLost });
  }
  results.losses = losses;
  results.loadAverageEnd = os.loadavg()[0];
  await lab.down();
} finally {
  await downAllLabs();
  await cleanup();
}

if (values.json) {
  process.stdout.write(JSON.stringify(results, null, 2) + '\n');
} else {
  const f = results.floor as { medianMs: number; p10Ms: number; p90Ms: number; maxMs: number };
  const out = [
    `load average (1 min) ${(results.loadAverageStart as number).toFixed(2)} at the start, ${(results.loadAverageEnd as number).toFixed(2)} at the end, ${results.cpus} CPUs`,
    `floor (ping, no delay): median ${f.medianMs.toFixed(3)} ms, p10 ${f.p10Ms.toFixed(3)}, p90 ${f.p90Ms.toFixed(3)}, max ${f.maxMs.toFixed(3)}`,
    ...(results.delays as Array<{ delayMs: number; medianMs: number; expectedMs: number; errorPct: number; p90Ms: number }>).map(
      (d) => `delay ${d.delayMs} ms: median RTT ${d.medianMs.toFixed(3)} ms vs ${d.expectedMs.toFixed(3)} (${d.errorPct.toFixed(2)}%), p90 ${d.p90Ms.toFixed(3)}`,
    ),
    ...(results.capacity as Array<{ delayMs: number; streams: number; mbit: number; retransmits: number; stageCpu: number }>).map(
      (c) => `no limit, RTT ${2 * c.delayMs} ms, ${c.streams} stream(s): ${c.mbit.toFixed(0)} Mbit/s, ${c.retransmits} retransmits, stage CPU ${(c.stageCpu * 100).toFixed(0)}%`,
    ),
    ...(results.rates as Array<{ rateMbit: number; mbit: number; pct: number }>).map((r) => `rate ${r.rateMbit}mbit, RTT 100 ms, 4 streams: ${r.mbit.toFixed(1)} Mbit/s (${r.pct.toFixed(1)}%)`),
    ...(results.losses as Array<{ lossPct: number; packets: number; lost: number; lostPct: number; linkSent: number; linkLost: number }>).map(
      (l) => `loss ${l.lossPct}%: the link lost ${l.linkLost} of ${l.linkSent} packets (${((l.linkLost / l.linkSent) * 100).toFixed(2)}%); iperf3 counted ${l.lost} of ${l.packets} datagrams (${l.lostPct.toFixed(2)}%)`,
    ),
  ];
  process.stdout.write(out.join('\n') + '\n');
}
