/**
 * A deterministic simulation of the chain protocol (docs/cluster.md, "Replication: the chain";
 * docs/testing.md): the real ChainReplica on every node, an in-memory network and in-memory
 * stores, all driven by one seeded scheduler, so a failing seed replays exactly.
 *
 * - The network keeps each connection's messages in order (as TCP does) and delivers links in a
 *   random interleaving; a dropped link loses what was on it (senders get PEER_UNAVAILABLE), and
 *   a message delivered may be delivered again later, out of order (a straggler of an old
 *   connection).
 * - Stores apply ops after a random number of steps, so local applies interleave with messages.
 * - Nodes crash (gone with their state) or are cut off (alive, every link down, then healed).
 *   A controller removes a lost node from each chain at a new epoch and configures the members
 *   tail first, as the real one does.
 * - Clients write versions of blocks, one op per block at a time, to the node they believe is
 *   the head; a write is acknowledged, failed or unknown (timed out).
 */
import { ClusterError, ClusterErrorCode } from '../../../src/cluster/index.ts';
import { ChainReplica } from '../../../src/cluster/chain/replica.ts';
import type { ChainTransport, ReplicaStore, ReplicaTimers } from '../../../src/cluster/chain/replica.ts';
import type { ChainOp, OpMessage } from '../../../src/cluster/chain/ops.ts';
import { Rng } from '../../helpers/data.ts';

const BLOCK = 4096;

/** An event the scheduler may run. */
interface SimEvent {
  /** Events of one queue run in order; only each queue's first is eligible. */
  queue: string;
  run: () => void;
}

