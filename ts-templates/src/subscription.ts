/**
 * One subscription to a server-streaming method, surviving reconnects.
 *
 * State machine (`state`):
 *
 *     subscribing ──Subscribed──► subscribed ──connection lost──► subscribing (resubscribes on reconnect)
 *        │  ▲                        │
 *        │  └── Error{UNAVAILABLE} ◄─┤  (retried with backoff)
 *        ├── unsubscribe() / abort / End ──────────────► unsubscribed
 *        └── Error{DATA_LOSS or other non-retryable} ──► failed  (+ "unrecoverable" for DATA_LOSS)
 *
 * Cursor and dedup: per partition the subscription keeps `next_offset` = last record's offset
 * + 1, raised by Checkpoint, initialised from `Subscribed.cursor`. A record whose offset is
 * below `next_offset` is dropped. After a reconnect it resubscribes from that cursor (before
 * its first `Subscribed`, from its original start). Together with the gateway's guarantee this
 * gives no gap and no duplicate while Kafka retains the records.
 *
 * Credit: the subscription allows the gateway `credit` records ahead (the window). Credit is
 * returned, in batches of half the window, only as records are consumed: when `record`
 * listeners have run (callback mode) or when the async iterator has pulled them. Records
 * waiting for the iterator therefore never exceed the window.
 */
import type { Clock } from "./backoff.js";
import { Emitter } from "./events.js";
import { KafkaSocksError, fromErrorFrame } from "./errors.js";
import {
  decodeCursorMessage,
  encodeCursorMessage,
  type Cursor,
  type ErrorFrame,
  type Frame,
  type Header,
  type KafkaRecord,
  type PartitionOffset,
  type StartPosition,
  type Subscribed,
} from "./frames.js";
import type { Logger } from "./logger.js";

export type { Cursor, Header, PartitionOffset };

/**
 * Where a {@link Subscription} is:
 * - "subscribing": waiting for the gateway's Subscribed (or for a session, after a lost
 *   socket, or for the retry of a Subscribe refused with UNAVAILABLE, or with RESOURCE_EXHAUSTED
 *   and a retry delay);
 * - "subscribed": streaming;
 * - "unsubscribed" (final): {@link Subscription.unsubscribe}, the signal aborted, the gateway
 *   ended the stream, or the connection was closed by the application;
 * - "failed" (final): a non-retryable error, or a fatal close of the connection;
 *   {@link Subscription.error} says why.
 */
export type SubscriptionState = "subscribing" | "subscribed" | "unsubscribed" | "failed";

/**
 * Where a new subscription starts: "latest" (the default: records the gateway reads after
 * the subscription starts), "earliest" (each partition's log start), a time, or a cursor. A
 * cursor may be given as an object or as an {@link encodeCursor} string.
 */
export type StartAt =
  | "latest"
  | "earliest"
  | {
      /** Per partition, the first record whose timestamp is at or after this time (Unix milliseconds); the end of the partition when there is none. */
      timestampMs: number;
    }
  | {
      /** Exactly the positions of this cursor (a saved {@link Subscription.cursor}, or its {@link encodeCursor} string). */
      cursor: Cursor | string;
    };

/**
 * Options of a subscription: the second argument of a subscribe method of a typed client
 * ({@link createClient}), or the third of {@link Connection.subscribe}.
 */
export interface SubscribeOptions {
  /** Where to start. Default `"latest"`. */
  start?: StartAt;
  /**
   * Records the gateway may send ahead of consumption (the credit window), 1..100000.
   * Default: the connection's `defaultCredit` (256). The gateway may clamp it (`max_credit`).
   */
  credit?: number;
  /** Aborting unsubscribes; the async iterator then ends. Already aborted: the subscription starts as "unsubscribed". */
  signal?: AbortSignal;
}

