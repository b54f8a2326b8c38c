/**
 * An NBD server over an engine with a bug, for invariants.test.ts: `node buggy-server.ts MODE`
 * prints `port N` and serves disk `disk` (1 MiB) until the bug crashes it. It logs to stderr, as
 * the node does. MODE is the bug: `short-read` (a read returns fewer bytes than asked),
 * `misplaced-run` (block status answers a run that does not start at the offset), `type-error`
 * (a read throws a TypeError).
 */
import type { Volume } from '../../src/engine/index.ts';
import { NbdServer } from '../../src/nbd/index.ts';
import { Logger } from '../../src/observe/index.ts';
import { MemoryStore } from './memory-volume.ts';

const mode = process.argv[2];
const store = new MemoryStore();
store.createDisk('disk', 1024 * 1024);

/** The memory volume with one method replaced by the bug. */
function buggy(inner: Volume): Volume {
  return new Proxy(inner, {
    get(target, key) {
      if (mode === 'short-read' && key === 'read') return async (offset: number, length: number) => (await target.read(offset, length)).subarray(1);
      if (mode === 'misplaced-run' && key === 'blockStatus') return async (offset: number, length: number) => [{ offset: offset + 512, length, hole: true, zero: true }];
      if (mode === 'type-error' && key === 'read') return async () => (null as unknown as Buffer).subarray(0);
      const value = Reflect.get(target, key, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}

const server = new NbdServer({
  provider: { listExports: () => store.listExports(), openExport: (name) => buggy(store.openExport(name)) },
  log: Logger.create({ format: 'text', write: (line) => process.stderr.write(line) }).child({ component: 'nbd' }),
});
const { port } = await server.listenTcp({ host: '127.0.0.1', port: 0 });
process.stdout.write(`port ${port}\n`);
