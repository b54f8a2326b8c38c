/**
 * The node's copy of everything under the cluster's prefix (docs/cluster.md, "The cache"): read
 * at start in pages, all at one revision, then one watch from that revision on. Readers never
 * wait on etcd; while the watch is broken they get what was last seen, and its revision says how
 * old that is.
 */
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { Watcher } from 'etcd3';
import type { Logger } from '../../observe/index.ts';
import { ClusterError, ClusterErrorCode } from '../errors.ts';
import type { EtcdClient, Kv, RangePage } from './etcd.ts';
import type { Keys } from './keys.ts';

/** One key as the cache holds it; `key` is relative to the prefix (`live/n1`). */
export interface CacheEntry {
  key: string;
  /** The value as written (JSON for every key but the election's, which hold a node id). */
  text: string;
  createRevision: number;
  modRevision: number;
  lease: string;
}

/** What the cache tells its listeners, after each batch of changes it applied. */
export interface CacheEvents {
  /** `P/live/ID` appeared: the node is up. */
  'member-up': [id: string];
  /** `P/live/ID` went (its lease expired or was revoked): the node is down. */
  'member-down': [id: string];
  /** `P/members/ID` was written or deleted. */
  member: [id: string];
  /** `P/disks/NAME` was written (the entry) or deleted (null). */
  disk: [name: string, entry: CacheEntry | null];
  /** `P/owners/NAME` was written or deleted. */
  owner: [name: string, entry: CacheEntry | null];
  /** The controller changed: its node id, or null while there is none. */
  controller: [id: string | null];
  /** A batch of changes was applied; the cache is at `revision`. */
  change: [revision: number];
  /** The watch broke (etcd unreachable): the cache serves what it has. */
  broken: [err: Error];
  /** The watch is back: resumed from the last revision, or after a reload when etcd compacted past it. */
  resumed: [how: 'resumed' | 'reloaded'];
}

/** How long a failed reload waits before the next try. */
const reloadRetryMs = 500;

/**
 * Keys a page of the load holds at most unless told otherwise: 500 of Tessera's records (each at
 * most ~1 KiB) stay far below the 4 MiB the etcd client receives in one message.
 */
export const loadPageKeysDefault = 500;

/** The most keys a page may be asked to hold. */
const loadPageKeysMax = 10_000;

/** The cache of one cluster's keys. */
export class ClusterCache extends EventEmitter<CacheEvents> {
  readonly #etcd: EtcdClient;
  readonly #keys: Keys;
  readonly #log: Logger;
  #entries = new Map<string, CacheEntry>();
  #revision = 0;
  #watcher: Watcher | null = null;
  #connected = false;
  #closed = false;
  #leader: string | null = null;
  readonly #pageKeys: number;

  /** `pageKeys`: keys a page of the load holds at most (default 500). */
  constructor(opts: { etcd: EtcdClient; keys: Keys; log: Logger; pageKeys?: number }) {
    super();
    this.#etcd = opts.etcd;
    this.#keys = opts.keys;
    this.#log = opts.log;
    const pageKeys = opts.pageKeys ?? loadPageKeysDefault;
    if (!Number.isInteger(pageKeys) || pageKeys < 1 || pageKeys > loadPageKeysMax) {
      throw new ClusterError(ClusterErrorCode.INVALID, `invalid page size ${pageKeys}: expected a whole number of keys from 1 to ${loadPageKeysMax}`);
    }
    this.#pageKeys = pageKeys;
  }

  /** The etcd revision the cache is at: the cluster-map version. */
  get revision(): number {
    return this.#revision;
  }

  /** Whether the watch is connected (false while etcd is unreachable). */
  get following(): boolean {
    return this.#connected;
  }

  /** The controller's node id: the value of the oldest election key, or null. */
  get controller(): string | null {
    return this.#leader;
  }

  /** The oldest election key (the controller's), or null. */
  leaderEntry(): CacheEntry | null {
    let oldest: CacheEntry | null = null;
    for (const e of this.under('election/controller/')) if (oldest === null || e.createRevision < oldest.createRevision) oldest = e;
    return oldest;
  }

