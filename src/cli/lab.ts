/**
 * `tessera lab up|down|show|set|exec` (docs/lab.md): an emulated network of namespaces and
 * links with delay, rate and loss on this machine, for tests. Needs root.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { resolve } from 'node:path';
import type { LabState, LinkParams, LinkState, LinkView } from '../lab/index.ts';
import type { Command, Io, OptionSpec } from './commands.ts';
import { CliError, CliErrorCode, usageError } from './errors.ts';
import { jsonOption, printJson } from './output.ts';
import { formatTable } from './table.ts';

/**
 * The lab's code, loaded by the lab's commands only: every other command line stays as light
 * as it was (test/cli/cli.test.ts checks what a command loads).
 */
type LabModule = typeof import('../lab/index.ts');
let labModule: LabModule | null = null;
async function lab(): Promise<LabModule> {
  return (labModule ??= await import('../lab/index.ts'));
}

const stateOption: OptionSpec = {
  type: 'string',
  valueName: 'DIR',
  // The default is src/lab/state.ts's defaultStateDir, spelled out here so that help loads no lab code.
  description: "Where the lab's state is kept (default: $TESSERA_LAB_DIR or /run/tessera-lab); one lab per directory",
};

/** The state directory, absolute: the stages' sockets are named by it, whatever the cwd of a later command. */
async function stateDirOf(values: Record<string, string | boolean | undefined>, io: Io): Promise<string> {
  return resolve((values.state as string | undefined) ?? (io.env.TESSERA_LAB_DIR || (await lab()).defaultStateDir));
}

/** Runs a lab operation, its typed errors as the CLI's (a bad value is a usage error). */
async function viaCli<T>(fn: (l: LabModule) => Promise<T> | T): Promise<T> {
  const l = await lab();
  try {
    return await fn(l);
  } catch (err) {
    if (err instanceof l.LabError) {
      throw new CliError(err.code === l.LabErrorCode.INVALID ? CliErrorCode.USAGE : CliErrorCode.FAILED, err.message, { cause: err });
    }
    throw err;
  }
}

/** A link's values for people and for JSON (the lab module is loaded by then). */
function paramsJson(p: LinkParams): Record<string, string | number> {
  const { formatDelay, formatLoss, formatRate } = labModule!;
  return { delay: formatDelay(p.delayNs), jitter: formatDelay(p.jitterNs), rate: formatRate(p.rateBps), loss: formatLoss(p.loss), queue: p.queue };
}

function paramsLine(p: LinkParams): string {
  const j = paramsJson(p);
  return `delay ${j.delay}, jitter ${j.jitter}, rate ${j.rate}, loss ${j.loss}, queue ${j.queue}`;
}

function hostsTable(state: LabState): string {
  return formatTable({ headers: ['HOST', 'ADDRESS', 'NAMESPACE'], rows: state.hosts.map((h) => [h.name, h.address, h.netns]) });
}

function linkJson(l: LinkState): Record<string, unknown> {
  return { name: l.name, endpoints: l.endpoints, ...paramsJson(l.params), pid: l.pid, ...(l.seed === undefined ? {} : { seed: l.seed }) };
}

/**
 * A link's values as its stage has them when it answers (two `lab set` at once may leave the
 * state file with either's), else as the state file records them.
 */
function paramsOfView(l: LinkView): LinkParams {
  const live = l.live;
  if (live === null) return l.params;
  return { delayNs: live.delay_ns, jitterNs: live.jitter_ns, rateBps: live.rate_bps, loss: live.loss, queue: live.queue };
}

/** `lab show --json`: the stage's values and its counters per direction. */
function linkViewJson(l: LinkView): Record<string, unknown> {
  const live = l.live;
  return {
    ...linkJson({ ...l, params: paramsOfView(l) }),
    stage: live === null ? 'not answering' : 'running',
    directions:
      live === null
        ? []
        : live.dirs.map((d, i) => ({
            from: l.endpoints[i],
            to: l.endpoints[1 - i],
            packets: d.rx_packets,
            bytes: d.rx_bytes,
            delivered: d.tx_packets,
            lost: d.lost,
            queueDrops: d.queue_drops,
            overflow: d.overflow,
            held: d.held,
            lateUsMean: d.tx_packets > 0 ? Math.round(d.late_ns_sum / d.tx_packets / 1000) : 0,
            lateUsMax: Math.round(d.late_ns_max / 1000),
          })),
  };
}

const upCommand: Command = {
  name: 'lab up',
  args: ['TOPOLOGY'],
  summary: 'Build an emulated network from a topology file (hosts as network namespaces, links with delay, rate and loss); needs root',
  options: { state: stateOption, json: jsonOption },
  examples: ['tessera lab up two-sites.json', 'tessera lab up wan.json --state /tmp/lab1 --json'],
  usesApi: false,
  async run({ args: [file], values, io }) {
    await viaCli((l) => l.requireRoot());
    let text;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw usageError(`cannot read ${file}: ${(err as Error).message}`);
    }
    const dir = await stateDirOf(values, io);
    const state = await viaCli((l) => l.labUp(l.parseTopology(text, file), dir));
    if (values.json) return printJson(io, { state: dir, id: state.id, hosts: state.hosts, links: state.links.map(linkJson) });
    io.stdout(`Lab up: ${state.hosts.length} host${state.hosts.length === 1 ? '' : 's'}, ${state.links.length} link${state.links.length === 1 ? '' : 's'} (state in ${dir})\n`);
    io.stdout(hostsTable(state));
  },
};

