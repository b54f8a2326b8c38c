/**
 * Cluster benchmark: etcd and three nodes on this machine; a disk with 3 replicas against one
 * with 1 replica, side by side in one run, the same preparation for each; then the rebuild rate
 * of a lost replica against a node's own sequential write rate. Not a test: it prints figures
 * and PASS/MISS against the targets of docs/benchmarks.md ("Cluster"), it asserts nothing.
 *
 *   npm run bench:cluster -- [--json] [--size 1G] [--seconds 15] [--runs 3] [--dir DIR] [--lines write,rebuild]
 */
import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { recycleMemory } from './memory.ts';
import {
  cleanup, makeTempDir, parseSize, requireTool, runOk, startEtcd, TesseraNode, until, writeSeededFile,
} from '../test/helpers/index.ts';
import type { DiskInfo } from '../src/api/client/index.ts';

const { values: opts } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    size: { type: 'string', default: '1G' },
    seconds: { type: 'string', default: '15' },
    runs: { type: 'string', default: '3' },
    dir: { type: 'string' },
    lines: { type: 'string', default: 'write,rebuild' },
    'rebuild-rate': { type: 'string', default: '1G' },
  },
});
const sizeBytes = parseSize(opts.size);
const seconds = Number(opts.seconds);
const runs = Math.max(1, Number(opts.runs));
const lines = new Set(opts.lines.split(','));
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);
const ttlS = 10;
/** The nodes started, for their logs when something fails. */
let started: TesseraNode[] = [];

/** Targets of the issue: 3 replicas against 1 on the write lines, a rebuild against the write rate. */
const TARGET = { replicas: 0.5, rebuild: 0.5 } as const;

/** A way clients reach a disk: its replicas, and whether through its head or another node. */
interface Config {
  key: 'r3' | 'r1' | 'r3gw';
  label: string;
  replicas: number;
  via: 'head' | 'gateway';
}
const CONFIGS: Config[] = [
  { key: 'r3', label: '3 replicas', replicas: 3, via: 'head' },
  { key: 'r1', label: '1 replica', replicas: 1, via: 'head' },
  { key: 'r3gw', label: '3 replicas, via a gateway', replicas: 3, via: 'gateway' },
];

/** The figures of one test: per config, every run's value in run order. */
interface Line {
  test: string;
  unit: 'MB/s' | 'IOPS';
  values: Record<Config['key'], number[]>;
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

async function fioRandWrite(uri: string, cwd: string): Promise<number> {
  const out = await runOk(requireTool('fio', 'fio'), [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
    '--numjobs=1', `--size=${sizeBytes}`, '--time_based', `--runtime=${seconds}`, '--ramp_time=2',
    '--randrepeat=0', '--norandommap', '--output-format=json',
  ], { timeoutMs: (seconds + 120) * 1000, cwd });
  return (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { write: { iops: number } }[] }).jobs[0]!.write.iops;
}

async function nbdcopyWrite(src: string, uri: string): Promise<number> {
  const s = await timed(() => runOk(requireTool('nbdcopy', 'libnbd-bin'), ['--flush', src, uri], { timeoutMs: 600_000 }));
  return sizeBytes / s / 1e6;
}

/** etcd and three nodes, each in `dir/nK`. */
async function startCluster(dir: string): Promise<{ nodes: TesseraNode[]; byId: Map<string, TesseraNode> }> {
  const etcd = await startEtcd({ dataDir: join(dir, 'etcd') });
  const ids = ['n1', 'n2', 'n3'];
  const nodes = ids.map((id) => new TesseraNode({
    dataDir: join(dir, id),
    args: ['--etcd', etcd.url, '--node-id', id, '--lease-ttl', String(ttlS), '--etcd-prefix', '/bench/', '--rebuild-rate', opts['rebuild-rate'], '--log-format', 'text'],
  }));
  started = nodes;
  for (const n of nodes) await n.start();
  await until(async () => (await nodes[0]!.cliJson<{ nodes: Array<{ state: string }> }>(['cluster', 'status'])).nodes.filter((n) => n.state === 'up').length === 3, 60_000, 'three nodes up', 200);
  return { nodes, byId: new Map(ids.map((id, i) => [id, nodes[i]!])) };
}

/** Every node reclaims the log space of deleted disks (untimed, between measurements). */
async function compactAll(nodes: TesseraNode[]): Promise<void> {
  for (const n of nodes) await n.cliOk(['compact']);
}

/**
 * Per run, per config (their order rotated each run so none always goes first): a new disk,
 * filled by nbdcopy, rewritten whole by nbdcopy (a written disk, the case users live with),
 * then 4k random writes at QD16 over it; then the disk deleted and every node compacted.
 */
