/**
 * `npm run bench:transfer`: the transfer engine against plain TCP on an emulated long link
 * (docs/transfer.md, docs/benchmarks.md "Transfer benchmark", issue 21 part 4). One lab of two
 * hosts joined by a link of 100 ms round trip at 200 Mbit/s, clean and with 0.1% loss; on each,
 * side by side in one run: `tessera transfer send` of a file, one TCP stream with a loss-based
 * congestion control (`iperf3 -P 1 -C cubic`) and the link's capacity (`iperf3 -P 8`); then the
 * time to the first 10 MB acknowledged with and without priming. Prints rates, ratios and
 * PASS/MISS against the targets; asserts nothing. Needs root, iproute2 and iperf3.
 *
 *   npm run bench:transfer -- [--size 1G] [--runs 3] [--seconds 20] [--json]
 */
import type { ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync } from 'node:fs';
import { loadavg, cpus } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { cleanup, makeTempDir, parseSize, tesseraBin, writeSeededFile } from '../test/helpers/index.ts';
import { downAllLabs, Lab } from '../test/helpers/lab.ts';

const { values: opts } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    size: { type: 'string', default: '1G' },
    runs: { type: 'string', default: '3' },
    seconds: { type: 'string', default: '20' },
    'prime-size': { type: 'string', default: '32M' },
    dir: { type: 'string' },
  },
});
const sizeBytes = parseSize(opts.size);
const primeSizeBytes = parseSize(opts['prime-size']);
const runs = Math.max(1, Number(opts.runs));
const seconds = Number(opts.seconds);
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

/** The link of issue 21 part 4: 50 ms each way, a rate this machine's stage sustains (docs/lab.md). */
const LINK = { delay: '50ms', rate: '200mbit', queue: '2000' } as const;
const CONDITIONS = [
  { key: 'clean', loss: '0' },
  { key: 'lossy', loss: '0.1%' },
] as const;
type ConditionKey = (typeof CONDITIONS)[number]['key'];
/** Targets: the transfer against the link's capacity (clean) and against one cubic stream (lossy). */
const TARGET = { clean: { of: 'capacity', ratio: 0.9 }, lossy: { of: 'cubic', ratio: 3 } } as const;
const FIRST_BYTES = 10_000_000;
const IPERF_PORT = 5201;
const RECV_PORT = 7480;

/** One `transfer send` as the bench saw it. */
interface SendRun {
  /** Mbit/s over the sender's own time (connect, priming, data, the receiver's final check). */
  mbit: number;
  /** Mbit/s from the start of the command to its last DATA frame acknowledged. */
  dataMbit: number;
  seconds: number;
  /** From the start of the command to the first 10 MB of DATA acknowledged, s. */
  firstSeconds: number;
  connectionsMin: number;
  connectionsMax: number;
  connectionChanges: string[];
  attempts: number;
  minRttMs: number;
  transitP50Ms: number;
  holdP50Ms: number;
  limitedBy: string;
  /** Share of the machine's CPUs busy over the send, and the link's stage's share of one CPU. */
  machineCpu: number;
  stageCpu: number;
  lost: number;
}

interface ConditionFigures {
  send: SendRun[];
  cubicMbit: number[];
  cubicRetransmits: number[];
  capacityMbit: number[];
  firstPrimed: number[];
  firstUnprimed: number[];
}

/** CPU seconds of a process (user + system). */
function cpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** The machine's busy and total jiffies. */
function machineTicks(): { busy: number; total: number } {
  const f = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = f[3]! + f[4]!;
  const total = f.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** JSON lines of a child's stdout, each stamped with when it arrived (ms since `t0`). */
function jsonLines(child: ChildProcess, t0: number, onLine: (e: Record<string, unknown>, ms: number) => void): void {
  let rest = '';
  child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
    const ms = performance.now() - t0;
    rest += chunk;
    const lines = rest.split('\n');
    rest = lines.pop()!;
    for (const line of lines) if (line.trim() !== '') onLine(JSON.parse(line) as Record<string, unknown>, ms);
  });
}

