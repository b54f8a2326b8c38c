/** Tessera's version: the one place that reads it from package.json. */
import { readFileSync } from 'node:fs';

let cached: string | null = null;

/** The version in package.json, read once, on first use (commands that never print it do not read the file). */
export function tesseraVersion(): string {
  cached ??= (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cached;
}
