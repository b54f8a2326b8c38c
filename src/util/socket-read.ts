/**
 * Reading an accepted socket into a caller's buffer instead of a fresh one per read.
 *
 * A socket's 'data' events each bring a new 64 KiB buffer: external memory, which V8 answers
 * with a full garbage collection about every 64 MiB received. An NBD server taking sequential
 * writes at hundreds of MB/s spent most of a core in those collections (concurrent marking of a
 * small heap, five times a second). Node reads into a buffer of the caller's (`onread`) only for
 * sockets it is given at construction; the sockets a server accepts carry the same slots, empty.
 * useReadBuffer fills them before the first read, as `new net.Socket({ onread })` would.
 */
import type { Socket } from 'node:net';

/** Called with each read's bytes: a view of the shared buffer, valid only during the call. */
export type OnRead = (bytes: Buffer) => void;

interface NativeHandle {
  useUserBuffer?: (buf: Uint8Array) => void;
}

/**
 * Makes `socket`'s reads land in `buffer`, calling `onRead` with a view of each read's bytes (no
 * 'data' events follow). Several sockets may share one buffer: reads run one at a time on the
 * event loop, and `onRead` must copy whatever it keeps before it returns. Returns false, changing
 * nothing, where this Node.js does not have the slots `onread` uses; the caller then listens to
 * 'data'. Call it at once on a newly accepted socket.
 *
 * With `next`, each read after the first lands in the buffer `next` returns when the previous
 * read's `onRead` has returned: a parser that knows the next bytes are the rest of a large
 * message hands out the message's own buffer, and the kernel copies into it directly. `onRead`'s
 * view then lies in that buffer (its `buffer` and `byteOffset` say so).
 */
export function useReadBuffer(socket: Socket, buffer: Buffer, onRead: OnRead, next?: () => Buffer): boolean {
  const slots = onreadSlots(socket);
  const handle = (socket as unknown as { _handle?: NativeHandle | null })._handle;
  if (slots === null || typeof handle?.useUserBuffer !== 'function') return false;
  const target = socket as unknown as Record<symbol, unknown>;
  target[slots.buffer] = buffer;
  target[slots.generator] = next ?? null;
  target[slots.callback] = (n: number, buf: Buffer): void => onRead(buf.subarray(0, n));
  handle.useUserBuffer(buffer);
  return true;
}

interface Slots {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

/** The socket's own symbol-keyed slots that node:net's `onread` option sets, or null. */
function onreadSlots(socket: Socket): Slots | null {
  const byName = new Map<string | undefined, symbol>();
  for (const s of Object.getOwnPropertySymbols(socket)) byName.set(s.description, s);
  const buffer = byName.get('kBuffer');
  const callback = byName.get('kBufferCb');
  const generator = byName.get('kBufferGen');
  if (buffer === undefined || callback === undefined || generator === undefined) return null;
  return { buffer, callback, generator };
}
