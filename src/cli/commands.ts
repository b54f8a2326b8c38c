import { readFile } from 'node:fs/promises';
import type { ApiClient, ClusterStatus, CreateDiskRequest, DiskLease, LatencyProfile, NodeSpace, ScrubReport, ScrubStatus } from '../api/client/index.ts';
import { resolve } from 'node:path';
import { IMPORT_STREAMS_MAX as importStreamsMax } from '../api/client/index.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { formatTime, jsonOption, percent as percentOf, printJson, progressLine } from './output.ts';
import { formatSize, parseDiskSize, parseSize } from './size.ts';
import { formatFields, formatTable } from './table.ts';

/** Where a command writes, and what it knows of its environment. */
export interface Io {
  stdout(text: string): void;
  /** Writes bytes to stdout, resolving once they are taken (backpressure); absent where stdout takes only text. */
  writeBytes?(bytes: Uint8Array): Promise<void>;
  stderr(text: string): void;
  env: Record<string, string | undefined>;
  /** Whether stderr is a terminal (progress lines are drawn only then). */
  stderrIsTty?: boolean;
  /** Asks for a secret on the terminal without echo; absent when there is no terminal. */
  readSecret?(prompt: string): Promise<string>;
}

/** One option of a command, as node:util parseArgs takes it plus help text. */
export interface OptionSpec {
  type: 'string' | 'boolean';
  short?: string;
  /** Placeholder in help, e.g. `SIZE`; string options only. */
  valueName?: string;
  description: string;
}

/** What a command's run() gets. */
export interface CommandContext {
  /** Positional arguments after the command words, as many as `args` names. */
  args: string[];
  /** Parsed option values. */
  values: Record<string, string | boolean | undefined>;
  io: Io;
  /** Client of the node at --api; created on first use so that a bad URL only fails commands that need it. */
  client(): ApiClient;
}

/** A command of the CLI. */
export interface Command {
  /** Command words, e.g. `disk create`. */
  name: string;
  /** Names of the positional arguments, for help and the arity check. */
  args: string[];
  summary: string;
  options: Record<string, OptionSpec>;
  examples: string[];
  /** Whether it talks to a node (and so uses --api; every command accepts it). */
  usesApi: boolean;
  /** Resolves when done; a number is the exit status to leave with (`lab exec`: its command's). */
  run(ctx: CommandContext): Promise<void | number>;
}

const sizeOption: OptionSpec = { type: 'string', valueName: 'SIZE', description: 'Virtual size: bytes or e.g. 512M, 10G, 1.5T (a multiple of 512 bytes)' };

