/**
 * The replication machinery alone, in one process (docs/cluster.md, "Speed of the write path"):
 * what a chain of three replicas costs per write with its stores doing nothing, over real peer
 * connections on loopback, against the same chain with ops handed over in memory. It tells the
 * protocol's and the chain's CPU apart from the engine's and from what three processes on two
 * cores add (bench:cluster measures those together). Not a test: it prints figures.
 *
 *   npm run bench:chain -- [--json] [--ops 50000] [--runs 3]
 */
import { parseArgs } from 'node:util';
import { ChainReplica, type ChainTransport } from '../src/cluster/chain/replica.ts';
import type { ChainOp, OpMessage } from '../src/cluster/chain/ops.ts';
import { MessageType, PeerPool, PeerServer, type OpBody } from '../src/cluster/peer/index.ts';

const { values: opts } = parseArgs({ options: { json: { type: 'boolean', default: false }, ops: { type: 'string', default: '50000' }, runs: { type: 'string', default: '3' } } });
const ops4k = Number(opts.ops);
const runs = Math.max(1, Number(opts.runs));
const NODES = ['a', 'b', 'c'];
const secret = Buffer.alloc(32, 7);
const nullStore = { blockBytes: 4096, apply: async () => {}, read: async () => Buffer.alloc(0) };

/** Three replicas wired by `transport(node)`; returns the head. */
function chainOf(transport: (node: string) => ChainTransport, replicas: Map<string, ChainReplica>): ChainReplica {
  for (const n of NODES) replicas.set(n, new ChainReplica({ disk: 'd', node: n, store: nullStore, transport: transport(n) }));
  for (const n of [...NODES].reverse()) replicas.get(n)!.configure({ epoch: 1, chain: NODES });
  return replicas.get('a')!;
}

/** The chain over real peer servers and pools on loopback, as nodes wire it (src/cluster/disks.ts). */
async function peerChain(): Promise<{ head: ChainReplica; close: () => Promise<void> }> {
  const replicas = new Map<string, ChainReplica>();
  const servers: PeerServer[] = [];
  const pools = new Map<string, PeerPool>();
  const addresses = new Map<string, { host: string; port: number }>();
  for (const n of NODES) {
    const server = new PeerServer({ node: n, cluster: 'bench', secret, disks: () => ({ sizeBytes: 2 ** 40, epoch: 1, head: n === 'a' }) });
    server.handle(MessageType.OP, async (req) => {
      const { disk, epoch, rev: _rev, hlc: _hlc, id, prev, restart, ...rest } = req.body;
      const op = (rest.kind === 'write' ? { ...rest, data: req.payload! } : rest) as ChainOp;
      await replicas.get(n)!.receive({ disk, epoch, id, prev, restart, op }, op.kind === 'write' ? req.claim() : undefined);
      return { body: { disk, epoch, id } };
    });
    addresses.set(n, await server.listen({ host: '127.0.0.1', port: 0 }));
    servers.push(server);
    pools.set(n, new PeerPool({ node: n, cluster: 'bench', secret, resolve: (x) => addresses.get(x) ?? null }));
  }
  const forward = (from: string) => async (to: string, msg: OpMessage): Promise<void> => {
    const { op } = msg;
    const scoped = { disk: msg.disk, epoch: msg.epoch, rev: 1, hlc: 1n, id: [msg.id[0], msg.id[1]] as [number, number], prev: msg.prev === null ? null : ([msg.prev[0], msg.prev[1]] as [number, number]), restart: msg.restart };
    if (op.kind === 'write') await pools.get(from)!.request(to, MessageType.OP, { ...scoped, kind: 'write', offset: op.offset, fua: op.fua }, op.data);
    else await pools.get(from)!.request(to, MessageType.OP, { ...scoped, ...op } as OpBody);
  };
  const head = chainOf((n) => ({ forward: forward(n) }), replicas);
  return { head, close: async () => { await Promise.all([...pools.values()].map((p) => p.close())); await Promise.all(servers.map((s) => s.close())); } };
}

/** CPU µs per write of `size` bytes through `head`, 16 in flight. */
async function measure(head: ChainReplica, size: number, count: number): Promise<{ usPerOp: number; sysPerOp: number; opsPerSec: number }> {
  const data = Buffer.alloc(size, 1);
  let next = 0;
  const cpu = process.cpuUsage();
  const start = performance.now();
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < count) {
      const offset = (next++ % 1024) * size;
      await head.submit({ kind: 'write', offset, data, fua: false });
    }
  }));
  const used = process.cpuUsage(cpu);
  return { usPerOp: (used.user + used.system) / count, sysPerOp: used.system / count, opsPerSec: count / ((performance.now() - start) / 1000) };
}

const median = (v: number[]): number => [...v].sort((a, b) => a - b)[v.length >> 1]!;
const results: Record<string, number[]> = { memory4k: [], peers4k: [], peers256k: [], peers256kSys: [] };
for (let run = 0; run < runs; run++) {
  const memReplicas = new Map<string, ChainReplica>();
  const memHead = chainOf((n) => ({ forward: (to, msg) => memReplicas.get(to)!.receive(msg) }), memReplicas);
  results.memory4k.push((await measure(memHead, 4096, ops4k)).usPerOp);
  const { head, close } = await peerChain();
  await measure(head, 4096, 2000);
  results.peers4k.push((await measure(head, 4096, ops4k)).usPerOp);
  const big = await measure(head, 256 * 1024, Math.max(500, ops4k / 20));
  results.peers256k.push(big.usPerOp);
  results.peers256kSys.push(big.sysPerOp);
  await close();
}
const gib = (usPer256k: number) => (usPer256k * 4096) / 1e6;
if (opts.json) {
  console.log(JSON.stringify({ runs, ops: ops4k, results }));
} else {
  const spread = (v: number[]) => `${median(v).toFixed(1)} (${Math.min(...v).toFixed(1)}–${Math.max(...v).toFixed(1)})`;
  console.log(`A chain of 3 replicas with stores that do nothing, in one process, 16 writes in flight; CPU per write, median (min–max) of ${runs} runs`);
  console.log(`  ops handed over in memory, 4 KiB:        ${spread(results.memory4k)} µs`);
  console.log(`  over peer connections on loopback, 4 KiB: ${spread(results.peers4k)} µs`);
  console.log(`  over peer connections, 256 KiB:           ${spread(results.peers256k)} µs (kernel ${spread(results.peers256kSys)} µs): ${gib(median(results.peers256k)).toFixed(2)} s of CPU per GiB replicated`);
}
process.exit(0);
