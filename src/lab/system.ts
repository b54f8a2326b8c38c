/**
 * What the lab asks of the system: `ip` (iproute2) for namespaces and routes, and a look at
 * processes through /proc. Failures become LabError SYSTEM with the command's own first line.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { LabError, LabErrorCode } from './errors.ts';

/** Longest a system command of the lab may take before it is killed. */
const commandTimeoutMs = 30_000;

/** Runs `cmd args`, feeding `input` on stdin; resolves to stdout, or throws a one-line LabError. */
export function runCommand(cmd: string, args: string[], input = ''): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], timeout: commandTimeoutMs });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    child.on('error', (err) => {
      const missing = (err as NodeJS.ErrnoException).code === 'ENOENT';
      reject(new LabError(LabErrorCode.SYSTEM, missing ? `${cmd} not found: install iproute2 (apt-get install iproute2)` : `cannot run ${cmd}: ${err.message}`, { cause: err }));
    });
    child.on('close', (code, signal) => {
      if (code === 0) return resolve(stdout);
      const first = stderr.split('\n').find((l) => l.trim() !== '') ?? `exited ${code ?? signal}`;
      reject(new LabError(LabErrorCode.SYSTEM, `${cmd} ${args.slice(0, 4).join(' ')}: ${first.trim()}`));
    });
    child.stdin.on('error', () => {});
    child.stdin.end(input);
  });
}

/** `ip ARGS`. */
export function ip(args: string[], input?: string): Promise<string> {
  return runCommand('ip', args, input);
}

/** Names of the network namespaces `ip netns` knows. */
export async function netnsList(): Promise<Set<string>> {
  const out = await ip(['netns', 'list']);
  return new Set(out.split('\n').map((l) => l.split(' ')[0]).filter((n) => n !== ''));
}

/** Pids of the processes in namespace `ns` (none when it is gone). */
export async function netnsPids(ns: string): Promise<number[]> {
  try {
    const out = await ip(['netns', 'pids', ns]);
    return out.split('\n').filter((l) => /^\d+$/.test(l)).map(Number);
  } catch {
    return [];
  }
}

/** A process's argv, or null when it is gone or a zombie (exited, not yet reaped). */
export function commandLineOf(pid: number): string[] | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    if (/\) Z /.test(stat)) return null;
    const raw = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw === '' ? null : raw.replace(/\0$/, '').split('\0');
  } catch {
    return null;
  }
}

/** Whether the process lives (a zombie does not). */
export function alive(pid: number): boolean {
  return commandLineOf(pid) !== null;
}

/** Sends `signal` to pid, ignoring a process already gone. */
export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
  }
}

/** SIGTERM, then SIGKILL after `graceMs` for those still alive; resolves once all are gone. */
export async function stopProcesses(pids: number[], graceMs = 2000): Promise<void> {
  for (const pid of pids) signal(pid, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  let left = pids.filter(alive);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
    left = left.filter(alive);
  }
  for (const pid of left) signal(pid, 'SIGKILL');
  const killDeadline = Date.now() + 5000;
  while (left.length > 0 && Date.now() < killDeadline) {
    await new Promise((r) => setTimeout(r, 10));
    left = left.filter(alive);
  }
  if (left.length > 0) throw new LabError(LabErrorCode.SYSTEM, `processes ${left.join(', ')} did not exit after SIGKILL`);
}
