import type { StoreExports } from './provider.ts';

// Stand-in for `import { NbdServer } from '../nbd/index.ts'` until the NBD subsystem's public
// face lands; typed by its agreed interface.
interface NbdServerLike {
  listenTcp(opts: { host: string; port: number }): Promise<{ host: string; port: number }>;
  listenUnix(path: string): Promise<void>;
  close(): Promise<void>;
  readonly connections: number;
}

export async function createNbdServer(opts: { provider: StoreExports; log?: (msg: string) => void }): Promise<NbdServerLike> {
  const specifier: string = '../nbd/index.ts';
  const mod = (await import(specifier)) as { NbdServer: new (o: typeof opts) => NbdServerLike };
  return new mod.NbdServer(opts);
}
