/**
 * What a backup schedule does in its repository besides the backup (docs/backup.md, "Schedules"):
 * check that the password opens it (when the schedule is added), and after a run forget what the
 * retention policy does not keep, prune, verify. The same functions as `backup forget`, `backup
 * prune` and `backup verify`, on a repository opened for the purpose: its own worker threads,
 * no index cache (forget, prune and verify read the repository itself).
 */
import { Repository, WorkerPool, forget, openRepoBackend, prune, verify, type ForgetPolicy } from '../backup/index.ts';
import { awsVariables } from '../hydrate/index.ts';

/** A repository opened for a schedule's retention and checks. */
export interface ScheduleRepository {
  /** Forgets the restore points of `names` that `policy` does not keep; resolves to how many. */
  forget(policy: ForgetPolicy, names: readonly string[]): Promise<number>;
  /** One run of prune (default grace period). */
  prune(): Promise<{ packsMarked: number; packsDeleted: number; bytesFreed: number }>;
  /** Verify, with or without reading every pack: the count of faults and the first. */
  verify(readData: boolean): Promise<{ faults: number; first: string | null }>;
  close(): Promise<void>;
}

/** Opens the repository at `location` with `password` (AWS variables from `env`); rejects as Repository.open does. */
export type OpenScheduleRepository = (location: string, password: string, env: Record<string, string>) => Promise<ScheduleRepository>;

/** The AWS variables of `env` a repository at `location` needs: none for a directory. */
export function awsEnvOf(location: string, env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  if (!location.startsWith('s3://')) return out;
  for (const k of awsVariables) {
    const v = env[k];
    if (v !== undefined && v !== '') out[k] = v;
  }
  return out;
}

/** The real repository: the backup code's forget, prune and verify. */
export const openScheduleRepository: OpenScheduleRepository = async (location, password, env) => {
  const backend = await openRepoBackend(location, env as NodeJS.ProcessEnv);
  let repo: Repository;
  try {
    repo = await Repository.open(backend, password);
  } catch (err) {
    await backend.close();
    throw err;
  }
  // Worker threads only for prune and verify, which read the restore points' maps.
  let pool: WorkerPool | null = null;
  const poolOf = (): WorkerPool => (pool ??= new WorkerPool(repo.keys));
  return {
    forget: async (policy, names) => (await forget(repo, policy, { names })).removed.length,
    prune: async () => {
      const r = await prune({ repo, pool: poolOf() });
      return { packsMarked: r.packsMarked, packsDeleted: r.packsDeleted, bytesFreed: r.bytesFreed };
    },
    verify: async (readData) => {
      const r = await verify({ repo, pool: poolOf() }, { readData });
      const f = r.faults[0];
      return { faults: r.faults.length, first: f === undefined ? null : `${f.subject}: ${f.message}` };
    },
    close: async () => {
      await (pool as WorkerPool | null)?.close();
      await backend.close();
    },
  };
};