const downCommand: Command = {
  name: 'lab down',
  args: [],
  summary: 'Remove the emulated network: its stages, namespaces and every process left in them',
  options: { state: stateOption },
  examples: ['tessera lab down', 'tessera lab down --state /tmp/lab1'],
  usesApi: false,
  async run({ values, io }) {
    const dir = await stateDirOf(values, io);
    const state = await viaCli((l) => l.labDown(dir));
    if (state === null) io.stdout(`No lab is up in ${dir}\n`);
    else io.stdout(`Lab down: removed ${state.hosts.length} namespace${state.hosts.length === 1 ? '' : 's'} and ${state.links.length} link${state.links.length === 1 ? '' : 's'}\n`);
  },
};

const showCommand: Command = {
  name: 'lab show',
  args: [],
  summary: "Show the emulated network: hosts, their addresses, links with their values and counters",
  options: { state: stateOption, json: jsonOption },
  examples: ['tessera lab show', 'tessera lab show --json | jq ".links[0].directions"'],
  usesApi: false,
  async run({ values, io }) {
    const dir = await stateDirOf(values, io);
    const { state, links } = await viaCli((l) => l.labShow(dir));
    if (values.json) return printJson(io, { state: dir, id: state.id, hosts: state.hosts, links: links.map(linkViewJson) });
    io.stdout(hostsTable(state));
    if (links.length === 0) return;
    io.stdout('\n');
    const rows = links.map((l) => {
      const p = paramsJson(paramsOfView(l));
      const dirs = l.live?.dirs;
      const count = (f: (d: NonNullable<typeof dirs>[number]) => number) => (dirs ? `${f(dirs[0])} / ${f(dirs[1])}` : '-');
      return [
        l.name,
        `${l.endpoints[0]} <-> ${l.endpoints[1]}`,
        String(p.delay),
        String(p.jitter),
        String(p.rate),
        String(p.loss),
        String(p.queue),
        count((d) => d.rx_packets),
        count((d) => d.lost + d.queue_drops + d.overflow),
        l.live === null ? 'not answering' : 'running',
      ];
    });
    io.stdout(formatTable({ headers: ['LINK', 'ENDPOINTS', 'DELAY', 'JITTER', 'RATE', 'LOSS', 'QUEUE', 'PACKETS →/←', 'DROPPED →/←', 'STAGE'], rows }));
  },
};

const setOptions: Record<string, OptionSpec> = {
  delay: { type: 'string', valueName: 'D', description: 'One-way delay, e.g. 50ms, 500us, 0' },
  jitter: { type: 'string', valueName: 'D', description: 'Each packet delayed by up to D more or less (uniform; packets keep their order)' },
  rate: { type: 'string', valueName: 'R', description: 'Rate, e.g. 100mbit, 1gbit, 512kbit; none: no limit' },
  loss: { type: 'string', valueName: 'P', description: 'Packets lost at random, e.g. 1%, 0.1%, 0' },
  queue: { type: 'string', valueName: 'N', description: 'Packets that may wait for the wire (with a rate); more are dropped' },
};

const setCommand: Command = {
  name: 'lab set',
  args: ['LINK'],
  summary: 'Change a link of the running lab, in both directions, at once',
  options: { ...setOptions, state: stateOption, json: jsonOption },
  examples: ['tessera lab set wan --delay 100ms --loss 0.1%', 'tessera lab set wan --rate none --loss 0'],
  usesApi: false,
  async run({ args: [name], values, io }) {
    const changes: Record<string, string> = {};
    for (const key of Object.keys(setOptions)) if (typeof values[key] === 'string') changes[key] = values[key] as string;
    if (Object.keys(changes).length === 0) throw usageError('nothing to change: give at least one of --delay, --jitter, --rate, --loss, --queue');
    const dir = await stateDirOf(values, io);
    const link = await viaCli((l) => l.labSet(dir, name, changes));
    if (values.json) return printJson(io, linkJson(link));
    io.stdout(`Link ${link.name}: ${paramsLine(link.params)}\n`);
  },
};

const execCommand: Command = {
  name: 'lab exec',
  args: ['HOST', 'CMD...'],
  summary: "Run a command in a host of the lab (its network namespace), keeping the working directory and environment",
  options: { state: stateOption },
  examples: ['tessera lab exec a -- ping -c 3 10.200.0.2', 'tessera lab exec b -- iperf3 -s -B 10.200.0.2'],
  usesApi: false,
  async run({ args: [host, ...cmd], values, io }) {
    const dir = await stateDirOf(values, io);
    const argv = await viaCli((l) => l.labExecCommand(dir, host, cmd));
    return new Promise<number>((resolve, reject) => {
      const child = spawn(argv[0], argv.slice(1), { stdio: 'inherit', env: io.env as NodeJS.ProcessEnv });
      // A signal to the command (a test stopping a server) goes on to what it runs.
      const forward = (sig: NodeJS.Signals) => child.kill(sig);
      const signals = ['SIGTERM', 'SIGINT', 'SIGHUP'] as const;
      for (const sig of signals) process.on(sig, forward);
      const stop = () => {
        for (const sig of signals) process.off(sig, forward);
      };
      child.once('error', (err) => {
        stop();
        reject(new CliError(CliErrorCode.FAILED, `cannot run ip netns exec: ${err.message}`, { cause: err }));
      });
      child.once('exit', (code, sig) => {
        stop();
        resolve(code ?? 128 + (sig === null ? 0 : constants.signals[sig]));
      });
    });
  },
};

/** The lab's commands, in the order help lists them. */
export const labCommands: Command[] = [upCommand, showCommand, setCommand, execCommand, downCommand];
