/**
 * Latency profiles (docs/latency.md): the service times of a target device, as log-normal
 * distributions given by their median and 99th percentile, and how many requests the device
 * serves at once. The built-in ones and the one check every profile passes (a file's, an API
 * body's, one read back from a node's metadata) live here; the model that uses them is
 * latency-device.ts.
 */

/** A service time: log-normal, by its median and its 99th percentile, in microseconds. */
export interface LatencyDistribution {
  /** Half the requests take at most this long. */
  medianUs: number;
  /** 99% of the requests take at most this long; at least the median. */
  p99Us: number;
}

/** What a device takes to serve requests; the file format of `disk set --latency-profile FILE`. */
export interface LatencyProfile {
  /** A name for it, shown by `disk info`: 1-64 letters, digits, `.`, `_` or `-`. */
  name: string;
  /** What it models and where its figures come from (optional, free text). */
  description?: string;
  /** Requests the device serves at once; those beyond wait for one to end (the queue effect). 1 to 1024. */
  parallel: number;
  /** A read's service time. */
  read: LatencyDistribution;
  /** A write's (also a trim's and a write of zeroes) service time. */
  write: LatencyDistribution;
  /**
   * A read or write that starts where the previous request of the disk ended (no seek on a
   * disk with heads); absent: sequential requests cost as random ones.
   */
  sequential?: LatencyDistribution;
  /** A flush's service time, and a FUA write's on top of its write; absent: flushes cost nothing. */
  flush?: LatencyDistribution;
  /** Transfer rate: a request takes `length / rate` on top of its service time; absent: no cost per byte. */
  bytesPerSecond?: number;
}

/** Names of the built-in profiles. */
export const builtinProfileNames = ['hdd', 'ssd', 'nvme'] as const;

/**
 * The built-in profiles. Figures (docs/latency.md says where they come from): a 7200 rpm SATA
 * disk with its write cache off (seek plus half a turn: 4-12 ms, one request at a time), a
 * SATA SSD (about 100 µs reads, writes into its cache that now and then wait for garbage
 * collection), a PCIe 4.0 NVMe SSD (tens of µs, a deep queue).
 */
export const builtinProfiles: Readonly<Record<(typeof builtinProfileNames)[number], LatencyProfile>> = {
  hdd: {
    name: 'hdd',
    description: '7200 rpm SATA disk, write cache off: average seek 8.5 ms + half a turn 4.2 ms; 1 request at a time',
    parallel: 1,
    read: { medianUs: 8000, p99Us: 18000 },
    write: { medianUs: 9000, p99Us: 20000 },
    sequential: { medianUs: 150, p99Us: 1000 },
    flush: { medianUs: 2000, p99Us: 10000 },
    bytesPerSecond: 180e6,
  },
  ssd: {
    name: 'ssd',
    description: 'SATA SSD: ~100 µs reads, writes into its cache with slow ones during garbage collection; ~8 requests at once',
    parallel: 8,
    read: { medianUs: 100, p99Us: 250 },
    write: { medianUs: 60, p99Us: 1000 },
    flush: { medianUs: 500, p99Us: 3000 },
    bytesPerSecond: 530e6,
  },
  nvme: {
    name: 'nvme',
    description: 'PCIe 4.0 NVMe SSD: ~60 µs reads, ~25 µs writes; 64 requests at once',
    parallel: 64,
    read: { medianUs: 60, p99Us: 120 },
    write: { medianUs: 25, p99Us: 80 },
    flush: { medianUs: 200, p99Us: 1000 },
    bytesPerSecond: 3.5e9,
  },
};

/** Limits of a profile's figures: a day, and a device that serves 1024 requests at once. */
const DELAY_US_MAX = 86_400e6;
const PARALLEL_MAX = 1024;
const NAME = /^[A-Za-z0-9._-]{1,64}$/;
const DESCRIPTION_CHARS_MAX = 1000;
const FIELDS = ['name', 'description', 'parallel', 'read', 'write', 'sequential', 'flush', 'bytesPerSecond'];

/** A profile checked, or why it is not one (a sentence naming the field). */
export type ProfileCheck = { ok: true; profile: LatencyProfile } | { ok: false; error: string };

/**
 * The one gate of profiles: `value` (parsed JSON) is a profile, or the first rule it breaks.
 * A profile passed is a fresh object holding only the known fields.
 */
export function checkLatencyProfile(value: unknown): ProfileCheck {
  const fail = (error: string): ProfileCheck => ({ ok: false, error });
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return fail('a latency profile is a JSON object');
  const v = value as Record<string, unknown>;
  for (const key of Object.keys(v)) {
    if (!FIELDS.includes(key)) return fail(`unknown field '${key}' in the latency profile; expected ${FIELDS.map((f) => `'${f}'`).join(', ')}`);
  }
  if (typeof v.name !== 'string' || !NAME.test(v.name)) return fail("field 'name' must be 1-64 letters, digits, '.', '_' or '-'");
  if (v.name === 'none') return fail("a latency profile may not be named 'none'");
  if (v.description !== undefined && (typeof v.description !== 'string' || v.description.length > DESCRIPTION_CHARS_MAX)) return fail(`field 'description' must be a string of at most ${DESCRIPTION_CHARS_MAX} characters`);
  if (!(Number.isSafeInteger(v.parallel) && (v.parallel as number) >= 1 && (v.parallel as number) <= PARALLEL_MAX)) return fail(`field 'parallel' must be a whole number from 1 to ${PARALLEL_MAX}`);
  const profile: LatencyProfile = { name: v.name, parallel: v.parallel as number, read: { medianUs: 0, p99Us: 0 }, write: { medianUs: 0, p99Us: 0 } };
  if (v.description !== undefined) profile.description = v.description as string;
  for (const key of ['read', 'write', 'sequential', 'flush'] as const) {
    if (v[key] === undefined && (key === 'sequential' || key === 'flush')) continue;
    const d = checkDistribution(v[key], key);
    if (typeof d === 'string') return fail(d);
    profile[key] = d;
  }
  if (v.bytesPerSecond !== undefined) {
    if (!(typeof v.bytesPerSecond === 'number' && Number.isFinite(v.bytesPerSecond) && v.bytesPerSecond >= 1)) return fail("field 'bytesPerSecond' must be a number of at least 1");
    profile.bytesPerSecond = v.bytesPerSecond;
  }
  return { ok: true, profile };
}

function checkDistribution(value: unknown, key: string): LatencyDistribution | string {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return `field '${key}' must be an object {"medianUs", "p99Us"}`;
  const d = value as Record<string, unknown>;
  for (const k of Object.keys(d)) if (k !== 'medianUs' && k !== 'p99Us') return `unknown field '${key}.${k}'; expected 'medianUs', 'p99Us'`;
  for (const k of ['medianUs', 'p99Us'] as const) {
    const n = d[k];
    if (!(typeof n === 'number' && Number.isFinite(n) && n >= 0 && n <= DELAY_US_MAX)) return `field '${key}.${k}' must be a number of microseconds from 0 to ${DELAY_US_MAX}`;
  }
  if ((d.p99Us as number) < (d.medianUs as number)) return `field '${key}.p99Us' (${d.p99Us as number}) must be at least '${key}.medianUs' (${d.medianUs as number})`;
  return { medianUs: d.medianUs as number, p99Us: d.p99Us as number };
}

/** A built-in profile by name, or null. */
export function builtinProfile(name: string): LatencyProfile | null {
  return Object.hasOwn(builtinProfiles, name) ? structuredClone(builtinProfiles[name as keyof typeof builtinProfiles]) : null;
}
