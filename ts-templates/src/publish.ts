/**
 * Publishes: one `Publish` frame answered by a `Receipt` or an `Error`.
 *
 * Every publish carries an idempotency key (16 random bytes unless the caller gives one).
 * Publishes made while the connection is down wait in a bounded queue; on reconnect every
 * unanswered publish is sent again, in order, with the SAME key (and a new frame id), so the
 * gateway's dedup window answers a repeat with the first receipt (`duplicate: true`).
 * Rate limiting (`Error{RESOURCE_EXHAUSTED, retry_after_ms}`) is retried after that delay, a
 * bounded number of times; other errors reject. Each call has a deadline covering queueing,
 * retries and the wait for the receipt.
 *
 * Order: frames go out in call order, and nothing is sent ahead of an earlier publish that
 * waits to be sent again (after a reconnect, or while it waits out a refusal's
 * `retry_after_ms`). The gateway keeps one connection's frame order (docs/protocol.md §5)
 * except for a publish it refused, which lands after the publishes sent in between; so the
 * client stays within Welcome's `max_publishes_per_second` (a token bucket of half the
 * gateway's burst, refilled at its rate, restarted with every session) instead of
 * pipelining into refusals.
 */
import type { Clock } from "./backoff.js";
import { KafkaSocksError, fromErrorFrame } from "./errors.js";
import type { ErrorFrame, Frame, Limits, Receipt as ReceiptFrame } from "./frames.js";
import type { Logger } from "./logger.js";

/**
 * Where the record landed in Kafka: what a publish resolves to, once Kafka has acknowledged
 * the record (the gateway produces with `acks=all`).
 */
export interface Receipt {
  /** The Kafka topic the method is bound to. */
  topic: string;
  /** The partition the record went to (a keyed record: the one its key maps to). */
  partition: number;
  /** The record's offset in that partition. */
  offset: bigint;
  /** Kafka record timestamp, Unix ms. */
  timestampMs: number;
  /** True when the gateway answered from its dedup window (the record was produced once, earlier). */
  duplicate: boolean;
}

/**
 * Options of a publish: the second argument of a publish method of a typed client
 * ({@link createClient}), or the third of {@link Connection.publish}.
 */
export interface PublishOptions {
  /** Deadline for the whole publish (queueing, retries, receipt), ms. Default: the connection's `publishTimeoutMs` (10000). */
  timeoutMs?: number;
  /**
   * Identifies this publish for the gateway's dedup window (default 10 minutes): a repeat with
   * the same key, method and principal (anonymous: from the same connection object) is
   * answered with the first publish's receipt (`duplicate: true`) instead of producing again.
   * The runtime resends with the same key after a reconnect; pass your own to deduplicate
   * across page loads. At most 64 bytes (a string is UTF-8 encoded; longer rejects with
   * INVALID_ARGUMENT). Default: 16 random bytes (crypto.getRandomValues).
   */
  idempotencyKey?: Uint8Array | string;
  /** Aborting rejects the promise with CANCELLED. A publish already sent may still be produced. */
  signal?: AbortSignal;
  /**
   * W3C trace context of the span this publish belongs to, e.g.
   * "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" (what an OpenTelemetry
   * propagator injects as `traceparent`). The record gets it as its Kafka header `traceparent`
   * (a gateway exporting traces: its own span's, a child of this one). An invalid value is
   * ignored by the gateway, never an error. Resent as it is after a reconnect.
   */
  traceparent?: string;
  /** W3C `tracestate` belonging to `traceparent` (at most 512 characters): the record's `tracestate` header. */
  tracestate?: string;
}

/** What the publisher needs from its connection. */
export interface PublishHost {
  /** True while a session is open and new publishes may be sent. */
  readonly ready: boolean;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly limits: Limits | undefined;
  /** Sends a frame; false when it was not sent (too large for the gateway). */
  send(frame: Frame): boolean;
  retryDelay(attempt: number): number;
}

export interface PublisherOptions {
  timeoutMs: number;
  maxQueued: number;
  maxRetries: number;
}

