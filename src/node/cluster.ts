/**
 * A node's cluster mode (docs/cluster.md): the identity its data directory remembers
 * (`DIR/cluster.json`), the cluster secret it may be given, the peer listener and the
 * coordinator it joins with. Loaded only by a node started with `--etcd`.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { checkNodeId, ClusterError, ClusterErrorCode, Coordinator, etcdPrefixDefault, formatHlc, normalizePrefix, PeerProtocolVersion, Replication, secretBytes } from '../cluster/index.ts';
import type { Hlc } from '../cluster/index.ts';
import type { Store } from '../engine/index.ts';
import type { NodeView } from '../cluster/index.ts';
import type { Logger } from '../observe/index.ts';

/** What `serve --etcd …` asks of the node. */
export interface ClusterModeOptions {
  /** etcd client URLs. */
  etcd: string[];
  /** The node's id for life. */
  nodeId: string;
  /** The host others reach it at; default the listen host. */
  advertise?: string;
  /** Its failure domain; default `default`. */
  zone?: string;
  /** etcd key prefix; default `/tessera/`. */
  prefix?: string;
  /** Port of the peer protocol; 0 picks a free one. Default 0. */
  peerPort?: number;
  /** Lease TTL in seconds; default 10. */
  leaseTtlS?: number;
  /** A file holding the cluster secret (32 bytes, base64). */
  secretFile?: string;
  /** How long a replica may stay away before a new one is placed elsewhere; default 60 s. */
  rebuildDelayMs?: number;
  /** Bytes a second a copy in reads at most; default 100 MiB/s. */
  rebuildBytesPerSecond?: number;
  /** How often a head takes a sync point of a disk written since the last; default 60 s. */
  syncIntervalMs?: number;
  /** @internal Interval of the live record's rewrite (tests shorten it). */
  liveIntervalMs?: number;
}

/** What `DIR/cluster.json` remembers: the node a data directory belongs to, and its cluster. */
interface Identity {
  nodeId: string;
  clusterId: string;
  prefix: string;
}

/** Name of the identity file in the data directory. */
const IDENTITY_FILE = 'cluster.json';

/** The identity the data directory remembers, or null for one never started in a cluster. */
async function readIdentity(dataDir: string): Promise<Identity | null> {
  let text: string;
  try {
    text = await readFile(join(dataDir, IDENTITY_FILE), 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  const v = JSON.parse(text) as Partial<Identity>;
  if (typeof v.nodeId !== 'string' || typeof v.clusterId !== 'string' || typeof v.prefix !== 'string') {
    throw new ClusterError(ClusterErrorCode.IDENTITY, `${join(dataDir, IDENTITY_FILE)} is not a cluster identity (nodeId, clusterId, prefix)`);
  }
  return { nodeId: v.nodeId, clusterId: v.clusterId, prefix: v.prefix };
}

/** Writes the identity whole (a temp file renamed over), so that a crash leaves the old or the new. */
async function writeIdentity(dataDir: string, id: Identity): Promise<void> {
  const path = join(dataDir, IDENTITY_FILE);
  await writeFile(`${path}.tmp`, JSON.stringify(id, null, 2) + '\n');
  await rename(`${path}.tmp`, path);
}

/** The secret in `--cluster-secret-file`: 32 bytes, base64 (`openssl rand -base64 32`). */
async function readSecret(path: string): Promise<Buffer> {
  const text = (await readFile(path, 'utf8')).trim();
  const secret = Buffer.from(text, 'base64');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text) || secret.length !== secretBytes) {
    throw new ClusterError(ClusterErrorCode.INVALID, `${path} must hold the cluster secret as ${secretBytes} bytes in base64 (e.g. made by: openssl rand -base64 32)`);
  }
  return secret;
}

/** A node's membership in the cluster, once connected. */
export interface ClusterMode {
  readonly coordinator: Coordinator;
  /**
   * Joins with the node's endpoints (the listeners are up), then takes part in the replicated
   * disks; `hlc` is the node's clock, which stamps its peer messages and live record.
   */
  join(j: { host: string; apiPort: number; nbdPort: number; version: string; store: Store; hlc: Hlc; usage: () => { capacityBytes: number; usedBytes: number; load: number } }): Promise<Replication>;
  /** The nodes for GET /cluster. */
  nodes(): NodeView[];
  /** Leaves the cluster (the node shows down at once) and closes the peer listener. */
  close(): Promise<void>;
}