  /** The entry of `key` (relative to the prefix), or undefined. */
  get(key: string): CacheEntry | undefined {
    return this.#entries.get(key);
  }

  /** `key`'s value parsed as JSON, or undefined when absent or not JSON. */
  json<T>(key: string): T | undefined {
    const e = this.#entries.get(key);
    if (e === undefined) return undefined;
    try {
      return JSON.parse(e.text) as T;
    } catch {
      return undefined;
    }
  }

  /** Every entry whose key starts with `dir` (e.g. `members/`), in key order. */
  under(dir: string): CacheEntry[] {
    return [...this.#entries.values()].filter((e) => e.key.startsWith(dir)).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  /**
   * Reads every key once, in pages: the first at etcd's newest revision, every next one at that
   * revision from the key after the last one read, so the pages are one snapshot whatever is
   * written meanwhile (the watch, from the revision after, brings it). A page larger than the
   * client receives is asked again with half as many keys. The first call at start, later ones
   * after a compaction.
   */
  async load(): Promise<void> {
    const next = new Map<string, CacheEntry>();
    let limit = this.#pageKeys;
    let revision: number | undefined;
    let after: Buffer | undefined;
    let pages = 0;
    for (;;) {
      let page: RangePage;
      try {
        page = await this.#etcd.rangePage({ prefix: this.#keys.root, limit, after, revision });
      } catch (err) {
        if (!(err instanceof ClusterError) || err.code !== ClusterErrorCode.LIMIT || limit === 1) throw err;
        limit = Math.ceil(limit / 2);
        this.#log.debug(`${err.message}: asking for ${limit} keys a page`);
        continue;
      }
      pages++;
      revision = page.revision;
      for (const kv of page.kvs) next.set(this.#rel(kv.key), this.#entryOf(kv));
      if (!page.more || page.last === null) break;
      after = page.last;
    }
    assert(revision !== undefined, 'a load reads at least one page');
    this.#log.debug(`read ${next.size} keys under ${this.#keys.root} in ${pages} page(s) at revision ${revision}`);
    const before = this.#entries;
    this.#entries = next;
    this.#revision = Math.max(this.#revision, revision);
    const changed = new Set([...before.keys(), ...next.keys()]);
    for (const key of changed) {
      const a = before.get(key);
      const b = next.get(key);
      if (a?.modRevision !== b?.modRevision) this.#tell(key, a, b);
    }
    this.#afterBatch();
  }

  /** Follows the keys with one watch from the revision loaded. */
  follow(): void {
    if (this.#closed) return;
    const w = this.#etcd.watchPrefix(this.#keys.root, this.#revision + 1);
    this.#watcher = w;
    w.on('connected', () => {
      const was = this.#connected;
      this.#connected = true;
      if (!was && this.#everConnected) {
        this.#log.info('etcd watch resumed', { revision: this.#revision });
        this.emit('resumed', 'resumed');
      }
      this.#everConnected = true;
    });
    w.on('disconnected', (err: Error) => {
      if (!this.#connected) return;
      this.#connected = false;
      this.#log.warn(`etcd watch broken, serving the cluster map of revision ${this.#revision}: ${err.message}`);
      this.emit('broken', err);
    });
    w.on('data', (res) => {
      for (const ev of res.events) {
        const key = this.#rel(ev.kv.key.toString());
        const before = this.#entries.get(key);
        if (ev.type === 'Delete') {
          this.#entries.delete(key);
          this.#tell(key, before, undefined);
        } else {
          const after = this.#entryOf(ev.kv);
          this.#entries.set(key, after);
          this.#tell(key, before, after);
        }
      }
      this.#revision = Math.max(this.#revision, Number(res.header.revision));
      this.#afterBatch();
    });
    // etcd cancels a watch it cannot serve, e.g. from a revision it compacted: reload and follow anew.
    w.on('error', (err: Error) => {
      if (this.#watcher !== w || this.#closed) return;
      this.#log.warn(`etcd watch cancelled (${err.message}); reloading the cluster map`);
      this.#watcher = null;
      this.#connected = false;
      w.removeAllListeners('data');
      void w.cancel().catch(() => {});
      void this.#reload();
    });
  }
  #everConnected = false;

  async #reload(): Promise<void> {
    while (!this.#closed) {
      try {
        await this.load();
        this.follow();
        this.emit('resumed', 'reloaded');
        return;
      } catch (err) {
        this.#log.debug(`reload of the cluster map failed: ${(err as Error).message}`);
        await new Promise((resolve) => setTimeout(resolve, reloadRetryMs));
      }
    }
  }

  /** Resolves once the cache is at `revision` or later (a change this node made is seen). */
  async reach(revision: number, timeoutMs = 10_000): Promise<void> {
    if (this.#revision >= revision) return;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('change', on);
        reject(new Error(`the cluster map did not reach revision ${revision} within ${timeoutMs} ms (at ${this.#revision})`));
      }, timeoutMs);
      const on = (r: number): void => {
        if (r < revision) return;
        clearTimeout(timer);
        this.off('change', on);
        resolve();
      };
      this.on('change', on);
    });
  }

  /**
   * Resolves once the cache's entry of `key` is etcd's at `revision` or later: at once when the
   * cache is there. Else, rather than wait for the watch to pass `revision` (which other prefixes
   * of a shared etcd may have set, and which this cache then sees only with its own keys' next
   * change), it reads the key (one range): the same version as the cache's is current as of
   * etcd's revision, which is past `revision`; a newer one (or its deletion) the watch brings.
   * Rejects after `timeoutMs`, or when etcd does not answer.
   */
  async reachKey(key: string, revision: number, timeoutMs = 10_000): Promise<void> {
    if (this.#revision >= revision) return;
    const { revision: at, kv } = await this.#etcd.get(this.#keys.root + key);
    // The watch may have brought newer changes of the key meanwhile: those count too.
    const current = (): boolean => {
      const mine = this.#entries.get(key);
      return kv === null ? mine === undefined || mine.modRevision > at : this.#revision >= kv.modRevision;
    };
    if (current()) return;
    if (kv !== null) return this.reach(kv.modRevision, timeoutMs);
    // Deleted in etcd, still here: the watch brings the deletion.
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.off('change', on);
        reject(new Error(`the cluster map did not see ${key} deleted within ${timeoutMs} ms (at ${this.#revision})`));
      }, timeoutMs);
      const on = (): void => {
        if (!current()) return;
        clearTimeout(timer);
        this.off('change', on);
        resolve();
      };
      this.on('change', on);
    });
  }

  /** Stops following. */
  async close(): Promise<void> {
    this.#closed = true;
    const w = this.#watcher;
    this.#watcher = null;
    if (w !== null) await w.cancel().catch(() => {});
  }

  #rel(key: string): string {
    return key.startsWith(this.#keys.root) ? key.slice(this.#keys.root.length) : key;
  }

  #entryOf(kv: Kv | { key: Buffer; value: Buffer; create_revision: string; mod_revision: string; lease: string }): CacheEntry {
    if ('createRevision' in kv) return { key: this.#rel(kv.key), text: kv.value.toString(), createRevision: kv.createRevision, modRevision: kv.modRevision, lease: kv.lease };
    return { key: this.#rel(kv.key.toString()), text: kv.value.toString(), createRevision: Number(kv.create_revision), modRevision: Number(kv.mod_revision), lease: String(kv.lease) };
  }

  /** Tells listeners what one key's change means. */
  #tell(key: string, before: CacheEntry | undefined, after: CacheEntry | undefined): void {
    const slash = key.indexOf('/');
    const dir = slash < 0 ? key : key.slice(0, slash);
    const name = key.slice(slash + 1);
    if (dir === 'live') {
      if (before === undefined && after !== undefined) this.emit('member-up', name);
      else if (before !== undefined && after === undefined) this.emit('member-down', name);
    } else if (dir === 'members') this.emit('member', name);
    else if (dir === 'disks') this.emit('disk', name, after ?? null);
    else if (dir === 'owners') this.emit('owner', name, after ?? null);
  }

  #afterBatch(): void {
    const leader = this.leaderEntry()?.text ?? null;
    if (leader !== this.#leader) {
      this.#leader = leader;
      this.emit('controller', leader);
    }
    this.emit('change', this.#revision);
  }
}
