/**
 * A real S3-compatible server for tests: Ceph's RADOS Gateway (radosgw) over a throwaway
 * single-node Ceph cluster (one monitor, one OSD on memstore) in a temp dir, all on 127.0.0.1.
 *
 * Nothing here needs root: the daemons run as the current user, keep their data, logs, sockets
 * and pid files under the temp dir, and are killed by stop(), by cleanup() or at process exit
 * (they run in the foreground as tracked children). The OSD's objects live in its memory
 * (memstore), so the cluster is gone with its processes. Startup takes about a second.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort, makeTempDir, runOk, spawnTracked } from './process.ts';

/** The Debian packages that hold the binaries started here (ceph-common and ceph-base come along). */
export const s3ServerDebPackages = ['ceph-mon', 'ceph-osd', 'radosgw'] as const;

/** Each binary the cluster needs, with the Debian package that ships it. */
const binaries = {
  monmaptool: 'ceph-base',
  'ceph-mon': 'ceph-mon',
  'ceph-osd': 'ceph-osd',
  radosgw: 'radosgw',
  'radosgw-admin': 'ceph-common',
  ceph: 'ceph-common',
} as const;

type Binary = keyof typeof binaries;

/** Options of startS3Server(). */
export interface StartS3ServerOptions {
  /** Bound on the whole startup; a guard against hangs, not a performance check. Default 2 minutes. */
  startTimeoutMs?: number;
  /** The OSD's capacity (memstore keeps objects in RAM; this is a ceiling, not an allocation). Default 4 GiB. */
  capacityBytes?: number;
}

/** A running radosgw, its S3 user and how to reach it. */
export interface S3Server {
  /** `http://127.0.0.1:PORT`. */
  endpoint: string;
  /** Region to sign requests with (radosgw accepts any; this is the SDK's usual default). */
  region: string;
  accessKeyId: string;
  secretAccessKey: string;
  /** The AWS environment variables that point a client (the SDK, the tessera CLI) at this server. */
  env: Record<'AWS_ENDPOINT_URL' | 'AWS_REGION' | 'AWS_ACCESS_KEY_ID' | 'AWS_SECRET_ACCESS_KEY', string>;
  /** Temp dir of the cluster: ceph.conf, daemon data, logs in `log/`. */
  dir: string;
  /** How long startS3Server() took, from the first daemon's start to the S3 user's creation. */
  startupMs: number;
  /** Creates a bucket owned by this server's user. */
  createBucket(name: string): Promise<void>;
  /** The last lines of each daemon's log, for failure messages. */
  logTail(): string;
  /** Stops the gateway abruptly (SIGKILL), as a crash would; the cluster behind it keeps running. */
  killGateway(): Promise<void>;
  /** Starts the gateway again after killGateway(), on the same port, and waits until it listens. */
  startGateway(): Promise<void>;
  /** Freezes the gateway (SIGSTOP): connections are accepted by the kernel but never answered. */
  freezeGateway(): void;
  /** Lets a frozen gateway run again (SIGCONT). */
  thawGateway(): void;
  /** Kills every daemon of the cluster and waits for them to exit. Safe to call more than once. */
  stop(): Promise<void>;
}

/** Checks that every binary is installed, or throws an error naming the Debian packages to install. */
function requireCephBinaries(): Record<Binary, string> {
  const found: Partial<Record<Binary, string>> = {};
  const missing: string[] = [];
  for (const [bin, pkg] of Object.entries(binaries) as [Binary, string][]) {
    const r = runSyncWhich(bin);
    if (r === null) missing.push(`${bin} (${pkg})`);
    else found[bin] = r;
  }
  if (missing.length > 0) {
    const pkgs = s3ServerDebPackages.join(' ');
    throw new Error(
      `the tests' S3 server is Ceph's radosgw, and ${missing.join(', ')} ${missing.length === 1 ? 'is' : 'are'} not installed: ` +
        `install the Debian packages ${pkgs} (apt-get install --no-install-recommends ${pkgs})`,
    );
  }
  return found as Record<Binary, string>;
}

/** The path of `cmd` on PATH, looked up as requireTool does, or null. */
function runSyncWhich(cmd: string): string | null {
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { encoding: 'utf8' });
  const path = r.stdout?.trim() ?? '';
  return r.status === 0 && path !== '' ? path : null;
}


