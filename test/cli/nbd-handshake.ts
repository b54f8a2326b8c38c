/**
 * Just enough of an NBD client to open an export and hold it open: the fixed newstyle
 * handshake with NBD_OPT_GO. The CLI tests use it to make a disk or snapshot "in use".
 */
import { connect } from 'node:net';
import type { Socket } from 'node:net';

const IHAVEOPT = Buffer.from('IHAVEOPT');
const OPT_REPLY_MAGIC = 0x3e889045565a9n;
const OPT_GO = 7;
const REP_ACK = 1;
const REP_INFO = 3;
const INFO_EXPORT = 0;
const REQUEST_MAGIC = 0x25609513;
const CMD_DISC = 2;

/** An open NBD connection in the transmission phase. */
export interface NbdConnection {
  sizeBytes: number;
  /** Transmission flags; bit 1 (NBD_FLAG_READ_ONLY) marks a read-only export. */
  flags: number;
  /** Sends NBD_CMD_DISC and closes; again is a no-op. */
  close(): Promise<void>;
}

/** Reads exact byte counts off a socket. */
class Reader {
  #buf = Buffer.alloc(0);
  #waiters: Array<() => void> = [];
  #ended = false;
  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.#buf = Buffer.concat([this.#buf, chunk]);
      this.#wake();
    });
    socket.on('close', () => {
      this.#ended = true;
      this.#wake();
    });
  }
  #wake(): void {
    for (const w of this.#waiters.splice(0)) w();
  }
  async read(n: number): Promise<Buffer> {
    while (this.#buf.length < n) {
      if (this.#ended) throw new Error(`NBD server closed the connection (wanted ${n} bytes, have ${this.#buf.length})`);
      await new Promise<void>((r) => this.#waiters.push(r));
    }
    const out = this.#buf.subarray(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }
}

/** Connects to a Unix socket path or a TCP address and opens `exportName`; rejects with the server's error reply. */
export async function nbdOpen(where: string | { host: string; port: number }, exportName: string): Promise<NbdConnection> {
  const socket = typeof where === 'string' ? connect(where) : connect(where.port, where.host);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const reader = new Reader(socket);
  try {
    const greeting = await reader.read(18);
    if (greeting.subarray(0, 8).toString() !== 'NBDMAGIC' || !greeting.subarray(8, 16).equals(IHAVEOPT)) {
      throw new Error('not a newstyle NBD server');
    }
    const clientFlags = Buffer.alloc(4);
    clientFlags.writeUInt32BE(0b11); // FIXED_NEWSTYLE | NO_ZEROES
    const name = Buffer.from(exportName);
    const option = Buffer.alloc(16 + 4 + name.length + 2);
    IHAVEOPT.copy(option, 0);
    option.writeUInt32BE(OPT_GO, 8);
    option.writeUInt32BE(4 + name.length + 2, 12);
    option.writeUInt32BE(name.length, 16);
    name.copy(option, 20);
    option.writeUInt16BE(0, 20 + name.length);
    socket.write(Buffer.concat([clientFlags, option]));
    let sizeBytes = -1;
    let flags = 0;
    for (;;) {
      const header = await reader.read(20);
      if (header.readBigUInt64BE(0) !== OPT_REPLY_MAGIC) throw new Error('bad option reply magic');
      const type = header.readUInt32BE(12);
      const data = await reader.read(header.readUInt32BE(16));
      if (type === REP_ACK) break;
      if (type & 0x80000000) throw new Error(`NBD_OPT_GO refused (reply type 0x${type.toString(16)}): ${data.toString()}`);
      if (type === REP_INFO && data.readUInt16BE(0) === INFO_EXPORT) {
        sizeBytes = Number(data.readBigUInt64BE(2));
        flags = data.readUInt16BE(10);
      }
    }
    // The server may go first (shutdown); a late DISC then fails, harmlessly.
    socket.on('error', () => {});
    let closed = false;
    return {
      sizeBytes,
      flags,
      async close() {
        if (closed) return;
        closed = true;
        const disc = Buffer.alloc(28);
        disc.writeUInt32BE(REQUEST_MAGIC, 0);
        disc.writeUInt16BE(CMD_DISC, 6);
        socket.end(disc);
        await new Promise<void>((r) => (socket.closed ? r() : socket.once('close', () => r())));
      },
    };
  } catch (err) {
    socket.destroy();
    throw err;
  }
}
