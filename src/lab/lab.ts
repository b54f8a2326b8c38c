/**
 * An emulated network on this machine (docs/lab.md): each host a network namespace, each link a
 * pair of TUN devices joined by a forwarding stage that delays, paces and drops (src/lab/wire.c).
 * `labUp` makes it from a checked topology, `labDown` removes what the state file says was made.
 */
import { randomBytes } from 'node:crypto';
import { rmdirSync, rmSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LabError, LabErrorCode } from './errors.ts';
import { commandLineOf, ip, netnsList, netnsPids, stopProcesses } from './system.ts';
import { createState, loadState, netnsPrefix, requireState, saveState, statePath } from './state.ts';
import type { LabState, LinkState } from './state.ts';
import { linkParamsOf, routesOf } from './topology.ts';
import type { Topology } from './topology.ts';
import { requireWire, socketPathBytesMax, startWire, wireBin, wireSet, wireStats } from './wire.ts';
import type { WireStats } from './wire.ts';

/** Namespaces set up at once (each is a few `ip` processes). */
const setupConcurrency = 8;

/** Throws LabError NOT_ROOT unless the process runs as root. */
export function requireRoot(): void {
  if (process.getuid?.() !== 0) {
    throw new LabError(LabErrorCode.NOT_ROOT, 'tessera lab needs root (it makes network namespaces and TUN devices): run it as root, e.g. with sudo');
  }
}

/** Runs `fn` over `items`, at most `limit` at once; rejects with the first failure once all settled. */
async function eachLimit<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: unknown = null;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      try {
        await fn(item);
      } catch (err) {
        failure ??= err;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failure !== null) throw failure;
}

/** The shell commands that make a fresh namespace a host: its address, forwarding on, IPv6 off (no stray packets on the links). */
function hostScript(address: string): string {
  return [
    'set -e',
    'if [ -d /proc/sys/net/ipv6 ]; then echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6; echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6; fi',
    'echo 1 > /proc/sys/net/ipv4/ip_forward',
    // Packets of a host routed through another arrive on a device their reply does not leave by.
    'echo 0 > /proc/sys/net/ipv4/conf/all/rp_filter',
    'echo 0 > /proc/sys/net/ipv4/conf/default/rp_filter',
    'ip link set lo up',
    `ip addr add ${address}/32 dev lo`,
  ].join('\n');
}

/**
 * Makes the lab of `topology`, keeping its state in `dir`; resolves once every link forwards.
 * On a failure, whatever was made is removed again before the error is thrown.
 */
export async function labUp(topology: Topology, dir: string): Promise<LabState> {
  requireRoot();
  requireWire();
  const longest = join(dir, `l${topology.links.length}.sock`);
  if (Buffer.byteLength(longest) > socketPathBytesMax) {
    throw new LabError(LabErrorCode.INVALID, `state directory ${dir} is too long for the links' control sockets (at most ${socketPathBytesMax} bytes with the socket's name)`);
  }
  const id = randomBytes(3).toString('hex');
  const state: LabState = { version: 1, id, createdMs: Date.now(), madeDir: false, up: false, hosts: [], links: [] };
  state.madeDir = !dirExists(dir);
  createState(dir, state);
  try {
    // Each namespace is recorded before it is made, so that a failure leaves it listed for removal.
    state.hosts = topology.hosts.map((h) => ({ name: h.name, address: h.address, netns: `${netnsPrefix}${id}-${h.name}` }));
    saveState(dir, state);
    await eachLimit(state.hosts, setupConcurrency, async (h) => {
      await ip(['netns', 'add', h.netns]);
      await ip(['netns', 'exec', h.netns, 'sh', '-c', hostScript(h.address)]);
    });
    const netnsOf = new Map(state.hosts.map((h) => [h.name, h.netns]));
    state.links = topology.links.map((l, i) => ({
      name: l.name,
      endpoints: l.endpoints,
      params: l.params,
      pid: null,
      control: join(dir, `l${i}.sock`),
      log: join(dir, `l${i}.log`),
      ...(topology.seed === undefined ? {} : { seed: topology.seed + i }),
    }));
    saveState(dir, state);
    await eachLimit(state.links, setupConcurrency, async (l) => {
      await startWire(
        {
          ends: [
            { netnsPath: `/run/netns/${netnsOf.get(l.endpoints[0])}`, dev: l.name },
            { netnsPath: `/run/netns/${netnsOf.get(l.endpoints[1])}`, dev: l.name },
          ],
          control: l.control,
          log: l.log,
          params: l.params,
          seed: l.seed,
        },
        (pid) => {
          l.pid = pid;
          saveState(dir, state);
        },
      );
    });
    // Routes: every host reaches every host it is joined to, through the first link of a shortest path.
    const addressOf = new Map(state.hosts.map((h) => [h.name, h.address]));
    const routes = routesOf(topology);
    await eachLimit(state.hosts, setupConcurrency, async (h) => {
      const lines = (routes.get(h.name) ?? []).map((r) => `route add ${r.address}/32 dev ${r.dev} src ${addressOf.get(h.name)}`);
      if (lines.length > 0) await ip(['-n', h.netns, '-batch', '-'], lines.join('\n') + '\n');
    });
    state.up = true;
    saveState(dir, state);
    return state;
  } catch (err) {
    try {
      await teardown(dir, state);
    } catch (cleanupErr) {
      throw new LabError(LabErrorCode.SYSTEM, `${(err as Error).message}; and removing what was made failed: ${(cleanupErr as Error).message}`, { cause: err });
    }
    throw err;
  }
}