/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
async function waitForPort(port: number, deadline: number, alive: () => void): Promise<void> {
  for (;;) {
    alive();
    const ok = await new Promise<boolean>((resolve) => {
      const sock = connect(port, '127.0.0.1');
      sock.once('connect', () => {
        sock.destroy();
        resolve(true);
      });
      sock.once('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on 127.0.0.1:${port}`);
    await sleep(50);
  }
}

/** Resolves once `file` contains `needle` (a daemon's log saying it reached a state). */
async function waitForLogLine(file: string, needle: string, deadline: number, alive: () => void): Promise<void> {
  for (;;) {
    alive();
    let text = '';
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      // not created yet
    }
    if (text.includes(needle)) return;
    if (Date.now() > deadline) throw new Error(`${file} never said ${JSON.stringify(needle)}`);
    await sleep(50);
  }
}

/** Random S3 credentials in the shapes AWS uses (20 upper-case characters, 40 characters). */
function newCredentials(): { accessKeyId: string; secretAccessKey: string } {
  const upper = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  const bytes = randomBytes(20);
  const accessKeyId = 'TS' + Array.from(bytes.subarray(0, 18), (b) => upper[b % upper.length]).join('');
  const secretAccessKey = randomBytes(30).toString('base64').replace(/[+/]/g, 'x');
  return { accessKeyId, secretAccessKey };
}

/**
 * ceph.conf of the throwaway cluster. Auth is off (everything is on loopback and dies with the
 * test); one replica; short Paxos intervals, since one monitor has nobody to wait for and each
 * pool radosgw creates at first start would otherwise cost a second.
 */
function cephConf(o: { dir: string; fsid: string; monPort: number; rgwPort: number; capacityBytes: number }): string {
  const d = o.dir;
  return `[global]
fsid = ${o.fsid}
mon host = v2:127.0.0.1:${o.monPort}
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
# radosgw asks for an encrypted monitor session by default, which needs cephx.
ms mon client mode = crc
mon client hunt interval = 0.5
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
run dir = ${d}/run
admin socket = ${d}/run/$name.asok
pid file = ${d}/run/$name.pid
log file = ${d}/log/$name.log
log to stderr = false
err to stderr = true
mon cluster log file = ${d}/log/cluster.log
crash dir = ${d}/crash
keyring = ${d}/keyring

[mon]
mon data = ${d}/mon
paxos propose interval = 0.01
paxos min wait = 0.001
mon data avail warn = 1
mon data avail crit = 0

[osd]
osd data = ${d}/osd
osd objectstore = memstore
memstore device bytes = ${o.capacityBytes}
osd op num shards = 1
osd op num threads per shard = 2

[client.rgw]
# Without TCP_NODELAY, beast's separate header and body writes meet delayed ACKs: 40 ms a GET.
rgw frontends = beast endpoint=127.0.0.1:${o.rgwPort} tcp_nodelay=1
rgw data = ${d}/rgw
rgw enable usage log = false
rgw enable ops log = false
rgw thread pool size = 64
`;
}

/**
 * Starts a single-node Ceph cluster and radosgw in a temp dir and creates an S3 user. Throws an
 * error naming the Debian packages if a binary is missing, or the daemons' log tails if the
 * cluster does not come up.
 */
export async function startS3Server(opts: StartS3ServerOptions = {}): Promise<S3Server> {
  const bin = requireCephBinaries();
  try {
    return await startCluster(bin, opts);
  } catch (err) {
    // The ports were free when chosen; another process may have taken one since. Once more.
    if (!/Address already in use/.test((err as Error).message)) throw err;
    return startCluster(bin, opts);
  }
}

async function startCluster(bin: Record<Binary, string>, opts: StartS3ServerOptions): Promise<S3Server> {
  const startTimeoutMs = opts.startTimeoutMs ?? 120_000;
  const dir = makeTempDir('tessera-s3-');
  for (const sub of ['mon', 'osd', 'rgw', 'run', 'log', 'crash']) mkdirSync(join(dir, sub));
  const conf = join(dir, 'ceph.conf');
  const fsid = randomUUID();
  const monPort = await freePort();
  const rgwPort = await freePort();
  writeFileSync(conf, cephConf({ dir, fsid, monPort, rgwPort, capacityBytes: opts.capacityBytes ?? 4 * 1024 ** 3 }));
  // No CEPH_CONF or CEPH_ARGS from the developer's shell may point the tools at another cluster.
  const env = { ...process.env, CEPH_CONF: conf, CEPH_ARGS: '' };
  const cmdOpts = { env, timeoutMs: startTimeoutMs };
  const deadline = Date.now() + startTimeoutMs;

  const daemons = new Map<string, ChildProcess>();
  const setpriv = runSyncWhich('setpriv');
  const logFile = (name: string) => join(dir, 'log', `${name}.log`);
  function tail(name: string, lines = 25): string {
    for (const f of [logFile(name), join(dir, 'log', `${name}.stderr`)]) {
      try {
        const text = readFileSync(f, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
        if (text) return text;
      } catch {
        // not written yet
      }
    }
    return '(no log)';
  }
  function logTail(): string {
    return ['mon.a', 'osd.0', 'client.rgw'].map((n) => `--- ${n} (${logFile(n)}):\n${tail(n)}`).join('\n');
  }
  function startDaemon(name: string, cmd: string, args: string[]): ChildProcess {
    // -f: stay in the foreground, so the process is ours to track and kill. setpriv (util-linux)
    // makes the kernel kill it if this process dies without cleaning up (SIGKILL, a crash).
    const argv = [cmd, '-f', '-c', conf, ...args];
    const child = setpriv ? spawnTracked(setpriv, ['--pdeathsig', 'KILL', '--', ...argv], { env }) : spawnTracked(cmd, argv.slice(1), { env });
    child.stdin!.end();
    const out = createWriteStream(join(dir, 'log', `${name}.stderr`), { flags: 'a' });
    child.stdout!.pipe(out);
    child.stderr!.pipe(out);
    daemons.set(name, child);
    return child;
  }
  /** Throws if a daemon died during startup, with its log. */
  function alive(): void {
    for (const [name, child] of daemons) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new Error(`${name} exited (${child.exitCode ?? child.signalCode}) while the S3 server was starting:\n${tail(name)}`);
      }
    }
  }
  async function killAll(): Promise<void> {
    await Promise.all([...daemons.values()].map((c) => killChild(c, 'SIGKILL')));
  }

  const t0 = performance.now();
  try {
    await runOk(bin.monmaptool, ['--create', '--fsid', fsid, '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, join(dir, 'monmap')], cmdOpts);
    await runOk(bin['ceph-mon'], ['-c', conf, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')], cmdOpts);
    startDaemon('mon.a', bin['ceph-mon'], ['-i', 'a']);
    await waitForPort(monPort, deadline, alive);

    const osdUuid = randomUUID();
    const osdId = (await runOk(bin.ceph, ['-c', conf, '--connect-timeout', String(Math.ceil(startTimeoutMs / 1000)), 'osd', 'new', osdUuid], cmdOpts)).trim();
    if (osdId !== '0') throw new Error(`ceph osd new gave id ${JSON.stringify(osdId)}, expected 0`);
    await runOk(bin['ceph-osd'], ['-c', conf, '--mkfs', '-i', '0', '--osd-uuid', osdUuid], cmdOpts);
    startDaemon('osd.0', bin['ceph-osd'], ['-i', '0']);
    // radosgw creates its pools at first start. A pool created before the OSD is up gets its
    // placement groups only at the monitor's next tick, 5 s later: wait for the OSD first.
    await waitForLogLine(logFile('osd.0'), 'state: booting -> active', deadline, alive);

    // radosgw listens once its pools are there.
    startDaemon('client.rgw', bin.radosgw, ['-n', 'client.rgw']);
    await waitForPort(rgwPort, deadline, alive);

    const creds = newCredentials();
    await runOk(bin['radosgw-admin'], ['-c', conf, 'user', 'create', '--uid', 'tessera', '--display-name', 'Tessera tests', '--access-key', creds.accessKeyId, '--secret-key', creds.secretAccessKey], cmdOpts);
    const startupMs = Math.round(performance.now() - t0);

    const endpoint = `http://127.0.0.1:${rgwPort}`;
    const region = 'us-east-1';
    let stopped = false;
    const gateway = () => daemons.get('client.rgw')!;
    return {
      endpoint,
      region,
      accessKeyId: creds.accessKeyId,
      secretAccessKey: creds.secretAccessKey,
      env: { AWS_ENDPOINT_URL: endpoint, AWS_REGION: region, AWS_ACCESS_KEY_ID: creds.accessKeyId, AWS_SECRET_ACCESS_KEY: creds.secretAccessKey },
      dir,
      startupMs,
      async createBucket(name: string): Promise<void> {
        const client = new S3Client({ endpoint, region, forcePathStyle: true, credentials: creds, maxAttempts: 1 });
        try {
          await client.send(new CreateBucketCommand({ Bucket: name }));
        } finally {
          client.destroy();
        }
      },
      logTail,
      async killGateway(): Promise<void> {
        await killChild(gateway(), 'SIGKILL');
      },
      async startGateway(): Promise<void> {
        if (gateway().exitCode === null && gateway().signalCode === null) throw new Error('the gateway is running');
        startDaemon('client.rgw', bin.radosgw, ['-n', 'client.rgw']);
        await waitForPort(rgwPort, Date.now() + startTimeoutMs, alive);
      },
      freezeGateway(): void {
        gateway().kill('SIGSTOP');
      },
      thawGateway(): void {
        gateway().kill('SIGCONT');
      },
      async stop(): Promise<void> {
        if (stopped) return;
        stopped = true;
        await killAll();
      },
    };
  } catch (err) {
    await killAll();
    throw new Error(`the S3 server (radosgw) did not start: ${(err as Error).message}\n${logTail()}`, { cause: err });
  }
}

/** Sends `signal` (a SIGKILL also wakes a stopped process) and resolves once the child exited. */
function killChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}
