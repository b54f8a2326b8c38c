/**
 * NBD throughput benchmark: Tessera against qemu-nbd serving a raw file, side by side in one run,
 * on the same machine, data and clients. Not a test: it prints figures, it asserts nothing.
 * Method and settings: docs/benchmarks.md.
 *
 *   npm run bench -- [--json] [--size 1G] [--seconds 20] [--transports tcp,unix] [--servers tessera,qemu-nbd] [--dir DIR]
 */
import { createServer } from 'node:net';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import {
  cleanup, makeTempDir, nbdinfo, parseSize, requireTool, run, runOk, spawnTracked, startNode,
  writeSeededFile, type TesseraNode,
} from '../test/helpers/index.ts';

type Transport = 'tcp' | 'unix';
type ServerName = 'tessera' | 'qemu-nbd';

/** A served export one benchmark client can target. */
interface Target {
  uri: string;
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
  },
});
const sizeBytes = parseSize(opts.size);
const seconds = Number(opts.seconds);
const transports = opts.transports.split(',') as Transport[];
const servers = opts.servers.split(',') as ServerName[];
const exportName = 'bench';
const log = (msg: string) => process.stderr.write(`bench: ${msg}\n`);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

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
async function startQemuNbd(file: string, transport: Transport, dir: string): Promise<Target> {
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
    async stop() {
      child.kill('SIGTERM');
      await exited;
    },
  };
}

/** Tessera with one fresh disk per transport, so each write test starts on an empty disk. */
async function startTessera(dir: string): Promise<{ node: TesseraNode; target(t: Transport): Promise<Target> }> {
  const node = await startNode({ dataDir: join(dir, 'tessera-data') });
  return {
    node,
    async target(t) {
      const name = `${exportName}-${t}`;
      await node.cliOk(['disk', 'create', name, '--size', String(sizeBytes)]);
      return { uri: t === 'tcp' ? node.nbdUri(name) : node.unixUri(name), stop: async () => {} };
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

/** Runs one test against each server in turn and records the figures. */
async function measure(
  figures: Figure[], test: string, transport: Transport, unit: Figure['unit'],
  targets: Partial<Record<ServerName, Target>>, fn: (uri: string) => Promise<number>,
): Promise<void> {
  const fig: Figure = { test, transport, unit, tessera: null, qemuNbd: null, ratio: null, errors: [] };
  for (const name of servers) {
    const target = targets[name];
    if (!target) continue;
    try {
      log(`${test} over ${transport} on ${name}...`);
      // No dirty data left by the step before (the other server's writes) writes back during this one.
      await runOk('sync', []);
      const v = await fn(target.uri);
      if (name === 'tessera') fig.tessera = v;
      else fig.qemuNbd = v;
    } catch (err) {
      fig.errors.push(`${name}: ${(err as Error).message.split('\n').slice(0, 3).join(' | ')}`);
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
    let qemu: Target | null = null;
    if (servers.includes('qemu-nbd')) {
      try {
        const qemuFile = join(dir, `qemu-${transport}.raw`);
        await runOk('truncate', ['-s', String(sizeBytes), qemuFile]);
        qemu = await startQemuNbd(qemuFile, transport, dir);
      } catch (err) {
        startErrors.push(`qemu-nbd (${transport}): ${(err as Error).message.split('\n')[0]}`);
      }
    }
    const targets: Partial<Record<ServerName, Target>> = {};
    if (tessera) {
      try {
        targets.tessera = await tessera.target(transport);
      } catch (err) {
        startErrors.push(`tessera disk (${transport}): ${(err as Error).message.split('\n').slice(0, 4).join(' | ')}`);
      }
    }
    if (qemu) targets['qemu-nbd'] = qemu;
    for (const [name, t] of Object.entries(targets)) {
      const info = await nbdinfo([t.uri]).catch(() => '');
      log(`${name} ${transport}: multi-conn=${/can_multi_conn: (\w+)/.exec(info)?.[1] ?? '?'}`);
    }
    await measure(figures, 'seq write (nbdcopy --flush)', transport, 'MB/s', targets, (uri) => nbdcopyWrite(source, uri));
    await measure(figures, 'seq read (nbdcopy to null:)', transport, 'MB/s', targets, (uri) => nbdcopyRead(uri));
    await measure(figures, 'fio 4k randread qd16', transport, 'IOPS', targets, (uri) => fioIops(uri, 'randread', dir));
    await measure(figures, 'fio 4k randwrite qd16', transport, 'IOPS', targets, (uri) => fioIops(uri, 'randwrite', dir));
    await qemu?.stop();
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