interface Pending {
  method: string;
  payload: Uint8Array;
  key: Uint8Array;
  traceparent: string;
  tracestate: string;
  /** Frame id while in flight, 0n when waiting to be sent. */
  wireId: bigint;
  /** Rate-limit retries used. */
  tries: number;
  /** Waiting out retry_after_ms: not sendable yet. */
  holding: boolean;
  settle(error: KafkaSocksError | undefined, receipt?: Receipt): void;
  /** Waits `ms` before the publish may be sent again. */
  hold(ms: number): void;
}

const MAX_KEY_BYTES = 64;

/** 16 random bytes. */
export function randomIdempotencyKey(): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(16));
}

/** The publishes of one connection: queueing, pacing, resending and settling (internal). */
export class Publisher {
  /** Unanswered publishes, in call order. */
  readonly #pending = new Set<Pending>();
  readonly #inflight = new Map<bigint, Pending>();
  #nextId = 1n;
  #closedWith: KafkaSocksError | undefined;
  /** Publish rate tokens left this session, as of `#at` (clock ms; 0: the session is new). */
  #tokens = 0;
  #at = 0;
  /** Pumps again once a rate token is due. */
  #paceTimer: unknown;

  readonly #host: PublishHost;
  readonly #options: PublisherOptions;

  constructor(host: PublishHost, options: PublisherOptions) {
    this.#host = host;
    this.#options = options;
  }

  /** Publishes awaiting their answer on the current socket. */
  get inflightCount(): number {
    return this.#inflight.size;
  }

  /** Unanswered publishes not currently on the wire. */
  get queuedCount(): number {
    return this.#pending.size - this.#inflight.size;
  }

