/**
 * Placement at scale: the real placement code (src/cluster/placement.ts) over simulated nodes
 * and disks, seeded, reading round trips through the records the nodes publish (rtt.ts); then
 * what the cluster asks of etcd at that size, from the records the code writes, its intervals
 * and its page size. Not a test: it prints figures and PASS/MISS against targets, asserts
 * nothing. Method and results: docs/benchmarks.md ("Placement simulation").
 *
 *   npm run sim:placement -- [--nodes 1000] [--zones 50] [--disks 100000] [--seed 1] [--json]
 */
import { parseArgs } from 'node:util';
import { loadPageKeysDefault } from '../src/cluster/coord/cache.ts';
import { leaseTtlSDefault, liveIntervalMsDefault } from '../src/cluster/coord/coordinator.ts';
import { grpcReceiveBytesMax } from '../src/cluster/coord/etcd.ts';
import { place, planChange, type PlacementNode } from '../src/cluster/placement.ts';
import { rttFromRecords, summarizeRtt, RTT_PUBLISH_INTERVAL_MIN_MS } from '../src/cluster/rtt.ts';
import type { DiskRecord, LiveRecord, MemberRecord, OwnerRecord, Policy, RttRecord } from '../src/cluster/types.ts';
import { Rng } from '../test/helpers/data.ts';

const { values: opts } = parseArgs({
  options: {
    nodes: { type: 'string', default: '1000' },
    zones: { type: 'string', default: '50' },
    disks: { type: 'string', default: '100000' },
    seed: { type: 'string', default: '1' },
    json: { type: 'boolean', default: false },
  },
});
const nodeCount = Number(opts.nodes);
const zoneCount = Number(opts.zones);
const diskCount = Number(opts.disks);
const seed = Number(opts.seed);
const rng = new Rng(seed);
const log = (msg: string) => process.stderr.write(`sim: ${msg}\n`);

const GiB = 2 ** 30;
const TiB = 2 ** 40;
/** The spread target: every node's fill within 5% of the mean fill. */
const spreadTarget = 0.05;
const policy: Policy = { replicas: 3, failureDomain: 'zone' };

/** A node as the simulation keeps it: what placement reads, kept up to date as disks land. */
interface SimNode extends PlacementNode {
  zone: string;
  state: 'active' | 'draining';
  up: boolean;
  usedBytes: number;
  reservedBytes: number;
  load: number;
}

/** A disk: its size, the fraction of it written (disks are thin), its replicas in chain order. */
interface SimDisk {
  name: string;
  sizeBytes: number;
  writtenFraction: number;
  chain: string[];
}

/**
 * A VM disk size mix: many small system disks, fewer data disks, a tail of large ones
 * (mean ≈ 330 GiB).
 */
function diskSize(): number {
  const r = rng.next();
  if (r < 0.35) return rng.range(20, 60) * GiB;
  if (r < 0.65) return 100 * GiB;
  if (r < 0.85) return rng.range(200, 500) * GiB;
  if (r < 0.97) return 1 * TiB;
  return rng.range(2, 4) * TiB;
}

/** Node capacities: half 96 TiB, half 192 TiB (12 and 24 drives of 8 TB, roughly). */
function nodeCapacity(): number {
  return rng.next() < 0.5 ? 96 * TiB : 192 * TiB;
}

const nodes: SimNode[] = [];
const byId = new Map<string, SimNode>();
const zoneOf = new Map<string, number>();
function addNode(id: string, zone: string, capacityBytes: number): SimNode {
  const node: SimNode = { id, zone, state: 'active', up: true, capacityBytes, usedBytes: 0, reservedBytes: 0, load: 0 };
  nodes.push(node);
  byId.set(id, node);
  zoneOf.set(id, Number(zone.slice(1)));
  return node;
}
for (let i = 0; i < nodeCount; i++) addNode(`n${String(i).padStart(4, '0')}`, `z${String(i % zoneCount).padStart(2, '0')}`, nodeCapacity());

