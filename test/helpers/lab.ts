/**
 * Emulated networks for tests (docs/lab.md): `Lab.up` runs `tessera lab up` on a topology in a
 * state directory of its own (so that test files running at once never share a lab); a test
 * runs its programs in the hosts (`exec`, `spawn`) and cuts, slows or loses links (`set`, e.g.
 * `{ loss: '100%' }` to cut one). Every lab still up is taken down by `downAllLabs()` (each test
 * file's `after`), even when a test failed half-way.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { makeTempDir, requireTool, run, runOk, spawnTracked } from './process.ts';
import { tesseraBin } from './node.ts';
import type { RunOptions, RunResult } from './process.ts';

/** `lab show --json`, as far as the tests read it. */
export interface ShowJson {
  id: string;
  hosts: Array<{ name: string; address: string; netns: string }>;
  links: Array<{
    name: string;
    endpoints: [string, string];
    delay: string;
    jitter: string;
    rate: string;
    loss: string;
    queue: number;
    pid: number;
    stage: string;
    directions: Array<{ from: string; to: string; packets: number; delivered: number; lost: number; queueDrops: number; overflow: number }>;
  }>;
}

const labs = new Set<Lab>();

/** Fails the test (never skips it) unless it runs as root with the tools the lab tests drive. */
export function requireLabTools(): void {
  assert.equal(process.getuid?.(), 0, 'the lab tests make network namespaces and TUN devices: run them as root');
  requireTool('ip', 'iproute2');
  requireTool('ping', 'iputils-ping');
  requireTool('iperf3', 'iperf3');
}

export class Lab {
  readonly stateDir: string;
  readonly show0: ShowJson;

  private constructor(stateDir: string, show0: ShowJson) {
    this.stateDir = stateDir;
    this.show0 = show0;
  }

  /** Brings up `topology`; the lab is taken down by downAllLabs() if the test does not. */
  static async up(topology: unknown): Promise<Lab> {
    requireLabTools();
    const dir = makeTempDir('tessera-lab-');
    const file = join(dir, 'topology.json');
    writeFileSync(file, JSON.stringify(topology));
    const stateDir = join(dir, 'state');
    await runOk(tesseraBin, ['lab', 'up', file, '--state', stateDir, '--json'], { timeoutMs: 120_000 });
    const show = JSON.parse(await runOk(tesseraBin, ['lab', 'show', '--state', stateDir, '--json'])) as ShowJson;
    const lab = new Lab(stateDir, show);
    labs.add(lab);
    return lab;
  }

  /** A host's address. */
  address(host: string): string {
    const h = this.show0.hosts.find((x) => x.name === host);
    assert.ok(h, `no host ${host}`);
    return h.address;
  }

  /** `tessera lab ARGS --state DIR`. */
  tessera(args: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(tesseraBin, [...args, '--state', this.stateDir], { timeoutMs: 120_000, ...opts });
  }

  /** Runs `cmd` in `host` to completion. */
  exec(host: string, cmd: string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(tesseraBin, ['lab', 'exec', host, '--state', this.stateDir, '--', ...cmd], { timeoutMs: 120_000, ...opts });
  }

  /** Runs `cmd` in `host` in the background (killed by cleanup(), and by `lab down` with the host). */
  spawn(host: string, cmd: string[]): ChildProcess {
    return spawnTracked(tesseraBin, ['lab', 'exec', host, '--state', this.stateDir, '--', ...cmd]);
  }

  async set(link: string, values: Record<string, string>): Promise<void> {
    const args = ['lab', 'set', link, ...Object.entries(values).flatMap(([k, v]) => [`--${k}`, v])];
    const r = await this.tessera(args);
    assert.equal(r.code, 0, `lab set failed: ${r.stderr}`);
  }

  async show(): Promise<ShowJson> {
    const r = await this.tessera(['lab', 'show', '--json']);
    assert.equal(r.code, 0, r.stderr);
    return JSON.parse(r.stdout) as ShowJson;
  }

  async down(): Promise<void> {
    labs.delete(this);
    const r = await this.tessera(['lab', 'down']);
    assert.equal(r.code, 0, `lab down failed: ${r.stderr}`);
  }

  /**
   * Round-trip times of `count` pings from `from` to `to`, in ms (the replies that came back).
   * Root may ping every 10 ms; -W bounds the wait for a lost reply.
   */
  async ping(from: string, to: string, count: number, intervalS = 0.02): Promise<number[]> {
    const r = await this.exec(from, ['ping', '-n', '-c', String(count), '-i', String(intervalS), '-W', '5', this.address(to)]);
    return [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
  }

  /** Starts an iperf3 server in `host` on its address and waits until it listens. */
  async iperfServer(host: string, port: number): Promise<ChildProcess> {
    const child = this.spawn(host, ['iperf3', '-s', '-B', this.address(host), '-p', String(port), '--forceflush']);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      child.stdout!.setEncoding('utf8').on('data', (c: string) => {
        out += c;
        if (out.includes('Server listening')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`iperf3 -s exited ${code}: ${out}`)));
    });
    return child;
  }

  /**
   * Runs iperf3 from `from` to the server of `to`; returns its JSON report. A server still
   * finishing the test before (it takes one at a time) says it is busy: asked again, a few times.
   */
  async iperf(from: string, to: string, port: number, args: string[]): Promise<IperfReport> {
    for (let attempt = 1; ; attempt++) {
      const r = await this.exec(from, ['iperf3', '-c', this.address(to), '-p', String(port), '-J', ...args]);
      if (r.code !== 0 && /server is busy/.test(r.stdout) && attempt < 10) {
        await new Promise((resolve) => setTimeout(resolve, 500));
        continue;
      }
      assert.equal(r.code, 0, `iperf3 failed: ${r.stdout.slice(-2000)} ${r.stderr}`);
      return JSON.parse(r.stdout) as IperfReport;
    }
  }
}

/** What the tests read of iperf3's JSON report. */
export interface IperfReport {
  end: {
    sum_received?: { bits_per_second: number };
    sum_sent?: { bits_per_second: number; retransmits?: number };
    sum?: { packets: number; lost_packets: number; lost_percent: number; bits_per_second: number };
  };
}

/** Takes down every lab still up (a test file's `after`). */
export async function downAllLabs(): Promise<void> {
  for (const lab of [...labs]) await lab.down().catch(() => {});
}

/** The median of `xs`. */
export function median(xs: number[]): number {
  assert.ok(xs.length > 0, 'no samples');
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** Namespaces whose name starts with `prefix`. */
export async function namespacesLike(prefix: string): Promise<string[]> {
  const out = await runOk('ip', ['netns', 'list']);
  return out.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(prefix));
}

/** Live (not zombie) processes whose command line contains `needle`. */
export async function processesWith(needle: string): Promise<string[]> {
  const out = await runOk('ps', ['-eo', 'stat=,args=']);
  return out.split('\n').filter((l) => l.includes(needle) && !/^\s*Z/.test(l) && !l.includes('ps -eo'));
}
