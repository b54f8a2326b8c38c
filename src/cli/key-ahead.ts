/**
 * Derives the key of the --repo repository while the backup commands' modules load. Opening a
 * repository derives the key wrapping its master key from the password (scrypt, ~0.1 s on the
 * thread pool), and loading the modules that open it takes ~70 ms of the main thread: started
 * first, the derivation runs beside the loading and the open finds it done (src/backup/kdf.ts
 * keeps it). Only for a directory repository and a password from $TESSERA_PASSWORD, and only the
 * key file the open tries first; anything unexpected is left to the open to report.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseKeyFile, wrappingKey } from '../backup/kdf.ts';

/** The --repo value of a command line (`--repo X` or `--repo=X`), else $TESSERA_REPO. */
function repoOf(argv: readonly string[], env: Record<string, string | undefined>): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a === '--repo') return argv[i + 1];
    if (a.startsWith('--repo=')) return a.slice('--repo='.length);
  }
  return env.TESSERA_REPO;
}

/** Starts the derivation, if the command line names a repository it can find a key file of. */
export function deriveKeyAhead(argv: readonly string[], env: Record<string, string | undefined>): void {
  deriveKeyFor(repoOf(argv, env), env);
}

/** The same for a repository location known already (`backup create --local`, before it loads the backup modules). */
export function deriveKeyFor(repo: string | undefined, env: Record<string, string | undefined>): void {
  const password = env.TESSERA_PASSWORD;
  if (repo === undefined || repo === '' || repo.includes('://') || password === undefined || password === '') return;
  try {
    // Synchronous (two small reads): a callback would wait for the module loading to yield.
    // The directory backend lists keys/ in readdir order, skipping dot files: so does this.
    const dir = join(repo, 'keys');
    const first = readdirSync(dir, { withFileTypes: true }).find((e) => e.isFile() && !e.name.startsWith('.'));
    if (first === undefined) return;
    const f = parseKeyFile(readFileSync(join(dir, first.name)), 'key file');
    wrappingKey(password, Buffer.from(f.salt, 'base64'), f).catch(() => {});
  } catch {
    // Left to the open to report.
  }
}
