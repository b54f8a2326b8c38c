/**
 * `tessera cluster up` and `cluster down` (docs/cli.md): a whole cluster on this machine for
 * trying things out, as Ceph's vstart: an etcd from PATH and N nodes on free loopback ports,
 * each in a directory of DIR, running on after the command returns; `cluster down` stops them.
 */
import { spawn } from 'node:child_process';
import { accessSync, constants, existsSync, mkdirSync, openSync, closeSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { delimiter, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiClient } from '../api/client/index.ts';
import type { Command } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { jsonOption, printJson } from './output.ts';
import { formatTable } from './table.ts';

/** The file `cluster up` leaves in DIR for `cluster down`. */
const STATE_FILE = 'cluster-up.json';
/** Most nodes `cluster up` starts. */
const nodesMax = 16;
/** How long `cluster up` waits for etcd, then for every node to be up. */
const upTimeoutMs = 120_000;
/** How long `cluster down` gives a process after SIGTERM before SIGKILL. */
const stopTimeoutMs = 15_000;
/** The lease TTL of the nodes of a trial cluster: short, so that a node killed shows down soon. */
const trialLeaseTtlS = 5;

/** What `cluster up` started, as DIR/cluster-up.json keeps it. */
interface UpState {
  etcd: { pid: number; url: string; log: string };
  nodes: Array<{ id: string; pid: number; api: string; nbd: string; peer: string; dataDir: string; log: string }>;
}

/** bin/tessera of this installation. */
const tesseraBin = fileURLToPath(new URL('../../bin/tessera', import.meta.url));

/** The etcd binary on PATH, or a CliError naming the Debian package. */
function findEtcd(env: Record<string, string | undefined>): string {
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const path = join(dir, 'etcd');
    try {
      accessSync(path, constants.X_OK);
      return path;
    } catch {}
  }
  throw new CliError(CliErrorCode.FAILED, 'etcd not found on PATH: install it (Debian and Ubuntu: apt install etcd-server)');
}

/** A free TCP port on 127.0.0.1 (the kernel's pick, closed again at once). */
function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => done(port));
    });
  });
}

/** Starts `cmd` in its own session, its output to `log`, not waited for: it outlives the command. */
function spawnDetached(cmd: string, args: string[], log: string): number {
  const fd = openSync(log, 'a');
  try {
    const child = spawn(cmd, args, { detached: true, stdio: ['ignore', fd, fd] });
    child.unref();
    if (child.pid === undefined) throw new CliError(CliErrorCode.FAILED, `cannot start ${cmd}`);
    return child.pid;
  } finally {
    closeSync(fd);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function tail(path: string): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-5).join('\n');
  } catch {
    return '';
  }
}

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms));

function readState(dir: string): UpState | null {
  try {
    return JSON.parse(readFileSync(join(dir, STATE_FILE), 'utf8')) as UpState;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new CliError(CliErrorCode.FAILED, `cannot read ${join(dir, STATE_FILE)}: ${(err as Error).message}`);
  }
}

/** Stops `pid` with SIGTERM, then SIGKILL after stopTimeoutMs; resolves to how. */
async function stop(pid: number): Promise<'gone' | 'stopped' | 'killed'> {
  if (!alive(pid)) return 'gone';
  process.kill(pid, 'SIGTERM');
  const deadline = Date.now() + stopTimeoutMs;
  while (Date.now() < deadline) {
    if (!alive(pid)) return 'stopped';
    await sleep(100);
  }
  process.kill(pid, 'SIGKILL');
  while (alive(pid)) await sleep(50);
  return 'killed';
}

/** Stops what a state names: the nodes first (they leave while etcd still answers), then etcd. */
async function stopAll(state: UpState): Promise<string[]> {
  const how = await Promise.all(state.nodes.map(async (n) => `${n.id} ${await stop(n.pid)}`));
  how.push(`etcd ${await stop(state.etcd.pid)}`);
  return how;
}

function requireData(values: Record<string, string | boolean | undefined>): string {
  if (typeof values.data !== 'string' || values.data === '') throw usageError('missing --data DIR');
  return resolve(values.data);
}

