/**
 * Child processes and temporary directories of a test file, with cleanup that runs even when a
 * test fails: every child is tracked until it exits, every temp dir until it is removed.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Outcome of a finished child process. */
export interface RunResult {
  /** Exit code, or null when the child died of a signal. */
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Options of run(). */
export interface RunOptions {
  /** Bytes written to the child's stdin (stdin is closed either way). */
  input?: string | Buffer;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Upper bound on the child's life; past it the child is killed and run() rejects. A guard
   * against hangs, not a performance check: keep it generous. Default 10 minutes.
   */
  timeoutMs?: number;
  /** Called with each chunk of stdout as it arrives (for progress markers). */
  onStdout?: (chunk: string) => void;
}

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();
const outputBytesMax = 64 * 1024 * 1024;

/** Spawns a tracked child process: it is killed by cleanup() if still running. */
export function spawnTracked(cmd: string, args: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): ChildProcess {
  const child = spawn(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  child.once('error', () => children.delete(child));
  return child;
}

/** Runs a command to completion and returns its exit status and output; never rejects on a non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnTracked(cmd, args, { cwd: opts.cwd, env: opts.env });
    let stdout = '';
    let stderr = '';
    const timeoutMs = opts.timeoutMs ?? 10 * 60_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${cmd} ${args.join(' ')}: still running after ${timeoutMs} ms, killed\nstderr: ${stderr.slice(-4000)}`));
    }, timeoutMs);
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      if (stdout.length < outputBytesMax) stdout += chunk;
      opts.onStdout?.(chunk);
    });
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => {
      if (stderr.length < outputBytesMax) stderr += chunk;
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`cannot run ${cmd}: ${err.message}`, { cause: err }));
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin!.on('error', () => {}); // the child may exit without reading its input
    child.stdin!.end(opts.input ?? '');
  });
}

/** Runs a command and returns its stdout; rejects with the command line and stderr on failure. */
export async function runOk(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} exited ${r.code ?? r.signal}\nstdout: ${r.stdout.slice(-4000)}\nstderr: ${r.stderr.slice(-4000)}`);
  }
  return r.stdout;
}

/** Resolved tool paths, so each lookup runs once per test file. */
const toolCache = new Map<string, string>();

/**
 * Returns the absolute path of `cmd`, or throws an error naming the Debian package to install.
 * A missing tool makes its test fail, never skip.
 */
export function requireTool(cmd: string, debPackage: string): string {
  const cached = toolCache.get(cmd);
  if (cached) return cached;
  const r = spawnSync('sh', ['-c', 'command -v "$1"', 'sh', cmd], { encoding: 'utf8' });
  const path = r.stdout.trim();
  if (r.status !== 0 || path === '') {
    throw new Error(`${cmd} is not installed: install the Debian package ${debPackage} (apt-get install ${debPackage})`);
  }
  toolCache.set(cmd, path);
  return path;
}

/**
 * Returns a Python 3 interpreter that can `import nbd` (libnbd's bindings), or throws an error
 * naming python3-libnbd. Debian installs the bindings for its own /usr/bin/python3, which a
 * python3 earlier on PATH (pyenv, venv) may not see.
 */
export function requirePythonNbd(): string {
  const cached = toolCache.get('python3+nbd');
  if (cached) return cached;
  for (const py of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(py, ['-c', 'import nbd'], { encoding: 'utf8' });
    if (r.status === 0) {
      toolCache.set('python3+nbd', py);
      return py;
    }
  }
  throw new Error('python3 cannot import nbd: install the Debian package python3-libnbd (apt-get install python3-libnbd)');
}

/**
 * Creates a fresh temporary directory (in `parent`, default the OS temp dir) that cleanup()
 * removes (unless TESSERA_KEEP_TMP=1).
 */
export function makeTempDir(prefix = 'tessera-test-', parent: string = tmpdir()): string {
  const dir = mkdtempSync(join(parent, prefix));
  tempDirs.add(dir);
  return dir;
}

/** Kills every tracked child (SIGKILL) and removes every temp dir. Safe to call more than once. */
export function cleanupSync(): void {
  for (const child of children) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }
  children.clear();
  if (process.env.TESSERA_KEEP_TMP === '1') {
    if (tempDirs.size > 0) process.stderr.write(`kept temp dirs: ${[...tempDirs].join(' ')}\n`);
  } else {
    for (const dir of tempDirs) rmSync(dir, { recursive: true, force: true });
  }
  tempDirs.clear();
}

/**
 * Kills every tracked child, waits for them to be gone, then removes the temp dirs. Test files
 * call it from `after()`; a process-exit hook does the same as a last resort.
 */
export async function cleanup(): Promise<void> {
  const alive = [...children].filter((c) => c.exitCode === null && c.signalCode === null);
  await Promise.all(alive.map((c) => new Promise<void>((resolve) => {
    c.once('exit', () => resolve());
    c.kill('SIGKILL');
  })));
  cleanupSync();
}

process.once('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    cleanupSync();
    process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1));
  });
}

/** A child server that printed `port N` on stdout: its port, its exit and its stderr so far. */
export interface PortChild {
  port: number;
  /** Resolves with the exit code once the child is gone. */
  exited: Promise<number | null>;
  /** Everything the child wrote on stderr up to now. */
  stderr(): string;
}

/**
 * Runs `node SCRIPT ARGS…` (tracked, so cleanup() kills it) and waits for its `port N` line;
 * fails with its stderr if it exits first. The planted-bug servers of the NBD and API tests.
 */
export async function startPortChild(script: string, args: string[] = []): Promise<PortChild> {
  const child = spawnTracked(process.execPath, [script, ...args]);
  let stdout = '';
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
      const m = /port (\d+)\n/.exec(stdout);
      if (m) resolve(Number(m[1]));
    });
    void exited.then(() => reject(new Error(`${script} exited before listening: ${stderr}`)));
  });
  return { port, exited, stderr: () => stderr };
}

/** A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick; a daemon that takes it may race another). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}
