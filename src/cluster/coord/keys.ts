/** The etcd keys of a cluster under its prefix (docs/cluster.md, "Keys"). */
import { ClusterError, ClusterErrorCode } from '../errors.ts';

/** The prefix a cluster's keys live under unless `--etcd-prefix` says otherwise. */
export const etcdPrefixDefault = '/tessera/';

/** The name of the controller's election (its keys: `P/election/controller/LEASE`). */
const electionName = 'controller';

/** What a node id may be: `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`. */
const nodeIdPattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

/** Checks a node id (`--node-id`); it names the node for life and is part of its keys. */
export function checkNodeId(id: string): string {
  if (!nodeIdPattern.test(id)) {
    throw new ClusterError(ClusterErrorCode.INVALID, `invalid node id '${id}': expected 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  }
  return id;
}

/** `--etcd-prefix` checked and ending in `/`, so that `/a` and `/ab` never share keys. */
export function normalizePrefix(prefix: string): string {
  if (prefix === '' || /[\s\0]/.test(prefix)) throw new ClusterError(ClusterErrorCode.INVALID, `invalid etcd prefix '${prefix}': expected a non-empty key prefix without spaces, e.g. ${etcdPrefixDefault}`);
  return prefix.endsWith('/') ? prefix : `${prefix}/`;
}

/** The keys of one cluster: `root` is the prefix, every key starts with it. */
export class Keys {
  /** The prefix, ending in `/`. */
  readonly root: string;
  constructor(prefix: string) {
    this.root = normalizePrefix(prefix);
  }
  /** `P/cluster`: the cluster id and secret. */
  get cluster(): string {
    return `${this.root}cluster`;
  }
  /** `P/members/ID`. */
  member(id: string): string {
    return `${this.root}members/${id}`;
  }
  /** `P/live/ID`, under the node's lease. */
  live(id: string): string {
    return `${this.root}live/${id}`;
  }
  /** `P/rtt/ID`: the round trips the node measured to the others, under its lease. */
  rtt(id: string): string {
    return `${this.root}rtt/${id}`;
  }
  /** `P/disks/NAME`. */
  disk(name: string): string {
    return `${this.root}disks/${name}`;
  }
  /** `P/owners/NAME`, under the head's lease. */
  owner(name: string): string {
    return `${this.root}owners/${name}`;
  }
  /** The prefix of the controller election's keys. */
  get election(): string {
    return `${this.root}election/${electionName}/`;
  }
  /** A candidate's election key: named by its lease, as etcd3's `Election` names them. */
  candidate(leaseId: string): string {
    return `${this.election}${leaseId}`;
  }
}