function hostPort(host: string, port: number): string {
  return `${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/**
 * Connects the node to its cluster before its store opens, so that a wrong setting fails fast:
 * checks the node id, the identity the data directory remembers, reaches etcd (or fails naming
 * the URLs tried) and takes the cluster record, then remembers the identity.
 */
export async function connectCluster(opts: ClusterModeOptions & { dataDir: string; log: Logger }): Promise<ClusterMode> {
  const nodeId = checkNodeId(opts.nodeId);
  const prefix = normalizePrefix(opts.prefix ?? etcdPrefixDefault);
  const known = await readIdentity(opts.dataDir);
  const belongs = (id: Identity): string => `node ${id.nodeId} of cluster ${id.clusterId} (etcd prefix ${id.prefix})`;
  if (known !== null && (known.nodeId !== nodeId || known.prefix !== prefix)) {
    throw new ClusterError(ClusterErrorCode.IDENTITY, `the data directory ${opts.dataDir} belongs to ${belongs(known)}, not to node ${nodeId} under etcd prefix ${prefix}`);
  }
  const secret = opts.secretFile === undefined ? null : await readSecret(opts.secretFile);
  const coordinator = await Coordinator.connect({ etcd: opts.etcd, nodeId, prefix, leaseTtlS: opts.leaseTtlS, secret, log: opts.log, liveIntervalMs: opts.liveIntervalMs });
  let replication: Replication | null = null;
  try {
    if (known !== null && known.clusterId !== coordinator.clusterId) {
      throw new ClusterError(ClusterErrorCode.IDENTITY, `the data directory ${opts.dataDir} belongs to ${belongs(known)}; etcd at ${opts.etcd.join(', ')} holds cluster ${coordinator.clusterId} under that prefix`);
    }
    if (known === null) await writeIdentity(opts.dataDir, { nodeId, clusterId: coordinator.clusterId, prefix });
  } catch (err) {
    await coordinator.close();
    throw err;
  }
  return {
    coordinator,
    async join(j) {
      const host = opts.advertise ?? j.host;
      const protocolMax = protocolMaxFromEnv();
      const { hlc } = j;
      const r = new Replication({ coord: coordinator, store: j.store, copiesFile: join(opts.dataDir, 'cluster', 'copies'), host: j.host, port: opts.peerPort ?? 0, log: opts.log.child({ component: 'cluster' }), protocolMax, hlc, rebuildDelayMs: opts.rebuildDelayMs, rebuildBytesPerSecond: opts.rebuildBytesPerSecond, syncIntervalMs: opts.syncIntervalMs });
      replication = r;
      const peerPort = await r.listen(j.host, opts.peerPort ?? 0);
      await coordinator.join({
        zone: opts.zone ?? 'default',
        api: hostPort(host, j.apiPort),
        nbd: hostPort(host, j.nbdPort),
        peer: hostPort(host, peerPort),
        version: j.version,
        protocol: [PeerProtocolVersion.MIN, Math.min(protocolMax ?? PeerProtocolVersion.MAX, PeerProtocolVersion.MAX)],
        // Load comes with the chain's I/O; until then a node reports none.
        usage: j.usage,
        rank: () => r.rank(),
        hlc: () => formatHlc(hlc.now()),
      });
      r.start();
      return r;
    },
    nodes: () => coordinator.nodes(),
    async close() {
      // Replicas stop first (their pending ops fail), then the node leaves: it shows down at once.
      await replication?.close();
      await coordinator.close();
    },
  };
}

/** `TESSERA_PEER_PROTOCOL_MAX`: the newest peer protocol version to speak, to try a rolling upgrade. */
function protocolMaxFromEnv(): number | undefined {
  const text = process.env.TESSERA_PEER_PROTOCOL_MAX;
  if (text === undefined || text === '') return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new ClusterError(ClusterErrorCode.INVALID, `TESSERA_PEER_PROTOCOL_MAX=${text} is not a protocol version`);
  return n;
}