/** `tessera transfer send` in host a to the receiver in b, with its frame log; the figures of it. */
async function send(lab: Lab, file: string, extra: string[]): Promise<SendRun> {
  const stagePid = lab.show0.links[0]!.pid;
  const stage0 = cpuSeconds(stagePid);
  const m0 = machineTicks();
  const lost0 = (await lab.show()).links[0]!.directions.reduce((a, d) => a + d.lost + d.queueDrops, 0);
  const t0 = performance.now();
  const child = lab.spawn('a', [tesseraBin, 'transfer', 'send', file, '--to', `${lab.address('b')}:${RECV_PORT}`, '--json', '--log-frames', ...extra]);
  let acked = 0;
  let firstMs = NaN;
  let lastMs = NaN;
  let report: Record<string, unknown> | null = null;
  const changes: string[] = [];
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  jsonLines(child, t0, (e, ms) => {
    if (e.event === 'frame') {
      acked += e.bytes as number;
      if (acked >= FIRST_BYTES && Number.isNaN(firstMs)) firstMs = ms;
      lastMs = ms;
    } else if (e.event === 'connections') changes.push(`${String(e.active)}: ${String(e.reason)}`);
    else if (e.event === 'done') report = e;
  });
  const code = await new Promise<number | null>((resolve) => child.once('close', (c) => resolve(c)));
  const wallS = (performance.now() - t0) / 1000;
  const m1 = machineTicks();
  const lost1 = (await lab.show()).links[0]!.directions.reduce((a, d) => a + d.lost + d.queueDrops, 0);
  if (code !== 0 || report === null) throw new Error(`transfer send exited ${code}: ${stderr.slice(-2000)}`);
  const r = report as Record<string, unknown>;
  const size = r.sizeBytes as number;
  return {
    mbit: (size * 8) / (r.seconds as number) / 1e6,
    dataMbit: (size * 8) / (lastMs / 1000) / 1e6,
    seconds: r.seconds as number,
    firstSeconds: firstMs / 1000,
    connectionsMin: r.connectionsActiveMin as number,
    connectionsMax: r.connectionsActiveMax as number,
    connectionChanges: changes,
    attempts: r.attempts as number,
    minRttMs: r.minRttMs as number,
    transitP50Ms: (r.transitMs as { p50: number }).p50,
    holdP50Ms: (r.holdMs as { p50: number }).p50,
    limitedBy: r.limitedBy as string,
    machineCpu: (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total),
    stageCpu: (cpuSeconds(stagePid) - stage0) / wallS,
    lost: lost1 - lost0,
  };
}

