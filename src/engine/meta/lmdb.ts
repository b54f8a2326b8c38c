/**
 * The embedded metadata store: the `meta` database of the index's LMDB environment, as the store
 * format has it. Each commit is one LMDB transaction of its own, made before commit() returns.
 */
import type { BlockIndex } from '../index/block-index.ts';
import { MetaStore, type RawOp } from './meta-store.ts';

/** MetaStore over the block index's LMDB environment. */
export class LmdbMetaStore extends MetaStore {
  private readonly index: BlockIndex;

  constructor(index: BlockIndex) {
    super();
    this.index = index;
  }

  protected override _get(key: string): Promise<unknown> {
    return Promise.resolve(this.index.meta.get(key));
  }

  protected override _put(key: string, value: unknown): Promise<void> {
    return this._batch([{ key, value }]);
  }

  protected override _delete(key: string): Promise<void> {
    return this._batch([{ key, value: undefined }]);
  }

  protected override _list(prefix: string): Promise<{ key: string; value: unknown }[]> {
    // Keys are strings: the range [prefix, prefix with its last character raised) holds them all.
    const end = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
    return Promise.resolve([...this.index.meta.getRange({ start: prefix, end })].map(({ key, value }) => ({ key, value })));
  }

  protected override _batch(ops: RawOp[]): Promise<void> {
    try {
      // The index's transaction: a full file system is ENGINE_NO_SPACE, and nothing is changed.
      this.index.transaction(() => {
        for (const { key, value } of ops) {
          if (value === undefined) this.index.meta.removeSync(key);
          else this.index.meta.putSync(key, value);
        }
      });
      return Promise.resolve();
    } catch (err) {
      return Promise.reject(err);
    }
  }
}
