/**
 * The connection: one logical session with the gateway that survives socket drops.
 *
 * States: "connecting" (first attempt) → "open" (Welcome received) → "reconnecting" (socket
 * lost; retrying with backoff) → "open" ... → "closed" (close() called, or a fatal close code).
 *
 * Close codes: 1002, 1003, 4000 and 1009 before Welcome are fatal. 4001 is fatal with a static
 * token; with a token function the client retries once with a fresh token, and a second 4001
 * in a row is fatal. 4002 (token expired) reconnects with a fresh token (fatal with a static
 * token: it cannot change). Every other code reconnects with exponential backoff (full jitter).
 * After GoAway the client reconnects `reconnect_after_ms` (plus jitter) later.
 */
import { Backoff, systemClock, type BackoffOptions, type Clock } from "./backoff.js";
import { Emitter } from "./events.js";
import { KafkaSocksError, codeName, fromErrorFrame } from "./errors.js";
import { decodeFrame, encodeFrame, type ErrorFrame, type Frame, type Limits, type Welcome } from "./frames.js";
import { consoleLogger, redactingLogger, type Logger } from "./logger.js";
import { Publisher, type PublishOptions, type Receipt } from "./publish.js";
import {
  SubscriptionImpl,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionEndpoint,
  type SubscriptionHost,
} from "./subscription.js";
import { PROTOCOL, RUNTIME_VERSION } from "./version.js";

/**
 * Where a {@link Connection} is: "connecting" until the first Welcome, "open" while a session
 * is open, "reconnecting" from a lost socket until the next Welcome (retrying with backoff,
 * or waiting out a GoAway), and "closed" for good after {@link Connection.close} or a fatal
 * close code ({@link Connection.error} then says why). "closed" is final.
 */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** An event handler property type that accepts DOM, `ws` and test sockets alike (bivariant). */
type Handler<E> = { bivarianceHack(event: E): void }["bivarianceHack"];

/** The part of the WebSocket API the runtime uses: the browser's `WebSocket` and the `ws` package both fit. */
export interface WebSocketLike {
  /** The runtime sets "arraybuffer", so binary messages arrive as `ArrayBuffer`s. */
  binaryType: string;
  /** Set by the runtime: sends Hello when the socket opens. */
  onopen: Handler<unknown> | null;
  /** Set by the runtime: `data` must be the binary message, an `ArrayBuffer` or an `ArrayBufferView` (e.g. a Node `Buffer`); a text message makes the runtime drop the socket and reconnect. */
  onmessage: Handler<{ data: unknown }> | null;
  /** Set by the runtime: the close `code` decides between reconnecting and closing for good. */
  onclose: Handler<{ code: number; reason: string }> | null;
  /** Set by the runtime to a no-op: the close event that follows an error decides what happens. */
  onerror: Handler<unknown> | null;
  /** Sends one binary message (one encoded frame). */
  send(data: Uint8Array<ArrayBuffer>): void;
  /** Closes the socket; the runtime passes 1000 and a short reason. */
  close(code?: number, reason?: string): void;
}

/**
 * A WebSocket constructor ({@link ConnectOptions.WebSocket}): the browser's `WebSocket` or the
 * `ws` package's. The runtime calls it with the gateway URL and the subprotocol
 * "kafkasocks.v1" ({@link PROTOCOL}).
 */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** Something with add/removeEventListener, e.g. `window` or `document`. */
export interface EventSourceLike {
  /** Adds `listener` for events of `type` ("online" or "visibilitychange"). */
  addEventListener(type: string, listener: () => void): void;
  /** Removes a listener added with {@link EventSourceLike.addEventListener}; called when the connection closes. */
  removeEventListener(type: string, listener: () => void): void;
}

/**
 * The bearer token sent in Hello ({@link ConnectOptions.token}). A string is static: a close
 * for a bad (4001) or expired (4002) token is then fatal. A function is called, and awaited,
 * before every connect attempt and to refresh the token in-band before it expires; when it
 * throws or rejects, the attempt is retried with backoff (a failed refresh is logged, and the
 * reconnect after the expiry asks again). The empty string means anonymous.
 */
