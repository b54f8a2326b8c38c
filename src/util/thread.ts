/**
 * Starts a worker thread on a TypeScript module with Node's compile cache enabled in it, as
 * src/cli/main.ts enables it for the main thread. Each thread has its own: without it, every
 * worker of a short command stripped its modules' types again (loading the type stripper alone
 * took ~0.1 s of a core) and compiled them, 0.3–0.5 s of CPU per worker at start.
 */
import { Worker, type WorkerOptions } from 'node:worker_threads';

export function startThread(module: URL, options: Omit<WorkerOptions, 'eval'> = {}): Worker {
  const boot = `import('node:module').then((m) => { m.enableCompileCache?.(); return import(${JSON.stringify(module.href)}); });`;
  return new Worker(boot, { ...options, eval: true });
}
