/**
 * NBD throughput benchmark: Tessera against qemu-nbd serving a raw file, side by side in one run,
 * on the same machine, data and clients. Not a test: it prints figures, it asserts nothing.
 * Method and settings: docs/benchmarks.md.
 *
 *   npm run bench -- [--json] [--size 1G] [--seconds 20] [--transports tcp,unix] [--servers tessera,qemu-nbd] [--dir DIR]
 */
import { readFileSync } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { recycleMemory } from './memory.ts';
import {
  cleanup, freePort, makeTempDir, nbdinfo, parseSize, requireTool, run, runOk, spawnTracked, startNode,
  writeSeededFile, type TesseraNode,
} from '../test/helpers/index.ts';

type Transport = 'tcp' | 'unix';
type ServerName = 'tessera' | 'qemu-nbd';

/** A served export one benchmark client can target. */
interface Target {
  readonly uri: string;
  /** The server process, whose CPU time a write line reads (null: not known). */
  readonly pid: number | null;
  /** Replaces the export by an empty one of the same size, the old one's data and memory freed. */
  fresh(): Promise<void>;
  stop(): Promise<void>;
}

/** One measured figure. */
interface Figure {
  test: string;
  transport: Transport;
  unit: 'MB/s' | 'IOPS';
  tessera: number | null;
  qemuNbd: number | null;
  /** tessera / qemuNbd, when both ran. */
  ratio: number | null;
  /** Every attempt's figure, per server, in the order they ran (the best counts). */
  attempts: { tessera: number[]; qemuNbd: number[] };
  /**
   * Write lines: each attempt's server CPU seconds (user + system, every thread) per GiB written,
   * from the write's start until the server settled (what it left for later included).
   */
  cpuPerGiB?: { tessera: number[]; qemuNbd: number[] };
  errors: string[];
}

const { values: opts } = parseArgs({
  options: {
    json: { type: 'boolean', default: false },
    size: { type: 'string', default: '1G' },
    seconds: { type: 'string', default: '20' },
    transports: { type: 'string', default: 'tcp,unix' },
    servers: { type: 'string', default: 'tessera,qemu-nbd' },
    dir: { type: 'string' },
    attempts: { type: 'string', default: '3' },
  },
});
const sizeBytes = parseSize(opts.size);
const seconds = Number(opts.seconds);
/** Rounds of the sequential tests (each server's best counts); the fio runs are long enough for one. */
const seqAttempts = Math.max(1, Number(opts.attempts));
const transports = opts.transports.split(',') as Transport[];
const servers = opts.servers.split(',') as ServerName[];
const exportName = 'bench';
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);


