/**
 * The controller (docs/cluster.md, "Failure, catch-up and rebuild"): one node, elected through
 * etcd, that changes disk records when nodes go and come. What it decides is pure
 * (`chainAfter`); the runner applies it with compare-and-swap and goes again on a conflict.
 */
import type { Logger } from '../observe/index.ts';
import { ClusterError, ClusterErrorCode } from './errors.ts';
import type { Coordinator } from './coord/coordinator.ts';
import type { DiskRecord } from './types.ts';
import { place, planChange, reservedBytesOf } from './placement.ts';
import type { PlacementNode, RttLookup } from './placement.ts';

/** How long a replica may stay away before the controller places a new one elsewhere (`serve --rebuild-delay`). */
export const rebuildDelayMsDefault = 60_000;

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
    chain.push(a.base === null ? { node: a.node, state: 'rebuilding', since: r.epoch + 1 } : { node: a.node, state: 'catching-up', base: a.base, since: r.epoch + 1 });
    changed = true;
  }
  if (!changed) return null;
  // Healthy replicas first, in their order (the head stays the head while it can), those copying in after.
  chain.sort((a, b) => Number(a.state !== 'healthy') - Number(b.state !== 'healthy'));
  return { ...r, epoch: r.epoch + 1, chain, away };
}

/**
 * The record a disk should have for its policy (docs/cluster.md, "Failure, catch-up and rebuild",
 * "Drain"), once `chainAfter` has nothing to change: new replicas where fewer than the policy
 * asks are in the chain (after `rebuildDelayMs` while one is away and may come back; those away
 * longer are forgotten then), replacements for replicas on draining nodes, and replicas dropped
 * where the policy asks for fewer. A draining node's replica leaves only once its replacement is
 * healthy. Returns null when nothing changes, or the policy cannot be met now (then it waits).
 */
export function rebalance(r: DiskRecord, nodes: readonly PlacementNode[], rttMs: RttLookup | undefined, nowMs: number, rebuildDelayMs: number): DiskRecord | null {
  const waiting = r.away.filter((a) => nowMs - a.sinceMs < rebuildDelayMs);
  let target: string[];
  try {
    target = place({ nodes, disk: { sizeBytes: r.sizeBytes, policy: r.policy, chain: r.chain, away: r.away }, rttMs });
  } catch {
    return null;
  }
  const current = r.chain.map((e) => e.node);
  const plan = planChange(current, target);
  const byId = new Map(nodes.map((n) => [n.id, n]));
  let chain = [...r.chain];
  let away = [...r.away];
  let changed = false;
  // Adding waits while a replica away may still come back; it would catch up cheaper.
  if (plan.add.length > 0 && waiting.length === 0) {
    for (const node of plan.add) {
      const was = away.find((a) => a.node === node);
      away = away.filter((a) => a.node !== node);
      chain.push(was !== undefined && was.base !== null ? { node, state: 'catching-up', base: was.base, since: r.epoch + 1 } : { node, state: 'rebuilding', since: r.epoch + 1 });
    }
    changed = true;
  }
  for (const node of plan.remove) {
    const draining = byId.get(node)?.state === 'draining';
    const healthyLeft = chain.filter((e) => e.state === 'healthy' && e.node !== node && !plan.remove.includes(e.node)).length;
    // A drained replica goes once the others hold the data; one the policy no longer wants goes at once.
    if (draining && healthyLeft < Math.min(r.policy.replicas, target.length)) continue;
    if (healthyLeft === 0) continue;
    chain = chain.filter((e) => e.node !== node);
    changed = true;
  }
  // Replicas away past the delay, once the chain is whole again, are forgotten.
  if (chain.length >= r.policy.replicas) {
    const keep = away.filter((a) => nowMs - a.sinceMs < rebuildDelayMs);
    if (keep.length !== away.length) {
      away = keep;
      changed = true;
    }
  }
  if (!changed) return null;
  chain.sort((a, b) => Number(a.state !== 'healthy') - Number(b.state !== 'healthy'));
  return { ...r, epoch: r.epoch + 1, chain, away };
}

/** What placement knows of the cluster now, from the coordinator's cache. */
export function placementNodes(coord: Coordinator): PlacementNode[] {
  const reserved = reservedBytesOf(coord.disks().map((d) => d.record));
  return coord.members().map((m) => ({
    id: m.record.id,
    zone: m.record.zone,
    state: m.record.state,
    up: m.up,
    capacityBytes: m.live?.capacityBytes ?? 0,
    usedBytes: m.live?.usedBytes ?? 0,
    reservedBytes: reserved.get(m.record.id) ?? 0,
    load: m.live?.load ?? 0,
  }));
}

/** Runs the controller's decisions while this node is the controller. */
export class Controller {
  readonly #coord: Coordinator;
  readonly #log: Logger;
  #running: Promise<void> | null = null;
  #again = false;
  #closed = false;
  readonly #poke = (): void => this.kick();

  readonly #rebuildDelayMs: number;
  #timer: NodeJS.Timeout | null = null;

  constructor(opts: { coord: Coordinator; log: Logger; rebuildDelayMs?: number }) {
    this.#coord = opts.coord;
    this.#log = opts.log;
    this.#rebuildDelayMs = opts.rebuildDelayMs ?? rebuildDelayMsDefault;
    // A replica's rebuild delay runs out without an event: look again now and then.
    this.#timer = setInterval(() => this.kick(), Math.max(250, Math.min(5000, this.#rebuildDelayMs / 4))).unref();
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
    const nodes = placementNodes(this.#coord);
    const rtt = this.#coord.rttLookup();
    for (const { record, modRevision } of this.#coord.disks()) {
      if (!this.#coord.isController) return;
      const now = Date.now();
      const next = chainAfter(record, up, now) ?? rebalance(record, nodes, rtt, now, this.#rebuildDelayMs);
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
    if (this.#timer !== null) clearInterval(this.#timer);
    for (const ev of ['member-up', 'member-down', 'controller-change'] as const) this.#coord.off(ev, this.#poke);
    this.#coord.off('disk', this.#poke);
    await this.#running;
  }
}