/** `tessera cluster up`. */
export const clusterUpCommand: Command = {
  name: 'cluster up',
  args: [],
  summary: 'Start a trial cluster on this machine: etcd (from PATH) and N nodes on free loopback ports, running in the background',
  options: {
    nodes: { type: 'string', valueName: 'N', description: `Nodes to start, 1 to ${nodesMax} (default: 3)` },
    data: { type: 'string', valueName: 'DIR', description: 'Directory of the cluster: DIR/etcd, DIR/node1..N, their logs, DIR/cluster-up.json' },
    json: jsonOption,
  },
  examples: ['tessera cluster up --nodes 3 --data /tmp/tc', 'tessera cluster down --data /tmp/tc'],
  usesApi: false,
  async run({ values, io }) {
    const dir = requireData(values);
    const nodesText = typeof values.nodes === 'string' ? values.nodes : '3';
    if (!/^\d{1,2}$/.test(nodesText) || Number(nodesText) < 1 || Number(nodesText) > nodesMax) throw usageError(`invalid --nodes '${nodesText}': expected 1 to ${nodesMax}`);
    const count = Number(nodesText);
    const etcdBin = findEtcd(io.env);
    const running = readState(dir);
    if (running !== null && [running.etcd.pid, ...running.nodes.map((n) => n.pid)].some(alive)) {
      throw new CliError(CliErrorCode.FAILED, `a cluster started from ${dir} runs already (tessera cluster down --data ${dir} stops it)`);
    }
    mkdirSync(dir, { recursive: true });
    const [clientPort, etcdPeerPort] = [await freePort(), await freePort()];
    const url = `http://127.0.0.1:${clientPort}`;
    const state: UpState = { etcd: { pid: 0, url, log: join(dir, 'etcd.log') }, nodes: [] };
    const save = (): void => {
      writeFileSync(join(dir, `${STATE_FILE}.tmp`), JSON.stringify(state, null, 2) + '\n');
      renameSync(join(dir, `${STATE_FILE}.tmp`), join(dir, STATE_FILE));
    };
    // Whatever started is stopped again if the cluster does not come up.
    const fail = async (why: string, log: string): Promise<never> => {
      await stopAll(state);
      rmSync(join(dir, STATE_FILE), { force: true });
      const last = tail(log);
      throw new CliError(CliErrorCode.FAILED, `${why}${last === '' ? '' : `; the end of ${log}:\n${last}`}`);
    };
    const peerUrl = `http://127.0.0.1:${etcdPeerPort}`;
    state.etcd.pid = spawnDetached(etcdBin, [
      '--name', 'tessera', '--data-dir', join(dir, 'etcd'),
      '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', peerUrl, '--initial-advertise-peer-urls', peerUrl, '--initial-cluster', `tessera=${peerUrl}`,
    ], state.etcd.log);
    save();
    const deadline = Date.now() + upTimeoutMs;
    for (;;) {
      const ok = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
      if (ok) break;
      if (!alive(state.etcd.pid)) await fail('etcd exited before it answered', state.etcd.log);
      if (Date.now() > deadline) await fail(`etcd did not answer on ${url} within ${upTimeoutMs / 1000} s`, state.etcd.log);
      await sleep(100);
    }

    for (let k = 1; k <= count; k++) {
      const [api, nbd, peer] = [await freePort(), await freePort(), await freePort()];
      const dataDir = join(dir, `node${k}`);
      const node = { id: `n${k}`, pid: 0, api: `127.0.0.1:${api}`, nbd: `127.0.0.1:${nbd}`, peer: `127.0.0.1:${peer}`, dataDir, log: join(dir, `node${k}.log`) };
      node.pid = spawnDetached(tesseraBin, [
        'serve', '--data', dataDir, '--host', '127.0.0.1', '--api-port', String(api), '--nbd-port', String(nbd), '--peer-port', String(peer),
        '--etcd', url, '--node-id', node.id, '--lease-ttl', String(trialLeaseTtlS), '--log-format', 'json',
      ], node.log);
      state.nodes.push(node);
      save();
    }

    const client = new ApiClient(`http://${state.nodes[0].api}`);
    for (;;) {
      const up = await client.clusterStatus().then((s) => s.nodes.filter((n) => n.state === 'up').length, () => 0);
      if (up === count) break;
      const dead = state.nodes.find((n) => !alive(n.pid));
      if (dead !== undefined) await fail(`node ${dead.id} exited before the cluster was up`, dead.log);
      if (Date.now() > deadline) await fail(`${count - up} of ${count} nodes not up within ${upTimeoutMs / 1000} s`, state.nodes[0].log);
      await sleep(250);
    }
    if (values.json) return printJson(io, state);
    io.stdout(`Cluster up in ${dir}: etcd at ${url}, ${count} node${count === 1 ? '' : 's'}\n`);
    io.stdout(formatTable({ headers: ['ID', 'API', 'NBD', 'PEER', 'PID', 'LOG'], rows: state.nodes.map((n) => [n.id, `http://${n.api}`, n.nbd, n.peer, String(n.pid), n.log]) }));
    io.stdout(`Use it: export TESSERA_API=http://${state.nodes[0].api}; tessera cluster status; tessera disk create vm1 --size 10G\n`);
    io.stdout(`Stop it: tessera cluster down --data ${dir}\n`);
  },
};

/** `tessera cluster down`. */
export const clusterDownCommand: Command = {
  name: 'cluster down',
  args: [],
  summary: 'Stop the trial cluster that cluster up started in DIR (SIGTERM, SIGKILL after 15 s)',
  options: { data: { type: 'string', valueName: 'DIR', description: 'Directory cluster up was given' } },
  examples: ['tessera cluster down --data /tmp/tc'],
  usesApi: false,
  async run({ values, io }) {
    const dir = requireData(values);
    const state = readState(dir);
    if (state === null) {
      if (!existsSync(dir)) throw new CliError(CliErrorCode.FAILED, `no directory ${dir}`);
      throw new CliError(CliErrorCode.FAILED, `no cluster started from ${dir} (no ${STATE_FILE})`);
    }
    const how = await stopAll(state);
    rmSync(join(dir, STATE_FILE), { force: true });
    io.stdout(`Stopped the cluster of ${dir}: ${how.join(', ')}; its data stays in ${dir}\n`);
  },
};