  publish(method: string, payload: Uint8Array, options: PublishOptions = {}): Promise<Receipt> {
    return new Promise<Receipt>((resolve, reject) => {
      const fail = (code: "CANCELLED" | "INVALID_ARGUMENT" | "RESOURCE_EXHAUSTED", message: string, init = {}) =>
        reject(new KafkaSocksError(code, message, init));
      if (this.#closedWith) return reject(this.#closedWith);
      if (options.signal?.aborted) return fail("CANCELLED", "publish aborted", { clientCode: "ABORTED", cause: options.signal.reason });
      const key =
        typeof options.idempotencyKey === "string"
          ? new TextEncoder().encode(options.idempotencyKey)
          : (options.idempotencyKey ?? randomIdempotencyKey());
      if (key.length > MAX_KEY_BYTES) return fail("INVALID_ARGUMENT", `idempotency key is ${key.length} bytes; at most ${MAX_KEY_BYTES}`);
      if (this.queuedCount >= this.#options.maxQueued) {
        return fail("RESOURCE_EXHAUSTED", `publish queue full: ${this.#options.maxQueued} publishes already wait for the connection (maxOfflinePublishes)`, {
          clientCode: "QUEUE_FULL",
        });
      }
      const { clock } = this.#host;
      const timeoutMs = options.timeoutMs ?? this.#options.timeoutMs;
      const timer = clock.setTimeout(
        () => p.settle(new KafkaSocksError("DEADLINE_EXCEEDED", `publish to ${method} got no answer within ${timeoutMs} ms`, { clientCode: "TIMEOUT" })),
        timeoutMs,
      );
      let retryTimer: unknown;
      const onAbort = () => p.settle(new KafkaSocksError("CANCELLED", "publish aborted", { clientCode: "ABORTED", cause: options.signal?.reason }));
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const p: Pending = {
        method,
        payload,
        key,
        traceparent: options.traceparent ?? "",
        tracestate: options.tracestate ?? "",
        wireId: 0n,
        tries: 0,
        holding: false,
        settle: (error, receipt) => {
          if (!this.#pending.delete(p)) return;
          this.#inflight.delete(p.wireId);
          clock.clearTimeout(timer);
          clock.clearTimeout(retryTimer);
          options.signal?.removeEventListener("abort", onAbort);
          if (error) reject(error);
          else resolve(receipt as Receipt);
          this.pump();
        },
        hold: (ms) => {
          p.holding = true;
          retryTimer = clock.setTimeout(() => {
            p.holding = false;
            this.pump();
          }, ms);
        },
      };
      this.#pending.add(p);
      this.pump();
    });
  }

  /**
   * Sends unsent publishes in call order, within the gateway's in-flight and rate limits;
   * stops at a publish held by a refusal, so that none overtakes it.
   */
  pump(): void {
    if (!this.#host.ready) return;
    const limits = this.#host.limits;
    const max = limits?.maxInflightPublishes || Infinity;
    const rate = limits?.maxPublishesPerSecond;
    for (const p of this.#pending) {
      if (this.#inflight.size >= max || p.holding) return;
      if (p.wireId) continue;
      if (rate && !this.#take(rate)) return;
      const id = this.#nextId++;
      const sent = this.#host.send({
        kind: "publish",
        publish: { id, method: p.method, payload: p.payload, idempotencyKey: p.key, traceparent: p.traceparent, tracestate: p.tracestate },
      });
      if (!sent) {
        p.settle(
          new KafkaSocksError("RESOURCE_EXHAUSTED", `publish to ${p.method} exceeds the gateway's max_message_bytes`, { clientCode: "TOO_LARGE" }),
        );
        continue;
      }
      p.wireId = id;
      this.#inflight.set(id, p);
    }
  }

  /**
   * Takes a token of `rate` per second, false when none is left (the pump then runs again
   * once one is due). Half the gateway's burst: frames bunched on their way to the gateway
   * (up to half a second's worth) still find tokens there.
   */
  #take(rate: number): boolean {
    const { clock } = this.#host;
    const now = clock.now();
    const burst = Math.max(1, rate / 2);
    this.#tokens = this.#at ? Math.min(burst, this.#tokens + ((now - this.#at) * rate) / 1000) : burst;
    this.#at = now;
    if (this.#tokens >= 1) {
      this.#tokens--;
      return true;
    }
    this.#paceTimer ??= clock.setTimeout(
      () => {
        this.#paceTimer = undefined;
        this.pump();
      },
      1000 / rate,
    );
    return false;
  }

  onReceipt(r: ReceiptFrame): void {
    const p = this.#inflight.get(r.id);
    if (!p) return; // timed out or aborted meanwhile
    p.settle(undefined, {
      topic: r.topic,
      partition: r.partition,
      offset: r.offset,
      timestampMs: Number(r.timestampMs),
      duplicate: r.duplicate,
    });
  }

  /** `draining`: the gateway announced GoAway, so UNAVAILABLE means "ask the next node". */
  onError(e: ErrorFrame, draining: boolean): void {
    const p = this.#inflight.get(e.publishId);
    if (!p) return;
    this.#inflight.delete(p.wireId);
    p.wireId = 0n;
    const error = fromErrorFrame(e);
    const retry =
      p.tries < this.#options.maxRetries &&
      ((error.code === "RESOURCE_EXHAUSTED" && error.retryAfterMs !== undefined) || (error.code === "UNAVAILABLE" && draining));
    if (!retry) return p.settle(error);
    p.tries++;
    if (error.code === "RESOURCE_EXHAUSTED") {
      const delay = error.retryAfterMs ?? this.#host.retryDelay(p.tries);
      this.#host.logger.info("publish rate-limited", { method: p.method, retryInMs: delay });
      p.hold(delay);
    }
    // UNAVAILABLE while draining: it waits for the next connection.
  }

  /** The socket is gone: in-flight publishes wait to be sent again (same key); the rate bucket starts over. */
  disconnected(): void {
    for (const p of this.#inflight.values()) p.wireId = 0n;
    this.#inflight.clear();
    this.#at = 0; // the next session has a bucket of its own
    this.#host.clock.clearTimeout(this.#paceTimer);
    this.#paceTimer = undefined;
  }

  /** Rejects everything pending, and every later publish, with `error`. */
  close(error: KafkaSocksError): void {
    this.#closedWith = error;
    this.disconnected();
    for (const p of [...this.#pending]) p.settle(error);
  }
}
