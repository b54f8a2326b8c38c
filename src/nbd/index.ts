/** NBD server: serves the engine's volumes to qemu, libnbd, nbd-client and the Linux kernel. See docs/nbd.md. */
export { NbdServer } from './server.ts';
export type { ExportProvider, NbdServerOptions } from './types.ts';
export type { NbdLimits } from './limits.ts';
export { NbdError, NbdErrorCode } from './errors.ts';
export type { NbdErrorCodeValue } from './errors.ts';
