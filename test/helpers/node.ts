/**
 * A real Tessera node for tests: `bin/tessera serve` as a child process on a temp data dir with
 * ephemeral ports, driven through the real CLI.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream, readFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before } from 'node:test';
import { cleanup, makeTempDir, run, spawnTracked, type RunOptions, type RunResult } from './process.ts';
import { until } from './wait.ts';

/** Absolute path of bin/tessera in this checkout. */
export const tesseraBin = fileURLToPath(new URL('../../bin/tessera', import.meta.url));

/** Options of startNode(). */
export interface StartNodeOptions {
  /** Data directory; a fresh temp dir if omitted. */
  dataDir?: string;
  /** Extra arguments to `tessera serve`. */
  args?: string[];
  /** Extra environment variables of the node's process. */
  env?: Record<string, string>;
  /** Bound on waiting for the ready line. Default 2 minutes (a first run may install npm deps). */
  readyTimeoutMs?: number;
}

/** The stdout line of a node that is ready, as the daemon's contract states it. */
const readyLine = /^tessera ready api=(http:\/\/\S+) nbd=(\S+):(\d+) socket=(\S+)( read-only)?$/;

/** A running (or stopped, restartable) Tessera node. */
export class TesseraNode {
  /** Whether the node's process is running (started, not yet stopped or killed). */
  get running(): boolean {
    return this.#child !== null && this.#child !== undefined;
  }

  /** The node process's id while it runs (bin/tessera execs node: the server itself). */
  get pid(): number | null {
    return this.#child?.pid ?? null;
  }

  /** Base URL of the HTTP API, e.g. http://127.0.0.1:41234 */
  api = '';
  /** NBD TCP host. */
  nbdHost = '';
  /** NBD TCP port. */
  nbdPort = 0;
  /** Path of the NBD Unix socket. */
  socket: string;
  /** Whether the ready line said the node serves read-only (`serve --read-only`). */
  readOnly = false;
  readonly dataDir: string;
  /** File the node's stderr (its log) goes to, across restarts. */
  readonly logPath: string;
  #args: string[];
  #env: Record<string, string> | undefined;
  #readyTimeoutMs: number;
  #child: ChildProcess | null = null;
  #exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }> | null = null;
  #log: WriteStream;
  #logTail = '';

  constructor(opts: StartNodeOptions) {
    const runDir = makeTempDir('tessera-node-');
    this.dataDir = opts.dataDir ?? join(runDir, 'data');
    this.socket = join(runDir, 'nbd.sock');
    this.logPath = join(runDir, 'node.log');
    this.#log = createWriteStream(this.logPath, { flags: 'a' });
    this.#args = opts.args ?? [];
    this.#env = opts.env;
    this.#readyTimeoutMs = opts.readyTimeoutMs ?? 120_000;
  }

  /** `nbd://HOST:PORT/NAME` for an export over TCP. */
  nbdUri(name: string): string {
    return `nbd://${this.nbdHost}:${this.nbdPort}/${name}`;
  }

  /** `nbd+unix:///NAME?socket=PATH` for an export over the Unix socket. */
  unixUri(name: string): string {
    return `nbd+unix:///${name}?socket=${this.socket}`;
  }

  /** The last part of the node's log, for failure messages. */
  logTail(): string {
    return this.#logTail;
  }

  /**
   * The node's JSON log records so far, across restarts, in order, once what its stderr brought
   * is in the log file (lines that are no JSON record, such as an install's, are skipped).
   */
  async logRecords(): Promise<Array<Record<string, unknown>>> {
    const tail = this.#logTail.slice(-500);
    await until(() => readFileSync(this.logPath, 'utf8').endsWith(tail), 10_000, `${this.logPath} written out`, 20);
    return readFileSync(this.logPath, 'utf8').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  /**
   * Checks that every log record of the node carries `hlc` (docs/observability.md, "Logs"), each
   * above the one before, and returns the first and last.
   */
  async logClock(what = this.dataDir): Promise<{ first: bigint; last: bigint }> {
    const records = await this.logRecords();
    assert.ok(records.length > 0, `${what}: no log records`);
    const values = records.map((r) => {
      assert.match(String(r.hlc), /^[1-9][0-9]{17,19}$/, `${what}: a record without hlc: ${JSON.stringify(r)}`);
      return BigInt(String(r.hlc));
    });
    for (let i = 1; i < values.length; i++) assert.ok(values[i]! > values[i - 1]!, `${what}: record ${i} has hlc ${values[i]}, not above ${values[i - 1]}: ${JSON.stringify(records[i])}`);
    return { first: values[0]!, last: values.at(-1)! };
  }

  /** Starts the node and resolves once it printed its ready line. */
  async start(): Promise<void> {
    if (this.#child) throw new Error('node already running');
    const args = ['serve', '--data', this.dataDir, '--nbd-port', '0', '--api-port', '0', '--host', '127.0.0.1', '--socket', this.socket, ...this.#args];
    const child = spawnTracked(tesseraBin, args, this.#env === undefined ? {} : { env: { ...process.env, ...this.#env } });
    this.#child = child;
    this.#exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
    child.stdin!.end();
    child.stderr!.on('data', (chunk: Buffer) => {
      this.#log.write(chunk);
      this.#logTail = (this.#logTail + chunk.toString('utf8')).slice(-8000);
    });
    await new Promise<void>((resolve, reject) => {
      let out = '';
      let ready = false;
      const fail = (why: string) => {
        clearTimeout(timer);
        // A node that never got ready can be started again.
        if (this.#child === child) {
          this.#child = null;
          this.#exited = null;
        }
        reject(new Error(`tessera serve ${why}\nargs: ${args.join(' ')}\nstdout: ${out.slice(-2000)}\nlog: ${this.#logTail.slice(-4000)}`));
      };
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        fail(`printed no ready line within ${this.#readyTimeoutMs} ms`);
      }, this.#readyTimeoutMs);
      child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        if (ready) return;
        out += chunk;
        const nl = out.indexOf('\n');
        if (nl < 0) return;
        const m = readyLine.exec(out.slice(0, nl));
        if (!m) return fail(`printed an unexpected first stdout line: ${JSON.stringify(out.slice(0, nl))}`);
        ready = true;
        clearTimeout(timer);
        this.api = m[1]!;
        this.nbdHost = m[2]!;
        this.nbdPort = Number(m[3]);
        this.socket = m[4]!;
        this.readOnly = m[5] !== undefined;
        resolve();
      });
      child.once('exit', (code, signal) => {
        if (!ready) fail(`exited (${code ?? signal}) before it was ready`);
      });
    });
  }

  /**
   * Sends `signal` and waits for the node to exit; returns how it exited. SIGTERM is the
   * graceful shutdown, SIGKILL the crash.
   */
  async kill(signal: NodeJS.Signals = 'SIGTERM'): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const child = this.#child;
    if (!child) throw new Error('node not running');
    child.kill(signal);
    const result = await this.#exited!;
    this.#child = null;
    this.#exited = null;
    return result;
  }

