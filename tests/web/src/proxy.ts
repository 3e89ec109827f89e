/**
 * A TCP proxy between the client and the gateway that can fail the network on demand:
 * `sever()` resets (RST) both sides of every open connection, as a dropped link or a crashed
 * middlebox would; `block()` also resets every new connection at once until `unblock()` (the
 * client sees its reconnects fail, like a refused connection).
 */
import net from "node:net";

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  /** The upstream connection to the gateway is established. */
  connected: boolean;
}

export class TcpProxy {
  accepted = 0;
  refused = 0;
  /** Connections cut by sever()/block(). */
  severed = 0;
  /** Bytes forwarded gateway → client and client → gateway. */
  toClient = 0;
  toServer = 0;
  readonly #pairs = new Set<Pair>();
  #blocked = false;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    private target: { host: string; port: number },
  ) {
    server.on("connection", (client) => this.#onConnection(client));
  }

  static async start(target: { host: string; port: number }): Promise<TcpProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    const address = server.address();
    if (!address || typeof address === "string") throw new Error("proxy: no TCP address");
    return new TcpProxy(server, address.port, target);
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/streams`;
  }

  /** Forwarded connections currently open (both legs up). */
  get open(): number {
    let n = 0;
    for (const p of this.#pairs) if (p.connected) n++;
    return n;
  }

  stats(): { accepted: number; refused: number; open: number; toClient: number; toServer: number } {
    return { accepted: this.accepted, refused: this.refused, open: this.open, toClient: this.toClient, toServer: this.toServer };
  }

  #onConnection(client: net.Socket): void {
    client.on("error", () => undefined);
    if (this.#blocked) {
      this.refused++;
      client.resetAndDestroy();
      return;
    }
    this.accepted++;
    client.setNoDelay(true);
    const upstream = net.connect({ host: this.target.host, port: this.target.port });
    upstream.setNoDelay(true);
    const pair: Pair = { client, upstream, connected: false };
    this.#pairs.add(pair);
    upstream.on("connect", () => {
      if (this.#pairs.has(pair)) pair.connected = true;
    });
    const end = () => {
      this.#pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on("error", end);
      s.on("close", end);
    }
    client.on("data", (d: Buffer) => (this.toServer += d.length));
    upstream.on("data", (d: Buffer) => (this.toClient += d.length));
    // Writes before the upstream connects are buffered by the socket.
    client.pipe(upstream);
    upstream.pipe(client);
  }

  /** Resets every open connection now; returns how many. */
  sever(): number {
    const pairs = [...this.#pairs];
    this.#pairs.clear();
    for (const p of pairs) {
      p.client.resetAndDestroy();
      p.upstream.resetAndDestroy();
    }
    this.severed += pairs.length;
    return pairs.length;
  }

  /** Waits (polling, at most `waitMs`) until a connection is open, then severs them all. */
  async severWhenConnected(waitMs = 5000): Promise<number> {
    const deadline = Date.now() + waitMs;
    while (this.open === 0) {
      if (Date.now() >= deadline) {
        if (waitMs > 0) throw new Error(`proxy: no open connection to sever within ${waitMs} ms`);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    return this.sever();
  }

  /** New connections go to `target` (a restarted gateway); open ones are left alone. */
  retarget(target: { host: string; port: number }): void {
    this.target = target;
  }

  /** Severs everything and refuses new connections until unblock(). */
  block(): number {
    this.#blocked = true;
    return this.sever();
  }

  unblock(): void {
    this.#blocked = false;
  }

  async close(): Promise<void> {
    this.#blocked = true;
    this.sever();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