async function main(): Promise<number> {
  const dir = makeTempDir('tessera-bench-transfer-', opts.dir);
  const src = join(dir, 'src');
  const dst = join(dir, 'dst');
  const file = join(src, 'bench.img');
  const small = join(src, 'first.img');
  mkdirSync(src);
  mkdirSync(dst);
  log(`writing ${sizeBytes} and ${primeSizeBytes} bytes of random data`);
  await writeSeededFile(file, 1, 'bench-transfer', sizeBytes);
  await writeSeededFile(small, 1, 'bench-transfer-first', primeSizeBytes);
  const lab = await Lab.up({
    hosts: [{ name: 'a' }, { name: 'b' }],
    links: [{ name: 'a-b', endpoints: ['a', 'b'], ...LINK }],
  });
  await lab.iperfServer('b', IPERF_PORT);
  const receiver = lab.spawn('b', [tesseraBin, 'transfer', 'recv', '--listen', `${lab.address('b')}:${RECV_PORT}`, '--dir', dst, '--json']);
  await new Promise<void>((resolve, reject) => {
    jsonLines(receiver, 0, (e) => e.event === 'listening' && resolve());
    receiver.once('exit', (c) => reject(new Error(`transfer recv exited ${c}`)));
  });
  const figures: Record<ConditionKey, ConditionFigures> = {
    clean: { send: [], cubicMbit: [], cubicRetransmits: [], capacityMbit: [], firstPrimed: [], firstUnprimed: [] },
    lossy: { send: [], cubicMbit: [], cubicRetransmits: [], capacityMbit: [], firstPrimed: [], firstUnprimed: [] },
  };
  const loadStart = loadavg()[0]!;
  for (let run = 0; run < runs; run++) {
    for (const c of CONDITIONS) {
      const f = figures[c.key];
      await lab.set('a-b', { loss: c.loss });
      log(`run ${run + 1} of ${runs}, ${c.key} link (loss ${c.loss}): transfer send of ${sizeBytes} bytes`);
      const s = await send(lab, file, []);
      rmSync(join(dst, 'bench.img'), { force: true });
      f.send.push(s);
      log(`  ${s.mbit.toFixed(1)} Mbit/s (${s.seconds.toFixed(1)} s; data ${s.dataMbit.toFixed(1)}), connections ${s.connectionsMin}–${s.connectionsMax}, first 10 MB ${s.firstSeconds.toFixed(2)} s, CPU ${(s.machineCpu * 100).toFixed(0)}% of the machine`);
      log('  iperf3 -P 1 -C cubic');
      const cubic = await lab.iperf('a', 'b', IPERF_PORT, ['-P', '1', '-C', 'cubic', '-t', String(seconds), '-O', '2']);
      f.cubicMbit.push(cubic.end.sum_received!.bits_per_second / 1e6);
      f.cubicRetransmits.push(cubic.end.sum_sent!.retransmits ?? 0);
      log('  iperf3 -P 8');
      const cap = await lab.iperf('a', 'b', IPERF_PORT, ['-P', '8', '-t', String(seconds), '-O', '2']);
      f.capacityMbit.push(cap.end.sum_received!.bits_per_second / 1e6);
      log(`  cubic ${f.cubicMbit.at(-1)!.toFixed(1)} Mbit/s, capacity ${f.capacityMbit.at(-1)!.toFixed(1)} Mbit/s`);
      // Alternate which goes first, so neither always meets the link just used by the other.
      for (const primed of run % 2 === 0 ? [true, false] : [false, true]) {
        const r = await send(lab, small, primed ? [] : ['--no-prime']);
        rmSync(join(dst, 'first.img'), { force: true });
        (primed ? f.firstPrimed : f.firstUnprimed).push(r.firstSeconds);
      }
      log(`  first 10 MB: primed ${f.firstPrimed.at(-1)!.toFixed(2)} s, --no-prime ${f.firstUnprimed.at(-1)!.toFixed(2)} s`);
    }
  }
  const loadEnd = loadavg()[0]!;
  await lab.down();

  const result = { date: new Date().toISOString(), cpus: cpus().length, loadStart, loadEnd, sizeBytes, primeSizeBytes, runs, seconds, link: LINK, figures };
  if (opts.json) {
    console.log(JSON.stringify(result, null, 2));
    return 0;
  }
  const fmt = (v: number, d = 1) => v.toFixed(d);
  const spread = (v: number[], d = 1) => (v.length === 1 ? fmt(v[0]!, d) : `${fmt(median(v), d)} (${fmt(Math.min(...v), d)}–${fmt(Math.max(...v), d)})`);
  console.log(`Transfer benchmark, ${result.date}: ${cpus().length} CPUs, load average (1 min) ${fmt(loadStart, 2)} at the start, ${fmt(loadEnd, 2)} at the end`);
  console.log(`link: 100 ms round trip (50 ms each way), 200 Mbit/s, queue 2000 packets; ${sizeBytes} bytes sent; iperf3 ${seconds} s, first 2 s omitted; ${runs} run(s), median (min–max)`);
  const rows = [['link', 'transfer send Mbit/s', 'iperf3 -P 1 cubic', 'iperf3 -P 8', 'send/cubic', 'send/capacity', 'target', '']];
  for (const c of CONDITIONS) {
    const f = figures[c.key];
    const sendMbit = f.send.map((s) => s.mbit);
    const toCubic = median(sendMbit) / median(f.cubicMbit);
    const toCap = median(sendMbit) / median(f.capacityMbit);
    const t = TARGET[c.key];
    const ratio = t.of === 'capacity' ? toCap : toCubic;
    rows.push([`${c.key} (loss ${c.loss})`, spread(sendMbit), spread(f.cubicMbit), spread(f.capacityMbit), fmt(toCubic, 2), fmt(toCap, 2), `≥ ${t.ratio}× ${t.of}`, ratio >= t.ratio ? 'PASS' : 'MISS']);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((x, i) => (i === 0 ? x.padEnd(widths[i]!) : x.padStart(widths[i]!))).join('  '));
  for (const c of CONDITIONS) {
    const f = figures[c.key];
    console.log(`${c.key}: per run send/capacity ${f.send.map((s, i) => fmt(s.mbit / f.capacityMbit[i]!, 2)).join(', ')}; send/cubic ${f.send.map((s, i) => fmt(s.mbit / f.cubicMbit[i]!, 2)).join(', ')}; cubic retransmits ${f.cubicRetransmits.join(', ')}`);
    console.log(`${c.key}: send up to its last data acknowledged ${spread(f.send.map((s) => s.dataMbit))} Mbit/s; seconds ${f.send.map((s) => fmt(s.seconds)).join(', ')}; connections ${f.send.map((s) => `${s.connectionsMin}–${s.connectionsMax}`).join(', ')}; attempts ${f.send.map((s) => s.attempts).join(', ')}; packets the link dropped ${f.send.map((s) => s.lost).join(', ')}`);
    console.log(`${c.key}: send min RTT ${f.send.map((s) => fmt(s.minRttMs)).join(', ')} ms; transit p50 ${f.send.map((s) => fmt(s.transitP50Ms)).join(', ')} ms; hold p50 ${f.send.map((s) => fmt(s.holdP50Ms, 2)).join(', ')} ms; limited by ${f.send.map((s) => s.limitedBy).join(', ')}; machine CPU ${f.send.map((s) => `${fmt(s.machineCpu * 100, 0)}%`).join(', ')}; stage CPU ${f.send.map((s) => `${fmt(s.stageCpu * 100, 0)}%`).join(', ')}`);
    for (const [i, s] of f.send.entries()) if (s.connectionChanges.length > 0) console.log(`${c.key}: run ${i + 1} connection changes: ${s.connectionChanges.join('; ')}`);
    console.log(`${c.key}: first 10 MB acknowledged (from the command's start, ${primeSizeBytes} bytes sent): primed ${spread(f.firstPrimed, 2)} s, --no-prime ${spread(f.firstUnprimed, 2)} s; the big send's own ${spread(f.send.map((s) => s.firstSeconds), 2)} s`);
  }
  return 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`bench: ${(err as Error).stack ?? (err as Error).message}`);
  process.exitCode = 1;
} finally {
  await downAllLabs();
  await cleanup();
}