/** A seeded scheduler over queues of events. */
class Scheduler {
  readonly rng: Rng;
  readonly #queues = new Map<string, SimEvent[]>();
  step = 0;
  constructor(seed: number) {
    this.rng = new Rng(seed);
  }
  add(queue: string, run: () => void): void {
    let q = this.#queues.get(queue);
    if (q === undefined) this.#queues.set(queue, (q = []));
    q.push({ queue, run });
  }
  /** Drops a queue's events, running `onDrop` for each. */
  drop(queue: string): SimEvent[] {
    const q = this.#queues.get(queue) ?? [];
    this.#queues.delete(queue);
    return q;
  }
  get pending(): number {
    let n = 0;
    for (const q of this.#queues.values()) n += q.length;
    return n;
  }
  /** Runs one eligible event chosen at random; false when there is none. */
  runOne(): boolean {
    const names = [...this.#queues.keys()].filter((k) => this.#queues.get(k)!.length > 0);
    if (names.length === 0) return false;
    const q = this.#queues.get(names[this.rng.int(names.length)])!;
    const ev = q.shift()!;
    if (q.length === 0) this.#queues.delete(ev.queue);
    this.step++;
    ev.run();
    return true;
  }
}

/** `TESSERA_SIM_TRACE=1`: print what the controller and the faults do, to follow a failing seed. */
const TRACE = process.env.TESSERA_SIM_TRACE === '1';
function trace(step: number, what: string): void {
  if (TRACE) process.stderr.write(`[${step}] ${what}\n`);
}

/** Lets every promise continuation the last event started run. */
function settle(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** One replica's copy: blocks holding `version` numbers, and the ids applied (each at most once). */
class SimStore implements ReplicaStore {
  readonly blockBytes = BLOCK;
  readonly blocks = new Map<number, number>();
  readonly snapshots = new Map<string, Map<number, number>>();
  readonly sim: ChainSim;
  readonly node: string;
  constructor(sim: ChainSim, node: string) {
    this.sim = sim;
    this.node = node;
  }
  apply(op: ChainOp): Promise<void> {
    return new Promise((resolve) => {
      this.sim.sched.add(`store:${this.node}:${this.sim.sched.rng.int(4)}`, () => {
        if (op.kind === 'write') this.blocks.set(op.offset / BLOCK, op.data.readUInt32LE(0));
        else if (op.kind === 'zero' || op.kind === 'trim') for (let b = op.offset / BLOCK; b < (op.offset + op.length) / BLOCK; b++) this.blocks.delete(b);
        else if (op.kind === 'snapshot') this.snapshots.set(op.name, new Map(this.blocks));
        else if (op.kind === 'snapshot-delete') this.snapshots.delete(op.name);
        resolve();
      });
    });
  }
  read(offset: number): Promise<Buffer> {
    const b = Buffer.alloc(BLOCK);
    b.writeUInt32LE(this.blocks.get(offset / BLOCK) ?? 0, 0);
    return Promise.resolve(b);
  }
}

interface SimNode {
  id: string;
  up: boolean;
  /** Cut off: alive, but every link to and from it is down. */
  isolated: boolean;
  replica: ChainReplica | null;
  store: SimStore;
}

/** Options of a run. */
export interface SimOptions {
  seed: number;
  nodes: number;
  /** Client writes to issue. */
  writes: number;
  blocks: number;
  /** Chance per step of a fault (link drop, crash, isolation). */
  faultChance: number;
  /** Chance a delivered message is delivered again later. */
  duplicateChance: number;
}

/** What a run found; `violations` empty when the protocol held. */
export interface SimResult {
  acked: number;
  failed: number;
  unknown: number;
  epochs: number;
  crashes: number;
  isolations: number;
  drops: number;
  duplicates: number;
  /** Replicas that copied their data in and became healthy. */
  catchUps: number;
  steps: number;
  violations: string[];
}

/** The simulation of one disk's chain over `nodes` nodes. */
export class ChainSim {
  readonly sched: Scheduler;
  readonly opts: SimOptions;
  readonly nodes = new Map<string, SimNode>();
  /** Link generations: a dropped link starts a new one; messages of an older one are lost. */
  readonly #linkGen = new Map<string, number>();
  epoch = 1;
  chain: string[] = [];
  /** Client's view of the head (may be stale). */
  clientHead = '';
  readonly result: SimResult = { acked: 0, failed: 0, unknown: 0, epochs: 1, crashes: 0, isolations: 0, drops: 0, duplicates: 0, catchUps: 0, steps: 0, violations: [] };
  /** Per block: versions acknowledged, and the highest version submitted. */
  readonly #lastAcked = new Map<number, number>();
  /** Blocks with a client write in flight (how many), and blocks that ever had two at once. */
  readonly #busy = new Map<number, number>();
  readonly #contested = new Set<number>();
  /** Epoch → the node whose client ops were acknowledged in it. */
  readonly #headOfEpoch = new Map<number, string>();
  #nextVersion = 1;
  #issued = 0;
  readonly timers: ReplicaTimers;

  constructor(opts: SimOptions) {
    this.opts = opts;
    this.sched = new Scheduler(opts.seed);
    this.timers = {
      set: (fn) => {
        const h = { cancelled: false };
        this.sched.add(`timer:${this.sched.rng.int(1 << 30)}`, () => {
          if (!h.cancelled) fn();
        });
        return h;
      },
      clear: (h) => ((h as { cancelled: boolean }).cancelled = true),
    };
    for (let i = 1; i <= opts.nodes; i++) {
      const id = `n${i}`;
      const node: SimNode = { id, up: true, isolated: false, replica: null, store: null as unknown as SimStore };
      node.store = new SimStore(this, id);
      node.replica = this.#makeReplica(node);
      this.nodes.set(id, node);
    }
    this.chain = [...this.nodes.keys()];
    for (const n of [...this.chain].reverse()) this.nodes.get(n)!.replica!.configure({ epoch: this.epoch, chain: this.chain });
    this.clientHead = this.chain[0];
  }

  #makeReplica(node: SimNode): ChainReplica {
    return new ChainReplica({ disk: 'd', node: node.id, store: node.store, transport: this.#transport(node.id), timers: this.timers, limits: { retryMs: 1 } });
  }

  #linkUp(from: string, to: string): boolean {
    const a = this.nodes.get(from)!;
    const b = this.nodes.get(to);
    return b !== undefined && a.up && b.up && !a.isolated && !b.isolated;
  }

  #transport(from: string): ChainTransport {
    return {
      forward: (to: string, msg: OpMessage) =>
        new Promise<void>((resolve, reject) => {
          const link = `${from}>${to}`;
          const gen = this.#linkGen.get(link) ?? 0;
          const unavailable = (): void => reject(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `${to} unreachable from ${from}`));
          if (!this.#linkUp(from, to)) {
            this.sched.add(`fail:${link}`, unavailable);
            return;
          }
          this.sched.add(`link:${link}:${gen}`, () => {
            if ((this.#linkGen.get(link) ?? 0) !== gen || !this.#linkUp(from, to)) return unavailable();
            this.#deliver(to, msg, (err) => {
              // The reply travels back on the same connection.
              this.sched.add(`reply:${link}:${gen}`, () => {
                if ((this.#linkGen.get(link) ?? 0) !== gen || !this.#linkUp(from, to)) return unavailable();
                if (err === null) resolve();
                else reject(err);
              });
            });
            if (this.sched.rng.next() < this.opts.duplicateChance) {
              this.result.duplicates++;
              this.sched.add(`ghost:${this.sched.rng.int(1 << 30)}`, () => {
                if (this.#linkUp(from, to)) this.#deliver(to, msg, () => {});
              });
            }
          });
        }),
    };
  }

  #deliver(to: string, msg: OpMessage, reply: (err: Error | null) => void): void {
    const node = this.nodes.get(to)!;
    if (node.replica === null) return reply(new ClusterError(ClusterErrorCode.PEER_UNAVAILABLE, `${to} has no replica`));
    const watch = process.env.TESSERA_SIM_WATCH;
    const tag = watch !== undefined && msg.op.kind === 'write' && msg.op.offset / BLOCK === Number(watch.split(':')[1]) && to === watch.split(':')[0];
    const before = node.replica.lastId;
    node.replica.receive(msg).then(
      () => {
        if (tag) trace(this.sched.step, `${to} took ${msg.id.join('.')} v${(msg.op as { data: Buffer }).data.readUInt32LE(0)} at epoch ${msg.epoch} (last was ${before?.join('.')})`);
        reply(null);
      },
      (err: Error) => {
        if (tag) trace(this.sched.step, `${to} refused ${msg.id.join('.')} at epoch ${msg.epoch}: ${err.message}`);
        reply(err);
      },
    );
  }

  /** Breaks one link: what is on it is lost. */
  #dropLink(): void {
    const live = this.chain.filter((n) => this.nodes.get(n)!.up);
    if (live.length < 2) return;
    const i = this.sched.rng.int(live.length - 1);
    const link = `${live[i]}>${live[i + 1]}`;
    this.#linkGen.set(link, (this.#linkGen.get(link) ?? 0) + 1);
    this.result.drops++;
  }

  /** Nodes of the chain copying their data in, and whether their copy has started. */
  readonly catchingUp = new Map<string, { copying: boolean }>();

  /** Sets a new chain at a new epoch and configures its members tail first, each a step; then, at the head, a sync snapshot for those copying in. */
  #setChain(chain: string[]): void {
    // Healthy members first (the head is the first of them), those copying in at the end.
    chain = [...chain.filter((n) => !this.catchingUp.has(n)), ...chain.filter((n) => this.catchingUp.has(n))];
    this.epoch++;
    this.result.epochs++;
    this.chain = chain;
    const epoch = this.epoch;
    const catchingUp = [...this.catchingUp.keys()];
    trace(this.sched.step, `epoch ${epoch}: chain ${chain.join('>')}${catchingUp.length ? ` copying in: ${catchingUp.join(',')}` : ''}`);
    const order = [...chain].reverse();
    const next = (i: number): void => {
      if (epoch !== this.epoch) return;
      if (i >= order.length) return this.#startCopies(epoch);
      this.sched.add(`configure:${epoch}`, () => {
        if (epoch !== this.epoch) return;
        const node = this.nodes.get(order[i])!;
        if (node.up && !node.isolated && node.replica !== null && node.replica.epoch <= epoch) {
          node.replica.configure({ epoch, chain, catchingUp });
        }
        next(i + 1);
      });
    };
    next(0);
    // Clients learn the new head after a while (until then they may go on at the old one).
    this.sched.add(`client-learns:${epoch}`, () => (this.clientHead = this.chain[0]));
  }

  /** Once a chain is configured: a sync snapshot through it, then copies in from it for whoever waits for one. */
  #startCopies(epoch: number): void {
    // Only nodes configured before the sync snapshot enters the stream may copy from it: they take every op after it.
    const waiting = [...this.catchingUp].filter(([, c]) => !c.copying).map(([n]) => n);
    if (waiting.length === 0) return;
    const joined = new Map(waiting.map((n) => [n, this.catchingUp.get(n)!]));
    const head = this.nodes.get(this.chain[0])!;
    const name = `sync-${epoch}`;
    head.replica!.submit({ kind: 'snapshot', name }, { internal: true }).then(
      () => {
        const source = this.nodes.get(this.chain[0])!;
        const snap = source.store.snapshots.get(name);
        if (snap === undefined) return; // the head changed since; the next chain takes another
        trace(this.sched.step, `${name} taken; ${waiting.join(',')} copy in from it`);
        for (const n of waiting) if (this.catchingUp.get(n) === joined.get(n)) this.#copy(n, new Map(snap), epoch);
      },
      () => {}, // the head was lost or fenced: the next chain takes another
    );
  }

