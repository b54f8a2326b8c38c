/** NBD server: serves the engine's volumes to qemu, libnbd, nbd-client and the Linux kernel; and a small client that reads another server's exports. See docs/nbd.md. */
export { NbdServer } from './server.ts';
export type { ExportProvider, NbdServerOptions } from './types.ts';
export type { NbdLimits } from './limits.ts';
export { NbdError, NbdErrorCode } from './errors.ts';
export type { NbdErrorCodeValue } from './errors.ts';
export { NbdClient, parseNbdUri, nbdReadBytesMax } from './client.ts';
export type { NbdTarget, NbdExtent, NbdClientOptions } from './client.ts';
