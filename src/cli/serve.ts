import { homedir, tmpdir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import type { Command, Io } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { parseDuration } from './backup-options.ts';
import { parseSize } from './size.ts';

/** How long a graceful shutdown may take before the node exits anyway. */
const shutdownMsMax = 30_000;

/** Default data directory: `$XDG_DATA_HOME/tessera`, else `~/.local/share/tessera`. */
export function defaultDataDir(env: Io['env']): string {
  const xdg = env.XDG_DATA_HOME;
  // The XDG spec says relative values are invalid and to be ignored.
  if (xdg && isAbsolute(xdg)) return join(xdg, 'tessera');
  return join(homedir(), '.local', 'share', 'tessera');
}

function parsePort(option: string, value: string | boolean | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !/^\d{1,5}$/.test(value) || Number(value) > 65535) {
    throw usageError(`invalid --${option} '${value}': expected a port number from 0 to 65535`);
  }
  return Number(value);
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** A ratio above 0 and at most 1, e.g. 0.95. */
function parseRatio(text: string): number {
  const n = /^(0(\.\d+)?|1(\.0+)?|\.\d+)$/.test(text) ? Number(text) : NaN;
  if (!(n > 0 && n <= 1)) throw new Error(`'${text}' is not a ratio above 0 and at most 1 (e.g. 0.95)`);
  return n;
}

/** An option's value checked by `parse`, or `fallback` when not given. */
function option<T>(value: string | boolean | undefined, name: string, parse: (text: string) => T, fallback: T): T {
  if (value === undefined) return fallback;
  try {
    return parse(String(value));
  } catch (err) {
    throw usageError(`invalid --${name}: ${(err as Error).message}`);
  }
}

/** `parse`, refusing 0 with `hint`. */
function positive(parse: (text: string) => number, hint: string): (text: string) => number {
  return (text) => {
    const n = parse(text);
    if (n === 0) throw new Error(`'${text}' is no time at all; ${hint}`);
    return n;
  };
}

/** The cluster options of `serve`, checked; undefined without --etcd (then none of them may be given). */
function clusterOptions(values: Record<string, string | boolean | undefined>): { etcd: string[]; nodeId: string; advertise?: string; zone?: string; prefix?: string; peerPort: number; leaseTtlS?: number; secretFile?: string; rebuildDelayMs?: number; rebuildBytesPerSecond?: number; syncIntervalMs?: number } | undefined {
  const str = (name: string): string | undefined => (typeof values[name] === 'string' ? (values[name] as string) : undefined);
  const only = ['node-id', 'advertise', 'zone', 'etcd-prefix', 'peer-port', 'lease-ttl', 'cluster-secret-file', 'rebuild-delay', 'rebuild-rate', 'sync-interval'];
  const etcd = str('etcd');
  if (etcd === undefined) {
    const given = only.find((o) => values[o] !== undefined);
    if (given !== undefined) throw usageError(`--${given} is an option of cluster mode: give --etcd URL too`);
    return undefined;
  }
  const urls = etcd.split(',').map((u) => u.trim());
  for (const u of urls) {
    let url: URL | null = null;
    try {
      url = new URL(u);
    } catch {}
    if (url === null || (url.protocol !== 'http:' && url.protocol !== 'https:')) throw usageError(`invalid --etcd '${u}': expected http://HOST:PORT (several separated by commas)`);
  }
  const nodeId = str('node-id');
  if (nodeId === undefined) throw usageError('--etcd needs --node-id ID: the name of this node in the cluster, for life');
  for (const o of ['advertise', 'zone']) if (str(o) === '') throw usageError(`--${o} must not be empty`);
  const ttl = str('lease-ttl');
  if (ttl !== undefined && !(/^\d{1,4}$/.test(ttl) && Number(ttl) >= 2 && Number(ttl) <= 3600)) throw usageError(`invalid --lease-ttl '${ttl}': expected a whole number of seconds from 2 to 3600`);
  return {
    etcd: urls,
    nodeId,
    advertise: str('advertise'),
    zone: str('zone'),
    prefix: str('etcd-prefix'),
    peerPort: parsePort('peer-port', values['peer-port'], 0),
    leaseTtlS: ttl === undefined ? undefined : Number(ttl),
    secretFile: str('cluster-secret-file'),
    rebuildDelayMs: option(values['rebuild-delay'], 'rebuild-delay', parseDuration, undefined),
    syncIntervalMs: option(values['sync-interval'], 'sync-interval', positive(parseDuration, 'sync points bound what a returning replica copies'), undefined),
    rebuildBytesPerSecond: option(values['rebuild-rate'], 'rebuild-rate', positive(parseSize, 'a rebuild must make progress'), undefined),
  };
}

/** `tessera serve`: runs a node until SIGINT or SIGTERM. */
export const serveCommand: Command = {
  name: 'serve',
  args: [],
  summary: 'Run a node: the disk store, its NBD server and the HTTP API',
  options: {
    data: { type: 'string', valueName: 'DIR', description: 'Data directory (default: $XDG_DATA_HOME/tessera or ~/.local/share/tessera)' },
    'nbd-port': { type: 'string', valueName: 'PORT', description: 'NBD TCP port; 0 picks a free one (default: 10809)' },
    'api-port': { type: 'string', valueName: 'PORT', description: 'HTTP API port; 0 picks a free one (default: 7480)' },
    host: { type: 'string', valueName: 'HOST', description: 'Address to listen on (default: 127.0.0.1)' },
    socket: { type: 'string', valueName: 'PATH', description: 'NBD Unix socket (default: DIR/nbd.sock; with --read-only, tessera-PID.sock in the temporary directory)' },
    reserve: { type: 'string', valueName: 'SIZE', description: 'Space of the file system kept for compaction, the index and recovery (default: the larger of 2% and 1G, at most a tenth)' },
    'nearfull-ratio': { type: 'string', valueName: 'RATIO', description: 'Share of the usable space (total less the reserve) in use from which the node warns (default: 0.85)' },
    'full-ratio': { type: 'string', valueName: 'RATIO', description: 'Share of the usable space in use from which client writes are refused (default: 0.95)' },
    'read-only': { type: 'boolean', description: 'Serve the disks read-only, writing nothing to DIR (also on a read-only file system): to copy data off a node that cannot start otherwise' },
    'log-level': { type: 'string', valueName: 'LEVEL', description: 'Least severe log records written: debug, info, warn, error (default: info)' },
    'log-format': { type: 'string', valueName: 'FORMAT', description: 'Log records on stderr as json or text lines (default: text when stderr is a terminal, else json)' },
    'scrub-rate': { type: 'string', valueName: 'SIZE', description: 'Bytes a second the background scrub reads, e.g. 4M; 0 turns it off (default: 4M)' },
    'scrub-interval': { type: 'string', valueName: 'DURATION', description: 'Time between the starts of two background scrub passes, e.g. 12h, 7d (default: 1d)' },
    etcd: { type: 'string', valueName: 'URL[,URL...]', description: 'Run as a node of the cluster coordinated by this etcd (docs/cluster.md); needs --node-id' },
    'node-id': { type: 'string', valueName: 'ID', description: 'The node\'s id in the cluster, for life: 1 to 64 of A-Z a-z 0-9 . _ -' },
    advertise: { type: 'string', valueName: 'HOST', description: 'Host the other nodes and clients reach this node at (default: --host)' },
    zone: { type: 'string', valueName: 'ZONE', description: 'Failure domain of the node, e.g. a rack (default: default)' },
    'etcd-prefix': { type: 'string', valueName: 'PREFIX', description: 'Prefix of the cluster\'s etcd keys; clusters may share an etcd under different ones (default: /tessera/)' },
    'peer-port': { type: 'string', valueName: 'PORT', description: 'Port of the peer protocol between nodes; 0 picks a free one (default: 0)' },
    'rebuild-delay': { type: 'string', valueName: 'DURATION', description: 'How long a replica on a node that is down may stay away before a new one is made elsewhere, e.g. 5m (default: 60s)' },
    'sync-interval': { type: 'string', valueName: 'DURATION', description: 'How often a head takes a sync point of a disk written since the last: a replica that comes back copies the changes since its last one (default: 60s)' },
    'rebuild-rate': { type: 'string', valueName: 'SIZE', description: 'Bytes a second a replica copying its data in reads at most, e.g. 200M (default: 100M)' },
    'lease-ttl': { type: 'string', valueName: 'SECONDS', description: 'Seconds after which a node that stopped answering etcd counts as down (default: 10)' },
    'cluster-secret-file': { type: 'string', valueName: 'FILE', description: 'File holding the cluster secret, 32 bytes in base64; checked against the cluster\'s (default: the cluster makes its own)' },
  },
  examples: [
    'tessera serve',
    'tessera serve --data /srv/tessera --host 0.0.0.0',
    'tessera serve --data /tmp/t --nbd-port 0 --api-port 0   # free ports, see the ready line',
    'tessera serve --log-level debug --log-format json 2>>node.log',
    'tessera serve --data /mnt/rescued/tessera --read-only   # then nbdcopy or backup create the disks off it',
    'tessera serve --scrub-rate 16M --scrub-interval 12h',
    'tessera serve --data /srv/tessera --host 10.0.0.5 --etcd http://10.0.0.1:2379 --node-id n1 --zone rack1',
  ],
  usesApi: false,
  async run({ values, io }) {
    const dataDir = resolve(typeof values.data === 'string' ? values.data : defaultDataDir(io.env));
    const host = typeof values.host === 'string' ? values.host : '127.0.0.1';
    if (host === '') throw usageError('--host must not be empty');
    const nbdPort = parsePort('nbd-port', values['nbd-port'], 10809);
    const apiPort = parsePort('api-port', values['api-port'], 7480);
    const readOnly = values['read-only'] === true;
    // Read-only, nothing is written to the data directory, not even the socket.
    const socketPath = resolve(typeof values.socket === 'string' ? values.socket : readOnly ? join(tmpdir(), `tessera-${process.pid}.sock`) : join(dataDir, 'nbd.sock'));
    const space = {
      reserveBytes: option(values.reserve, 'reserve', parseSize, undefined),
      nearfullRatio: option(values['nearfull-ratio'], 'nearfull-ratio', parseRatio, undefined),
      fullRatio: option(values['full-ratio'], 'full-ratio', parseRatio, undefined),
    };
    if ((space.nearfullRatio ?? 0.85) > (space.fullRatio ?? 0.95)) throw usageError(`--nearfull-ratio (${space.nearfullRatio ?? 0.85}) must not be above --full-ratio (${space.fullRatio ?? 0.95})`);
    const scrub = {
      rateBytesPerSecond: option(values['scrub-rate'], 'scrub-rate', parseSize, undefined),
      intervalMs: option(values['scrub-interval'], 'scrub-interval', positive(parseDuration, 'use --scrub-rate 0 to turn the background scrub off'), undefined),
    };
    const cluster = clusterOptions(values);
    // Loaded here, as the node is below: client commands load none of the server side.
    const { Logger, parseLogFormat, parseLogLevel } = await import('../observe/index.ts');
    const level = option(values['log-level'], 'log-level', parseLogLevel, 'info');
    const format = option(values['log-format'], 'log-format', parseLogFormat, io.stderrIsTty === true ? 'text' : 'json');
    const root = Logger.create({ level, format, write: (line) => io.stderr(line) });
    const log = root.child({ component: 'node' });

    // Loaded here so that client commands do not pay for loading the engine.
    const { startNode } = await import('../node/index.ts');
    let node;
    try {
      node = await startNode({ dataDir, host, nbdPort, apiPort, socketPath, log: root, space, readOnly, scrub, ...(cluster !== undefined ? { cluster } : {}) });
    } catch (err) {
      throw new CliError(CliErrorCode.FAILED, `cannot start the node: ${(err as Error).message}`, { cause: err });
    }
    const running = node;
    await new Promise<void>((done, fail) => {
      const stop = (signal: string): void => {
        process.off('SIGINT', stop);
        process.off('SIGTERM', stop);
        // A second signal means "now".
        const now = (): never => process.exit(1);
        process.once('SIGINT', now);
        process.once('SIGTERM', now);
        log.info(`${signal}: shutting down`);
        const timer = setTimeout(() => {
          log.error(`shutdown took over ${shutdownMsMax} ms; exiting anyway`);
          process.exit(1);
        }, shutdownMsMax);
        timer.unref();
        running.close().then(
          () => {
            clearTimeout(timer);
            done();
          },
          (err: unknown) => {
            clearTimeout(timer);
            fail(new CliError(CliErrorCode.FAILED, `shutdown failed: ${(err as Error).message}`, { cause: err }));
          },
        );
      };
      process.on('SIGINT', stop);
      process.on('SIGTERM', stop);
      // The one line on stdout; scripts and tests wait for it.
      io.stdout(`tessera ready api=${running.api} nbd=${hostPort(running.nbd.host, running.nbd.port)} socket=${running.socket}${running.readOnly ? ' read-only' : ''}\n`);
    });
  },
};
