/**
 * Round trips between nodes as the cluster keeps them (docs/cluster.md, "Round trips"). Pure: no
 * I/O, no clock. A node measures its round trip to every other node up; it publishes in
 * `P/rtt/ID` only a summary by zone (the median per zone), and only when it changed materially,
 * so that the record is bounded by the zones, not the nodes, and a steady network writes nothing
 * to etcd. Placement reads it to break ties; the controller's rank takes each node's mean.
 */
import type { RttLookup } from './placement.ts';
import type { RttRecord } from './types.ts';

/** When a node first measures its round trips, after it starts taking part. */
export const RTT_MEASURE_FIRST_MS = 2000;
/** How often a node measures its round trips to the others (pings: no etcd request). */
export const RTT_MEASURE_INTERVAL_MS = 30_000;
/** A changed summary is put no sooner than this after the node's last put of it. */
export const RTT_PUBLISH_INTERVAL_MIN_MS = 5 * 60_000;
/** A zone's value changed materially when it moved by more than this fraction of the published one… */
export const RTT_CHANGE_RATIO = 0.2;
/** …and by more than this many ms (round trips within a rack jitter by tens of µs). */
export const RTT_CHANGE_MIN_MS = 0.1;

/** A zone's value in a record, or undefined (own properties only: a zone may be named `constructor`). */
export function zoneRtt(record: RttRecord | undefined, zone: string): number | undefined {
  if (record === undefined || !Object.hasOwn(record.zones, zone)) return undefined;
  const ms = record.zones[zone];
  return typeof ms === 'number' && Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}

/** A parsed `P/rtt/ID` value, or undefined when it is not a record of zones (malformed, or older). */
export function parseRttRecord(text: string): RttRecord | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  const zones = (v as { zones?: unknown } | null)?.zones;
  if (typeof zones !== 'object' || zones === null || Array.isArray(zones)) return undefined;
  return { zones: zones as Record<string, number> };
}

/** Samples per peer the filter keeps: the median of the last 3 drops a lone slow ping (a GC pause, a retransmit). */
export const RTT_FILTER_SAMPLES = 3;

/**
 * Per peer, the median of its last few round trips (Serf's latency filter does the same), so
 * that one slow ping does not move a zone's value; peers not measured in a round are forgotten.
 */
export class RttFilter {
  readonly #samples = new Map<string, number[]>();

  /** Takes one round of measurements; returns each peer's filtered round trip. */
  add(measured: Readonly<Record<string, number>>): Record<string, number> {
    const out: Record<string, number> = {};
    for (const peer of [...this.#samples.keys()]) if (!Object.hasOwn(measured, peer)) this.#samples.delete(peer);
    for (const [peer, ms] of Object.entries(measured)) {
      if (!Number.isFinite(ms) || ms < 0) continue;
      const list = this.#samples.get(peer) ?? [];
      list.push(ms);
      if (list.length > RTT_FILTER_SAMPLES) list.shift();
      this.#samples.set(peer, list);
      out[peer] = median(list);
    }
    return out;
  }
}

function median(values: number[]): number {
  const v = [...values].sort((a, b) => a - b);
  const mid = v.length >> 1;
  return v.length % 2 === 1 ? v[mid]! : (v[mid - 1]! + v[mid]!) / 2;
}

/**
 * What a node publishes of its measurements: per zone of the peers measured, the median of its
 * round trips to them, in ms rounded to 0.01; zones in name order, so that equal summaries are
 * equal JSON. A peer whose zone is unknown is left out.
 */
export function summarizeRtt(measured: Readonly<Record<string, number>>, zoneOf: (node: string) => string | undefined): RttRecord {
  const byZone = new Map<string, number[]>();
  for (const [peer, ms] of Object.entries(measured)) {
    const zone = zoneOf(peer);
    if (zone === undefined || !Number.isFinite(ms) || ms < 0) continue;
    let list = byZone.get(zone);
    if (list === undefined) byZone.set(zone, (list = []));
    list.push(ms);
  }
  // fromEntries: own properties whatever the zone's name (`__proto__` too).
  const zones = Object.fromEntries([...byZone.keys()].sort().map((zone) => [zone, Math.round(median(byZone.get(zone)!) * 100) / 100]));
  return { zones };
}

/** Whether `next` differs materially from `published`: a zone's value moved by more than 20% and 0.1 ms, or a zone came or went. */
export function rttChanged(published: RttRecord, next: RttRecord): boolean {
  const a = Object.keys(published.zones);
  const b = Object.keys(next.zones);
  if (a.length !== b.length) return true;
  for (const zone of b) {
    const was = zoneRtt(published, zone);
    const now = zoneRtt(next, zone)!;
    if (was === undefined) return true;
    const moved = Math.abs(now - was);
    if (moved > RTT_CHANGE_MIN_MS && moved > RTT_CHANGE_RATIO * was) return true;
  }
  return false;
}

/**
 * Whether a node puts its new summary `next` now: when etcd holds none of it under its lease
 * (`published` null), at once; when `next` names a zone the published one lacks, at once; when
 * it changed materially otherwise, once `RTT_PUBLISH_INTERVAL_MIN_MS` passed since the last put;
 * else never (the key lives with the lease: nothing to refresh). Times are monotonic ms.
 */
export function rttPublishDue(o: { published: RttRecord | null; next: RttRecord; lastPutMs: number; nowMs: number }): boolean {
  if (Object.keys(o.next.zones).length === 0) return false;
  if (o.published === null) return true;
  const published = o.published;
  if (Object.keys(o.next.zones).some((zone) => zoneRtt(published, zone) === undefined)) return true;
  return rttChanged(published, o.next) && o.nowMs - o.lastPutMs >= RTT_PUBLISH_INTERVAL_MIN_MS;
}

/**
 * An RttLookup over `P/rtt/` records: the round trip from a to b is a's value for b's zone, else
 * b's value for a's zone, else unmeasured.
 */
export function rttFromRecords(records: Readonly<Record<string, RttRecord>>, zoneOf: (node: string) => string | undefined): RttLookup {
  const own = (id: string): RttRecord | undefined => (Object.hasOwn(records, id) ? records[id] : undefined);
  return (a, b) => {
    const za = zoneOf(a);
    const zb = zoneOf(b);
    return (zb === undefined ? undefined : zoneRtt(own(a), zb)) ?? (za === undefined ? undefined : zoneRtt(own(b), za));
  };
}

/**
 * A controller candidate's rank (0 first): how many of the nodes up have a lower mean round trip
 * to the other nodes up (ties by id), each mean from rttFromRecords. 0 while no round trip of its
 * own is known, so a node that measured nothing yet does not wait.
 */
export function controllerRank(o: { me: string; up: ReadonlyArray<{ id: string; zone: string }>; records: Readonly<Record<string, RttRecord>> }): number {
  const zones = new Map(o.up.map((n) => [n.id, n.zone]));
  if (!zones.has(o.me)) return 0;
  const rtt = rttFromRecords(o.records, (id) => zones.get(id));
  const ids = [...zones.keys()];
  const mean = (id: string): number => {
    let sum = 0;
    let count = 0;
    for (const other of ids) {
      if (other === id) continue;
      const ms = rtt(id, other);
      if (ms === undefined) continue;
      sum += ms;
      count++;
    }
    return count === 0 ? Infinity : sum / count;
  };
  const mine = mean(o.me);
  if (mine === Infinity) return 0;
  return ids.filter((id) => {
    if (id === o.me) return false;
    const theirs = mean(id);
    return theirs < mine || (theirs === mine && id < o.me);
  }).length;
}