  /** Copies every block of a sync snapshot into `node`, a step each, then marks it healthy. */
  #copy(node: string, snap: Map<number, number>, epoch: number): void {
    const c = this.catchingUp.get(node);
    if (c === undefined || c.copying) return;
    c.copying = true;
    const blocks = Array.from({ length: this.opts.blocks }, (_, b) => b);
    const step = (i: number): void => {
      this.sched.add(`copy:${node}`, () => {
        const n = this.nodes.get(node)!;
        if (this.catchingUp.get(node) !== c || n.replica === null) return;
        if (i >= blocks.length) {
          trace(this.sched.step, `${node} copied in (sync of epoch ${epoch})`);
          n.replica.copyInDone();
          this.catchingUp.delete(node);
          this.result.catchUps++;
          this.#setChain(this.chain);
          return;
        }
        const v = snap.get(blocks[i]);
        let data: Buffer | null = null;
        if (v !== undefined) {
          data = Buffer.alloc(BLOCK);
          data.writeUInt32LE(v, 0);
        }
        n.replica.copyIn(blocks[i] * BLOCK, BLOCK, data).then(() => step(i + 1), (err: Error) => trace(this.sched.step, `${node}: copy in stopped: ${err.message}`));
      });
    };
    step(0);
  }

  /** A node that restarted or was healed joins the chain again, empty, and copies its data in. */
  #rejoin(node: SimNode): void {
    node.store = new SimStore(this, node.id);
    node.replica?.close();
    node.replica = this.#makeReplica(node);
    this.catchingUp.set(node.id, { copying: false });
    trace(this.sched.step, `${node.id} joins`);
    this.#setChain([...this.chain, node.id]);
  }

  #healthy(): string[] {
    return this.chain.filter((n) => !this.catchingUp.has(n));
  }

  #fault(): void {
    const r = this.sched.rng.next();
    if (r < 0.6) return this.#dropLink();
    const victim = this.chain[this.sched.rng.int(this.chain.length)];
    // Never the last healthy replica: the cluster cannot survive that, and does not claim to.
    if (!this.catchingUp.has(victim) && this.#healthy().length < 2) return this.#dropLink();
    const node = this.nodes.get(victim)!;
    this.catchingUp.delete(victim);
    trace(this.sched.step, `${r < 0.8 ? 'crash' : 'cut off'} ${victim}`);
    if (r < 0.8) {
      // Crash: the process and what it held are gone; it restarts later, empty.
      node.up = false;
      node.replica?.close();
      node.replica = null;
      this.result.crashes++;
      this.#later(`restart:${victim}`, 30, () => {
        node.up = true;
        this.#rejoin(node);
      });
    } else {
      // Cut off: it lives on, believing it is in the chain, until healed.
      node.isolated = true;
      this.result.isolations++;
      this.#later(`heal:${victim}`, 20, () => {
        node.isolated = false;
        // It learns the chain it is no longer in (the real node: from its etcd watch), then rejoins.
        if (node.replica !== null && node.replica.epoch <= this.epoch) node.replica.configure({ epoch: this.epoch, chain: this.chain });
        this.#later(`rejoin:${victim}`, 5, () => this.#rejoin(node));
      });
    }
    this.#setChain(this.chain.filter((n) => n !== victim));
  }

  /** Runs `fn` after about `steps` steps of its own queue. */
  #later(queue: string, steps: number, fn: () => void): void {
    const tick = (left: number): void => this.sched.add(queue, () => (left <= 0 ? fn() : tick(left - 1)));
    tick(steps);
  }

  #issue(): void {
    const block = this.sched.rng.int(this.opts.blocks);
    // Mostly one write per block at a time, so "the last acknowledged version" is defined; now and
    // then two at once, which only the replicas' agreement can judge.
    if (this.#busy.has(block)) {
      if (this.sched.rng.next() >= 0.2) return;
      this.#contested.add(block);
    }
    this.#busy.set(block, (this.#busy.get(block) ?? 0) + 1);
    this.#issued++;
    const version = this.#nextVersion++;
    const data = Buffer.alloc(BLOCK);
    data.writeUInt32LE(version, 0);
    const headId = this.clientHead;
    const head = this.nodes.get(headId)!;
    let finished = false;
    const finish = (kind: 'acked' | 'failed' | 'unknown', epoch?: number): void => {
      if (finished) return;
      finished = true;
      const n = this.#busy.get(block)! - 1;
      if (n === 0) this.#busy.delete(block);
      else this.#busy.set(block, n);
      this.result[kind]++;
      if (kind === 'acked') {
        this.#lastAcked.set(block, Math.max(this.#lastAcked.get(block) ?? 0, version));
        const other = this.#headOfEpoch.get(epoch!);
        if (other !== undefined && other !== headId) this.result.violations.push(`two heads acknowledged writes in epoch ${epoch}: ${other} and ${headId}`);
        this.#headOfEpoch.set(epoch!, headId);
      }
    };
    // A client gives up after a while: the write is then unknown (it may or may not land).
    let waits = 0;
    const timeout = (): void => {
      if (finished) return;
      if (++waits < 400) this.sched.add(`client-timeout:${version}`, timeout);
      else finish('unknown');
    };
    this.sched.add(`client-timeout:${version}`, timeout);
    if (!head.up || head.isolated || head.replica === null) {
      this.sched.add(`client-fail:${version}`, () => finish('failed'));
      return;
    }
    const epoch = head.replica.epoch;
    head.replica.submit({ kind: 'write', offset: block * BLOCK, data, fua: false }).then(
      () => finish('acked', epoch),
      () => finish('failed'),
    );
  }

  /** Runs the whole scenario, then checks the model. */
  async run(): Promise<SimResult> {
    const { opts } = this;
    while (this.#issued < opts.writes || this.sched.pending > 0) {
      if (this.#issued < opts.writes && this.sched.rng.next() < 0.3) this.#issue();
      if (this.#issued < opts.writes && this.sched.rng.next() < opts.faultChance) this.#fault();
      if (!this.sched.runOne() && this.#issued >= opts.writes) break;
      await settle();
      if (this.sched.step > opts.writes * 2000) {
        this.result.violations.push(`no progress after ${this.sched.step} steps (${this.sched.pending} events pending)`);
        break;
      }
    }
    // Let what is pending drain: cut-off nodes heal and rejoin, copies in finish.
    for (let i = 0; i < 200000 && this.sched.runOne(); i++) await settle();
    await settle();
    this.result.steps = this.sched.step;
    this.#check();
    return this.result;
  }

  #check(): void {
    const v = this.result.violations;
    if (this.catchingUp.size > 0) v.push(`still copying in at the end: ${[...this.catchingUp.keys()].join(', ')}`);
    const members = this.chain.map((n) => this.nodes.get(n)!);
    for (const m of members) {
      if (m.replica === null || m.replica.epoch !== this.epoch) v.push(`${m.id} is in the chain of epoch ${this.epoch} but holds ${m.replica?.epoch}`);
      if (m.replica !== null && m.replica.pendingOps > 0) v.push(`${m.id} still has ${m.replica.pendingOps} ops pending at the end`);
    }
    const head = members[0];
    for (const [block, acked] of this.#lastAcked) {
      if (this.#contested.has(block)) continue;
      const got = head.store.blocks.get(block) ?? 0;
      if (got < acked) v.push(`block ${block}: acknowledged version ${acked} lost, the head holds ${got}`);
    }
    for (const m of members.slice(1)) {
      for (let b = 0; b < this.opts.blocks; b++) {
        const a = head.store.blocks.get(b) ?? 0;
        const c = m.store.blocks.get(b) ?? 0;
        if (a !== c) {
          v.push(`block ${b}: the head ${head.id} holds version ${a}, ${m.id} holds ${c}`);
          break;
        }
      }
    }
  }
}
