/**
 * The runtime's one error class. `code` is always a gRPC status name (the protocol's `Code`
 * enum), whether the gateway sent it in an `Error` frame or the client detected the problem
 * itself; `clientCode` then says which client-side condition it was.
 *
 * | clientCode     | code                | when                                                          |
 * |----------------|---------------------|---------------------------------------------------------------|
 * | `TIMEOUT`      | `DEADLINE_EXCEEDED` | a publish got no answer within its timeout                    |
 * | `QUEUE_FULL`   | `RESOURCE_EXHAUSTED`| `maxOfflinePublishes` publishes are already waiting           |
 * | `TOO_LARGE`    | `RESOURCE_EXHAUSTED`| a frame exceeds the gateway's `max_message_bytes`             |
 * | `CLOSED`       | `CANCELLED`         | `connection.close()` was called (pending work is cancelled)   |
 * | `ABORTED`      | `CANCELLED`         | the caller's AbortSignal fired                                |
 * | `FATAL_CLOSE`  | from the close code | the gateway closed with a code that must not be retried       |
 * | `NO_WEBSOCKET` | `FAILED_PRECONDITION`| no WebSocket implementation was found or injected            |
 * | `DECODE`       | `INTERNAL`          | a record payload did not decode with the method's codec       |
 *
 * Fatal close codes map to: 1002/1003 `INTERNAL` (a client bug), 1009 `RESOURCE_EXHAUSTED`,
 * 4000 `FAILED_PRECONDITION`, 4001/4002 `UNAUTHENTICATED` (unless the gateway sent an `Error`
 * frame just before closing, whose code then wins).
 */
import { Code, Discontinuity, enumName, type CodeName, type DiscontinuityName, type ErrorFrame } from "./frames.js";

export type { CodeName, DiscontinuityName };

/** Client-side conditions (see the table above). */
export type ClientCode =
  | "TIMEOUT"
  | "QUEUE_FULL"
  | "TOO_LARGE"
  | "CLOSED"
  | "ABORTED"
  | "FATAL_CLOSE"
  | "NO_WEBSOCKET"
  | "DECODE";

/** The optional parts of a {@link KafkaSocksError}: the constructor's third argument. */
export interface KafkaSocksErrorInit {
  /** Becomes {@link KafkaSocksError.clientCode}. */
  clientCode?: ClientCode;
  /** Becomes {@link KafkaSocksError.discontinuity}. */
  discontinuity?: DiscontinuityName | number;
  /** Becomes {@link KafkaSocksError.retryAfterMs}. */
  retryAfterMs?: number;
  /** Becomes {@link KafkaSocksError.closeCode}. */
  closeCode?: number;
  /** The underlying error, set as the standard `Error.cause`. */
  cause?: unknown;
}

/**
 * The runtime's error: what publishes reject with, what subscriptions and connections fail
 * with, and what their `error` events carry. A gRPC status name in
 * {@link KafkaSocksError.code}, plus {@link KafkaSocksError.clientCode} when the client itself
 * detected the problem. `name` is "KafkaSocksError".
 */
export class KafkaSocksError extends Error {
  /** gRPC status name, e.g. "UNAVAILABLE": stable, switch on it. */
  readonly code: CodeName;
  /** Set when the client itself detected the problem (see {@link ClientCode}); undefined for errors the gateway reported in an Error frame. */
  readonly clientCode: ClientCode | undefined;
  /** With `DATA_LOSS`: why the stream cannot continue (a number when this runtime does not know the value). */
  readonly discontinuity: DiscontinuityName | number | undefined;
  /** From the gateway (`Error.retry_after_ms`), in milliseconds: retrying sooner than this is pointless. Undefined when the gateway sent none. */
  readonly retryAfterMs: number | undefined;
  /** The WebSocket close code (e.g. 4001), when the error comes from a close. */
  readonly closeCode: number | undefined;

  /** `message` is for people; `init` sets the optional properties. */
  constructor(code: CodeName, message: string, init: KafkaSocksErrorInit = {}) {
    super(message, init.cause === undefined ? undefined : { cause: init.cause });
    this.name = "KafkaSocksError";
    this.code = code;
    this.clientCode = init.clientCode;
    this.discontinuity = init.discontinuity;
    this.retryAfterMs = init.retryAfterMs;
    this.closeCode = init.closeCode;
  }
}

/** The name of a wire `Code`; codes this runtime does not know become `UNKNOWN`. */
export function codeName(code: number): CodeName {
  const name = enumName(Code, code);
  return typeof name === "number" ? "UNKNOWN" : name;
}

/** Builds the error for an `Error` frame from the gateway. */
export function fromErrorFrame(frame: ErrorFrame, closeCode?: number): KafkaSocksError {
  const init: KafkaSocksErrorInit = {};
  if (frame.discontinuity) init.discontinuity = enumName(Discontinuity, frame.discontinuity);
  if (frame.retryAfterMs) init.retryAfterMs = frame.retryAfterMs;
  if (closeCode !== undefined) init.closeCode = closeCode;
  const name = codeName(frame.code);
  return new KafkaSocksError(name, frame.message || name, init);
}
