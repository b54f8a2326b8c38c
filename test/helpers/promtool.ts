/** Prometheus's own checker of the text format, for the metrics tests. */
import { spawn } from 'node:child_process';
import { requireTool } from './process.ts';

/** Runs `promtool check metrics` on `text`; resolves with its exit code and output. */
export async function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  const promtool = requireTool('promtool', 'prometheus');
  const child = spawn(promtool, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  child.stdin.end(text);
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  return { code, output };
}
