/**
 * The values of a link, as people write them (`50ms`, `100mbit`, `1%`) and as the forwarding
 * stage takes them (nanoseconds, bits per second, a probability). Pure functions; each returns
 * the value or a sentence saying what was expected, which the caller puts in its error.
 */

/** Longest delay or jitter the stage takes (it holds every packet that long). */
export const delayNsMax = 60_000_000_000;
/** Lowest rate: below 1 kbit/s a full-size packet takes 12 s to send. */
export const rateBpsMin = 1_000;
/** Highest rate, far above what the stage carries (docs/lab.md), as the stage's own check. */
export const rateBpsMax = 1_000_000_000_000;
/** Packets a link's queue holds at most (the stage's slots per direction). */
export const queueMax = 16_384;
/** The queue of a link that does not say: as netem's default limit. */
export const queueDefault = 1000;

/** What a link does to each packet, in each direction. */
export interface LinkParams {
  /** One-way propagation delay. */
  delayNs: number;
  /** Each packet's delay is delayNs plus a uniform draw in [-jitterNs, +jitterNs] (at least 0; packets keep their order). */
  jitterNs: number;
  /** Bits per second of the wire (IP packets, headers included); 0: no limit. */
  rateBps: number;
  /** Probability that a packet is lost, 0 to 1. */
  loss: number;
  /** Packets that may wait for the wire (with a rate); one more is dropped. */
  queue: number;
}

/** A link with nothing set: no delay, no limit, no loss. */
export const idealLink: LinkParams = { delayNs: 0, jitterNs: 0, rateBps: 0, loss: 0, queue: queueDefault };

type Parsed<T> = { ok: true; value: T } | { ok: false; expected: string };

const delayUnits: Record<string, number> = { us: 1e3, 'µs': 1e3, ms: 1e6, s: 1e9 };
const rateUnits: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 };

/** `50ms`, `500us`, `1.5ms`, `2s`, `0` → nanoseconds. */
export function parseDelay(text: string): Parsed<number> {
  const expected = 'a delay such as 50ms or 500us (us, ms or s; at most 60s)';
  if (text === '0') return { ok: true, value: 0 };
  const m = /^(\d+(?:\.\d+)?)(us|µs|ms|s)$/.exec(text);
  if (m === null) return { ok: false, expected };
  const ns = Math.round(Number(m[1]) * delayUnits[m[2]]);
  if (!(ns <= delayNsMax)) return { ok: false, expected };
  return { ok: true, value: ns };
}

/** `100mbit`, `1.5gbit`, `64kbit` (decimal, as tc) → bits per second; `0` or `none`: no limit. */
export function parseRate(text: string): Parsed<number> {
  const expected = 'a rate such as 100mbit, 1gbit or 512kbit (from 1kbit to 1000gbit; 0 or none for no limit)';
  if (text === '0' || text === 'none') return { ok: true, value: 0 };
  const m = /^(\d+(?:\.\d+)?)(bit|kbit|mbit|gbit)$/i.exec(text);
  if (m === null) return { ok: false, expected };
  const bps = Math.round(Number(m[1]) * rateUnits[m[2].toLowerCase()]);
  if (!(bps >= rateBpsMin && bps <= rateBpsMax)) return { ok: false, expected };
  return { ok: true, value: bps };
}

/** `1%`, `0.1%`, `0` → a probability. */
export function parseLoss(text: string): Parsed<number> {
  const expected = 'a loss such as 1% or 0.1% (0% to 100%)';
  if (text === '0') return { ok: true, value: 0 };
  const m = /^(\d+(?:\.\d+)?)%$/.exec(text);
  if (m === null) return { ok: false, expected };
  const p = Number(m[1]) / 100;
  if (!(p >= 0 && p <= 1)) return { ok: false, expected };
  return { ok: true, value: p };
}

/** A whole number of packets, 1 to queueMax. */
export function parseQueue(text: string | number): Parsed<number> {
  const expected = `a number of packets from 1 to ${queueMax}`;
  const n = typeof text === 'number' ? text : /^\d+$/.test(text) ? Number(text) : NaN;
  if (!(Number.isInteger(n) && n >= 1 && n <= queueMax)) return { ok: false, expected };
  return { ok: true, value: n };
}

/** Nanoseconds as people write them: `50ms`, `250us`, `0`. */
export function formatDelay(ns: number): string {
  if (ns === 0) return '0';
  if (ns % 1e9 === 0) return `${ns / 1e9}s`;
  if (ns >= 1e6 && ns % 1e3 === 0) return `${ns / 1e6}ms`;
  return `${ns / 1e3}us`;
}

/** Bits per second as people write them: `100mbit`, `1.5gbit`; `none` for no limit. */
export function formatRate(bps: number): string {
  if (bps === 0) return 'none';
  for (const [unit, mult] of [['gbit', 1e9], ['mbit', 1e6], ['kbit', 1e3]] as const) {
    if (bps >= mult) return `${+(bps / mult).toFixed(6)}${unit}`;
  }
  return `${bps}bit`;
}

/** A probability as a percentage: `1%`, `0.1%`. */
export function formatLoss(p: number): string {
  return `${+(p * 100).toPrecision(6)}%`;
}