/** `1 segment`, `2 segments`. */
function plural(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** Splits `DISK@SNAP`. */
function parseSnapshotRef(text: string): { disk: string; snap: string } {
  const at = text.indexOf('@');
  if (at <= 0 || at === text.length - 1) throw usageError(`invalid snapshot '${text}': expected DISK@SNAP`);
  return { disk: text.slice(0, at), snap: text.slice(at + 1) };
}

function requireSize(values: CommandContext['values']): number {
  if (typeof values.size !== 'string') throw usageError('missing --size SIZE');
  return parseDiskSize(values.size);
}

/** The node's scrub state in a line: the last pass over every disk, and the next. */
function scrubLine(s: ScrubStatus | null): string {
  if (s === null) return '-';
  const last =
    s.lastFinishedMs === null ? 'never finished' : `last ${formatTime(s.lastFinishedMs)}: ${s.damagedBlocks ? `${plural(s.damagedBlocks, 'damaged block')} on ${s.damagedDisks.join(', ')}` : 'clean'}`;
  const now = s.running ? '; running' : s.nextStartMs !== null ? `; next ${formatTime(s.nextStartMs)}` : '';
  const bg = s.rateBytesPerSecond > 0 ? `background at ${formatSize(s.rateBytesPerSecond)}/s` : 'background off';
  return `${last}${now} (${bg})${s.lastError !== null ? `; last failed: ${s.lastError}` : ''}`;
}

/** A scrub's report for people: a summary line, then the damaged extents by disk and offset. */
function scrubText(r: ScrubReport): string {
  const summary =
    `Scrubbed ${plural(r.disks.length, 'disk')}: ${plural(r.records, 'record')}, ${formatSize(r.bytesChecked)} checked in ${(r.durationMs / 1000).toFixed(1)} s: ` +
    (r.damagedBlocks === 0 ? 'clean\n' : `${plural(r.damagedBlocks, 'damaged block')}\n`);
  if (r.damaged.length === 0) return summary;
  const omitted = r.damagedExtents - r.damaged.length;
  const rows = r.damaged.map((e) => [
    e.disk,
    String(e.offset),
    formatSize(e.length),
    [...(e.head ? ['head'] : []), ...e.snapshots.map((s) => `@${s}`)].join(', '),
    e.reason,
    `segment ${e.segment}${e.recordOffset === null ? '' : ` at ${e.recordOffset}`}`,
  ]);
  const table = formatTable({ headers: ['DISK', 'OFFSET', 'LENGTH', 'READ BY', 'REASON', 'WHERE'], rows, align: ['left', 'right', 'right'] });
  return summary + table + (omitted > 0 ? `(${omitted} more extents not listed: scrub fewer disks at a time to see them)\n` : '');
}

/** Every client command, in the order help lists them. `serve` is added by the runner. */
export const commands: Command[] = [
  {
    name: 'disk create',
    args: ['NAME'],
    summary: 'Create an empty (thin) disk',
    options: {
      size: sizeOption,
      replicas: { type: 'string', valueName: 'N', description: 'In a cluster: replicas, 1 to 5 (default 3, or the node count below 3)' },
      'failure-domain': { type: 'string', valueName: 'node|zone', description: 'In a cluster: what two replicas may not share (default node)' },
      json: jsonOption,
    },
    examples: ['tessera disk create vm1 --size 20G', 'tessera disk create scratch --size 512M', 'tessera disk create vm1 --size 20G --replicas 3 --failure-domain zone'],
    usesApi: true,
    async run({ args: [name], values, io, client }) {
      const sizeBytes = requireSize(values);
      const req: CreateDiskRequest = { name, sizeBytes };
      if (values.replicas !== undefined) {
        const n = Number(values.replicas);
        if (!/^\d+$/.test(String(values.replicas)) || n < 1 || n > 5) throw new CliError(CliErrorCode.USAGE, `--replicas must be a whole number from 1 to 5: got ${String(values.replicas)}`);
        req.replicas = n;
      }
      const fd = values['failure-domain'];
      if (fd !== undefined) {
        if (fd !== 'node' && fd !== 'zone') throw new CliError(CliErrorCode.USAGE, `--failure-domain must be node or zone: got ${String(fd)}`);
        req.failureDomain = fd;
      }
      const disk = await client().createDisk(req);
      if (values.json) return printJson(io, disk);
      const where = disk.replicas !== undefined ? ` on ${disk.replicas.map((r) => r.node).join(', ')}` : '';
      io.stdout(`Created disk ${disk.name} (${formatSize(disk.sizeBytes)})${where}\n`);
    },
  },
  {
    name: 'disk list',
    args: [],
    summary: 'List disks',
    options: { json: jsonOption },
    examples: ['tessera disk list', 'tessera disk list --json | jq -r ".[].name"'],
    usesApi: true,
    async run({ values, io, client }) {
      const [disks, node] = await Promise.all([client().listDisks(), client().nodeInfo()]);
      const warning = spaceWarning(node.space);
      if (warning !== null) io.stderr(`warning: ${warning}\n`);
      if (values.json) return printJson(io, disks);
      const rows = disks.map((d) => [
        d.name,
        formatSize(d.sizeBytes),
        formatSize(d.allocatedBytes),
        String(d.snapshots.length),
        d.origin ?? '-',
        formatTime(d.createdMs),
      ]);
      io.stdout(formatTable({ headers: ['NAME', 'SIZE', 'ALLOCATED', 'SNAPSHOTS', 'ORIGIN', 'CREATED'], rows, align: ['left', 'right', 'right', 'right'] }));
    },
  },
  {
    name: 'disk info',
    args: ['NAME'],
    summary: 'Show one disk',
    options: { json: jsonOption },
    examples: ['tessera disk info vm1', 'tessera disk info vm1 --json'],
    usesApi: true,
    async run({ args: [name], values, io, client }) {
      const d = await client().getDisk(name);
      if (values.json) return printJson(io, d);
      io.stdout(formatFields([
        ['Name', d.name],
        ['Size', `${formatSize(d.sizeBytes)} (${d.sizeBytes} bytes)`],
        ['Allocated', `${formatSize(d.allocatedBytes)} (${d.allocatedBytes} bytes)`],
        ['Snapshots', d.snapshots.length > 0 ? d.snapshots.join(', ') : '-'],
        ['Origin', d.origin ?? '-'],
        ['Created', formatTime(d.createdMs)],
        ['NBD export', d.name],
        ...(d.latencyProfile !== undefined ? [['Latency', d.latencyProfile === null ? '-' : latencySummary(d.latencyProfile)] as [string, string]] : []),
        ...(d.replicas !== undefined ? [
          ['Replicas', d.replicas.map((r) => `${r.node} (${r.role}${r.state === 'healthy' ? '' : `, ${r.state}`})`).join(', ')] as [string, string],
          ['Epoch', String(d.epoch)] as [string, string],
          ['Policy', `${d.policy!.replicas} replicas, one per ${d.policy!.failureDomain}`] as [string, string],
        ] : []),
      ]));
    },
  },
  {
    name: 'disk lease show',
    args: ['NAME'],
    summary: "In a cluster: show who owns a disk, its epoch and the time the owner's lease has left",
    options: { json: jsonOption },
    examples: ['tessera disk lease show vm1', 'tessera disk lease show vm1 --json'],
    usesApi: true,
    async run({ args: [name], values, io, client }) {
      const l = await client().diskLease(name);
      if (values.json) return printJson(io, l);
      io.stdout(leaseFields(l));
    },
  },
  {
    name: 'disk lease break',
    args: ['NAME'],
    summary: "In a cluster: move a disk's head to its next healthy replica at a new epoch, even while the owner's lease lives (for an owner known dead)",
    options: { json: jsonOption },
    examples: ['tessera disk lease break vm1'],
    usesApi: true,
    async run({ args: [name], values, io, client }) {
      const l = await client().breakDiskLease(name);
      if (values.json) return printJson(io, l);
      io.stdout(`Broke the lease of disk ${l.disk}: epoch ${l.epoch}, head ${l.head ?? '-'}\n`);
    },
  },
  {
    name: 'disk resize',
    args: ['NAME'],
    summary: 'Grow or shrink a disk (shrinking drops the data past the new end)',
    options: { size: sizeOption, json: jsonOption },
    examples: ['tessera disk resize vm1 --size 40G'],
    usesApi: true,
    async run({ args: [name], values, io, client }) {
      const sizeBytes = requireSize(values);
      const d = await client().resizeDisk(name, sizeBytes);
      if (values.json) return printJson(io, d);
      io.stdout(`Resized disk ${d.name} to ${formatSize(d.sizeBytes)}\n`);
    },
  },
  {
    name: 'disk clone',
    args: ['DISK@SNAP', 'NEWNAME'],
    summary: 'Create a new disk from a snapshot',
    options: { json: jsonOption },
    examples: ['tessera disk clone golden@v1 vm2'],
    usesApi: true,
    async run({ args: [ref, newName], values, io, client }) {
      const { disk, snap } = parseSnapshotRef(ref);
      const d = await client().cloneDisk(disk, { snapshot: snap, name: newName });
      if (values.json) return printJson(io, d);
      io.stdout(`Cloned ${disk}@${snap} to disk ${d.name} (${formatSize(d.sizeBytes)})\n`);
    },
  },
  {
    name: 'disk import',
    args: ['SOURCE', 'NAME'],
    summary: 'Create disk NAME sized as SOURCE (an NBD URI, or a raw image on the node\'s machine) and copy it in; the node reads it, allocated extents only',
    options: {
      streams: { type: 'string', valueName: 'N', description: `Connections (or file readers) copying at once, 1 to ${importStreamsMax} (default 4)` },
      json: jsonOption,
    },
    examples: [
      'tessera disk import nbd://10.0.0.7:10809/vm1 vm1',
      'tessera disk import nbd+unix:///disk?socket=/run/qemu-nbd.sock vm2 --streams 8',
      'tessera disk import /srv/images/debian.raw golden --json',
    ],
    usesApi: true,
    async run({ args: [source, name], values, io, client }) {
      let streams: number | undefined;
      if (values.streams !== undefined) {
        streams = Number(values.streams);
        if (!/^\d+$/.test(String(values.streams)) || streams < 1 || streams > importStreamsMax) throw usageError(`--streams must be a whole number from 1 to ${importStreamsMax}: got ${String(values.streams)}`);
      }
      // A path is the node's: relative ones are taken from here, for a node on this machine.
      const src = /^[a-z][a-z0-9+.-]*:\/\//i.test(source) ? source : resolve(source);
      const progress = progressLine(io);
      const startedMs = Date.now();
      const result = await client()
        .importDisk(name, { source: src, ...(streams !== undefined ? { streams } : {}) }, (p) => {
          progress.update(() => {
            const s = (Date.now() - startedMs) / 1000;
            const rate = s > 0 ? p.bytesRead / s : 0;
            const eta = rate > 0 ? `, ETA ${Math.ceil((p.bytesToRead - p.bytesRead) / rate)} s` : '';
            return `import ${percentOf(p.bytesRead, p.bytesToRead)}  ${formatSize(p.bytesRead)} of ${formatSize(p.bytesToRead)} read, ${formatSize(rate)}/s${eta}`;
          });
        })
        .finally(() => progress.done());
      if (values.json) return printJson(io, result);
      const s = result.durationMs / 1000;
      io.stdout(
        `Imported ${result.source} to disk ${result.disk} (${formatSize(result.sizeBytes)}): ${formatSize(result.bytesCopied)} copied, ${formatSize(result.bytesSkipped)} skipped as holes or zeroes, ` +
          `in ${s.toFixed(1)} s (${formatSize(s > 0 ? Math.round(result.bytesRead / s) : result.bytesRead)}/s read) over ${plural(result.streams, 'stream')}\n`,
      );
    },
  },
  {
    name: 'disk rm',
    args: ['NAME'],
    summary: 'Delete a disk and its snapshots',
    options: {},
    examples: ['tessera disk rm scratch'],
    usesApi: true,
    async run({ args: [name], io, client }) {
      await client().deleteDisk(name);
      io.stdout(`Deleted disk ${name}\n`);
    },
  },
  {
    name: 'snap create',
    args: ['DISK', 'SNAP'],
    summary: 'Take a snapshot of a disk as it is now',
    options: { json: jsonOption },
    examples: ['tessera snap create vm1 before-upgrade'],
    usesApi: true,
    async run({ args: [disk, snap], values, io, client }) {
      const s = await client().createSnapshot(disk, snap);
      if (values.json) return printJson(io, s);
      io.stdout(`Created snapshot ${s.disk}@${s.name}\n`);
    },
  },
  {
    name: 'snap list',
    args: ['DISK'],
    summary: "List a disk's snapshots, oldest first",
    options: { json: jsonOption },
    examples: ['tessera snap list vm1', 'tessera snap list vm1 --json'],
    usesApi: true,
    async run({ args: [disk], values, io, client }) {
      const snaps = await client().listSnapshots(disk);
      if (values.json) return printJson(io, snaps);
      const rows = snaps.map((s) => [s.name, formatSize(s.sizeBytes), formatTime(s.createdMs), s.hlc ?? '-', `${s.disk}@${s.name}`]);
      io.stdout(formatTable({ headers: ['NAME', 'SIZE', 'CREATED', 'HLC', 'NBD EXPORT'], rows, align: ['left', 'right'] }));
    },
  },
  {
    name: 'snap revert',
    args: ['DISK', 'SNAP'],
    summary: 'Make a disk read as one of its snapshots again (the snapshot is kept)',
    options: { json: jsonOption },
    examples: ['tessera snap revert vm1 before-upgrade'],
    usesApi: true,
    async run({ args: [disk, snap], values, io, client }) {
      const d = await client().revertDisk(disk, snap);
      if (values.json) return printJson(io, d);
      io.stdout(`Reverted disk ${disk} to snapshot ${snap}\n`);
    },
  },
  {
    name: 'snap rm',
    args: ['DISK', 'SNAP'],
    summary: 'Delete a snapshot',
    options: {},
    examples: ['tessera snap rm vm1 before-upgrade'],
    usesApi: true,
    async run({ args: [disk, snap], io, client }) {
      await client().deleteSnapshot(disk, snap);
      io.stdout(`Deleted snapshot ${disk}@${snap}\n`);
    },
  },
  {
    name: 'node info',
    args: [],
    summary: 'Show the node: version, data directory, NBD endpoints, space used, the state of its drive',
    options: { json: jsonOption },
    examples: ['tessera node info', 'tessera --api http://10.0.0.5:7480 node info --json'],
    usesApi: true,
    async run({ values, io, client }) {
      const n = await client().nodeInfo();
      if (values.json) return printJson(io, n);
      const tcp = n.nbd?.tcp;
      io.stdout(formatFields([
        ['Version', n.version],
        ['API', n.api ?? '-'],
        ['NBD', tcp ? `${tcp.host.includes(':') ? `[${tcp.host}]` : tcp.host}:${tcp.port}` : '-'],
        ['NBD socket', n.nbd?.socket ?? '-'],
        ['NBD connections', String(n.nbd?.connections ?? 0)],
        ['Data dir', n.readOnly ? `${n.dataDir ?? '-'} (read-only)` : (n.dataDir ?? '-')],
        ['PID', String(n.pid)],
        ['Uptime', `${Math.floor(n.uptimeMs / 1000)} s`],
        ['Disks', String(n.disks)],
        ['Log', `${formatSize(n.stats.logBytes)} in ${plural(n.stats.segments, 'segment')}`],
        ['Live data', formatSize(n.stats.liveBytes)],
        ['Space', `${n.space.state}: ${formatSize(n.space.usedBytes)} of ${formatSize(n.space.usableBytes)} usable used (${percent(n.space.usedRatio)}), ${formatSize(n.space.freeBytes)} free, ${formatSize(n.space.reserveBytes)} reserved`],
        ['Thresholds', `nearfull ${percent(n.space.nearfullRatio)}, full ${percent(n.space.fullRatio)} (client writes refused)`],
        ['Drive', n.drive.state === 'ok' ? 'ok' : `FAILING since ${new Date(n.drive.sinceMs ?? 0).toISOString()}: writes refused until the node is restarted; ${n.drive.error ?? ''}`],
        ['Scrub', scrubLine(n.scrub)],
        ['Clock (HLC)', n.hlc ?? '-'],
        ...(n.cluster == null ? [] : [
          ['Cluster', `node ${n.cluster.node}, cluster map at revision ${n.cluster.revision}`],
          ['Copies to delete', n.cluster.copiesToDelete.length === 0 ? '-' : n.cluster.copiesToDelete.map((c) => `${c.disk} (${c.reason}${c.error !== null ? `; ${c.error}` : ''})`).join(', ')],
        ] satisfies Array<[string, string]>),
      ]));
      const warning = spaceWarning(n.space);
      if (warning !== null) io.stderr(`warning: ${warning}\n`);
    },
  },
  clusterStatusCommand('cluster status', "Show the cluster's nodes: state, zone, endpoints, the controller, space used", ['tessera cluster status', 'tessera --api http://10.0.0.5:7480 cluster status --json']),
  clusterStatusCommand('node list', "List the cluster's nodes (as cluster status)", ['tessera node list', 'tessera node list --json | jq -r \'.nodes[] | select(.state == "down") | .id\'']),
  {
    name: 'node drain',
    args: ['ID'],
    summary: "Move every replica off a node, its disks online (watch with disk info); then node rm",
    options: {},
    examples: ['tessera node drain n3'],
    usesApi: true,
    async run({ args: [id], io, client }) {
      await client().drainNode(id);
      io.stdout(`Draining node ${id}: each of its replicas is copied to another node, then removed from it\n`);
    },
  },
  {
    name: 'node rm',
    args: ['ID'],
    summary: 'Forget a drained or dead node (its replicas are rebuilt elsewhere)',
    options: {},
    examples: ['tessera node rm n3'],
    usesApi: true,
    async run({ args: [id], io, client }) {
      await client().removeNode(id);
      io.stdout(`Node ${id} is forgotten\n`);
    },
  },
  {
    name: 'disk set',
    args: ['NAME'],
    summary: "Change a disk's settings online: its replica count (in a cluster), the device latency it emulates",
    options: {
      replicas: { type: 'string', valueName: 'N', description: 'In a cluster: replicas, 1 to 5' },
      'latency-profile': { type: 'string', valueName: 'hdd|ssd|nvme|none|FILE', description: "Emulate a device's latency (docs/latency.md): a built-in profile, a JSON file, or none to remove it" },
      json: jsonOption,
    },
    examples: ['tessera disk set vm1 --replicas 3', 'tessera disk set vm1 --latency-profile hdd', 'tessera disk set vm1 --latency-profile ./slow-san.json', 'tessera disk set vm1 --latency-profile none'],
    usesApi: true,
    async run({ args: [name], values, io, client }) {
      const text = values.replicas;
      const latency = values['latency-profile'];
      if (text !== undefined && latency !== undefined) throw new CliError(CliErrorCode.USAGE, 'disk set takes --replicas N or --latency-profile, not both');
      if (latency !== undefined) {
        const asked = await latencyProfileArg(String(latency));
        const d = asked === null ? await client().removeLatencyProfile(name) : await client().setLatencyProfile(name, asked);
        if (values.json) return printJson(io, d);
        io.stdout(d.latencyProfile == null ? `Disk ${d.name}: no latency profile\n` : `Disk ${d.name}: latency profile ${latencySummary(d.latencyProfile)}\n`);
        return;
      }
      if (text === undefined) throw new CliError(CliErrorCode.USAGE, 'disk set needs --replicas N or --latency-profile hdd|ssd|nvme|none|FILE');
      const n = Number(text);
      if (!/^\d+$/.test(String(text)) || n < 1 || n > 5) throw new CliError(CliErrorCode.USAGE, `--replicas must be a whole number from 1 to 5: got ${String(text)}`);
      const d = await client().setReplicas(name, n);
      if (values.json) return printJson(io, d);
      io.stdout(`Disk ${d.name}: ${n} replicas asked; replicas now ${(d.replicas ?? []).map((r) => `${r.node} (${r.state})`).join(', ')}\n`);
    },
  },
  {
    name: 'compact',
    args: [],
    summary: 'Reclaim the space of data no disk or snapshot references any more',
    options: { json: jsonOption },
    examples: ['tessera compact'],
    usesApi: true,
    async run({ values, io, client }) {
      const s = await client().compact();
      if (values.json) return printJson(io, s);
      io.stdout(`Compacted: ${plural(s.segmentsRemoved, 'segment')} removed, ${formatSize(s.bytesReclaimed)} reclaimed, ${formatSize(s.bytesRewritten)} rewritten\n`);
    },
  },
  {
    name: 'scrub',
    args: ['[DISK...]'],
    summary: "Check the stored data of the node's disks (all, or those named) against its checksums; exits 3 if any is damaged",
    options: { rate: { type: 'string', valueName: 'SIZE', description: 'Bytes a second the scrub reads at most, e.g. 50M, to spare a busy node (default: full speed)' }, json: jsonOption },
    examples: ['tessera scrub', 'tessera scrub vm1 vm2', 'tessera scrub --rate 50M', 'tessera scrub --json | jq ".damaged"'],
    usesApi: true,
    async run({ args, values, io, client }) {
      const dup = args.find((d, i) => args.indexOf(d) !== i);
      if (dup !== undefined) throw usageError(`disk ${dup} is named twice`);
      const rate = typeof values.rate === 'string' ? parseSize(values.rate) : undefined;
      if (rate === 0) throw usageError('invalid --rate 0: leave --rate out for full speed');
      const progress = progressLine(io);
      const report = await client()
        .scrub({ ...(args.length > 0 ? { disks: args } : {}), ...(rate !== undefined ? { rateBytesPerSecond: rate } : {}) }, (p) => {
          progress.update(() => `scrub ${percentOf(p.bytesRead, p.bytesToRead)}  ${formatSize(p.bytesRead)} of ${formatSize(p.bytesToRead)} read, segment ${p.segmentsDone} of ${p.segments}`);
        })
        .finally(() => progress.done());
      if (values.json) printJson(io, report);
      else io.stdout(scrubText(report));
      if (report.damagedBlocks > 0) {
        const disks = report.damagedDisks;
        throw new CliError(CliErrorCode.DAMAGED, `scrub found ${plural(report.damagedBlocks, 'damaged block')} on ${plural(disks.length, 'disk')}: ${disks.join(', ')}`);
      }
    },
  },
];

/** `cluster status` and `node list`: the same table of GET /cluster. */
function clusterStatusCommand(name: string, summary: string, examples: string[]): Command {
  return {
    name,
    args: [],
    summary,
    options: { json: jsonOption },
    examples,
    usesApi: true,
    async run({ values, io, client }) {
      const s = await client().clusterStatus();
      if (values.json) return printJson(io, s);
      io.stdout(clusterTable(s));
    },
  };
}

/** `disk lease show` for people. */
/** Built-in latency profiles: the node knows their figures (docs/latency.md). */
const latencyBuiltins = ['hdd', 'ssd', 'nvme'];

/**
 * What `--latency-profile` asks for: null for none, a built-in profile's name, or the JSON of a
 * file (read here; the node checks it and says what is wrong in one line).
 */
async function latencyProfileArg(arg: string): Promise<string | LatencyProfile | null> {
  if (arg === 'none') return null;
  if (latencyBuiltins.includes(arg)) return arg;
  let text: string;
  try {
    text = await readFile(arg, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT' && !/[/.]/.test(arg)) throw new CliError(CliErrorCode.USAGE, `unknown latency profile '${arg}': expected hdd, ssd, nvme, none or a JSON file`);
    throw new CliError(CliErrorCode.USAGE, `cannot read latency profile file ${arg}: ${e.code === 'ENOENT' ? 'no such file' : e.message}`);
  }
  try {
    return JSON.parse(text) as LatencyProfile;
  } catch (err) {
    throw new CliError(CliErrorCode.USAGE, `latency profile file ${arg} is not JSON: ${(err as Error).message}`);
  }
}

/** `hdd (read 8 ms median, 18 ms p99; write …; 1 at once)`. */
function latencySummary(p: LatencyProfile): string {
  const dist = (d: { medianUs: number; p99Us: number }): string => `${micros(d.medianUs)} median, ${micros(d.p99Us)} p99`;
  const parts = [`read ${dist(p.read)}`, `write ${dist(p.write)}`];
  if (p.sequential !== undefined) parts.push(`sequential ${dist(p.sequential)}`);
  if (p.flush !== undefined) parts.push(`flush ${dist(p.flush)}`);
  parts.push(`${p.parallel} at once`);
  return `${p.name} (${parts.join('; ')})`;
}

/** 80 µs, 1.5 ms, 12 ms. */
function micros(us: number): string {
  if (us < 1000) return `${Math.round(us * 10) / 10} µs`;
  return `${Math.round(us / 100) / 10} ms`;
}

function leaseFields(l: DiskLease): string {
  return formatFields([
    ['Disk', l.disk],
    ['Owner', l.owner === null ? '- (none holds the lease now)' : `${l.owner} (since epoch ${l.ownerEpoch})`],
    ['Epoch', String(l.epoch)],
    ['Lease TTL', l.ttlSeconds === null ? '-' : `${l.ttlSeconds} s`],
    ['Head', l.head ?? '-'],
  ]);
}

/** The nodes as a table, the controller marked. */
function clusterTable(s: ClusterStatus): string {
  const rows = s.nodes.map((n) => [
    n.id,
    n.state,
    n.controller ? 'yes' : '-',
    n.zone,
    n.api,
    n.nbd,
    n.peer ?? '-',
    n.state === 'up' ? formatSize(n.usedBytes) : '-',
    n.state === 'up' ? formatSize(n.capacityBytes) : '-',
  ]);
  const up = s.nodes.filter((n) => n.state === 'up').length;
  const table = formatTable({ headers: ['ID', 'STATE', 'CONTROLLER', 'ZONE', 'API', 'NBD', 'PEER', 'USED', 'CAPACITY'], rows, align: ['left', 'left', 'left', 'left', 'left', 'left', 'left', 'right', 'right'] });
  return `${table}${plural(s.nodes.length, 'node')}, ${up} up\n`;
}

/** `0.873` as `87%`. */
function percent(ratio: number): string {
  return `${Math.round(ratio * 100)}%`;
}

/** What to tell a user of a node that is nearfull or full, or null when it is ok. */
export function spaceWarning(space: NodeSpace): string | null {
  if (space.state === 'ok') return null;
  const used = `${percent(space.usedRatio)} of its usable space used (${formatSize(space.usedBytes)} of ${formatSize(space.usableBytes)})`;
  if (space.state === 'nearfull') return `the node is nearfull: ${used}; client writes stop at ${percent(space.fullRatio)}`;
  return `the node is full: ${used}; client writes are refused until space is freed (disk rm, snap rm, trim, or a larger file system)`;
}
