/**
 * An emulated device (docs/latency.md): given a latency profile, when each request would end on
 * it. The device serves `parallel` requests at once; a request that finds every slot busy waits
 * for the first to free (the queue effect), then takes a service time drawn from its kind's
 * distribution. Only times are worked out here, in virtual time, O(parallel) a request; the wait
 * itself is DelayQueue's.
 */
import type { LatencyDistribution, LatencyProfile } from './latency-profile.ts';

/** What a request is, for its service time. */
export type LatencyOp = 'read' | 'write' | 'flush';

/** z of the 99th percentile of the standard normal distribution. */
const Z99 = 2.3263478740408408;

/** A sampler of one distribution: median · e^(σ·z), σ from the median and p99. */
class LogNormal {
  readonly #median: number;
  readonly #sigma: number;
  /** Draws past this many times the p99 are cut to it: a log-normal tail has no end, a device has timeouts. */
  readonly #maxUs: number;
  constructor(d: LatencyDistribution) {
    this.#median = d.medianUs;
    this.#sigma = d.medianUs > 0 && d.p99Us > d.medianUs ? Math.log(d.p99Us / d.medianUs) / Z99 : 0;
    this.#maxUs = d.p99Us * 10;
  }
  /** A service time in µs, given a standard normal draw. */
  at(z: number): number {
    return Math.min(this.#median * Math.exp(this.#sigma * z), this.#maxUs);
  }
}

/** Random numbers in [0, 1); a seeded one makes the expected-latency simulation repeatable. */
export type Random = () => number;

/** A seeded generator (xorshift32): for simulations and tests. */
export function seededRandom(seed: number): Random {
  let x = seed >>> 0 || 0x9e3779b9;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 0x1_0000_0000;
  };
}

/** A standard normal draw (Box-Muller). */
function normal(random: Random): number {
  let u = random();
  while (u === 0) u = random();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * random());
}

/** One emulated device: its profile, its busy slots, where its last request ended. */
export class LatencyDevice {
  readonly profile: LatencyProfile;
  readonly #read: LogNormal;
  readonly #write: LogNormal;
  readonly #sequential: LogNormal | null;
  readonly #flush: LogNormal | null;
  readonly #usPerByte: number;
  readonly #random: Random;
  /** When each slot frees, in ms of `performance.now()`. */
  readonly #freeAtMs: Float64Array;
  /** Where the last read or write ended: a request starting there is sequential. */
  #nextOffset = -1;

  constructor(profile: LatencyProfile, random: Random = Math.random) {
    this.profile = profile;
    this.#read = new LogNormal(profile.read);
    this.#write = new LogNormal(profile.write);
    this.#sequential = profile.sequential === undefined ? null : new LogNormal(profile.sequential);
    this.#flush = profile.flush === undefined ? null : new LogNormal(profile.flush);
    this.#usPerByte = profile.bytesPerSecond === undefined ? 0 : 1e6 / profile.bytesPerSecond;
    this.#random = random;
    this.#freeAtMs = new Float64Array(profile.parallel);
  }

  /**
   * A service time in µs for a request of this kind, without the queue. A request is admitted
   * before the volume's gate has seen it: an offset or length that is not a count (a request
   * about to be refused) counts as 0, so that it cannot leave a slot busy until NaN.
   */
  serviceUs(op: LatencyOp, offset: number, length: number, fua: boolean): number {
    if (!(offset >= 0 && offset <= Number.MAX_SAFE_INTEGER)) offset = 0;
    if (!(length >= 0 && length <= Number.MAX_SAFE_INTEGER)) length = 0;
    const z = normal(this.#random);
    if (op === 'flush') return this.#flush?.at(z) ?? 0;
    const sequential = offset === this.#nextOffset && this.#sequential !== null;
    this.#nextOffset = offset + length;
    let us = sequential ? this.#sequential!.at(z) : (op === 'read' ? this.#read : this.#write).at(z);
    us += length * this.#usPerByte;
    if (fua && this.#flush !== null) us += this.#flush.at(normal(this.#random));
    return us;
  }

  /**
   * Admits a request arriving at `nowMs`: takes the slot that frees first (waiting for it if
   * every one is busy) for the request's service time, and answers when the request ends, in ms.
   */
  admit(nowMs: number, op: LatencyOp, offset: number, length: number, fua = false): number {
    const slots = this.#freeAtMs;
    let slot = 0;
    for (let i = 1; i < slots.length; i++) if (slots[i]! < slots[slot]!) slot = i;
    const startMs = Math.max(nowMs, slots[slot]!);
    const endMs = startMs + this.serviceUs(op, offset, length, fua) / 1000;
    slots[slot] = endMs;
    return endMs;
  }
}

/** A simulated run's completion latencies, in µs. */
export interface ExpectedLatency {
  medianUs: number;
  p99Us: number;
}

/**
 * What a profile should give a client that keeps `queueDepth` random requests of `length`
 * bytes in flight (fio at that iodepth): the median and p99 of a simulated run of `requests`
 * requests against the model alone, with a seeded generator so the answer is repeatable.
 */
export function expectedLatency(profile: LatencyProfile, opts: { op: 'read' | 'write'; queueDepth: number; length: number; requests?: number; seed?: number }): ExpectedLatency {
  const random = seededRandom(opts.seed ?? 1);
  const device = new LatencyDevice(profile, random);
  const n = opts.requests ?? 20_000;
  // Closed loop: each of the queue's requests is sent again the moment it ends.
  const inFlight: number[] = Array.from({ length: opts.queueDepth }, () => 0);
  const latencies = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let k = 0;
    for (let j = 1; j < inFlight.length; j++) if (inFlight[j]! < inFlight[k]!) k = j;
    const sentMs = inFlight[k]!;
    // Random offsets: never where the last request ended.
    const endMs = device.admit(sentMs, opts.op, (2 * i + 1) * opts.length * 7919, opts.length);
    latencies[i] = (endMs - sentMs) * 1000;
    inFlight[k] = endMs;
  }
  latencies.sort();
  return { medianUs: latencies[Math.floor(n * 0.5)]!, p99Us: latencies[Math.floor(n * 0.99)]! };
}