async function writeLines(nodes: TesseraNode[], byId: Map<string, TesseraNode>, dir: string, source: string): Promise<Line[]> {
  const empty = (): Record<Config['key'], number[]> => ({ r3: [], r1: [], r3gw: [] });
  const fill: Line = { test: 'seq write, new disk (nbdcopy --flush)', unit: 'MB/s', values: empty() };
  const rewrite: Line = { test: 'seq rewrite, written disk (nbdcopy --flush)', unit: 'MB/s', values: empty() };
  const rand: Line = { test: 'fio 4k randwrite qd16, written disk', unit: 'IOPS', values: empty() };
  const recycle = () => recycleMemory(dir, 2 * sizeBytes);
  for (let run = 0; run < runs; run++) {
    for (let c = 0; c < CONFIGS.length; c++) {
      const cfg = CONFIGS[(c + run) % CONFIGS.length]!;
      const name = `${cfg.key}-${run + 1}`;
      const info = await nodes[0]!.cliJson<DiskInfo>(['disk', 'create', name, '--size', String(sizeBytes), '--replicas', String(cfg.replicas)]);
      const headId = info.replicas![0]!.node;
      const node = cfg.via === 'head' ? byId.get(headId)! : nodes.find((n) => n !== byId.get(headId))!;
      const uri = node.nbdUri(name);
      const where = `${cfg.label} (head ${headId}${cfg.via === 'gateway' ? `, client on ${[...byId].find(([, n]) => n === node)![0]}` : ''})`;
      log(`run ${run + 1} of ${runs}: ${where}`);
      await recycle();
      await runOk('sync', []);
      fill.values[cfg.key].push(await nbdcopyWrite(source, uri));
      await recycle();
      await runOk('sync', []);
      rewrite.values[cfg.key].push(await nbdcopyWrite(source, uri));
      await recycle();
      await runOk('sync', []);
      rand.values[cfg.key].push(await fioRandWrite(uri, dir));
      log(`  fill ${fill.values[cfg.key].at(-1)!.toFixed(1)} MB/s, rewrite ${rewrite.values[cfg.key].at(-1)!.toFixed(1)} MB/s, randwrite ${Math.round(rand.values[cfg.key].at(-1)!)} IOPS`);
      await nodes[0]!.cliOk(['disk', 'rm', name]);
      await until(async () => {
        for (const n of nodes) if ((await n.cliJson<DiskInfo[]>(['disk', 'list'])).some((d) => d.name === name)) return false;
        return true;
      }, 60_000, `${name} deleted everywhere`, 200);
      await compactAll(nodes);
    }
  }
  return [fill, rewrite, rand];
}

/** One rebuild: bytes copied and the seconds the copy took, from the node's log line. */
interface Rebuild {
  node: string;
  bytes: number;
  seconds: number;
  /** From the node's start to the disk all healthy again, as a client of the API sees it. */
  wallSeconds: number;
}

/**
 * A 3-replica disk holding `size` bytes; per run, its tail is killed with -9, its data
 * directory wiped, and it is started again: it copies the whole disk in from the others.
 */
async function rebuildLine(nodes: TesseraNode[], byId: Map<string, TesseraNode>, dir: string, source: string): Promise<Rebuild[]> {
  const name = 'rebuild';
  const info = await nodes[0]!.cliJson<DiskInfo>(['disk', 'create', name, '--size', String(sizeBytes), '--replicas', '3']);
  const head = byId.get(info.replicas![0]!.node)!;
  await recycleMemory(dir, 2 * sizeBytes);
  log(`writing ${sizeBytes} bytes into the disk to rebuild`);
  await nbdcopyWrite(source, head.nbdUri(name));
  const out: Rebuild[] = [];
  for (let run = 0; run < runs; run++) {
    const before = await head.cliJson<DiskInfo>(['disk', 'info', name]);
    const victimId = before.replicas!.at(-1)!.node;
    const victim = byId.get(victimId)!;
    log(`rebuild ${run + 1} of ${runs}: kill -9 of ${victimId}, its data wiped`);
    await victim.kill('SIGKILL');
    await until(async () => (await head.cliJson<DiskInfo>(['disk', 'info', name])).replicas!.some((r) => r.node === victimId && r.state === 'stale'), (ttlS + 30) * 1000, `${victimId} away`, 200);
    rmSync(victim.dataDir, { recursive: true, force: true });
    await recycleMemory(dir, 2 * sizeBytes);
    await runOk('sync', []);
    const logBefore = readFileSync(victim.logPath, 'utf8').length;
    const started = performance.now();
    await victim.start();
    await until(async () => {
      const d = await head.cliJson<DiskInfo>(['disk', 'info', name]);
      return d.replicas!.length === 3 && d.replicas!.every((r) => r.state === 'healthy');
    }, 600_000, `${victimId} rebuilt`, 100);
    const wallSeconds = (performance.now() - started) / 1000;
    const text = readFileSync(victim.logPath, 'utf8').slice(logBefore);
    const m = /copied in (\d+) bytes from .*\(full copy\) in ([\d.]+) s/.exec(text);
    if (m === null) throw new Error(`${victimId} logged no full copy: ${text.slice(-2000)}`);
    out.push({ node: victimId, bytes: Number(m[1]), seconds: Number(m[2]), wallSeconds });
    log(`  ${(Number(m[1]) / Number(m[2]) / 1e6).toFixed(1)} MB/s (${m[1]} bytes in ${m[2]} s; healthy after ${wallSeconds.toFixed(1)} s)`);
  }
  await nodes[0]!.cliOk(['disk', 'rm', name]);
  return out;
}