/** Kafka metadata of a record. */
export interface RecordMetadata {
  /** The Kafka partition the record is in. */
  partition: number;
  /** The record's offset in its partition. */
  offset: bigint;
  /** Kafka record timestamp, Unix ms. */
  timestampMs: number;
  /** The Kafka record key, as bytes (empty when the record has none). */
  key: Uint8Array;
  /** Every header of the Kafka record, as Kafka holds them (e.g. `traceparent`, whoever produced the record). */
  headers: Header[];
  /** Confluent schema id, 0 when the record had none. */
  schemaId: number;
  /**
   * Streams whose records are of several types (`oneof_types`): the record's full message
   * name (the value is the stream's wrapper message, the record in the member of that
   * type). Empty otherwise.
   */
  typeName: string;
  /** Topics whose keys are Confluent-framed key messages: the key's schema id (`key` is the key's value). 0 otherwise. */
  keySchemaId: number;
}

/** A record with its decoded value. */
export interface SubscriptionRecord<T> extends RecordMetadata {
  /** The decoded payload: the method's output message, or the raw payload bytes from {@link Connection.subscribe} without `decode`. */
  value: T;
}

/** Emitted once when the gateway reports that the stream cannot continue without a gap. */
export interface UnrecoverableEvent {
  /** The `Discontinuity` name, e.g. "OFFSET_BELOW_LOG_START" (a number if this runtime does not know it). */
  discontinuity: NonNullable<KafkaSocksError["discontinuity"]>;
  /** The gateway's explanation, for people (the error's message). */
  message: string;
  /** The error the subscription failed with (its {@link Subscription.error}; also sent to `error` listeners). */
  error: KafkaSocksError;
  /** The cursor at the time: what the consumer had received. */
  cursor: Cursor | undefined;
}

/** The events of a {@link Subscription} and their listener arguments, for {@link Subscription.on}. */
export type SubscriptionEvents<T> = {
  /**
   * Each record, in order. Without an async iterator the listeners consume the records: a
   * record counts as consumed (its credit is returned, the cursor includes it) once they have
   * run, and records that arrived before the first listener are given to it. While an
   * iterator consumes the stream, listeners only observe each record as it arrives.
   */
  record: [record: SubscriptionRecord<T>];
  /** Every change of {@link Subscription.state}, with the new state. */
  state: [state: SubscriptionState];
  /** Every error about this subscription; retryable ones leave it in "subscribing". */
  error: [error: KafkaSocksError];
  /** Once, when the subscription fails with DATA_LOSS: the stream cannot continue without a gap; the application picks a new start. */
  unrecoverable: [event: UnrecoverableEvent];
};

/**
 * One subscription to a server-streaming method, surviving reconnects: after every reconnect
 * it resubscribes from its cursor and drops any record it already has, so the records come
 * with no gap and no duplicate while Kafka retains them. Consume it with `record` listeners
 * or with `for await`; the iterator applies backpressure through credit (at most the credit
 * window is buffered), leaving the loop early unsubscribes, and a failed subscription's
 * iterator yields the records still buffered and then throws {@link Subscription.error}.
 */
export interface Subscription<T> extends AsyncIterable<SubscriptionRecord<T>> {
  /** "package.Service/Method". */
  readonly method: string;
  /** The current state; the `state` event reports every change. */
  readonly state: SubscriptionState;
  /** The Kafka topic, from `Subscribed` ("" before). */
  readonly topic: string;
  /**
   * A copy of the position after the last record handed to the consumer (listeners called, or
   * pulled from the iterator): persist it (see {@link encodeCursor}) and pass `{ cursor }` as a
   * start to resume exactly there. `undefined` until the start is resolved.
   */
  readonly cursor: Cursor | undefined;
  /** Why the subscription failed. */
  readonly error: KafkaSocksError | undefined;
  /** Records received but not yet pulled by the iterator (never more than the credit window). */
  readonly buffered: number;
  /** Adds a listener; returns a function that removes it. A listener that throws is logged, not rethrown. */
  on<K extends keyof SubscriptionEvents<T>>(event: K, fn: (...args: SubscriptionEvents<T>[K]) => void): () => void;
  /** Stops the subscription; idempotent. Buffered records are discarded and the iterator ends. */
  unsubscribe(): void;
}

/** The connection's view of a subscription: it routes frames and connection events to it. */
export interface SubscriptionEndpoint {
  connected(): void;
  disconnected(): void;
  terminate(error: KafkaSocksError | undefined): void;
  onSubscribed(m: Subscribed): void;
  onData(records: KafkaRecord[]): void;
  onCheckpoint(positions: PartitionOffset[]): void;
  onEnd(): void;
  onError(frame: ErrorFrame): void;
}

