import { usageError } from './errors.ts';

/** Multiplier of each size suffix, lower-cased: binary units, as qemu-img reads them. */
const suffixBytes: Record<string, bigint> = {
  '': 1n,
  b: 1n,
  k: 1n << 10n,
  m: 1n << 20n,
  g: 1n << 30n,
  t: 1n << 40n,
  p: 1n << 50n,
};

/**
 * Parses a SIZE: a number of bytes, or a number with a binary suffix K, M, G, T, P (any case,
 * optionally followed by `iB`, so `G` = `GiB` = 2^30 bytes). A decimal fraction is allowed
 * when the result is a whole number of bytes (`1.5G`, `0.5K`, not `1.3B`). Decimal units
 * (`GB`) are refused rather than guessed. Throws a usage CliError on anything else.
 */
export function parseSize(text: string): number {
  const m = /^(\d+)(?:\.(\d+))?\s*([a-z]*)$/i.exec(text.trim());
  if (m === null) throw usageError(`invalid size '${text}': expected bytes or a number with a suffix K, M, G, T, P (e.g. 10G)`);
  const [, whole, fraction = '', rawSuffix] = m;
  let suffix = rawSuffix.toLowerCase();
  if (suffix.length === 3 && suffix.endsWith('ib') && suffix !== 'bib') suffix = suffix[0];
  else if (suffix.length === 2 && suffix.endsWith('b') && suffix[0] !== 'b' && Object.hasOwn(suffixBytes, suffix[0])) {
    throw usageError(`invalid size '${text}': decimal units like ${rawSuffix} are ambiguous; use ${rawSuffix[0].toUpperCase()} or ${rawSuffix[0].toUpperCase()}iB (binary)`);
  }
  const unit = Object.hasOwn(suffixBytes, suffix) ? suffixBytes[suffix] : undefined;
  if (unit === undefined) {
    throw usageError(`invalid size '${text}': unknown suffix '${rawSuffix}'; use K, M, G, T or P (binary units)`);
  }
  // Exact arithmetic: 1.1G is not a whole number of bytes and must not be rounded into one.
  const scale = 10n ** BigInt(fraction.length);
  const scaled = BigInt(whole + fraction) * unit;
  if (scaled % scale !== 0n) throw usageError(`invalid size '${text}': not a whole number of bytes`);
  const bytes = scaled / scale;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw usageError(`invalid size '${text}': too large`);
  return Number(bytes);
}

/** Parses a SIZE for a disk: also a positive multiple of 512 bytes, the sector size. */
export function parseDiskSize(text: string): number {
  const bytes = parseSize(text);
  if (bytes === 0) throw usageError(`invalid size '${text}': a disk cannot be empty`);
  if (bytes % 512 !== 0) throw usageError(`invalid size '${text}': ${bytes} bytes is not a multiple of 512`);
  return bytes;
}

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];

/** Formats bytes for people, in binary units with one decimal: `512 B`, `1.5 KiB`, `1.0 GiB`. */
export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  let i = 0;
  let value = bytes;
  while (value >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  // 1023.96 KiB rounds to 1024.0 KiB: say 1.0 MiB instead.
  if (Number(value.toFixed(1)) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  return `${value.toFixed(1)} ${units[i]}`;
}