export type TokenSource = string | (() => string | Promise<string>);

/** Options of {@link connect}. Every option but `url` is optional. */
export interface ConnectOptions {
  /** Gateway URL (`ws://` or `wss://`). Required. */
  url: string;
  /**
   * Bearer token sent in Hello. A function is called (and awaited) before every (re)connect
   * and before the token expires (in-band refresh). Default: none (anonymous, empty token).
   */
  token?: TokenSource;
  /**
   * WebSocket implementation. Default `globalThis.WebSocket`; `connect` throws a
   * KafkaSocksError (FAILED_PRECONDITION / NO_WEBSOCKET) when there is none, e.g. on Node 20:
   * inject `WebSocket` from the `ws` package there.
   */
  WebSocket?: WebSocketConstructor;
  /** Where logs go. Default: warnings and errors to the console. Tokens are always redacted. */
  logger?: Logger;
  /** Reconnect backoff. Default `{ initialMs: 500, maxMs: 20000, random: Math.random }`. */
  backoff?: BackoffOptions;
  /**
   * Liveness: the connection is considered dead when nothing arrives for `missedIntervals` ×
   * Welcome's `heartbeat_interval_ms` (`defaultIntervalMs` when the gateway sends 0).
   * Default `{ missedIntervals: 2, defaultIntervalMs: 15000 }`.
   */
  heartbeat?: {
    /** Heartbeat intervals without any message after which the socket is dropped and a reconnect begins. Default 2. */
    missedIntervals?: number;
    /** Interval assumed, in milliseconds, when Welcome's `heartbeat_interval_ms` is 0. Default 15000. */
    defaultIntervalMs?: number;
  };
  /** Time from opening a socket to receiving Welcome before giving up on it, ms. Default 10000. */
  handshakeTimeoutMs?: number;
  /** Default per-publish deadline, ms. Default 10000. */
  publishTimeoutMs?: number;
  /** Most publishes waiting to be sent (offline, or beyond the gateway's in-flight limit or publish rate). Default 1000. */
  maxOfflinePublishes?: number;
  /** Retries of a publish refused with RESOURCE_EXHAUSTED + retry_after_ms (rate limit). Default 3. */
  maxPublishRetries?: number;
  /** Credit window of subscriptions that do not set one. Default 256. */
  defaultCredit?: number;
  /** Refresh the token when this fraction of its remaining lifetime has passed. Default 0.8. */
  tokenRefreshAt?: number;
  /** `Hello.client`. Default "kafkasocks-ts/" + RUNTIME_VERSION. */
  client?: string;
  /** Time source and timers (inject a fake for tests). Default: `Date.now` and global timers. */
  clock?: Clock;
  /**
   * Where to listen for `online` (window) and `visibilitychange` (document): while the
   * connection waits out a reconnect backoff (not a GoAway's delay), either event makes it
   * reconnect at once. Default `globalThis` and `globalThis.document` when they exist.
   */
  wakeEvents?: {
    /** Heard for `online`. Default `globalThis` when it has `addEventListener`. */
    window?: EventSourceLike;
    /** Heard for `visibilitychange`; counts only when `visibilityState` is then "visible". Default `globalThis.document`. */
    document?: EventSourceLike & {
      /** "visible" when the page is shown (as `document.visibilityState`). */
      readonly visibilityState?: string;
    };
  };
}

/** The events of a {@link Connection} and their listener arguments, for {@link Connection.on}. */
export type ConnectionEvents = {
  /** Every change of {@link Connection.state}, with the new state. */
  state: [state: ConnectionState];
  /** Fatal errors (the connection closes) and connection-level Error frames. */
  error: [error: KafkaSocksError];
  /** Every Welcome: the first session and every one after a reconnect. */
  welcome: [welcome: Welcome];
};

/**
 * One logical session with the gateway, made by {@link connect}, that survives socket drops:
 * it reconnects with backoff, resubscribes every subscription from its cursor and resends
 * unanswered publishes with their idempotency keys. Use it directly with encoded bytes, or
 * through a typed client ({@link createClient}).
 */