/** What a subscription needs from its connection. */
export interface SubscriptionHost {
  /** True while a session is open (Welcome received) and new subscriptions may be sent. */
  readonly ready: boolean;
  readonly clock: Clock;
  readonly logger: Logger;
  /** Sends a frame; false when it was not sent (too large for the gateway). */
  send(frame: Frame): boolean;
  /** Allocates a wire id routed to `sub` until {@link release}. */
  register(sub: SubscriptionEndpoint): number;
  release(id: number): void;
  /** The subscription is over for good: stop tracking it. */
  forget(sub: SubscriptionEndpoint): void;
  /** Backoff delay for the n-th retry. */
  retryDelay(attempt: number): number;
}

/** Wire phase of the current id. */
type Wire = "idle" | "subscribing" | "streaming" | "unsubscribing";
type Item<T> = { record: SubscriptionRecord<T> } | { checkpoint: PartitionOffset[] };
type Waiter<T> = { resolve(r: IteratorResult<SubscriptionRecord<T>, undefined>): void; reject(e: unknown): void };

const MAX_CREDIT = 100_000;
const EMPTY = new Uint8Array(0);

/** base64url (no padding) of a protobuf `Cursor`: compact and safe for localStorage or a URL. */
export function encodeCursor(cursor: Cursor): string {
  let s = "";
  for (const b of encodeCursorMessage(cursor)) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** Inverse of {@link encodeCursor}; throws KafkaSocksError INVALID_ARGUMENT on malformed input. */
export function decodeCursor(text: string): Cursor {
  try {
    if (/[^A-Za-z0-9_-]/.test(text)) throw new Error("not base64url");
    const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return decodeCursorMessage(bytes);
  } catch (cause) {
    throw new KafkaSocksError("INVALID_ARGUMENT", `malformed cursor string: ${String(cause)}`, { cause });
  }
}

function toStartPosition(start: StartAt): StartPosition {
  if (start === "latest") return { kind: "latest" };
  if (start === "earliest") return { kind: "earliest" };
  if ("timestampMs" in start) return { kind: "timestampMs", timestampMs: BigInt(Math.floor(start.timestampMs)) };
  return { kind: "cursor", cursor: typeof start.cursor === "string" ? decodeCursor(start.cursor) : start.cursor };
}

/** Cursor positions of a partition → next offset map, ordered by partition as frame.proto asks. */
function positionsOf(map: Map<number, bigint>): PartitionOffset[] {
  return [...map].sort((a, b) => a[0] - b[0]).map(([partition, nextOffset]) => ({ partition, nextOffset }));
}

/** Raises `map[partition]` to `next` (never lowers it). */
function raise(map: Map<number, bigint>, partition: number, next: bigint): void {
  const cur = map.get(partition);
  if (cur === undefined || next > cur) map.set(partition, next);
}

export class SubscriptionImpl<T> implements Subscription<T>, SubscriptionEndpoint {
  readonly method: string;
  topic = "";
  error: KafkaSocksError | undefined;
  #state: SubscriptionState = "subscribing";
  readonly #events: Emitter<SubscriptionEvents<T>>;

  #wire: Wire = "idle";
  #wireId = 0;
  /** Has a `Subscribed` ever arrived (the start is resolved)? */
  #started = false;
  readonly #start: StartPosition;
  #topicId: Uint8Array = EMPTY;
  /** Cursor of what arrived: used for dedup and for resubscribing. */
  readonly #received = new Map<number, bigint>();
  /** Cursor of what the consumer got: the public `cursor`. */
  readonly #delivered = new Map<number, bigint>();
  #hasCursor = false;

  #window: number;
  /** Records consumed (or dropped) whose credit is not yet returned. */
  #pendingReturn = 0;
  /** A resubscribe waits because the buffer holds a whole window. */
  #deferred = false;
  #iterating = false;
  #queue: Item<T>[] = [];
  #head = 0;
  #bufferedRecords = 0;
  readonly #waiters: Waiter<T>[] = [];

  #retryTimer: unknown;
  #retryAttempt = 0;
  readonly #removeAbort: () => void = () => undefined;

  readonly #host: SubscriptionHost;
  readonly #request: Uint8Array;
  readonly #decode: (payload: Uint8Array) => T;

  constructor(
    host: SubscriptionHost,
    method: string,
    request: Uint8Array,
    decode: (payload: Uint8Array) => T,
    options: SubscribeOptions,
    defaultCredit: number,
  ) {
    this.#host = host;
    this.#request = request;
    this.#decode = decode;
    this.method = method;
    this.#events = new Emitter((e) => host.logger.error("subscription listener threw", { method, error: e }));
    this.#window = Math.min(MAX_CREDIT, Math.max(1, Math.floor(options.credit ?? defaultCredit)));
    this.#start = toStartPosition(options.start ?? "latest");
    if (this.#start.kind === "cursor") this.#setCursor(this.#start.cursor);
    const signal = options.signal;
    if (signal?.aborted) {
      this.#state = "unsubscribed";
      return;
    }
    if (signal) {
      const onAbort = () => this.unsubscribe();
      signal.addEventListener("abort", onAbort, { once: true });
      this.#removeAbort = () => signal.removeEventListener("abort", onAbort);
    }
  }

  get state(): SubscriptionState {
    return this.#state;
  }

  get buffered(): number {
    return this.#bufferedRecords;
  }

  get cursor(): Cursor | undefined {
    return this.#hasCursor ? { topicId: this.#topicId.slice(), positions: positionsOf(this.#delivered) } : undefined;
  }

  get #live(): boolean {
    return this.#state === "subscribing" || this.#state === "subscribed";
  }

  on<K extends keyof SubscriptionEvents<T>>(event: K, fn: (...args: SubscriptionEvents<T>[K]) => void): () => void {
    const off = this.#events.on(event, fn);
    // Records buffered while nobody listened go to the first listener (unless an iterator consumes them).
    if (event === "record" && !this.#iterating && this.#bufferedRecords) queueMicrotask(() => this.#flushToListeners());
    return off;
  }

  #setState(state: SubscriptionState): void {
    if (this.#state === state) return;
    this.#state = state;
    this.#events.emit("state", state);
  }

  #setCursor(c: Cursor): void {
    if (c.topicId.length) this.#topicId = c.topicId.slice();
    for (const p of c.positions) {
      raise(this.#received, p.partition, p.nextOffset);
      if (!this.#delivered.has(p.partition)) this.#delivered.set(p.partition, p.nextOffset);
    }
    this.#hasCursor = true;
  }

  // ---- driven by the connection ---------------------------------------------------------

  /** The session is open: (re)send Subscribe. */
  connected(): void {
    this.#sendSubscribe();
  }

  /** The socket is gone: every wire id is void. */
  disconnected(): void {
    this.#wire = "idle";
    this.#wireId = 0;
    if (!this.#live) this.#host.forget(this);
    else this.#setState("subscribing");
  }

  /** The connection closed for good: `error` set means it failed. */
  terminate(error: KafkaSocksError | undefined): void {
    this.#wire = "idle";
    if (!this.#live) return;
    if (error) this.#fail(error);
    else this.#finish("unsubscribed", true);
  }

  #sendSubscribe(): void {
    if (!this.#live || this.#wire !== "idle" || !this.#host.ready) return;
    this.#host.clock.clearTimeout(this.#retryTimer);
    const credit = this.#window - this.#bufferedRecords;
    // Subscribe.credit = 0 means "the gateway's default", so a full buffer waits for a pull.
    this.#deferred = credit <= 0;
    if (this.#deferred) return;
    this.#pendingReturn = 0;
    this.#wireId = this.#host.register(this);
    this.#wire = "subscribing";
    const start: StartPosition = this.#started
      ? { kind: "cursor", cursor: { topicId: this.#topicId, positions: positionsOf(this.#received) } }
      : this.#start;
    const sent = this.#host.send({
      kind: "subscribe",
      subscribe: { id: this.#wireId, method: this.method, request: this.#request, start, credit },
    });
    if (!sent) {
      this.#host.release(this.#wireId);
      this.#wire = "idle";
      this.#fail(new KafkaSocksError("RESOURCE_EXHAUSTED", "Subscribe frame exceeds the gateway's max_message_bytes", { clientCode: "TOO_LARGE" }));
    }
  }

  onSubscribed(m: Subscribed): void {
    if (this.#wire !== "subscribing") return;
    if (!this.#live) {
      // unsubscribe() came while subscribing: close it now that the gateway knows the id.
      this.#wire = "unsubscribing";
      this.#host.send({ kind: "unsubscribe", unsubscribe: { id: this.#wireId } });
      return;
    }
    this.#wire = "streaming";
    this.#retryAttempt = 0;
    this.topic = m.topic;
    if (m.cursor) this.#setCursor(m.cursor);
    this.#started = true;
    // Invariant: gateway credit + buffered + pendingReturn = window.
    if (m.credit) this.#window = m.credit + this.#bufferedRecords + this.#pendingReturn;
    this.#setState("subscribed");
    this.#returnCredit();
  }

  onData(records: KafkaRecord[]): void {
    if (this.#wire !== "streaming" && this.#wire !== "subscribing") return;
    if (!this.#live) return;
    const buffering = this.#iterating || this.#events.count("record") === 0;
    for (const r of records) {
      const next = this.#received.get(r.partition);
      if (next !== undefined && r.offset < next) {
        // Duplicate (already received): drop it, but the gateway spent credit on it.
        this.#pendingReturn++;
        continue;
      }
      this.#received.set(r.partition, r.offset + 1n);
      this.#hasCursor = true;
      let value: T;
      try {
        value = this.#decode(r.payload);
      } catch (cause) {
        const error = new KafkaSocksError("INTERNAL", `record ${r.partition}/${r.offset} of ${this.method} did not decode; skipped`, {
          clientCode: "DECODE",
          cause,
        });
        this.#host.logger.warn(error.message, { error: cause });
        this.#events.emit("error", error);
        this.#pendingReturn++;
        this.#advance([{ partition: r.partition, nextOffset: r.offset + 1n }]);
        continue;
      }
      const record: SubscriptionRecord<T> = {
        value,
        partition: r.partition,
        offset: r.offset,
        timestampMs: Number(r.timestampMs),
        key: r.key,
        headers: r.headers,
        schemaId: r.schemaId,
        typeName: r.typeName,
        keySchemaId: r.keySchemaId,
      };
      if (buffering) {
        // An iterator takes it later; listeners (if any) only observe it now.
        if (this.#iterating && this.#events.count("record")) this.#events.emit("record", record);
        this.#queue.push({ record });
        this.#bufferedRecords++;
      } else {
        // Delivered to listeners: the cursor a listener reads (and saves) includes it.
        raise(this.#delivered, record.partition, record.offset + 1n);
        this.#pendingReturn++;
        this.#events.emit("record", record);
      }
      if (!this.#live) return; // a listener unsubscribed
    }
    this.#wake();
    this.#returnCredit();
  }

  onCheckpoint(positions: PartitionOffset[]): void {
    if (!this.#live || this.#wire === "idle") return;
    for (const p of positions) raise(this.#received, p.partition, p.nextOffset);
    this.#hasCursor = true;
    this.#advance(positions);
  }

  /** Moves the delivered cursor: now, or after the records still buffered for the iterator. */
  #advance(positions: PartitionOffset[], now = this.#head >= this.#queue.length): void {
    if (now) for (const p of positions) raise(this.#delivered, p.partition, p.nextOffset);
    else this.#queue.push({ checkpoint: positions });
  }

  onEnd(): void {
    this.#host.release(this.#wireId);
    this.#wire = "idle";
    this.#wireId = 0;
    if (this.#live) this.#finish("unsubscribed", false);
    else this.#host.forget(this);
  }

  onError(frame: ErrorFrame): void {
    this.#host.release(this.#wireId);
    this.#wire = "idle";
    this.#wireId = 0;
    if (!this.#live) return this.#host.forget(this);
    const error = fromErrorFrame(frame);
    const retryable = error.code === "UNAVAILABLE" || (error.code === "RESOURCE_EXHAUSTED" && error.retryAfterMs !== undefined);
    if (!retryable) return this.#fail(error);
    const delay = error.retryAfterMs ?? this.#host.retryDelay(this.#retryAttempt++);
    this.#host.logger.warn("subscription refused; retrying", { method: this.method, code: error.code, retryInMs: delay });
    this.#setState("subscribing");
    this.#events.emit("error", error);
    this.#retryTimer = this.#host.clock.setTimeout(() => this.#sendSubscribe(), delay);
  }

  #fail(error: KafkaSocksError): void {
    this.error = error;
    this.#host.logger.warn("subscription failed", { method: this.method, code: error.code, message: error.message });
    const cursor = this.cursor;
    this.#finish("failed", false);
    this.#events.emit("error", error);
    if (error.code === "DATA_LOSS") {
      this.#events.emit("unrecoverable", {
        discontinuity: error.discontinuity ?? "DISCONTINUITY_UNSPECIFIED",
        message: error.message,
        error,
        cursor,
      });
    }
  }

  /** Enters a terminal state; `discard` drops buffered records (unsubscribe) instead of letting the iterator drain them. */
  #finish(state: "unsubscribed" | "failed", discard: boolean): void {
    this.#host.clock.clearTimeout(this.#retryTimer);
    this.#removeAbort();
    if (discard) {
      this.#queue = [];
      this.#head = 0;
      this.#bufferedRecords = 0;
    }
    if (this.#wire === "idle") this.#host.forget(this);
    this.#setState(state);
    this.#wake();
  }

  // ---- consumer side --------------------------------------------------------------------

  unsubscribe(): void {
    if (!this.#live) return;
    const wire = this.#wire;
    if (wire === "streaming") {
      this.#wire = "unsubscribing";
      this.#host.send({ kind: "unsubscribe", unsubscribe: { id: this.#wireId } });
    }
    // "subscribing": Unsubscribe goes out when Subscribed arrives (see onSubscribed); the id stays
    // reserved until End/Error. "idle": nothing on the wire.
    this.#finish("unsubscribed", true);
  }

  #returnCredit(): void {
    if (this.#wire === "streaming" && this.#pendingReturn >= Math.max(1, this.#window >> 1)) {
      this.#host.send({ kind: "credit", credit: { subscriptionId: this.#wireId, records: this.#pendingReturn } });
      this.#pendingReturn = 0;
    }
  }

  /** Takes the next buffered record, applying checkpoints queued before it. */
  #take(): SubscriptionRecord<T> | undefined {
    while (this.#head < this.#queue.length) {
      const item = this.#queue[this.#head++] as Item<T>;
      if ("checkpoint" in item) {
        this.#advance(item.checkpoint, true);
        continue;
      }
      if (this.#head > 1024 && this.#head * 2 > this.#queue.length) {
        this.#queue = this.#queue.slice(this.#head);
        this.#head = 0;
      }
      this.#bufferedRecords--;
      raise(this.#delivered, item.record.partition, item.record.offset + 1n);
      // Checkpoints right behind this record are now reached too.
      for (let next = this.#queue[this.#head]; next && "checkpoint" in next; next = this.#queue[++this.#head]) {
        this.#advance(next.checkpoint, true);
      }
      this.#pendingReturn++;
      this.#returnCredit();
      if (this.#deferred) this.#sendSubscribe();
      return item.record;
    }
    // Only checkpoints were left: the queue is empty now.
    this.#queue = [];
    this.#head = 0;
    return undefined;
  }

  #wake(): void {
    while (this.#waiters.length) {
      const record = this.#take();
      const w = this.#waiters[0] as Waiter<T>;
      if (record) w.resolve({ done: false, value: record });
      else if (this.#state === "failed") w.reject(this.error);
      else if (this.#state === "unsubscribed") w.resolve({ done: true, value: undefined });
      else return;
      this.#waiters.shift();
    }
  }

  #flushToListeners(): void {
    if (this.#iterating || !this.#events.count("record")) return;
    for (let r = this.#take(); r; r = this.#take()) this.#events.emit("record", r);
  }

  [Symbol.asyncIterator](): AsyncIterator<SubscriptionRecord<T>, undefined> {
    this.#iterating = true;
    return {
      next: () =>
        new Promise((resolve, reject) => {
          this.#waiters.push({ resolve, reject });
          this.#wake();
        }),
      return: () => {
        this.unsubscribe();
        return Promise.resolve({ done: true, value: undefined });
      },
    };
  }
}
