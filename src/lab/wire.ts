/**
 * The forwarding stage of a link (`build/tessera-wire`, from src/lab/wire.c): started in the
 * background, one per link, and driven through its control socket.
 */
import { spawn } from 'node:child_process';
import { accessSync, closeSync, constants, openSync, readFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LabError, LabErrorCode } from './errors.ts';
import type { LinkParams } from './units.ts';

/** The stage's executable, built by scripts/build-native.sh. */
export const wireBin = fileURLToPath(new URL('../../build/tessera-wire', import.meta.url));
/** How long a stage may take to open its devices and say ready. */
const readyTimeoutMs = 10_000;
/** How long a control request may take. */
const controlTimeoutMs = 5_000;
/** The longest Unix socket path (sun_path, less the NUL). */
export const socketPathBytesMax = 107;

/** Throws LabError NOT_BUILT unless the stage is built. */
export function requireWire(): void {
  try {
    accessSync(wireBin, constants.X_OK);
  } catch {
    throw new LabError(LabErrorCode.NOT_BUILT, 'the lab\'s forwarding stage build/tessera-wire is not built: install a C compiler (apt-get install gcc libc6-dev), then run sh scripts/build-native.sh');
  }
}

/** Counters of one direction of a stage (src/lab/wire.c, `stats`). */
export interface DirectionStats {
  rx_packets: number;
  rx_bytes: number;
  tx_packets: number;
  tx_bytes: number;
  lost: number;
  queue_drops: number;
  overflow: number;
  write_errors: number;
  held: number;
  late_ns_sum: number;
  late_ns_max: number;
}

/** A stage's answer to `stats`: its live parameters and its two directions (a to b, b to a). */
export interface WireStats {
  delay_ns: number;
  jitter_ns: number;
  rate_bps: number;
  loss: number;
  queue: number;
  dirs: [DirectionStats, DirectionStats];
}

/** What starts one stage. */
export interface WireOptions {
  /** The namespaces (paths under /run/netns) and device names of the link's two ends. */
  ends: [{ netnsPath: string; dev: string }, { netnsPath: string; dev: string }];
  control: string;
  log: string;
  params: LinkParams;
  /** Seeds the loss and jitter draws; absent: getrandom. */
  seed?: number;
}

/** The stage's `key=value` words for `params`. */
function paramWords(p: LinkParams): string[] {
  return [`delay_ns=${p.delayNs}`, `jitter_ns=${p.jitterNs}`, `rate_bps=${p.rateBps}`, `loss=${p.loss}`, `queue=${p.queue}`];
}

/**
 * Starts a stage in its own session (it outlives the command), calls `started` with its pid at
 * once (so that a failure after this point can still stop it), and resolves once it says ready.
 */
export function startWire(opts: WireOptions, started: (pid: number) => void): Promise<number> {
  const args = ['--ns-a', opts.ends[0].netnsPath, '--dev-a', opts.ends[0].dev, '--ns-b', opts.ends[1].netnsPath, '--dev-b', opts.ends[1].dev, '--control', opts.control];
  for (const w of paramWords(opts.params)) {
    const [k, v] = w.split('=');
    args.push(`--${k.replace(/_/g, '-')}`, v);
  }
  if (opts.seed !== undefined) args.push('--seed', String(opts.seed));
  const logFd = openSync(opts.log, 'a');
  let child;
  try {
    child = spawn(wireBin, args, { detached: true, stdio: ['ignore', logFd, logFd, 'pipe'] });
  } finally {
    closeSync(logFd);
  }
  const pid = child.pid;
  if (pid === undefined) return Promise.reject(new LabError(LabErrorCode.SYSTEM, `cannot start ${basename(wireBin)}`));
  started(pid);
  return new Promise((resolve, reject) => {
    const ready = child.stdio[3] as NodeJS.ReadableStream;
    let said = '';
    const done = (err: LabError | null) => {
      clearTimeout(timer);
      ready.removeAllListeners('data');
      (ready as unknown as { destroy(): void }).destroy();
      child.removeAllListeners('exit');
      child.unref();
      if (err) reject(err);
      else resolve(pid);
    };
    const timer = setTimeout(() => done(new LabError(LabErrorCode.SYSTEM, `the stage of ${opts.ends[0].dev} did not start within ${readyTimeoutMs} ms`)), readyTimeoutMs);
    ready.setEncoding('utf8');
    ready.on('data', (chunk: string) => {
      said += chunk;
      const line = said.split('\n')[0];
      if (!said.includes('\n')) return;
      if (line === 'ready') done(null);
      else done(new LabError(LabErrorCode.SYSTEM, `the stage of link ${opts.ends[0].dev} failed: ${line.replace(/^error /, '')}`));
    });
    child.once('exit', (code, sig) => {
      // The log goes with the lab that failed to come up: its last line goes in the message.
      let last = '';
      try {
        last = readFileSync(opts.log, 'utf8').trim().split('\n').at(-1) ?? '';
      } catch {}
      done(new LabError(LabErrorCode.SYSTEM, `the stage of link ${opts.ends[0].dev} exited ${code ?? sig} before it was ready${last ? `: ${last}` : ''}`));
    });
  });
}

/** Sends one request line to a stage's control socket and resolves to its one-line answer. */
export function control(path: string, request: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(path);
    let answer = '';
    const fail = (why: string) => {
      sock.destroy();
      reject(new LabError(LabErrorCode.SYSTEM, `the link's stage does not answer (${path}): ${why}`));
    };
    sock.setTimeout(controlTimeoutMs, () => fail('timed out'));
    sock.setEncoding('utf8');
    sock.on('data', (c: string) => (answer += c));
    sock.on('error', (err) => fail(err.message));
    sock.on('end', () => {
      sock.destroy();
      const line = answer.split('\n')[0];
      if (line.startsWith('error')) reject(new LabError(LabErrorCode.SYSTEM, `the link's stage refused '${request}': ${line.slice(6)}`));
      else resolve(line);
    });
    sock.write(request + '\n');
  });
}

/** A stage's live parameters and counters. */
export async function wireStats(path: string): Promise<WireStats> {
  return JSON.parse(await control(path, 'stats')) as WireStats;
}

/** Gives a running stage new parameters (all five: the stage applies them at once). */
export async function wireSet(path: string, params: LinkParams): Promise<void> {
  await control(path, ['set', ...paramWords(params)].join(' '));
}