export interface Connection {
  /** The current state; the `state` event reports every change. */
  readonly state: ConnectionState;
  /** The latest Welcome (session id, limits, heartbeat), undefined before the first. */
  readonly welcome: Welcome | undefined;
  /** Why the connection closed, when it closed on an error. */
  readonly error: KafkaSocksError | undefined;
  /** Adds a listener; returns a function that removes it. A listener that throws is logged, not rethrown. */
  on<K extends keyof ConnectionEvents>(event: K, fn: (...args: ConnectionEvents[K]) => void): () => void;
  /** Subscribes to a server-streaming method; `request` is the protobuf-encoded request message. */
  subscribe(method: string, request: Uint8Array, options?: SubscribeOptions): Subscription<Uint8Array>;
  /** The same, decoding each record payload with `decode`. */
  subscribe<T>(
    method: string,
    request: Uint8Array,
    options: SubscribeOptions & { decode: (payload: Uint8Array) => T },
  ): Subscription<T>;
  /** Publishes to a unary method; `payload` is the protobuf-encoded request message. */
  publish(method: string, payload: Uint8Array, options?: PublishOptions): Promise<Receipt>;
  /**
   * Closes for good: subscriptions end ("unsubscribed"), pending and later publishes reject
   * with CANCELLED (`clientCode` "CLOSED"), and later subscriptions fail with that error.
   * Idempotent.
   */
  close(): void;
}

/**
 * Opens a connection (it connects in the background; watch `state`). Throws a
 * {@link KafkaSocksError} (FAILED_PRECONDITION, `clientCode` "NO_WEBSOCKET") when there is no
 * WebSocket implementation; a URL the WebSocket constructor refuses closes the connection
 * with INVALID_ARGUMENT instead.
 */
export function connect(options: ConnectOptions): Connection {
  return new ConnectionImpl(options);
}

const MIN_REFRESH_MS = 1000;

const ignoreError = (): void => undefined;

type TimerName = "retry" | "handshake" | "heartbeat" | "refresh" | "goAway";

