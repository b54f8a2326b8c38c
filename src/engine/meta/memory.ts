/**
 * A metadata store in memory: the seam's second backend, for tests and for stores whose
 * metadata lives elsewhere. Values are copied in and out, as a real backend would encode them.
 */
import { MetaStore, type RawOp } from './meta-store.ts';

/** MetaStore over a Map; lost when the process ends. */
export class MemoryMetaStore extends MetaStore {
  private readonly data = new Map<string, unknown>();

  protected override async _get(key: string): Promise<unknown> {
    return structuredClone(this.data.get(key));
  }

  protected override async _put(key: string, value: unknown): Promise<void> {
    this.data.set(key, structuredClone(value));
  }

  protected override async _delete(key: string): Promise<void> {
    this.data.delete(key);
  }

  protected override async _list(prefix: string): Promise<{ key: string; value: unknown }[]> {
    return [...this.data.keys()].filter((k) => k.startsWith(prefix)).sort().map((key) => ({ key, value: structuredClone(this.data.get(key)) }));
  }

  protected override async _batch(ops: RawOp[]): Promise<void> {
    // Copied first: should a value not copy, nothing has changed.
    const copies = ops.map(({ key, value }) => ({ key, value: value === undefined ? undefined : structuredClone(value) }));
    for (const { key, value } of copies) {
      if (value === undefined) this.data.delete(key);
      else this.data.set(key, value);
    }
  }
}
