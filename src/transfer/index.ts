/**
 * Bulk transfer over long links (docs/transfer.md): several primed connections per transfer,
 * chunks over a chosen subset of them, pacing from an end-to-end bandwidth estimate, latency
 * split into network and receiver time, DSCP marks by service class, resume and integrity.
 */
export { sendFile, transferId } from './sender.ts';
export type { SendOptions, SendEvent, SendReport, ProgressEvent, FrameEvent } from './sender.ts';
export { TransferReceiver } from './receiver.ts';
export type { ReceiverOptions, ReceivedFile, FailedTransfer } from './receiver.ts';
export { TransferError, TransferErrorCode } from './errors.ts';
export type { TransferErrorCodeValue } from './errors.ts';
export { ServiceClass, Limit as TransferLimit } from './spec.ts';
export type { ServiceClassName } from './spec.ts';
export { LatencySplit } from './latency.ts';
export { STATE_DIR } from './partial.ts';
