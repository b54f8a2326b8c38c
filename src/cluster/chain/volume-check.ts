import { EngineError, EngineErrorCode } from '../../engine/index.ts';

/**
 * The Volume contract's refusals, first that applies, with the engine's codes and messages
 * (src/engine/volume.ts): closed, an offset or length that is not a non-negative safe integer,
 * a range past the end. The cluster's volumes (the head's and a gateway's) check here, once,
 * before a request enters the chain or the network.
 */
export function checkVolumeRequest(closed: boolean, offset: number, length: number, sizeBytes: number): void {
  if (closed) throw new EngineError(EngineErrorCode.CLOSED, 'The volume is closed');
  if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
    throw new EngineError(EngineErrorCode.INVALID, `Invalid range offset=${offset} length=${length}`);
  }
  if (offset + length > sizeBytes) {
    throw new EngineError(EngineErrorCode.OUT_OF_RANGE, `Range ${offset}+${length} is past the end of the disk (${sizeBytes} bytes)`);
  }
}
