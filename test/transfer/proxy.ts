/**
 * A TCP relay on 127.0.0.1 for the transfer tests: it delays what it forwards (a long link, each
 * way) and can be cut (every connection destroyed, new ones refused) and restored. Until the lab
 * (`tessera lab`) lands, the emulated link of these tests.
 */
import net from 'node:net';

/** A relay to `127.0.0.1:targetPort`. */
export class Relay {
  readonly #server: net.Server;
  readonly #sockets = new Set<net.Socket>();
  #cut = false;
  /** Delay of each direction, ms. */
  delayMs: number;
  port = 0;

  readonly targetPort: number;

  constructor(targetPort: number, opts: { delayMs?: number } = {}) {
    this.targetPort = targetPort;
    this.delayMs = opts.delayMs ?? 0;
    this.#server = net.createServer((client) => this.#relay(client));
  }

  async listen(): Promise<number> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    this.port = (this.#server.address() as net.AddressInfo).port;
    return this.port;
  }

  /** Destroys every relayed connection and refuses new ones until restore(). */
  cut(): void {
    this.#cut = true;
    for (const s of this.#sockets) s.destroy();
  }

  restore(): void {
    this.#cut = false;
  }

  close(): void {
    this.cut();
    this.#server.close();
  }

  #relay(client: net.Socket): void {
    if (this.#cut) {
      client.destroy();
      return;
    }
    const upstream = net.connect(this.targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.#sockets.add(s);
      s.on('close', () => {
        this.#sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
      s.on('error', () => {});
    }
    this.#pipe(client, upstream);
    this.#pipe(upstream, client);
  }

  #pipe(from: net.Socket, to: net.Socket): void {
    from.on('data', (chunk: Buffer) => {
      // Equal delays fire in the order they were set: the stream stays in order.
      if (this.delayMs === 0) to.write(chunk);
      else setTimeout(() => to.destroyed || to.write(chunk), this.delayMs);
    });
  }
}
