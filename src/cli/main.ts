/**
 * Entry point of bin/tessera. Node's compile cache keeps the modules compiled (and their types
 * stripped) between runs, which halves the start-up of every short command; then the CLI runs.
 */
import { enableCompileCache } from 'node:module';

enableCompileCache();
await import('./start.ts');
