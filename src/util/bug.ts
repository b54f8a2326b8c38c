/**
 * The line between the world failing and a bug. What the world does (bad input, a full or failing
 * drive, a lost peer) arrives as a typed error (CodedError) or as an error of the operating system;
 * it is answered (an NBD error, an HTTP status) and the process goes on. Anything else (a failed
 * `node:assert`, a TypeError, a plain Error) is a bug: answering it as an I/O error would hide
 * it from the tests and could hand a client wrong data, so it is logged with its stack and the
 * process crashes.
 */
import { CodedError } from './coded-error.ts';

/**
 * True if `err` is a bug: neither a CodedError nor a Node.js system error. A system error is one
 * the operating system returned (it names its `syscall`: a drive's EIO, a socket's ECONNRESET);
 * Node.js's own argument errors (`ERR_*` codes, no syscall) are bugs of the caller.
 */
export function isBug(err: unknown): boolean {
  if (err instanceof CodedError) return false;
  return !(err instanceof Error && typeof (err as NodeJS.ErrnoException).syscall === 'string');
}

/** Rethrows `err` if it is a bug: a catch meant for the world's failures lets bugs through. */
export function throwIfBug(err: unknown): void {
  if (isBug(err)) throw err;
}

/**
 * Crashes the process for a bug: `err` is thrown on the next tick, outside every promise and
 * try, so the process's uncaught exception handling sees it (Node.js's own prints the stack and
 * exits with status 1; the test runner fails the test). The caller logs it first, with its stack,
 * through its own log, and stops what it was doing; nothing it sends in the meantime matters.
 */
export function crash(err: unknown): void {
  process.nextTick(() => {
    throw err;
  });
}

/** `err` with its stack (which starts with its name and message) for a log line; a non-Error as text. */
export function stackOf(err: unknown): string {
  return err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
}