function dirExists(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** Whether `pid` is still the stage that listens on `control` (not a process that took its pid since). */
function isOurStage(pid: number, control: string): boolean {
  const argv = commandLineOf(pid);
  return argv !== null && basename(argv[0]) === basename(wireBin) && argv.includes(control);
}

/** Removes what `state` records: stages, processes left in the namespaces, the namespaces, the state files. */
async function teardown(dir: string, state: LabState): Promise<void> {
  await stopProcesses(state.links.filter((l) => l.pid !== null && isOurStage(l.pid, l.control)).map((l) => l.pid!));
  const existing = await netnsList();
  const ours = state.hosts.filter((h) => h.netns.startsWith(netnsPrefix + state.id + '-') && existing.has(h.netns));
  await eachLimit(ours, setupConcurrency, async (h) => {
    await stopProcesses(await netnsPids(h.netns));
    await ip(['netns', 'delete', h.netns]);
  });
  for (const l of state.links) {
    rmSync(l.control, { force: true });
    rmSync(l.log, { force: true });
  }
  rmSync(`${statePath(dir)}.tmp`, { force: true });
  rmSync(statePath(dir), { force: true });
  if (state.madeDir) {
    try {
      rmdirSync(dir);
    } catch {
      // Something else was put there since: it stays.
    }
  }
}

/** Takes the lab in `dir` down; resolves to what it was, or null when none was up. */
export async function labDown(dir: string): Promise<LabState | null> {
  requireRoot();
  const state = loadState(dir);
  if (state === null) return null;
  await teardown(dir, state);
  return state;
}

/** A link as `lab show` reports it: its recorded values and its stage's live ones. */
export interface LinkView extends LinkState {
  /** The stage's live parameters and counters; null when it does not answer. */
  live: WireStats | null;
}

/** The running lab: its hosts, and its links with their stages' counters. */
export async function labShow(dir: string): Promise<{ state: LabState; links: LinkView[] }> {
  requireRoot();
  const state = requireState(dir);
  const links = await Promise.all(
    state.links.map(async (l) => {
      let live: WireStats | null = null;
      try {
        live = await wireStats(l.control);
      } catch {}
      return { ...l, live };
    }),
  );
  return { state, links };
}

function findLink(state: LabState, name: string): LinkState {
  const link = state.links.find((l) => l.name === name);
  if (link === undefined) {
    throw new LabError(LabErrorCode.NOT_FOUND, `no link '${name}' in the lab (links: ${state.links.map((l) => l.name).join(', ') || 'none'})`);
  }
  return link;
}

/**
 * Changes a running link: `changes` has any of delay, jitter, rate, loss, queue as a topology
 * file writes them; the others keep their values. Applies to packets that arrive from now on.
 */
export async function labSet(dir: string, name: string, changes: Record<string, string>): Promise<LinkState> {
  requireRoot();
  const state = requireState(dir);
  const link = findLink(state, name);
  const params = linkParamsOf(`link '${name}'`, changes, link.params);
  await wireSet(link.control, params);
  link.params = params;
  saveState(dir, state);
  return link;
}

/** The command line that runs `cmd` in host `host` of the lab (`ip netns exec`: cwd and environment kept). */
export function labExecCommand(dir: string, host: string, cmd: string[]): string[] {
  requireRoot();
  const state = requireState(dir);
  const h = state.hosts.find((x) => x.name === host);
  if (h === undefined) throw new LabError(LabErrorCode.NOT_FOUND, `no host '${host}' in the lab (hosts: ${state.hosts.map((x) => x.name).join(', ')})`);
  return ['ip', 'netns', 'exec', h.netns, ...cmd];
}
