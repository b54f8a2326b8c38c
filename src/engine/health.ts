/**
 * The drive under a store: ok, or failing since a log write, a log sync or an index transaction
 * failed with an error other than a full file system (docs/engine.md, "A failing drive"). Failing
 * is never left while the store is open: after a failed fsync the kernel may have dropped the
 * pages it could not write, and a later fsync reports success, so nothing written since can be
 * trusted to be durable.
 */
import { EngineError, EngineErrorCode } from './errors.ts';

/** What Store.health() reports. */
export interface StoreHealth {
  /** `failing`: writes, flushes and disk and snapshot changes are refused with ENGINE_IO; reads go on. */
  drive: 'ok' | 'failing';
  /** What failed first, when failing. */
  error?: string;
  /** When the drive started failing, ms since the epoch. */
  sinceMs?: number;
}

/** The state the write log, the index and the store share. */
export class DriveHealth {
  #failure: { message: string; sinceMs: number } | null = null;
  readonly #onFailing: (health: StoreHealth) => void;

  constructor(onFailing: (health: StoreHealth) => void = () => {}) {
    this.#onFailing = onFailing;
  }

  get failing(): boolean {
    return this.#failure !== null;
  }

  /**
   * A write, sync or index transaction failed with `cause` while doing `what`: the drive is
   * failing from now on (the first failure is the one reported). Returns the error for the
   * requests that failed with it.
   */
  fail(cause: unknown, what: string): EngineError {
    const message = `I/O error while ${what}: ${(cause as Error)?.message ?? String(cause)}`;
    if (this.#failure === null) {
      this.#failure = { message, sinceMs: Date.now() };
      this.#onFailing(this.status());
    }
    return new EngineError(EngineErrorCode.IO, message, { cause });
  }

  /** Throws ENGINE_IO while failing: what refuses writes, flushes and changes. */
  check(): void {
    if (this.#failure !== null) throw this.refusal();
  }

  /** The error a request refused for the failing drive gets. */
  refusal(): EngineError {
    const f = this.#failure;
    return new EngineError(EngineErrorCode.IO, `The drive under the store is failing (since ${f === null ? '?' : new Date(f.sinceMs).toISOString()}: ${f?.message}); writes are refused until the node is restarted`);
  }

  status(): StoreHealth {
    const f = this.#failure;
    return f === null ? { drive: 'ok' } : { drive: 'failing', error: f.message, sinceMs: f.sinceMs };
  }
}