/** What pings measure (RTTs only break ties of fill and load): same zone 0.1 ms, another 0.3–0.5 ms. */
const zoneRtt = Array.from({ length: zoneCount }, (_, za) =>
  Array.from({ length: zoneCount }, (_, zb) => (za === zb ? 0.1 : 0.3 + ((za * 31 + zb * 17) % 21) / 100)),
);
function measuredRtt(a: string, b: string): number {
  return zoneRtt[zoneOf.get(a)!]![zoneOf.get(b)!]!;
}
/**
 * Each node's P/rtt/ID as the code makes it (summarizeRtt over its pings to every other node),
 * and placement's lookup over them (rttFromRecords), as a node reads them from its cache.
 */
const rttRecords: Record<string, RttRecord> = {};
function publishRtt(node: SimNode): void {
  const measured = Object.fromEntries(nodes.filter((x) => x.id !== node.id && x.up).map((x) => [x.id, measuredRtt(node.id, x.id)]));
  rttRecords[node.id] = summarizeRtt(measured, (id) => byId.get(id)?.zone);
}
let t0 = performance.now();
for (const node of nodes) publishRtt(node);
log(`round trips summarized in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
const rttMs = rttFromRecords(rttRecords, (id) => byId.get(id)?.zone);

const disks: SimDisk[] = [];
/** Per node, the disks it holds a replica of. */
const disksOn = new Map<string, Set<SimDisk>>();

function attach(disk: SimDisk, id: string): void {
  const node = byId.get(id)!;
  node.reservedBytes += disk.sizeBytes;
  node.usedBytes += disk.sizeBytes * disk.writtenFraction;
  let set = disksOn.get(id);
  if (!set) disksOn.set(id, (set = new Set()));
  set.add(disk);
}

function detach(disk: SimDisk, id: string): void {
  const node = byId.get(id)!;
  node.reservedBytes -= disk.sizeBytes;
  node.usedBytes -= disk.sizeBytes * disk.writtenFraction;
  disksOn.get(id)!.delete(disk);
}

function setHead(disk: SimDisk, previous: string | undefined): void {
  if (previous === disk.chain[0]) return;
  if (previous !== undefined && byId.get(previous)!.up) byId.get(previous)!.load--;
  byId.get(disk.chain[0]!)!.load++;
}

function createDisk(i: number): SimDisk {
  const disk: SimDisk = { name: `vm-${String(i).padStart(6, '0')}`, sizeBytes: diskSize(), writtenFraction: 0.05 + 0.9 * rng.next(), chain: [] };
  disk.chain = place({ nodes, disk: { name: disk.name, sizeBytes: disk.sizeBytes, policy }, rttMs });
  for (const id of disk.chain) attach(disk, id);
  setHead(disk, undefined);
  disks.push(disk);
  return disk;
}

/** Moves `disk` to where placement now says; returns the replicas added. */
function replace(disk: SimDisk): string[] {
  const target = place({ nodes, disk: { name: disk.name, sizeBytes: disk.sizeBytes, policy, chain: disk.chain.map((node) => ({ node })) }, rttMs });
  const plan = planChange(disk.chain, target);
  const head = disk.chain[0];
  for (const id of plan.remove) detach(disk, id);
  for (const id of plan.add) attach(disk, id);
  disk.chain = target;
  setHead(disk, head);
  return [...plan.add];
}

interface Spread {
  min: number;
  mean: number;
  max: number;
  /** Largest distance of a node's fill from the mean, relative to the mean. */
  maxDeviation: number;
}

function spread(of: (n: SimNode) => number): Spread {
  const up = nodes.filter((n) => n.up);
  const fills = up.map(of);
  const mean = fills.reduce((a, b) => a + b, 0) / fills.length;
  const min = Math.min(...fills);
  const max = Math.max(...fills);
  return { min, mean, max, maxDeviation: Math.max(max - mean, mean - min) / mean };
}

const reservedFill = (n: SimNode) => n.reservedBytes / n.capacityBytes;
const usedFill = (n: SimNode) => n.usedBytes / n.capacityBytes;
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const tib = (bytes: number) => `${(bytes / TiB).toFixed(1)} TiB`;
const verdict = (ok: boolean) => (ok ? 'PASS' : 'MISS');

// 1. Create the disks.
t0 = performance.now();
for (let i = 0; i < diskCount; i++) {
  createDisk(i);
  if ((i + 1) % 20000 === 0) log(`${i + 1} disks placed`);
}
const createMs = performance.now() - t0;
const reservedSpread = spread(reservedFill);
const usedSpread = spread(usedFill);
const totalReserved = nodes.reduce((a, n) => a + n.reservedBytes, 0);

// 2. Lose a node: each disk that had a replica there gets one elsewhere.
const lost = nodes[rng.int(nodes.length)]!;
const lostBytes = lost.reservedBytes;
const lostDisks = [...(disksOn.get(lost.id) ?? [])];
lost.up = false;
// Its record goes with its lease; the others' do not change (its zone keeps other nodes).
delete rttRecords[lost.id];
t0 = performance.now();
let movedOnLoss = 0;
const sources = new Set<string>();
const received = new Map<string, number>();
for (const disk of lostDisks) {
  for (const id of disk.chain) if (id !== lost.id) sources.add(id);
  for (const id of replace(disk)) {
    movedOnLoss += disk.sizeBytes;
    received.set(id, (received.get(id) ?? 0) + disk.sizeBytes);
  }
}
// Other disks: placing them again must change nothing (a seeded sample, to keep the run short).
const sampleSize = Math.min(disks.length, 10_000);
const sampled = () => Array.from({ length: sampleSize }, () => disks[rng.int(disks.length)]!);
let movedElsewhere = 0;
const lostSet = new Set(lostDisks);
for (const disk of sampled()) {
  if (lostSet.has(disk)) continue;
  movedElsewhere += replace(disk).length;
}
const lossMs = performance.now() - t0;
const maxReceived = Math.max(...received.values());
/** Rebuild time if each receiving node writes at --rebuild-rate's default, 100 MiB/s. */
const rebuildRateBytes = 100 * 2 ** 20;
const rebuildSeconds = maxReceived / rebuildRateBytes;

// 3. Add a node (in the lost node's zone): placement is sticky, nothing moves; new disks fill it.
const added = addNode(`n${String(nodeCount).padStart(4, '0')}`, lost.zone, 144 * TiB);
publishRtt(added);
let movedOnAdd = 0;
for (const disk of sampled()) movedOnAdd += replace(disk).length;
const meanFill = spread(reservedFill).mean;
let createdUntilFilled = 0;
let landedOnAdded = 0;
const createCap = Math.ceil(diskCount / 2);
while (reservedFill(added) < meanFill * (1 - spreadTarget) && createdUntilFilled < createCap) {
  const disk = createDisk(diskCount + createdUntilFilled);
  createdUntilFilled++;
  if (disk.chain.includes(added.id)) landedOnAdded++;
}
const addedFill = reservedFill(added);

// 4. etcd: keys, requests and sizes at steady state, from what the code writes and how often
// (docs/cluster.md, "etcd requests per operation", "Round trips", "etcd at scale").
const prefix = '/tessera/';
const now = 1786000000000;
const member: MemberRecord = { id: 'n0001', zone: 'z01', api: '10.1.2.3:8080', nbd: '10.1.2.3:10809', peer: '10.1.2.3:7070', state: 'active', joinedMs: now };
const live: LiveRecord = {
  id: 'n0001', startedMs: now, version: '0.1.0', protocol: [1, 2], capacityBytes: 192 * TiB, usedBytes: 123456789012345, load: 1234.5, hlc: '117047296000000005',
};
const rttRecord = rttRecords['n0001']!;
const sample = disks[0]!;
const diskRecord: DiskRecord = {
  name: sample.name, sizeBytes: sample.sizeBytes, createdMs: now, origin: null, policy, epoch: 7,
  chain: sample.chain.map((node) => ({ node, state: 'healthy' as const })), away: [], sync: 'tessera-sync-7',
};
const owner: OwnerRecord = { node: sample.chain[0]!, epoch: 7 };
const bytes = (key: string, value: unknown) => key.length + Buffer.byteLength(JSON.stringify(value));
const perKey = {
  member: bytes(`${prefix}members/n0001`, member),
  live: bytes(`${prefix}live/n0001`, live),
  rtt: bytes(`${prefix}rtt/n0001`, rttRecord),
  disk: bytes(`${prefix}disks/${sample.name}`, diskRecord),
  owner: bytes(`${prefix}owners/${sample.name}`, owner),
  election: `${prefix}election/`.length + 20 + 10,
};
const n = nodes.length;
const d = disks.length;
const keys = { members: n, live: n, rtt: n, disks: d, owners: d, election: n, cluster: 1 };
const keyCount = Object.values(keys).reduce((a, b) => a + b, 0);
// Each stored revision in etcd's bbolt: the key and value plus ~50 bytes of mvccpb.KeyValue
// fields and the revision key; bbolt pages run about half full after random inserts (×2).
const storedBytes = (payload: number) => (payload + 50) * 2;
// A key in a range answer or a watch event: the key and value plus ~50 bytes of protobuf
// (create/mod revision, version, lease, the event's type).
const wireBytes = (payload: number) => payload + 50;
const liveDataBytes =
  n * (perKey.member + perKey.live + perKey.rtt + perKey.election) + d * (perKey.disk + perKey.owner);
const dbBytes = n * (storedBytes(perKey.member) + storedBytes(perKey.live) + storedBytes(perKey.rtt) + storedBytes(perKey.election)) + d * (storedBytes(perKey.disk) + storedBytes(perKey.owner));
// Per node: a keep-alive every TTL/3 (etcd3's loop), P/live/ID every liveIntervalMsDefault, and
// P/rtt/ID at most every RTT_PUBLISH_INTERVAL_MIN_MS (none while round trips hold steady: the
// figures below take the most).
const ttlSeconds = leaseTtlSDefault;
const keepalivesPerMin = n * (60 / (ttlSeconds / 3));
const livePutsPerMin = n * (60_000 / liveIntervalMsDefault);
const rttPutsPerMin = n * (60_000 / RTT_PUBLISH_INTERVAL_MIN_MS);
const requestsPerMin = keepalivesPerMin + livePutsPerMin + rttPutsPerMin;
const writesPerSec = (livePutsPerMin + rttPutsPerMin) / 60;
const historyBytesPerHour = (livePutsPerMin * storedBytes(perKey.live) + rttPutsPerMin * storedBytes(perKey.rtt)) * 60;
// Every node watches P/: each put is sent to every node.
const watchEventsPerSec = writesPerSec * n;
const watchBytesPerSec = ((livePutsPerMin * wireBytes(perKey.live) + rttPutsPerMin * wireBytes(perKey.rtt)) / 60) * n;
// A node's start: P/ in pages of loadPageKeysDefault keys, in key order (cluster, disks/,
// election/, live/, members/, owners/, rtt/); the largest page against what the client receives.
const keyRuns: Array<[count: number, bytes: number]> = [
  [1, `${prefix}cluster`.length + 120], [d, perKey.disk], [n, perKey.election], [n, perKey.live], [n, perKey.member], [d, perKey.owner], [n, perKey.rtt],
];
let startPages = 0;
let startPageBytesMax = 0;
{
  let inPage = 0;
  let pageBytes = 0;
  for (const [count, each] of keyRuns) {
    for (let i = 0; i < count; i++) {
      pageBytes += wireBytes(each);
      if (++inPage === loadPageKeysDefault) {
        startPages++;
        startPageBytesMax = Math.max(startPageBytesMax, pageBytes);
        inPage = 0;
        pageBytes = 0;
      }
    }
  }
  if (inPage > 0) {
    startPages++;
    startPageBytesMax = Math.max(startPageBytesMax, pageBytes);
  }
}
const startRangeBytes = keyRuns.reduce((a, [count, each]) => a + count * wireBytes(each), 0);
const etcdQuotaDefault = 2 * GiB;
const etcdQuotaSuggestedMax = 8 * GiB;
const etcdRequestMax = 1.5 * 2 ** 20;
const etcdRequestsPerSec = 30_000;
/** etcd's hardware guide: "1GbE is sufficient for common etcd deployments" (bytes a second). */
const etcdLinkBytesPerSec = 1e9 / 8;

const result = {
  seed, nodes: nodeCount, zones: zoneCount, disks: diskCount, policy,
  placeMsPerDisk: createMs / diskCount,
  totalReservedBytes: totalReserved,
  reservedSpread, usedSpread,
  loss: { node: lost.id, lostBytes, movedBytes: movedOnLoss, disks: lostDisks.length, movedElsewhere, sources: sources.size, targets: received.size, maxReceivedBytes: maxReceived, rebuildSeconds, ms: lossMs },
  add: { node: added.id, movedReplicas: movedOnAdd, createdUntilFilled, landedOnAdded, fill: addedFill, meanFill },
  etcd: { perKey, keys, keyCount, liveDataBytes, dbBytes, requestsPerMin, keepalivesPerMin, livePutsPerMin, rttPutsPerMin, writesPerSec, historyBytesPerHour, watchEventsPerSec, watchBytesPerSec, startRangeBytes, startPages, startPageBytesMax },
};

if (opts.json) {
  process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
} else {
  const lines: string[] = [];
  const row = (label: string, value: string, note = '') => lines.push(`${label.padEnd(50)} ${value.padEnd(34)} ${note}`);
  lines.push(`placement simulation: ${nodeCount} nodes in ${zoneCount} zones, ${diskCount} disks, ${policy.replicas} replicas, failure domain ${policy.failureDomain}, seed ${seed}`);
  lines.push(`capacity ${tib(nodes.filter((x) => x.id !== added.id).reduce((a, x) => a + x.capacityBytes, 0))}, reserved ${tib(totalReserved)}; ${(createMs / diskCount * 1000).toFixed(0)} µs to place a disk`);
  lines.push('');
  row('reserved fill (what placement balances)', `${pct(reservedSpread.min)} / ${pct(reservedSpread.mean)} / ${pct(reservedSpread.max)}`, `min/mean/max; max deviation ${pct(reservedSpread.maxDeviation)} of the mean (target ≤ 5%): ${verdict(reservedSpread.maxDeviation <= spreadTarget)}`);
  row('written fill (disks 5–95% written)', `${pct(usedSpread.min)} / ${pct(usedSpread.mean)} / ${pct(usedSpread.max)}`, `max deviation ${pct(usedSpread.maxDeviation)} of the mean (info: placement cannot foresee how full a thin disk gets)`);
  row(`node ${lost.id} lost: bytes copied`, `${tib(movedOnLoss)} for ${lostDisks.length} disks`, `minimum ${tib(lostBytes)}: ratio ${(movedOnLoss / lostBytes).toFixed(2)} (target 1.00): ${verdict(movedOnLoss === lostBytes)}`);
  row(`  other disks moved (${sampleSize} sampled)`, String(movedElsewhere), `target 0: ${verdict(movedElsewhere === 0)}`);
  row('  rebuild reads from / writes to', `${sources.size} / ${received.size} nodes`, `most written to one node ${tib(maxReceived)}: ~${(rebuildSeconds / 60).toFixed(0)} min at 100 MiB/s`);
  row(`node ${added.id} added: replicas moved (${sampleSize} sampled)`, String(movedOnAdd), `greedy-sticky: adding a node moves nothing: ${verdict(movedOnAdd === 0)}`);
  row('  new disks until it is within 5% of the mean', String(createdUntilFilled), `${landedOnAdded} of them (${pct(landedOnAdded / Math.max(1, createdUntilFilled))}) put a replica on it; its fill ${pct(addedFill)}, mean ${pct(meanFill)}`);
  lines.push('');
  lines.push(`etcd at steady state (TTL ${ttlSeconds} s; per node: keep-alive every TTL/3, live put every ${liveIntervalMsDefault / 1000} s, rtt put at most every ${RTT_PUBLISH_INTERVAL_MIN_MS / 60_000} min)`);
  row('  keys', `${keyCount}`, `members ${n}, live ${n}, rtt ${n}, disks ${d}, owners ${d}, election ${n}`);
  row('  bytes per key (key + JSON value)', `disk ${perKey.disk}, owner ${perKey.owner}`, `member ${perKey.member}, live ${perKey.live}, rtt ${perKey.rtt} (${Object.keys(rttRecord.zones).length} zones)`);
  const largest = Math.max(...Object.values(perKey));
  row('  largest value vs request limit 1.5 MiB', `${largest} B`, `${verdict(largest < etcdRequestMax)}`);
  row('  requests per minute', requestsPerMin.toFixed(0), `${(requestsPerMin / 60).toFixed(0)}/s vs >30,000/s a 3-member etcd does: ${pct(requestsPerMin / 60 / etcdRequestsPerSec)}: ${verdict(requestsPerMin / 60 < etcdRequestsPerSec / 10)}`);
  row('  puts per minute (live + rtt at most)', `${livePutsPerMin.toFixed(0)} + ${rttPutsPerMin.toFixed(0)}`, `${writesPerSec.toFixed(0)}/s; rtt: none while round trips hold steady`);
  row('  watch fan-out (every node watches P/)', `${(watchBytesPerSec / 2 ** 20).toFixed(1)} MiB/s`, `${watchEventsPerSec.toFixed(0)} events/s; vs 1 GbE (etcd's hardware guide): ${pct(watchBytesPerSec / etcdLinkBytesPerSec)}: ${verdict(watchBytesPerSec < etcdLinkBytesPerSec / 10)}`);
  row('  DB size, live keys', `${(dbBytes / 2 ** 20).toFixed(0)} MiB`, `(payload ${(liveDataBytes / 2 ** 20).toFixed(0)} MiB) vs quota 2 GiB: ${pct(dbBytes / etcdQuotaDefault)}, suggested max 8 GiB: ${pct(dbBytes / etcdQuotaSuggestedMax)}: ${verdict(dbBytes < etcdQuotaDefault / 2)}`);
  row('  history written per hour (live + rtt puts)', `${(historyBytesPerHour / 2 ** 20).toFixed(0)} MiB`, `until compacted, vs quota 2 GiB: ${pct(historyBytesPerHour / etcdQuotaDefault)}: ${verdict(historyBytesPerHour < etcdQuotaDefault / 4)}`);
  row(`  node start: P/ in pages of ${loadPageKeysDefault} keys`, `${(startRangeBytes / 2 ** 20).toFixed(0)} MiB in ${startPages} ranges`, `largest page ${(startPageBytesMax / 2 ** 10).toFixed(0)} KiB vs grpc-js's ${grpcReceiveBytesMax / 2 ** 20} MiB receive limit: ${pct(startPageBytesMax / grpcReceiveBytesMax)}: ${verdict(startPageBytesMax < grpcReceiveBytesMax)}`);
  process.stdout.write(`${lines.join('\n')}\n`);
}
