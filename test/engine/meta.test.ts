import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlockIndex } from '../../src/engine/index/block-index.ts';
import { LmdbMetaStore } from '../../src/engine/meta/lmdb.ts';
import { MemoryMetaStore } from '../../src/engine/meta/memory.ts';
import { metaConformance } from './meta-conformance.ts';

// The embedded store, in an LMDB environment of its own as the store's index has it.
{
  let dir = '';
  let index: BlockIndex | null = null;
  metaConformance('LMDB metadata store', {
    async open() {
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-meta-'));
      index = new BlockIndex(dir);
      return new LmdbMetaStore(index);
    },
    async reopen() {
      await index!.close();
      index = new BlockIndex(dir);
      return new LmdbMetaStore(index);
    },
    async damage(key, value) {
      index!.meta.putSync(key, value);
    },
    async close() {
      await index?.close();
      index = null;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  });
}

// In memory: the seam's second backend.
{
  class DamageableMemory extends MemoryMetaStore {
    damage(key: string, value: unknown): Promise<void> {
      return this._put(key, value);
    }
  }
  let m: DamageableMemory | null = null;
  metaConformance('in-memory metadata store', {
    async open() {
      return (m = new DamageableMemory());
    },
    async damage(key, value) {
      await m!.damage(key, value);
    },
    async close() {
      m = null;
    },
  });
}
