/** The --pre and --post hooks of `backup create`: shell commands run around the snapshot. */
import { spawn } from 'node:child_process';
import type { Io } from './commands.ts';

/** A hook runs at most this long before it is killed and counts as failed. */
export const hookTimeoutMs = 10 * 60_000;

/** Runs `command` with `sh -c`, its output on our stderr; resolves to a failure message or null. */
export function runHook(io: Io, which: 'pre' | 'post', command: string, env: Record<string, string>): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...io.env, ...env } as NodeJS.ProcessEnv });
    child.stdout.setEncoding('utf8').on('data', (t: string) => io.stderr(t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => io.stderr(t));
    const timer = setTimeout(() => child.kill('SIGKILL'), hookTimeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      resolve(`the --${which} hook could not run: ${err.message}`);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(null);
      else resolve(`the --${which} hook failed (${signal !== null ? `killed by ${signal}` : `exit ${code}`}): ${command}`);
    });
  });
}
