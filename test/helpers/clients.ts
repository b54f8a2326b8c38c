/**
 * Thin wrappers over the real NBD clients the suite drives (libnbd's nbdcopy/nbdinfo, qemu-img,
 * qemu-io, cmp). Each checks its tool is installed and names the Debian package if not.
 */
import { requireTool, run, runOk, type RunResult } from './process.ts';

/** Copies between NBD URIs and files with nbdcopy; `--flush` makes the copy durable before exit. */
export async function nbdcopy(src: string, dst: string, extra: string[] = []): Promise<void> {
  await runOk(requireTool('nbdcopy', 'libnbd-bin'), [...extra, src, dst]);
}

/** One extent of `nbdinfo --map --json`. */
export interface MapExtent {
  offset: number;
  length: number;
  type: number;
  description?: string;
}

/** Runs `nbdinfo --map[=CONTEXT] --json URI` and returns the extents, merged where adjacent runs share a type. */
export async function nbdinfoMap(uri: string, context?: string): Promise<MapExtent[]> {
  const flag = context ? `--map=${context}` : '--map';
  const out = await runOk(requireTool('nbdinfo', 'libnbd-bin'), [flag, '--json', uri]);
  const raw = JSON.parse(out) as MapExtent[];
  const merged: MapExtent[] = [];
  for (const e of raw) {
    const last = merged.at(-1);
    if (last && last.type === e.type && last.offset + last.length === e.offset) last.length += e.length;
    else merged.push({ offset: e.offset, length: e.length, type: e.type, description: e.description });
  }
  return merged;
}

/** Runs nbdinfo with the given arguments and returns stdout. */
export async function nbdinfo(args: string[]): Promise<string> {
  return runOk(requireTool('nbdinfo', 'libnbd-bin'), args);
}

/** Runs qemu-img with the given arguments and returns stdout. */
export async function qemuImg(args: string[]): Promise<string> {
  return runOk(requireTool('qemu-img', 'qemu-utils'), args);
}

/**
 * Runs qemu-io on `uri` (raw format) with one `-c` per command. Returns the raw result:
 * qemu-io's exit status and its messages ("Pattern verification failed", "Permission denied").
 */
export async function qemuIo(uri: string, commands: string[], opts: { readOnly?: boolean } = {}): Promise<RunResult> {
  const args = ['-f', 'raw', ...(opts.readOnly ? ['-r'] : [])];
  for (const c of commands) args.push('-c', c);
  args.push(uri);
  return run(requireTool('qemu-io', 'qemu-utils'), args);
}

/** Asserts that two files are byte-identical, naming the first differing byte if not. */
export async function assertFilesEqual(a: string, b: string, what: string): Promise<void> {
  const r = await run(requireTool('cmp', 'diffutils'), [a, b]);
  if (r.code !== 0) throw new Error(`${what}: ${a} and ${b} differ: ${(r.stdout + r.stderr).trim()}`);
}