/** Waits until an NBD server answers on `uri` (qemu-nbd prints nothing when it is ready). */
async function waitForNbd(uri: string): Promise<void> {
  const nbdinfoBin = requireTool('nbdinfo', 'libnbd-bin');
  for (let i = 0; i < 600; i++) {
    const r = await run(nbdinfoBin, ['--size', uri], { timeoutMs: 30_000 });
    if (r.code === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no NBD server answered on ${uri}`);
}

/**
 * qemu-nbd on a raw file with its default cache mode (writeback: the page cache, fdatasync on
 * FLUSH), `-e 16` so that it accepts several connections and advertises multi-conn, and `-t` so
 * it outlives each client. One process per transport: qemu-nbd listens on one socket only.
 */
/** A process's CPU seconds so far, user and system, all its threads (`/proc/PID/stat`). */
function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime, fields 14 and 15 of stat(5), in clock ticks (100 a second on Linux).
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/**
 * Waits until the process has settled after a write (under 20 ms of CPU in a 500 ms window, at
 * most 60 s), so that a write's CPU includes what it left for later (an index applied in the
 * background, a log's dead space reclaimed). Returns the seconds of CPU of the settled windows,
 * to take off again: they are idle time, not the write's.
 */
async function settle(pid: number): Promise<number> {
  const windowMs = 500;
  const deadline = performance.now() + 60_000;
  let last = cpuSeconds(pid);
  while (performance.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, windowMs));
    const now = cpuSeconds(pid);
    const used = now - last;
    last = now;
    if (used < 0.02) return used;
  }
  return 0;
}

async function startQemuNbd(file: string, transport: Transport, dir: string): Promise<{ uri: string; pid: number | null; stop(): Promise<void> }> {
  const qemuNbd = requireTool('qemu-nbd', 'qemu-utils');
  let listen: string[];
  let uri: string;
  if (transport === 'tcp') {
    const port = await freePort();
    listen = ['--bind', '127.0.0.1', '-p', String(port)];
    uri = `nbd://127.0.0.1:${port}/${exportName}`;
  } else {
    const socket = join(dir, 'qemu-nbd.sock');
    listen = ['-k', socket];
    uri = `nbd+unix:///${exportName}?socket=${socket}`;
  }
  const child = spawnTracked(qemuNbd, ['-f', 'raw', '-t', '-e', '16', '-x', exportName, ...listen, file]);
  child.stdin!.end();
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => { stderr += c.toString(); });
  child.stdout!.resume();
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    await Promise.race([waitForNbd(uri), exited.then(() => { throw new Error(`qemu-nbd exited: ${stderr}`); })]);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    uri,
    pid: child.pid ?? null,
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** qemu-nbd on a new sparse raw file per fresh export (the old file deleted). */
async function qemuTarget(transport: Transport, dir: string): Promise<Target> {
  const file = join(dir, `qemu-${transport}.raw`);
  let server: { uri: string; pid: number | null; stop(): Promise<void> } | null = null;
  const target: Target = {
    get uri() {
      return server!.uri;
    },
    get pid() {
      return server?.pid ?? null;
    },
    async fresh() {
      await server?.stop();
      server = null;
      await rm(file, { force: true });
      await runOk('truncate', ['-s', String(sizeBytes), file]);
      server = await startQemuNbd(file, transport, dir);
    },
    async stop() {
      await server?.stop();
      server = null;
    },
  };
  await target.fresh();
  return target;
}

/** Tessera: one node for the whole run, a new disk per fresh export (the old one deleted and its log space reclaimed). */
async function startTessera(dir: string): Promise<{ node: TesseraNode; target(t: Transport): Promise<Target> }> {
  const node = await startNode({ dataDir: join(dir, 'tessera-data') });
  return {
    node,
    async target(t) {
      let name: string | null = null;
      let n = 0;
      const target: Target = {
        get uri() {
          return t === 'tcp' ? node.nbdUri(name!) : node.unixUri(name!);
        },
        get pid() {
          return node.pid;
        },
        async fresh() {
          if (name !== null) {
            await node.cliOk(['disk', 'rm', name]);
            await node.cliOk(['compact']);
          }
          name = `${exportName}-${t}-${++n}`;
          await node.cliOk(['disk', 'create', name, '--size', String(sizeBytes)]);
        },
        stop: async () => {},
      };
      await target.fresh();
      return target;
    },
  };
}

async function timed(fn: () => Promise<void>): Promise<number> {
  const start = performance.now();
  await fn();
  return (performance.now() - start) / 1000;
}

async function nbdcopyWrite(src: string, uri: string): Promise<number> {
  const s = await timed(() => runOk(requireTool('nbdcopy', 'libnbd-bin'), ['--flush', src, uri]).then(() => {}));
  return sizeBytes / s / 1e6;
}

async function nbdcopyRead(uri: string): Promise<number> {
  const s = await timed(() => runOk(requireTool('nbdcopy', 'libnbd-bin'), [uri, 'null:']).then(() => {}));
  return sizeBytes / s / 1e6;
}

async function fioIops(uri: string, rw: 'randread' | 'randwrite', cwd: string): Promise<number> {
  const out = await runOk(requireTool('fio', 'fio'), [
    '--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${rw}`, '--bs=4k', '--iodepth=16',
    '--numjobs=1', `--size=${sizeBytes}`, '--time_based', `--runtime=${seconds}`, '--ramp_time=2',
    '--randrepeat=0', '--norandommap', '--output-format=json',
  ], { timeoutMs: (seconds + 120) * 1000, cwd });
  const job = (JSON.parse(out.slice(out.indexOf('{'))) as { jobs: { read: { iops: number }; write: { iops: number } }[] }).jobs[0]!;
  return rw === 'randread' ? job.read.iops : job.write.iops;
}

/**
 * Runs one test against each server in turn, `attempts` rounds (Tessera, qemu-nbd, Tessera, …),
 * and records each server's best figure. `before` runs before each attempt, untimed.
 */
async function measure(
  figures: Figure[], test: string, transport: Transport, unit: Figure['unit'],
  targets: Partial<Record<ServerName, Target>>, fn: (target: Target) => Promise<number>,
  options: { attempts?: number; before?: (target: Target, attempt: number) => Promise<void>; cpuPerGiB?: boolean } = {},
): Promise<void> {
  const fig: Figure = { test, transport, unit, tessera: null, qemuNbd: null, ratio: null, attempts: { tessera: [], qemuNbd: [] }, errors: [] };
  if (options.cpuPerGiB === true) fig.cpuPerGiB = { tessera: [], qemuNbd: [] };
  const attempts = options.attempts ?? 1;
  for (let attempt = 0; attempt < attempts; attempt++) {
    for (const name of servers) {
      const target = targets[name];
      if (!target) continue;
      const key = name === 'tessera' ? 'tessera' : 'qemuNbd';
      try {
        log(`${test} over ${transport} on ${name}${attempts > 1 ? ` (${attempt + 1} of ${attempts})` : ''}...`);
        await options.before?.(target, attempt);
        // No dirty data left by the step before (the other server's writes) writes back during this one.
        await runOk('sync', []);
        const pid = target.pid;
        const cpuBefore = fig.cpuPerGiB !== undefined && pid !== null ? cpuSeconds(pid) : null;
        const v = await fn(target);
        if (cpuBefore !== null) {
          const idle = await settle(pid!);
          fig.cpuPerGiB![key].push((cpuSeconds(pid!) - idle - cpuBefore) / (sizeBytes / 2 ** 30));
        }
        fig.attempts[key].push(v);
        fig[key] = Math.max(fig[key] ?? 0, v);
      } catch (err) {
        fig.errors.push(`${name}: ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`);
      }
    }
  }
  if (fig.tessera !== null && fig.qemuNbd !== null) fig.ratio = fig.tessera / fig.qemuNbd;
  figures.push(fig);
}

function fmt(v: number | null, unit: string, ran: boolean): string {
  if (v === null) return ran ? 'error' : '-';
  return unit === 'IOPS' ? Math.round(v).toString() : v.toFixed(1);
}

function printTable(figures: Figure[]): void {
  const rows = [['test', 'transport', 'unit', 'Tessera', 'qemu-nbd', 'Tessera/qemu-nbd']];
  for (const f of figures) {
    rows.push([f.test, f.transport, f.unit, fmt(f.tessera, f.unit, servers.includes('tessera')), fmt(f.qemuNbd, f.unit, servers.includes('qemu-nbd')), f.ratio === null ? '-' : f.ratio.toFixed(2)]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) console.log(r.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  for (const f of figures) {
    if (f.attempts.tessera.length + f.attempts.qemuNbd.length <= 2) continue;
    const list = (v: number[]) => v.map((x) => fmt(x, f.unit, true)).join(', ');
    console.log(`${f.test} (${f.transport}), each attempt: Tessera ${list(f.attempts.tessera)}; qemu-nbd ${list(f.attempts.qemuNbd)}`);
  }
  const median = (v: number[]): number => [...v].sort((a, b) => a - b)[(v.length - 1) >> 1]!;
  const cpu = (v: number[]) => (v.length === 0 ? '-' : `${median(v).toFixed(2)} (${Math.min(...v).toFixed(2)}–${Math.max(...v).toFixed(2)})`);
  for (const f of figures) {
    const c = f.cpuPerGiB;
    if (c === undefined) continue;
    const ratio = c.tessera.length > 0 && c.qemuNbd.length > 0 ? (median(c.tessera) / median(c.qemuNbd)).toFixed(2) : '-';
    console.log(`${f.test} (${f.transport}), server CPU s per GiB written, median (min–max): Tessera ${cpu(c.tessera)}; qemu-nbd ${cpu(c.qemuNbd)}; Tessera/qemu-nbd ${ratio}`);
  }
  for (const f of figures) for (const e of f.errors) console.log(`error in ${f.test} (${f.transport}): ${e}`);
}

async function main(): Promise<number> {
  for (const [tool, pkg] of [['nbdcopy', 'libnbd-bin'], ['nbdinfo', 'libnbd-bin'], ['fio', 'fio'], ['qemu-nbd', 'qemu-utils']] as const) {
    requireTool(tool, pkg);
  }
  const dir = makeTempDir('tessera-bench-', opts.dir);
  const source = join(dir, 'source.raw');
  log(`writing ${sizeBytes} bytes of random source data`);
  await writeSeededFile(source, 1, 'bench-source', sizeBytes);

  const figures: Figure[] = [];
  const compactSeconds: Partial<Record<Transport, number>> = {};
  let tessera: Awaited<ReturnType<typeof startTessera>> | null = null;
  const startErrors: string[] = [];
  if (servers.includes('tessera')) {
    try {
      tessera = await startTessera(dir);
    } catch (err) {
      startErrors.push(`tessera: ${(err as Error).message.split('\n').slice(0, 4).join(' | ')}`);
    }
  }
  for (const transport of transports) {
    const targets: Partial<Record<ServerName, Target>> = {};
    if (tessera) {
      try {
        targets.tessera = await tessera.target(transport);
      } catch (err) {
        startErrors.push(`tessera disk (${transport}): ${(err as Error).message.split('\n').slice(0, 4).join(' | ')}`);
      }
    }
    if (servers.includes('qemu-nbd')) {
      try {
        targets['qemu-nbd'] = await qemuTarget(transport, dir);
      } catch (err) {
        startErrors.push(`qemu-nbd (${transport}): ${(err as Error).message.split('\n')[0]}`);
      }
    }
    for (const [name, t] of Object.entries(targets)) {
      const info = await nbdinfo([t.uri]).catch(() => '');
      log(`${name} ${transport}: multi-conn=${/can_multi_conn: (\w+)/.exec(info)?.[1] ?? '?'}`);
    }
    // Every write measurement gets twice the bytes it may write, freed a moment before (see
    // recycleMemory); a sequential write after the first goes to a fresh export again.
    const recycle = () => recycleMemory(dir, 2 * sizeBytes);
    await measure(figures, 'seq write (nbdcopy --flush)', transport, 'MB/s', targets, (t) => nbdcopyWrite(source, t.uri), {
      attempts: seqAttempts,
      cpuPerGiB: true,
      before: async (t, attempt) => {
        if (attempt > 0) await t.fresh();
        await recycle();
      },
    });
    // The unflattering case: the same data again over a disk (a file) that holds it all.
    await measure(figures, 'seq rewrite, written disk (nbdcopy --flush)', transport, 'MB/s', targets, (t) => nbdcopyWrite(source, t.uri), {
      attempts: seqAttempts,
      cpuPerGiB: true,
      before: recycle,
    });
    await measure(figures, 'seq read (nbdcopy to null:)', transport, 'MB/s', targets, (t) => nbdcopyRead(t.uri), { attempts: seqAttempts });
    await measure(figures, 'fio 4k randread qd16', transport, 'IOPS', targets, (t) => fioIops(t.uri, 'randread', dir));
    await measure(figures, 'fio 4k randwrite qd16', transport, 'IOPS', targets, (t) => fioIops(t.uri, 'randwrite', dir), { before: recycle });
    await targets['qemu-nbd']?.stop();
    if (targets.tessera && tessera) {
      // The random writes left dead data that background compaction would reclaim during the
      // next phase, skewing it: reclaim it now, untimed in the table, reported on its own.
      const node = tessera.node;
      const s = await timed(() => node.cliOk(['compact']).then(() => {}));
      compactSeconds[transport] = s;
      log(`tessera compact after the ${transport} phase: ${s.toFixed(1)} s`);
    }
  }
  let stats: unknown = null;
  if (tessera) {
    stats = await tessera.node.stats().catch(() => null);
    await tessera.node.stop();
  }
  const result = { sizeBytes, fioSeconds: seconds, figures, startErrors, tesseraStats: stats, tesseraCompactSeconds: compactSeconds };
  if (opts.json) console.log(JSON.stringify(result, null, 2));
  else {
    printTable(figures);
    for (const [t, s] of Object.entries(compactSeconds)) console.log(`tessera compact after the ${t} phase (untimed above): ${s.toFixed(1)} s`);
    for (const e of startErrors) console.log(`could not start ${e}`);
  }
  return startErrors.length > 0 || figures.some((f) => f.errors.length > 0) ? 1 : 0;
}

try {
  process.exitCode = await main();
} catch (err) {
  console.error(`bench: ${(err as Error).message}`);
  process.exitCode = 1;
} finally {
  await cleanup();
}
