import type { OrderClass } from './ops.ts';

interface Entry {
  order: OrderClass;
  done: Promise<void>;
}

/**
 * Runs a replica's local applies in an order every replica agrees on (docs/cluster.md, "Order"):
 * `run` is called in stream order, and each op starts once the earlier ops it must follow
 * (ops.ts, `OrderClass`) are done, failed or not. Ops that need not wait run concurrently.
 */
export class OrderQueue {
  /** Ops started or waiting, oldest first. Linear scans: bounded by the chain's in-flight limit. */
  #active: Entry[] = [];

  /** Ops in the queue (waiting or running). */
  get size(): number {
    return this.#active.length;
  }

  /** Queues `fn` behind what it must follow; the entry is taken synchronously, in call order. */
  run<T>(order: OrderClass, fn: () => Promise<T>): Promise<T> {
    const deps: Promise<void>[] = [];
    for (const e of this.#active) if (mustFollow(order, e.order)) deps.push(e.done);
    const result = (deps.length === 0 ? Promise.resolve() : Promise.all(deps)).then(fn);
    const entry: Entry = { order, done: result.then(noop, noop) };
    this.#active.push(entry);
    void entry.done.then(() => {
      const i = this.#active.indexOf(entry);
      if (i >= 0) this.#active.splice(i, 1);
    });
    return result;
  }

  /** Resolves once every op queued so far is done. */
  async idle(): Promise<void> {
    await Promise.all(this.#active.map((e) => e.done));
  }
}

function noop(): void {}

/** Whether an op of class `later` must wait for an earlier one of class `earlier`. */
function mustFollow(later: OrderClass, earlier: OrderClass): boolean {
  if (later.kind !== 'range' || earlier.kind === 'barrier') return true;
  if (earlier.kind === 'flush') return false;
  return later.start < earlier.end && earlier.start < later.end;
}