/** 128 random bits as 32 hex digits (crypto.getRandomValues: browsers, Node 20). */
function instanceId(): string {
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

class ConnectionImpl implements Connection, SubscriptionHost {
  readonly clock: Clock;
  readonly logger: Logger;
  welcome: Welcome | undefined;
  error: KafkaSocksError | undefined;

  #state: ConnectionState = "connecting";
  readonly #events: Emitter<ConnectionEvents>;
  readonly #WS: WebSocketConstructor;
  readonly #backoff: Backoff;
  readonly #publisher: Publisher;
  readonly #live = new Set<SubscriptionEndpoint>();
  readonly #routes = new Map<number, SubscriptionEndpoint>();
  #nextSubId = 1;
  readonly #secrets = new Set<string>();
  /** Sent in every Hello: an anonymous client's retried publishes stay deduplicated across reconnects. */
  readonly #instanceId = instanceId();

  #ws: WebSocketLike | undefined;
  /** Bumped for every socket attempt and on close; stale async work compares it. */
  #generation = 0;
  #welcomed = false;
  #draining = false;
  #goAwayDue = false;
  #authRetried = false;
  #lastHeard = 0;
  #connError: ErrorFrame | undefined;
  readonly #timers: { [name in TimerName]?: unknown } = {};
  readonly #unwake: () => void;

  readonly #options: ConnectOptions;

  constructor(options: ConnectOptions) {
    this.#options = options;
    const WS = options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!WS) {
      throw new KafkaSocksError(
        "FAILED_PRECONDITION",
        "no WebSocket implementation: this environment has no global WebSocket (Node 20 has none); pass one, e.g. connect({ url, WebSocket }) with WebSocket from the 'ws' package",
        { clientCode: "NO_WEBSOCKET" },
      );
    }
    this.#WS = WS;
    this.clock = options.clock ?? systemClock;
    if (typeof options.token === "string") this.#secrets.add(options.token);
    this.logger = redactingLogger(options.logger ?? consoleLogger(), () => this.#secrets);
    this.#events = new Emitter((e) => this.logger.error("connection listener threw", { error: e }));
    this.#backoff = new Backoff(options.backoff);
    this.#publisher = new Publisher(this, {
      timeoutMs: options.publishTimeoutMs ?? 10_000,
      maxQueued: options.maxOfflinePublishes ?? 1000,
      maxRetries: options.maxPublishRetries ?? 3,
    });
    this.#unwake = this.#listenForWake();
    void this.#openSocket();
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** Session open and not draining: new subscriptions and publishes may go out. */
  get ready(): boolean {
    return this.#welcomed && !this.#draining;
  }

  get limits(): Limits | undefined {
    return this.welcome?.limits;
  }

  on<K extends keyof ConnectionEvents>(event: K, fn: (...args: ConnectionEvents[K]) => void): () => void {
    return this.#events.on(event, fn);
  }

  #setState(state: ConnectionState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.logger.info("connection state", { state });
    this.#events.emit("state", state);
  }

  // ---- public API ---------------------------------------------------------------------------

  subscribe(method: string, request: Uint8Array, options?: SubscribeOptions): Subscription<Uint8Array>;
  subscribe<T>(method: string, request: Uint8Array, options: SubscribeOptions & { decode: (payload: Uint8Array) => T }): Subscription<T>;
  subscribe<T>(
    method: string,
    request: Uint8Array,
    options: SubscribeOptions & { decode?: (payload: Uint8Array) => T } = {},
  ): Subscription<T | Uint8Array> {
    const decode = options.decode ?? ((payload: Uint8Array) => payload);
    const sub = new SubscriptionImpl<T | Uint8Array>(this, method, request, decode, options, this.#options.defaultCredit ?? 256);
    if (this.#state === "closed") {
      sub.terminate(this.error ?? new KafkaSocksError("CANCELLED", "connection is closed", { clientCode: "CLOSED" }));
    } else if (sub.state !== "unsubscribed") {
      this.#live.add(sub);
      sub.connected();
    }
    return sub;
  }

  publish(method: string, payload: Uint8Array, options?: PublishOptions): Promise<Receipt> {
    return this.#publisher.publish(method, payload, options);
  }

  close(): void {
    this.#shutdown(undefined);
  }

  // ---- hosts' services ----------------------------------------------------------------------

  send(frame: Frame): boolean {
    const ws = this.#ws;
    if (!ws) return true; // dropped on the floor: the socket is gone and state will be re-sent
    const bytes = encodeFrame(frame);
    const max = this.welcome?.limits?.maxMessageBytes;
    if (this.#welcomed && max && bytes.length > max) {
      this.logger.warn("frame over max_message_bytes; not sent", { kind: frame.kind, bytes: bytes.length, max });
      return false;
    }
    try {
      ws.send(bytes);
    } catch (error) {
      this.logger.warn("WebSocket send failed", { error });
    }
    return true;
  }

  register(sub: SubscriptionEndpoint): number {
    let id = this.#nextSubId;
    while (this.#routes.has(id)) id = id >= 0xffffffff ? 1 : id + 1;
    this.#nextSubId = id >= 0xffffffff ? 1 : id + 1;
    this.#routes.set(id, sub);
    return id;
  }

  release(id: number): void {
    this.#routes.delete(id);
  }

  forget(sub: SubscriptionEndpoint): void {
    this.#live.delete(sub);
  }

  retryDelay(attempt: number): number {
    return this.#backoff.delay(attempt);
  }

  // ---- socket lifecycle ---------------------------------------------------------------------

  #timer(name: TimerName, ms: number, fn: () => void): void {
    this.clock.clearTimeout(this.#timers[name]);
    this.#timers[name] = this.clock.setTimeout(() => {
      delete this.#timers[name];
      fn();
    }, ms);
  }

  #clearTimer(name: TimerName): void {
    this.clock.clearTimeout(this.#timers[name]);
    delete this.#timers[name];
  }

  async #resolveToken(): Promise<string> {
    const source = this.#options.token;
    const token = typeof source === "function" ? await source() : (source ?? "");
    if (token) {
      this.#secrets.add(token);
      if (this.#secrets.size > 8) this.#secrets.delete(this.#secrets.values().next().value as string);
    }
    return token;
  }

  async #openSocket(): Promise<void> {
    const gen = ++this.#generation;
    this.#clearTimer("retry");
    this.#clearTimer("goAway");
    this.#draining = false;
    this.#goAwayDue = false;
    let token: string;
    try {
      token = await this.#resolveToken();
    } catch (error) {
      if (gen !== this.#generation) return;
      this.logger.warn("token provider failed; retrying", { error });
      return this.#scheduleReconnect();
    }
    if (gen !== this.#generation) return;
    const url = this.#options.url;
    let ws: WebSocketLike;
    try {
      ws = new this.#WS(url, PROTOCOL);
    } catch (cause) {
      // An invalid URL will not become valid.
      return this.#shutdown(new KafkaSocksError("INVALID_ARGUMENT", `cannot open a WebSocket to ${url.split("?")[0]}: ${String(cause)}`, { cause }));
    }
    this.#ws = ws;
    this.#welcomed = false;
    this.#connError = undefined;
    ws.binaryType = "arraybuffer";
    this.#timer("handshake", this.#options.handshakeTimeoutMs ?? 10_000, () => this.#drop("no Welcome within the handshake timeout"));
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.send({
        kind: "hello",
        hello: {
          protocolVersion: 1,
          token,
          client: this.#options.client ?? `kafkasocks-ts/${RUNTIME_VERSION}`,
          instanceId: this.#instanceId,
        },
      });
    };
    ws.onmessage = (event) => {
      if (ws === this.#ws) this.#onMessage(event.data);
    };
    ws.onclose = (event) => {
      if (ws === this.#ws) this.#onClose(event.code, event.reason);
    };
    // onerror carries no detail; onclose follows and decides. It must still be set: the `ws`
    // package (Node) throws an 'error' event nobody listens to (refused connection, close()
    // during the handshake) as an uncaught exception.
    ws.onerror = ignoreError;
  }

  /** Forgets the current socket: every socket-scoped thing (routes, in-flight ids, timers) ends. */
  #detach(notify = true): WebSocketLike | undefined {
    const ws = this.#ws;
    this.#ws = undefined;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      ws.onerror = ignoreError; // not null: close() below may still make `ws` emit 'error'
    }
    this.#welcomed = false;
    this.#clearTimer("handshake");
    this.#clearTimer("heartbeat");
    this.#clearTimer("refresh");
    this.#routes.clear();
    if (notify) {
      for (const sub of [...this.#live]) sub.disconnected();
      this.#publisher.disconnected();
    }
    return ws;
  }

  /** Client-side decision to abandon the socket (timeouts, protocol errors, GoAway): reconnect. */
  #drop(reason: string, delayMs?: number): void {
    this.logger.warn("dropping connection", { reason });
    const ws = this.#detach();
    try {
      ws?.close(1000, reason.slice(0, 100));
    } catch {
      // already closing
    }
    this.#scheduleReconnect(delayMs);
  }

  #scheduleReconnect(delayMs?: number): void {
    if (this.#state === "closed") return;
    this.#setState("reconnecting");
    const delay = delayMs ?? this.#backoff.next();
    this.logger.info("reconnecting", { delayMs: delay });
    this.#timer("retry", delay, () => void this.#openSocket());
  }

  #listenForWake(): () => void {
    const g = globalThis as { addEventListener?: unknown; document?: unknown };
    const win = this.#options.wakeEvents?.window ?? (typeof g.addEventListener === "function" ? (g as EventSourceLike) : undefined);
    const doc = this.#options.wakeEvents?.document ?? (g.document as (EventSourceLike & { visibilityState?: string }) | undefined);
    const wake = () => {
      // Only a backoff wait is cut short; a GoAway delay is the gateway's request.
      if (this.#state === "reconnecting" && this.#timers.retry !== undefined) {
        this.logger.info("online/visible: reconnecting now");
        void this.#openSocket();
      }
    };
    const onVisibility = () => {
      if (doc?.visibilityState === "visible") wake();
    };
    win?.addEventListener("online", wake);
    doc?.addEventListener("visibilitychange", onVisibility);
    return () => {
      win?.removeEventListener("online", wake);
      doc?.removeEventListener("visibilitychange", onVisibility);
    };
  }

  // ---- incoming -----------------------------------------------------------------------------

  #onMessage(data: unknown): void {
    let frame: Frame;
    try {
      if (data instanceof ArrayBuffer) frame = decodeFrame(new Uint8Array(data));
      else if (ArrayBuffer.isView(data)) frame = decodeFrame(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
      else throw new Error("text message (the protocol only uses binary messages)");
    } catch (error) {
      this.logger.error("undecodable message", { error });
      return this.#drop("undecodable message");
    }
    this.#lastHeard = this.clock.now();
    if (!this.#welcomed) {
      if (frame.kind === "welcome") return this.#onWelcome(frame.welcome);
      if (frame.kind === "error") this.#onConnectionError(frame.error);
      else if (frame.kind === "ping") this.send({ kind: "pong", pong: { nonce: frame.ping.nonce } });
      else this.logger.warn("unexpected frame before Welcome", { kind: frame.kind });
      return;
    }
    switch (frame.kind) {
      case "data": {
        const { subscriptionId, records } = frame.data;
        return this.#routes.get(subscriptionId)?.onData(records);
      }
      case "checkpoint":
        return this.#routes.get(frame.checkpoint.subscriptionId)?.onCheckpoint(frame.checkpoint.positions);
      case "subscribed":
        return this.#routes.get(frame.subscribed.id)?.onSubscribed(frame.subscribed);
      case "end":
        return this.#routes.get(frame.end.id)?.onEnd();
      case "receipt":
        this.#publisher.onReceipt(frame.receipt);
        return this.#checkGoAway();
      case "error": {
        const e = frame.error;
        if (e.subscriptionId) return this.#routes.get(e.subscriptionId)?.onError(e);
        if (e.publishId) {
          this.#publisher.onError(e, this.#draining);
          return this.#checkGoAway();
        }
        return this.#onConnectionError(e);
      }
      case "ping":
        this.send({ kind: "pong", pong: { nonce: frame.ping.nonce } });
        return;
      case "tokenAccepted":
        return this.#scheduleRefresh(frame.tokenAccepted.tokenExpiresAtMs, frame.tokenAccepted.serverTimeMs);
      case "goAway":
        return this.#onGoAway(frame.goAway.reason, frame.goAway.reconnectAfterMs);
      case "pong":
        return;
      default:
        this.logger.debug("ignored frame", { kind: frame.kind });
    }
  }

  #onWelcome(w: Welcome): void {
    this.#welcomed = true;
    this.welcome = w;
    this.#clearTimer("handshake");
    this.#backoff.reset();
    this.#authRetried = false;
    this.logger.info("session open", { sessionId: w.sessionId, serverId: w.serverId });
    this.#setState("open");
    this.#events.emit("welcome", w);
    this.#watchHeartbeat();
    this.#scheduleRefresh(w.tokenExpiresAtMs, w.serverTimeMs);
    for (const sub of [...this.#live]) sub.connected();
    this.#publisher.pump();
  }

  #onConnectionError(e: ErrorFrame): void {
    // Error without ids: the gateway is about to close; keep it to explain the close.
    this.#connError = e;
    const error = fromErrorFrame(e);
    this.logger.warn("gateway error", { code: error.code, message: error.message });
    this.#events.emit("error", error);
  }

  #watchHeartbeat(): void {
    const hb = this.#options.heartbeat;
    const interval = this.welcome?.heartbeatIntervalMs || hb?.defaultIntervalMs || 15_000;
    const deadAfter = interval * (hb?.missedIntervals ?? 2);
    const check = () => {
      const silent = this.clock.now() - this.#lastHeard;
      if (silent >= deadAfter) this.#drop(`nothing heard for ${silent} ms`);
      else this.#timer("heartbeat", deadAfter - silent, check);
    };
    this.#timer("heartbeat", deadAfter, check);
  }

  #scheduleRefresh(expiresAtMs: bigint, serverTimeMs: bigint): void {
    this.#clearTimer("refresh");
    const source = this.#options.token;
    if (expiresAtMs <= 0n || typeof source !== "function") return;
    // Both times are on the gateway's clock when it sends server_time_ms: immune to skew.
    const remaining = Number(expiresAtMs) - (serverTimeMs > 0n ? Number(serverTimeMs) : this.clock.now());
    const delay = Math.max(MIN_REFRESH_MS, Math.floor(remaining * (this.#options.tokenRefreshAt ?? 0.8)));
    this.#timer("refresh", delay, () => void this.#refreshToken());
  }

  async #refreshToken(): Promise<void> {
    const ws = this.#ws;
    let token: string;
    try {
      token = await this.#resolveToken();
    } catch (error) {
      // The gateway will close with 4002 at expiry, and the reconnect asks for a token again.
      this.logger.warn("token refresh failed", { error });
      return;
    }
    if (ws !== this.#ws || !this.#welcomed) return;
    this.send({ kind: "tokenRefresh", tokenRefresh: { token } });
  }

  #onGoAway(reason: string, reconnectAfterMs: number): void {
    this.#draining = true;
    // Jitter: spread this node's clients over [r, 2r) (at least the backoff's first window).
    const spread = Math.max(reconnectAfterMs, this.#backoff.initialMs);
    const delay = reconnectAfterMs + Math.floor(this.#random() * spread);
    this.logger.info("gateway going away", { reason, reconnectInMs: delay });
    this.#timer("goAway", delay, () => {
      this.#goAwayDue = true;
      if (this.#ws) this.#checkGoAway();
      else void this.#openSocket();
    });
  }

  #random(): number {
    return (this.#options.backoff?.random ?? Math.random)();
  }

  /** After a GoAway's delay: leave once no publish awaits its receipt on this socket. */
  #checkGoAway(): void {
    if (this.#goAwayDue && this.#ws && this.#publisher.inflightCount === 0) this.#drop("gateway going away", 0);
  }

  #onClose(code: number, reason: string): void {
    this.logger.info("socket closed", { code, reason });
    const fatal = this.#fatalError(code, this.#welcomed);
    if (fatal) return this.#shutdown(fatal);
    this.#detach();
    if (this.#draining && this.#timers.goAway !== undefined) {
      // The GoAway timer reconnects.
      this.#setState("reconnecting");
      return;
    }
    // After a GoAway whose delay has passed, come back at once.
    this.#scheduleReconnect(this.#goAwayDue ? 0 : undefined);
  }

  #fatalError(code: number, wasOpen: boolean): KafkaSocksError | undefined {
    const tokenFn = typeof this.#options.token === "function";
    let name: ReturnType<typeof codeName>;
    switch (code) {
      case 1002:
      case 1003:
        name = "INTERNAL";
        break;
      case 4000:
        name = "FAILED_PRECONDITION";
        break;
      case 1009:
        if (wasOpen) return undefined;
        name = "RESOURCE_EXHAUSTED";
        break;
      case 4001:
        if (tokenFn && !this.#authRetried) {
          this.#authRetried = true;
          return undefined;
        }
        name = "UNAUTHENTICATED";
        break;
      case 4002:
        if (tokenFn) return undefined;
        name = "UNAUTHENTICATED";
        break;
      default:
        return undefined;
    }
    const e = this.#connError;
    const message = e?.message || `the gateway closed the connection with code ${code}`;
    return new KafkaSocksError(e ? codeName(e.code) : name, message, { clientCode: "FATAL_CLOSE", closeCode: code });
  }

  /** Ends the connection for good; `error` undefined = closed by the application. */
  #shutdown(error: KafkaSocksError | undefined): void {
    if (this.#state === "closed") return;
    this.#generation++;
    this.error = error;
    const ws = this.#detach(false);
    try {
      ws?.close(1000, "client closed");
    } catch {
      // already closing
    }
    for (const name of Object.keys(this.#timers) as TimerName[]) this.#clearTimer(name);
    this.#unwake();
    const pendingError = error ?? new KafkaSocksError("CANCELLED", "connection closed by the application", { clientCode: "CLOSED" });
    this.#publisher.close(pendingError);
    for (const sub of [...this.#live]) sub.terminate(error);
    this.#live.clear();
    if (error) {
      this.logger.error("connection closed", { code: error.code, message: error.message, closeCode: error.closeCode });
      this.#events.emit("error", error);
    }
    this.#setState("closed");
  }
}
