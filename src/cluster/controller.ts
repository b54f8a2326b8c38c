/**
 * The controller (docs/cluster.md, "Failure, catch-up and rebuild"): one node, elected through
 * etcd, that changes disk records when nodes go and come. What it decides is pure
 * (`chainAfter`); the runner applies it with compare-and-swap and goes again on a conflict.
 */
import type { Logger } from '../observe/index.ts';
import { ClusterError, ClusterErrorCode } from './errors.ts';
import type { Coordinator } from './coord/coordinator.ts';
import type { DiskRecord } from './types.ts';

/**
 * The record a disk should have given which nodes are up: replicas on down nodes leave the chain
 * for `away` (keeping the sync point they hold as their base); replicas in `away` whose node is up
 * again join the end of the chain catching up from that base (or rebuilding, without one). A
 * healthy replica stays the head while it is up; else the first healthy one in chain order is.
 * Returns null when nothing changes. The last healthy replica never leaves the chain for being
 * down: with it gone, nothing could take over, and its return must find it still the head.
 */
export function chainAfter(r: DiskRecord, up: ReadonlySet<string>, nowMs: number): DiskRecord | null {
  let chain = [...r.chain];
  let away = [...r.away];
  let changed = false;
  for (const e of r.chain) {
    if (up.has(e.node)) continue;
    const healthyLeft = chain.filter((c) => c.state === 'healthy' && c.node !== e.node && up.has(c.node)).length;
    if (e.state === 'healthy' && healthyLeft === 0) continue;
    chain = chain.filter((c) => c.node !== e.node);
    // A replica that was copying in holds its old base still (what it copied since is not whole).
    const base = e.state === 'healthy' ? r.sync : (e.base ?? null);
    away = [...away.filter((a) => a.node !== e.node), { node: e.node, base, sinceMs: nowMs }];
    changed = true;
  }
  for (const a of r.away) {
    if (!up.has(a.node) || chain.some((c) => c.node === a.node)) continue;
    away = away.filter((x) => x.node !== a.node);
    chain.push(a.base === null ? { node: a.node, state: 'rebuilding' } : { node: a.node, state: 'catching-up', base: a.base });
    changed = true;
  }
  if (!changed) return null;
  // Healthy replicas first, in their order (the head stays the head while it can), those copying in after.
  chain.sort((a, b) => Number(a.state !== 'healthy') - Number(b.state !== 'healthy'));
  return { ...r, epoch: r.epoch + 1, chain, away };
}

/** Runs the controller's decisions while this node is the controller. */
export class Controller {
  readonly #coord: Coordinator;
  readonly #log: Logger;
  #running: Promise<void> | null = null;
  #again = false;
  #closed = false;
  readonly #poke = (): void => this.kick();

  constructor(opts: { coord: Coordinator; log: Logger }) {
    this.#coord = opts.coord;
    this.#log = opts.log;
    for (const ev of ['member-up', 'member-down', 'controller-change'] as const) this.#coord.on(ev, this.#poke);
    this.#coord.on('disk', this.#poke);
    this.kick();
  }

  /** Looks at every disk again (serialized: one pass at a time, another after if asked meanwhile). */
  kick(): void {
    if (this.#closed || !this.#coord.isController) return;
    if (this.#running !== null) {
      this.#again = true;
      return;
    }
    this.#running = this.#pass()
      .catch((err: unknown) => this.#log.warn(`controller pass failed: ${(err as Error).message}`))
      .finally(() => {
        this.#running = null;
        if (this.#again) {
          this.#again = false;
          this.kick();
        }
      });
  }

  async #pass(): Promise<void> {
    const up = new Set(this.#coord.nodes().filter((n) => n.state === 'up').map((n) => n.id));
    for (const { record, modRevision } of this.#coord.disks()) {
      if (!this.#coord.isController) return;
      const next = chainAfter(record, up, Date.now());
      if (next === null) continue;
      try {
        await this.#coord.updateDisk(next, modRevision);
        this.#log.info(`disk ${record.name}: epoch ${next.epoch}, chain ${next.chain.map((e) => `${e.node}${e.state === 'healthy' ? '' : ` (${e.state})`}`).join(' > ')}${next.away.length > 0 ? `, away ${next.away.map((a) => a.node).join(', ')}` : ''}`, { disk: record.name });
      } catch (err) {
        // Another change won: the watch brings it, and with it another pass.
        if (err instanceof ClusterError && err.code === ClusterErrorCode.CONFLICT) this.#again = true;
        else throw err;
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const ev of ['member-up', 'member-down', 'controller-change'] as const) this.#coord.off(ev, this.#poke);
    this.#coord.off('disk', this.#poke);
    await this.#running;
  }
}
