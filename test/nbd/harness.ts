/** A server over the in-memory store, started and stopped by tests. */
import type { Store } from '../../src/engine/index.ts';
import { NbdServer, type ExportProvider, type NbdLimits } from '../../src/nbd/index.ts';
import type { Target } from './client.ts';
import { MemoryStore } from './memory-volume.ts';
import { Logger } from '../../src/observe/index.ts';

export interface MemoryServer {
  server: NbdServer;
  store: MemoryStore;
  target: Target;
  /** The server's log records, each as `nbd: PEER: DISK: msg` (the disk when the record names one). */
  logs: string[];
  /** The same records as the server wrote them (JSON). */
  records: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

/** Starts a server on an ephemeral port with disk `disk` (1 MiB) and snapshot `disk@s1`. */
export async function startMemoryServer(limits: Partial<NbdLimits> = {}): Promise<MemoryServer> {
  const store = new MemoryStore();
  store.createDisk('disk', 1024 * 1024);
  store.snapshot('disk', 's1');
  store.createDisk('other', 64 * 1024);
  const logs: string[] = [];
  const records: Array<Record<string, unknown>> = [];
  const log = Logger.create({
    level: 'debug',
    write: (line) => {
      const r = JSON.parse(line) as Record<string, unknown>;
      records.push(r);
      logs.push(['nbd', r.peer, r.disk, r.msg].filter((x) => x !== undefined).join(': '));
    },
  });
  const server = new NbdServer({ provider: store, limits, log });
  const address = await server.listenTcp({ host: '127.0.0.1', port: 0 });
  return { server, store, target: address, logs, records, close: () => server.close() };
}

/** A promise with its resolver, for gating engine operations. */
export function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void;
  const promise = new Promise<void>((resolve) => (open = resolve));
  return { promise, open };
}

export { until } from '../helpers/wait.ts';

/** Exports of a real store, as the node daemon offers them: DISK and read-only DISK@SNAP. */
export function storeProvider(store: Store): ExportProvider {
  const split = (name: string) => {
    const at = name.indexOf('@');
    return at < 0 ? { disk: name, snap: null } : { disk: name.slice(0, at), snap: name.slice(at + 1) };
  };
  return {
    listExports: () => store.listDisks().flatMap((d) => [d.name, ...d.snapshots.map((snap) => `${d.name}@${snap}`)]),
    openExport: (name) => {
      const { disk, snap } = split(name);
      return store.openVolume(disk, snap);
    },
    listSnapshots: (name) => store.listSnapshots(split(name).disk).map((snap) => snap.name),
  };
}