function fmt(v: number, unit: string): string {
  return unit === 'IOPS' ? String(Math.round(v)) : v.toFixed(1);
}

function spread(v: number[], unit: string): string {
  if (v.length === 0) return '-';
  if (v.length === 1) return fmt(v[0]!, unit);
  return `${fmt(median(v), unit)} (${fmt(Math.min(...v), unit)}–${fmt(Math.max(...v), unit)})`;
}

function table(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
}

function verdict(ratio: number, target: number): string {
  return ratio >= target ? 'PASS' : 'MISS';
}

async function main(): Promise<number> {
  for (const [tool, pkg] of [['nbdcopy', 'libnbd-bin'], ['fio', 'fio'], ['etcd', 'etcd-server']] as const) requireTool(tool, pkg);
  const dir = makeTempDir('tessera-bench-cluster-', opts.dir);
  const source = join(dir, 'source.raw');
  log(`writing ${sizeBytes} bytes of random source data`);
  await writeSeededFile(source, 1, 'bench-source', sizeBytes);
  const { nodes, byId } = await startCluster(dir);
  const write = lines.has('write') ? await writeLines(nodes, byId, dir, source) : [];
  const rebuilds = lines.has('rebuild') ? await rebuildLine(nodes, byId, dir, source) : [];
  for (const n of nodes) await n.stop();

  const result = { sizeBytes, fioSeconds: seconds, runs, write, rebuilds };
  if (opts.json) {
    console.log(JSON.stringify(result, null, 2));
    return 0;
  }
  if (write.length > 0) {
    console.log(`Cluster of 3 nodes + etcd on this machine; ${sizeBytes} bytes; ${runs} run(s); median (min–max)`);
    const rows = [['test', 'unit', '3 replicas', '1 replica', '3r/1r', 'target', '', '3r via gateway', 'gw/1r']];
    for (const l of write) {
      const ratio = median(l.values.r3) / median(l.values.r1);
      rows.push([l.test, l.unit, spread(l.values.r3, l.unit), spread(l.values.r1, l.unit), ratio.toFixed(2), `≥ ${TARGET.replicas}`, verdict(ratio, TARGET.replicas), spread(l.values.r3gw, l.unit), (median(l.values.r3gw) / median(l.values.r1)).toFixed(2)]);
    }
    table(rows);
    for (const l of write) {
      const per = l.values.r3.map((v, i) => (v / l.values.r1[i]!).toFixed(2)).join(', ');
      console.log(`${l.test}: 3r/1r per run ${per}; each run 3r ${l.values.r3.map((v) => fmt(v, l.unit)).join(', ')}; 1r ${l.values.r1.map((v) => fmt(v, l.unit)).join(', ')}; gateway ${l.values.r3gw.map((v) => fmt(v, l.unit)).join(', ')}`);
    }
  }
  if (rebuilds.length > 0) {
    const rates = rebuilds.map((r) => r.bytes / r.seconds / 1e6);
    const writeRate = write.length > 0 ? median(write[0]!.values.r1) : null;
    console.log(`rebuild (full copy of ${sizeBytes} bytes to a wiped replica, --rebuild-rate ${opts['rebuild-rate']}): ${spread(rates, 'MB/s')} MB/s; each ${rebuilds.map((r) => `${r.node} ${(r.bytes / r.seconds / 1e6).toFixed(1)} (healthy after ${r.wallSeconds.toFixed(1)} s)`).join(', ')}`);
    if (writeRate !== null) {
      const ratio = median(rates) / writeRate;
      console.log(`rebuild / a node's own sequential write (1 replica, new disk, ${writeRate.toFixed(1)} MB/s): ${ratio.toFixed(2)}  target ≥ ${TARGET.rebuild}  ${verdict(ratio, TARGET.rebuild)}`);
    }
  }
  return 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`bench: ${(err as Error).stack ?? (err as Error).message}`);
  for (const [i, n] of started.entries()) console.error(`--- log of n${i + 1} (last part):\n${n.logTail().slice(-3000)}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
