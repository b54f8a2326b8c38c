/**
 * The one door to etcd (docs/cluster.md, "etcd"): a thin layer over the npm `etcd3` client that
 * counts every request it makes by kind, so that the table "etcd requests per operation" can be
 * checked, and that turns etcd's failures into ClusterError. `etcd3` is loaded on first use: a
 * node without `--etcd` never loads it.
 */
import type { Etcd3, Lease, Watcher } from 'etcd3';
import { ClusterError, ClusterErrorCode } from '../errors.ts';

/** The kinds of etcd request the coordination layer makes (a txn that campaigns counts as `election`). */
export const etcdRequestKinds = ['range', 'put', 'txn', 'lease-grant', 'lease-revoke', 'keepalive', 'watch', 'election', 'lease-ttl'] as const;

/** One of etcdRequestKinds. */
export type EtcdRequestKind = (typeof etcdRequestKinds)[number];

/** Requests made so far, by kind. */
export type EtcdRequestCounts = Record<EtcdRequestKind, number>;

/** A key as etcd holds it. Revisions are numbers: a cluster would need 2^53 changes to overflow them. */
export interface Kv {
  key: string;
  value: Buffer;
  createRevision: number;
  modRevision: number;
  /** The lease the key is attached to, `'0'` for none. */
  lease: string;
}

/** A condition of a transaction: etcd's compare on one key. */
export interface Compare {
  key: string;
  target: 'Version' | 'Create' | 'Mod' | 'Lease';
  value: number | string;
}

/** An operation of a transaction. */
export type TxnOp = { put: string; value: string; lease?: string } | { get: string } | { delete: string };

/** What a transaction answered: whether its compares held, its revision, and the keys its gets read. */
export interface TxnResult {
  succeeded: boolean;
  revision: number;
  /** Per get of the branch taken, in order, the key read (null when absent). */
  gets: Array<Kv | null>;
}

/** One page of a paged read (EtcdClient.rangePage). */
export interface RangePage {
  /** The revision the page was read at: etcd's newest when none was asked for. */
  revision: number;
  /** Its keys, in key order. */
  kvs: Kv[];
  /** Whether keys follow: the next page starts after `last`. */
  more: boolean;
  /** The last key read, as etcd holds it (bytes), or null for an empty page. */
  last: Buffer | null;
}

/**
 * The largest message the `etcd3` client (grpc-js, unless told otherwise) receives: a range
 * answered with more fails, whatever etcd would send.
 */
export const grpcReceiveBytesMax = 4 * 2 ** 20;

/** Limit of one unary request; a stream (watch, keep-alive) has none. */
const requestTimeoutMs = 5000;

/** The first key after every key that starts with `prefix`: the end of a prefix range. */
function prefixEnd(prefix: Buffer): Buffer {
  const end = Buffer.from(prefix);
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i]! < 0xff) {
      end[i]!++;
      return end.subarray(0, i + 1);
    }
  }
  // Every byte 0xff: every key from the prefix on.
  return Buffer.from([0]);
}

function kvOf(raw: { key: Buffer; value: Buffer; create_revision: string; mod_revision: string; lease: string }): Kv {
  return { key: raw.key.toString(), value: raw.value, createRevision: Number(raw.create_revision), modRevision: Number(raw.mod_revision), lease: String(raw.lease) };
}

/** An etcd client for the coordination layer; every request goes through it and is counted. */
export class EtcdClient {
  /** The client URLs, as given to `--etcd`. */
  readonly urls: readonly string[];
  /** Requests made so far, by kind. */
  readonly requests: EtcdRequestCounts = Object.fromEntries(etcdRequestKinds.map((k) => [k, 0])) as EtcdRequestCounts;
  readonly #etcd: Etcd3;
  /** etcd3's error for an answer larger than the client receives (gRPC RESOURCE_EXHAUSTED). */
  readonly #tooLarge: new (...args: never[]) => Error;

  private constructor(urls: readonly string[], etcd: Etcd3, tooLarge: new (...args: never[]) => Error) {
    this.urls = urls;
    this.#etcd = etcd;
    this.#tooLarge = tooLarge;
  }

