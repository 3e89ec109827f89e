/**
 * Test doubles injected through ConnectOptions: a virtual clock and a scriptable WebSocket
 * that decodes what the client sends. Kept outside test/ so `node --test dist/test/` runs only
 * real test files.
 */
import { connect, type Clock, type Connection, type ConnectOptions, type Logger, type WebSocketLike } from "../src/index.js";
import { decodeFrame, encodeFrame, type Cursor, type Frame, type FrameKind, type FrameMember, type KafkaRecord, type Welcome } from "../src/frames.js";

/** Virtual time: timers run only inside advance(), in due order (ties in creation order). */
export class FakeClock implements Clock {
  private t: number;
  private seq = 0;
  private readonly timers = new Map<number, { at: number; fn: () => void }>();

  constructor(start = 1_700_000_000_000) {
    this.t = start;
  }

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq;
    this.timers.set(id, { at: this.t + Math.max(0, ms), fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.timers.delete(handle as number);
  }

  /** Timers still scheduled. */
  get pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, running every timer that falls due, at its due time. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let next: [number, { at: number; fn: () => void }] | undefined;
      for (const entry of this.timers) if (entry[1].at <= end && (!next || entry[1].at < next[1].at)) next = entry;
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
}

/** Lets pending promise callbacks (async token functions, awaits) run. */
export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export interface FakeSocketClass {
  new (url: string, protocols?: string | string[]): FakeWebSocket;
  /** Every socket created, oldest first. */
  readonly instances: FakeWebSocket[];
}

/** A WebSocket whose server side the test plays. */
export class FakeWebSocket implements WebSocketLike {
  binaryType = "blob";
  readyState = 0;
  protocol = "";
  onopen: ((event: unknown) => void) | null = null;
  onmessage: ((event: { data: unknown }) => void) | null = null;
  onclose: ((event: { code: number; reason: string }) => void) | null = null;
  onerror: ((event: unknown) => void) | null = null;
  /** Frames the client sent, decoded. */
  readonly sent: Frame[] = [];
  /** Set when the client closed the socket. */
  closedByClient: { code: number | undefined; reason: string | undefined } | undefined;

  readonly url: string;
  readonly protocols: string | string[] | undefined;

  constructor(url: string, protocols?: string | string[]) {
    this.url = url;
    this.protocols = protocols;
  }

  send(data: Uint8Array<ArrayBuffer>): void {
    if (this.readyState !== 1) throw new Error(`send() in readyState ${this.readyState}`);
    this.sent.push(decodeFrame(data));
  }

  close(code?: number, reason?: string): void {
    this.readyState = 3;
    this.closedByClient = { code, reason };
  }

  // ---- the test's side ----

  open(): void {
    this.readyState = 1;
    this.protocol = "kafkasocks.v1";
    this.onopen?.({});
  }

  deliver(frame: Frame): void {
    this.onmessage?.({ data: encodeFrame(frame).buffer });
  }

  deliverRaw(data: unknown): void {
    this.onmessage?.({ data });
  }

  /** The server closes the connection. */
  serverClose(code: number, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }

  sentOf<K extends FrameKind>(kind: K): FrameMember<K>[] {
    return this.sent.filter((f) => f.kind === kind).map((f) => (f as { [k: string]: unknown })[kind] as FrameMember<K>);
  }

  /** The last frame of `kind` the client sent; throws if none. */
  last<K extends FrameKind>(kind: K): FrameMember<K> {
    const all = this.sentOf(kind);
    const f = all[all.length - 1];
    if (f === undefined) throw new Error(`no ${kind} frame sent; sent: ${this.sent.map((s) => s.kind).join(", ")}`);
    return f;
  }
}

export function fakeSocketClass(): FakeSocketClass {
  const instances: FakeWebSocket[] = [];
  return class extends FakeWebSocket {
    static readonly instances = instances;
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      instances.push(this);
    }
  };
}

export function welcome(over: Partial<Welcome> = {}): Frame {
  return {
    kind: "welcome",
    welcome: { sessionId: "sess-1", serverId: "gw-a", heartbeatIntervalMs: 15_000, tokenExpiresAtMs: 0n, serverTimeMs: 0n, ...over },
  };
}

export function record(partition: number, offset: bigint, payload: Uint8Array = new Uint8Array([partition, Number(offset % 256n)])): KafkaRecord {
  return { partition, offset, timestampMs: 1_600_000_000_000n + offset, key: new Uint8Array(0), headers: [], payload, schemaId: 0, typeName: "", keySchemaId: 0 };
}

export function data(subscriptionId: number, ...records: KafkaRecord[]): Frame {
  return { kind: "data", data: { subscriptionId, records } };
}

export const TOPIC_ID = new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);

export function cursorOf(positions: { [partition: number]: bigint }, topicId: Uint8Array = TOPIC_ID): Cursor {
  return {
    topicId,
    positions: Object.entries(positions).map(([p, o]) => ({ partition: Number(p), nextOffset: o })),
  };
}

export function subscribed(id: number, cursor?: Cursor, credit = 256, topic = "ticks"): Frame {
  return { kind: "subscribed", subscribed: cursor ? { id, topic, cursor, credit } : { id, topic, credit } };
}

export interface LogLine {
  level: string;
  message: string;
  fields: unknown;
}

export function captureLogger(lines: LogLine[]): Logger {
  const make = (level: string) => (message: string, fields?: unknown) => lines.push({ level, message, fields });
  return { debug: make("debug"), info: make("info"), warn: make("warn"), error: make("error") };
}

/** A connection over fake sockets and a fake clock, with every log line captured. */
export function setup(options: Partial<ConnectOptions> = {}) {
  const clock = new FakeClock();
  const Socket = fakeSocketClass();
  const logs: LogLine[] = [];
  const conn: Connection = connect({
    url: "wss://gateway.test/ks",
    WebSocket: Socket,
    clock,
    logger: captureLogger(logs),
    backoff: { random: () => 0.5 },
    ...options,
  });
  const h = {
    clock,
    Socket,
    conn,
    logs,
    /** The newest socket. */
    get ws(): FakeWebSocket {
      const ws = Socket.instances[Socket.instances.length - 1];
      if (!ws) throw new Error("no socket created yet");
      return ws;
    },
    /** Waits for the next socket, opens it and answers Hello with Welcome. */
    async session(over: Partial<Welcome> = {}): Promise<FakeWebSocket> {
      const before = Socket.instances.length;
      for (let i = 0; i < 10 && Socket.instances.length === before; i++) await flush();
      const ws = h.ws;
      ws.open();
      ws.deliver(welcome(over));
      return ws;
    },
    /** Advances virtual time and lets async work settle. */
    async tick(ms: number): Promise<void> {
      clock.advance(ms);
      await flush();
    },
  };
  return h;
}
