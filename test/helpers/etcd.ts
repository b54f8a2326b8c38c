/**
 * A real etcd for the cluster tests (docs/cluster.md): Debian's `etcd-server`, started on free
 * loopback ports with a data directory of its own, tracked so cleanup() kills it.
 */
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { freePort, makeTempDir, requireTool, spawnTracked } from './process.ts';
import { until } from './wait.ts';

/** A running etcd: its client URL, and ways to stop, kill and start it again on the same ports and data. */
export interface EtcdServer {
  /** `http://127.0.0.1:PORT`, for `--etcd`. */
  url: string;
  dataDir: string;
  /** Everything etcd wrote on stderr (its log) so far. */
  log(): string;
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>;
  /** Starts it again on the same ports and data directory; resolves once it answers. */
  start(): Promise<void>;
  /** SIGTERM, and waits for the exit. */
  stop(): Promise<void>;
}


/** Whether etcd answers `GET /health` with health true. */
async function healthy(url: string): Promise<boolean> {
  try {
    const res = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    const body = (await res.json()) as { health?: string };
    return body.health === 'true';
  } catch {
    return false;
  }
}

/** Starts an etcd on free loopback ports; fails naming the Debian package when etcd is missing. */
export async function startEtcd(opts: { dataDir?: string } = {}): Promise<EtcdServer> {
  const bin = requireTool('etcd', 'etcd-server');
  const dataDir = opts.dataDir ?? join(makeTempDir('tessera-etcd-'), 'data');
  const clientPort = await freePort();
  const peerPort = await freePort();
  const url = `http://127.0.0.1:${clientPort}`;
  let child: ChildProcess | null = null;
  let stderr = '';
  const start = async (): Promise<void> => {
    child = spawnTracked(bin, [
      '--name', 'tessera-test',
      '--data-dir', dataDir,
      '--listen-client-urls', url,
      '--advertise-client-urls', url,
      '--listen-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-advertise-peer-urls', `http://127.0.0.1:${peerPort}`,
      '--initial-cluster', `tessera-test=http://127.0.0.1:${peerPort}`,
      // Tests are not about etcd's own durability; it still fsyncs, unthrottled.
      '--snapshot-count', '10000',
    ]);
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const exited = { code: null as number | null, done: false };
    child.once('exit', (code) => Object.assign(exited, { code, done: true }));
    await until(async () => {
      if (exited.done) throw new Error(`etcd exited with ${exited.code} before answering:\n${stderr.slice(-2000)}`);
      return healthy(url);
    }, 30_000, `etcd answering on ${url}`, 100);
  };
  const waitExit = async (signal: NodeJS.Signals): Promise<void> => {
    const c = child as ChildProcess | null;
    if (c === null || c.exitCode !== null || c.signalCode !== null) return;
    const gone = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill(signal);
    await gone;
  };
  await start();
  return {
    url,
    dataDir,
    log: () => stderr,
    kill: () => waitExit('SIGKILL'),
    stop: () => waitExit('SIGTERM'),
    start,
  };
}