  /** A client of the etcd at `urls` (no request is made yet). */
  static async open(urls: readonly string[]): Promise<EtcdClient> {
    const [{ Etcd3, GRPCResourceExhastedError }, { noop, ExponentialBackoff }] = await Promise.all([import('etcd3'), import('cockatiel')]);
    const etcd = new Etcd3({
      hosts: [...urls],
      dialTimeout: requestTimeoutMs,
      // etcd3's default circuit breaker refuses calls for a long time after an outage; the
      // layer retries where it must, within its own bounds.
      faultHandling: { host: () => noop, global: noop, // etcd3 itself passes a backoff factory here (its type says a backoff): a watch tries
      // again within 2 s of etcd's return.
      watchBackoff: new ExponentialBackoff({ initialDelay: 100, maxDelay: 2000 }) as never },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + requestTimeoutMs }),
    });
    return new EtcdClient(urls, etcd, GRPCResourceExhastedError);
  }

  /** `etcd at URL, URL: why` as a ClusterError ETCD_UNAVAILABLE, unless `err` is one already. */
  unavailable(err: unknown, doing: string): ClusterError {
    if (err instanceof ClusterError) return err;
    return new ClusterError(ClusterErrorCode.ETCD_UNAVAILABLE, `etcd at ${this.urls.join(', ')} did not answer ${doing}: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }

  /**
   * One page of the keys under `prefix`: at most `limit` of them in key order, from the first
   * key after `after` (from the first key when absent), at `revision` (etcd's newest when
   * absent; the pages of one snapshot are all read at the first one's). CLUSTER_LIMIT when the
   * answer would be larger than the client receives (grpc-js: 4 MiB): ask for fewer keys.
   */
  async rangePage(o: { prefix: string; limit: number; after?: Buffer; revision?: number }): Promise<RangePage> {
    this.requests.range++;
    const prefix = Buffer.from(o.prefix);
    const key = o.after === undefined ? prefix : Buffer.concat([o.after, Buffer.from([0])]);
    try {
      const res = await this.#etcd.kv.range({ key, range_end: prefixEnd(prefix), limit: o.limit, revision: o.revision ?? 0 });
      const last = res.kvs.at(-1);
      return { revision: o.revision ?? Number(res.header.revision), kvs: res.kvs.map(kvOf), more: res.more, last: last === undefined ? null : Buffer.from(last.key) };
    } catch (err) {
      if (err instanceof this.#tooLarge) {
        throw new ClusterError(ClusterErrorCode.LIMIT, `a page of ${o.limit} keys under ${o.prefix} is larger than the etcd client receives in one message (${grpcReceiveBytesMax / 2 ** 20} MiB)`, { cause: err });
      }
      throw this.unavailable(err, `a read of ${o.prefix}`);
    }
  }

  /** One key as etcd holds it now (null when absent), and the revision etcd answered at. */
  async get(key: string): Promise<{ revision: number; kv: Kv | null }> {
    this.requests.range++;
    try {
      const res = await this.#etcd.kv.range({ key: Buffer.from(key), limit: 1 });
      const kv = res.kvs[0];
      return { revision: Number(res.header.revision), kv: kv === undefined ? null : kvOf(kv) };
    } catch (err) {
      throw this.unavailable(err, `a read of ${key}`);
    }
  }

  /** Writes `key`, under `lease` if given. */
  async put(key: string, value: string, lease?: string): Promise<number> {
    this.requests.put++;
    try {
      const b = this.#etcd.put(key).value(value);
      const res = await (lease === undefined ? b : b.lease(lease));
      return Number(res.header.revision);
    } catch (err) {
      throw this.unavailable(err, `a write of ${key}`);
    }
  }

  /** One transaction: `success` if every compare holds, else `failure`. Counted as `kind`. */
  async txn(t: { compare: Compare[]; success: TxnOp[]; failure?: TxnOp[]; kind?: 'txn' | 'election' }): Promise<TxnResult> {
    this.requests[t.kind ?? 'txn']++;
    const e = this.#etcd;
    const op = (o: TxnOp) => {
      if ('put' in o) return o.lease === undefined ? e.put(o.put).value(o.value) : e.put(o.put).value(o.value).lease(o.lease);
      if ('get' in o) return e.get(o.get);
      return e.delete().key(o.delete);
    };
    try {
      const [first, ...rest] = t.compare;
      let b = e.if(first.key, first.target, '==', first.value);
      for (const c of rest) b = b.and(c.key, c.target, '==', c.value);
      const res = await b.then(...t.success.map(op)).else(...(t.failure ?? []).map(op)).commit();
      const branch = res.succeeded ? t.success : (t.failure ?? []);
      const gets: Array<Kv | null> = [];
      branch.forEach((o, i) => {
        if (!('get' in o)) return;
        const kv = res.responses[i]?.response_range?.kvs?.[0];
        gets.push(kv === undefined ? null : kvOf(kv));
      });
      return { succeeded: res.succeeded, revision: Number(res.header.revision), gets };
    } catch (err) {
      throw this.unavailable(err, `a transaction on ${t.compare.map((c) => c.key).join(', ')}`);
    }
  }

  /**
   * A lease of `ttlS` seconds, kept alive by etcd3 every TTL/3 (each keep-alive counted). Its
   * grant is counted here; `lease.grant()` resolves to its id.
   */
  lease(ttlS: number): Lease {
    this.requests['lease-grant']++;
    const lease = this.#etcd.lease(ttlS);
    lease.on('keepaliveFired', () => this.requests.keepalive++);
    return lease;
  }

  /** Seconds lease `id` has left, or null when etcd no longer holds it (expired or revoked). */
  async leaseTtl(id: string): Promise<number | null> {
    this.requests['lease-ttl']++;
    try {
      const res = await this.#etcd.leaseClient.leaseTimeToLive({ ID: id });
      const ttl = Number(res.TTL);
      return ttl < 0 ? null : ttl;
    } catch (err) {
      throw this.unavailable(err, `a TTL query of lease ${id}`);
    }
  }

  /** Revokes a lease: its keys go at once. */
  async revoke(lease: Lease): Promise<void> {
    this.requests['lease-revoke']++;
    try {
      await lease.revoke({ deadline: Date.now() + requestTimeoutMs });
    } catch (err) {
      throw this.unavailable(err, 'a lease revoke');
    }
  }

  /**
   * A watch of every key under `prefix` from `fromRevision` on, not yet connected (the caller
   * listens first). Each (re)creation of it on the watch stream is counted: etcd3 re-creates it
   * from the last revision seen after a break.
   */
  watchPrefix(prefix: string, fromRevision: number): Watcher {
    const watcher = this.#etcd.watch().prefix(prefix).startRevision(String(fromRevision)).watcher();
    watcher.on('connecting', () => this.requests.watch++);
    return watcher;
  }

  /** Closes the connections; pending requests fail. */
  close(): void {
    this.#etcd.close();
  }
}