  /** Sends `signal` to the running node without waiting (SIGSTOP and SIGCONT pause and resume it). */
  signal(signal: NodeJS.Signals): void {
    if (!this.#child) throw new Error('node not running');
    this.#child.kill(signal);
  }

  /**
   * Stops the node with `signal` if it is running, then starts it again on the same data dir.
   * Ports change (they are ephemeral): use api/nbdUri() afresh after a restart.
   */
  async restart(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    if (this.#child) await this.kill(signal);
    await this.start();
  }

  /** Runs `tessera --api URL ...args` and returns its exit status and output. */
  cli(args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
    return run(tesseraBin, ['--api', this.api, ...args], { timeoutMs: 120_000, ...opts });
  }

  /** Runs the CLI, throws unless it exits 0, and returns its stdout. */
  async cliOk(args: readonly string[]): Promise<string> {
    const r = await this.cli(args);
    if (r.code !== 0) {
      throw new Error(`tessera ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout: ${r.stdout}\nstderr: ${r.stderr}\nnode log: ${this.#logTail.slice(-3000)}`);
    }
    return r.stdout;
  }

  /** Runs the CLI with `--json` appended and parses its stdout. */
  async cliJson<T = unknown>(args: readonly string[]): Promise<T> {
    const out = await this.cliOk([...args, '--json']);
    try {
      return JSON.parse(out) as T;
    } catch (err) {
      throw new Error(`tessera ${args.join(' ')} --json printed no JSON: ${out.slice(0, 2000)}`, { cause: err });
    }
  }

  /**
   * The store's space figures from `tessera node info --json` (found wherever the report nests
   * them: at the top or in a sub-object).
   */
  async stats(): Promise<StoreStats> {
    const info = await this.cliJson(['node', 'info']);
    const found = findStats(info);
    if (!found) throw new Error(`tessera node info --json reports no logBytes/liveBytes/segments: ${JSON.stringify(info)}`);
    return found;
  }

  /** Stops the node gracefully if it is running (SIGKILL if it does not exit within a minute). */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    try {
      await this.kill('SIGTERM');
    } finally {
      clearTimeout(timer);
    }
  }
}

/** Space figures of a node's store, as `node info --json` reports them. */
export interface StoreStats {
  logBytes: number;
  liveBytes: number;
  segments: number;
}

function findStats(v: unknown): StoreStats | null {
  if (v === null || typeof v !== 'object') return null;
  const o = v as Record<string, unknown>;
  if (typeof o.logBytes === 'number' && typeof o.liveBytes === 'number' && typeof o.segments === 'number') {
    return { logBytes: o.logBytes, liveBytes: o.liveBytes, segments: o.segments };
  }
  for (const child of Object.values(o)) {
    const found = findStats(child);
    if (found) return found;
  }
  return null;
}

/** Starts a node on a fresh temp data dir (or `opts.dataDir`) and waits until it is ready. */
export async function startNode(opts: StartNodeOptions = {}): Promise<TesseraNode> {
  const node = new TesseraNode(opts);
  await node.start();
  return node;
}

/**
 * The shared fixture of the test files that drive a real node: the file's node, constructed at
 * once (its temp dirs made) and started by a `before` hook registered for the calling file, with
 * an `after` hook that kills every child the file started and removes its temp dirs. A file's
 * whole prelude is `const node = useNode();`; what the file's tests need on the node before they
 * run goes in `setup` (a second `before` of the file's own could run before the node is up).
 */
export function useNode(opts: StartNodeOptions & { setup?: (node: TesseraNode) => Promise<void> } = {}): TesseraNode {
  const node = new TesseraNode(opts);
  before(async () => {
    await node.start();
    await opts.setup?.(node);
  });
  after(cleanup);
  return node;
}
