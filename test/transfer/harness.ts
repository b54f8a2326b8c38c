/**
 * The transfer tests' harness: `tessera transfer recv` and `send` as real child processes, their
 * JSON lines parsed as they come, kill -9 at a chosen point of progress.
 */
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { spawnTracked, tesseraBin, until } from '../helpers/index.ts';

/** A child whose stdout is JSON lines. */
export class JsonChild {
  readonly child: ChildProcess;
  readonly events: Record<string, unknown>[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = spawnTracked(tesseraBin, args, { env: { ...process.env, ...env } });
    let rest = '';
    this.child.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
      rest += chunk;
      const lines = rest.split('\n');
      rest = lines.pop()!;
      for (const line of lines) if (line.trim() !== '') this.events.push(JSON.parse(line) as Record<string, unknown>);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (chunk: string) => (this.stderr += chunk));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** The first event matching `pred`, waited for up to `ms` (a guard, not a timing check). */
  async waitFor(pred: (e: Record<string, unknown>) => boolean, what: string, ms = 120_000): Promise<Record<string, unknown>> {
    await until(() => this.events.some(pred) || this.child.exitCode !== null, ms, what, 10);
    const found = this.events.find(pred);
    assert.ok(found, `${what}: the process exited first (${this.child.exitCode}); stderr: ${this.stderr}`);
    return found;
  }

  /** Kills with SIGKILL and waits for the exit. */
  async kill9(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }
}

/** A receiver on 127.0.0.1 (`port` 0: any free one). */
export async function startReceiver(dir: string, opts: { port?: number; secretFile?: string; env?: Record<string, string> } = {}): Promise<JsonChild & { port: number }> {
  const args = ['transfer', 'recv', '--listen', `127.0.0.1:${opts.port ?? 0}`, '--dir', dir, '--json'];
  if (opts.secretFile !== undefined) args.push('--secret-file', opts.secretFile);
  const r = new JsonChild(args, opts.env);
  const listening = await r.waitFor((e) => e.event === 'listening', 'the receiver listening', 60_000);
  return Object.assign(r, { port: listening.port as number });
}

/** `transfer send` to `port` with `--json` and `extra` arguments. */
export function startSender(file: string, port: number, extra: string[] = [], env: Record<string, string> = {}): JsonChild {
  return new JsonChild(['transfer', 'send', file, '--to', `127.0.0.1:${port}`, '--json', ...extra], env);
}

/** Sends and waits for the report; fails with the sender's stderr otherwise. */
export async function sendOk(file: string, port: number, extra: string[] = []): Promise<Record<string, unknown>> {
  const s = startSender(file, port, extra);
  const { code } = await s.exited;
  assert.equal(code, 0, `transfer send exit status; stderr: ${s.stderr}`);
  const done = s.events.find((e) => e.event === 'done');
  assert.ok(done, 'a final report');
  return done;
}

/** SHA-256 of a file, hex. */
export async function sha256Of(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}
