/**
 * The kafkasocks.v1 frames (proto/kafkasocks/v1/frame.proto), hand-written: TypeScript types
 * for every message, a schema table per message (field number, name, type, as in frame.proto)
 * and one generic encoder/decoder over those tables. Proto3 rules: absent scalars decode as
 * zero/empty, absent sub-messages stay absent, unknown fields are skipped, and enum values
 * unknown to this runtime are kept as plain numbers.
 */
import { Reader, Writer } from "./wire.js";

/** `Code` enum: gRPC status codes. */
export const Code = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
/**
 * The name of a gRPC status code, as the protocol's `Code` enum spells it: "OK", "CANCELLED",
 * "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
 * "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
 * "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS" or "UNAUTHENTICATED".
 */
export type CodeName = keyof typeof Code;

/** `Discontinuity` enum: why a cursor cannot be honoured (with DATA_LOSS). */
export const Discontinuity = {
  DISCONTINUITY_UNSPECIFIED: 0,
  OFFSET_BELOW_LOG_START: 1,
  TOPIC_RECREATED: 2,
  PARTITIONS_CHANGED: 3,
  OFFSET_BEYOND_END: 4,
  TOPIC_DELETED: 5,
} as const;
/**
 * The name of a `Discontinuity` value, why a stream cannot continue from a cursor (sent with
 * `DATA_LOSS`): "OFFSET_BELOW_LOG_START" (the records are gone: retention or deletion),
 * "TOPIC_RECREATED" (the topic id changed), "PARTITIONS_CHANGED" (the cursor does not list
 * exactly the topic's partitions), "OFFSET_BEYOND_END" (an offset above the high watermark),
 * "TOPIC_DELETED", or "DISCONTINUITY_UNSPECIFIED" (the gateway named no reason).
 */
export type DiscontinuityName = keyof typeof Discontinuity;

/** The name of an enum value, or the number itself when this runtime does not know it. */
export function enumName<K extends string>(values: { readonly [P in K]: number }, value: number): K | number {
  for (const k in values) if (values[k] === value) return k;
  return value;
}

export interface Hello {
  protocolVersion: number;
  token: string;
  client: string;
  /** Random, once per connection object: scopes an anonymous client's idempotency keys. */
  instanceId: string;
}
/**
 * The limits a gateway announces in {@link Welcome} (`Limits` in frame.proto; protocol.md §7
 * has the defaults). The runtime keeps to the publish limits itself and refuses frames larger
 * than `maxMessageBytes` locally.
 */
export interface Limits {
  /** Largest WebSocket message, in bytes, the gateway accepts from the client (a larger one closes the connection with 1009). */
  maxMessageBytes: number;
  /** Most subscriptions open at once on one connection. */
  maxSubscriptions: number;
  /** Sustained publishes per second per connection (a token bucket). */
  maxPublishesPerSecond: number;
  /** Most publishes awaiting their receipt at once on one connection. */
  maxInflightPublishes: number;
  /** Credit, in records, that a subscription gets when its Subscribe asks for none. */
  defaultCredit: number;
  /** Most credit, in records, that a subscription may hold. */
  maxCredit: number;
}
/** The gateway's answer to Hello: the session is open (`Welcome` in frame.proto). See {@link Connection.welcome}. */
export interface Welcome {
  /** Random id of this session, for logs and support. */
  sessionId: string;
  /** Identifies the gateway process; differs between nodes. */
  serverId: string;
  /** The limits the client must respect; absent if the gateway sent none. */
  limits?: Limits;
  /** Interval of the gateway's Pings, in milliseconds (0: not stated; the runtime then assumes {@link ConnectOptions.heartbeat}'s `defaultIntervalMs`, default 15000). */
  heartbeatIntervalMs: number;
  /** Unix ms on the gateway's clock; 0 when the token does not expire. */
  tokenExpiresAtMs: bigint;
  /** The gateway's clock when it sent this (Unix ms); 0 from older gateways. */
  serverTimeMs: bigint;
}
/** One partition's position in a {@link Cursor}. */
export interface PartitionOffset {
  /** The Kafka partition number. */
  partition: number;
  /** Offset of the first record of the partition not yet received (last offset + 1). */
  nextOffset: bigint;
}
/**
 * A resume position (`Cursor` in frame.proto): the topic's id and, per partition, the offset
 * of the first record not yet received. Treat it as opaque: persist it ({@link encodeCursor})
 * and pass it back as a start ({@link StartAt}) to continue with no gap and no duplicate.
 */
export interface Cursor {
  /** Kafka topic id (16 bytes), empty when the gateway cannot learn topic ids. */
  topicId: Uint8Array;
  /** One entry per partition of the topic, ordered by partition. */
  positions: PartitionOffset[];
}
/** `StartPosition` oneof; `{ kind: undefined }` = none set (latest). */
export type StartPosition =
  | { kind: "latest" }
  | { kind: "earliest" }
  | { kind: "timestampMs"; timestampMs: bigint }
  | { kind: "cursor"; cursor: Cursor }
  | { kind: undefined };
export interface Subscribe {
  id: number;
  method: string;
  request: Uint8Array;
  start?: StartPosition;
  credit: number;
}
export interface Subscribed {
  id: number;
  topic: string;
  cursor?: Cursor;
  credit: number;
}
/** A Kafka record header, as Kafka holds it (e.g. `traceparent`). */
export interface Header {
  /** The header name. Names may repeat within a record. */
  key: string;
  /** The header value as bytes (empty for a header without a value); decode text with `TextDecoder`. */
  value: Uint8Array;
}
/** `Record` in frame.proto (renamed: `Record` is TypeScript's built-in utility type). */
export interface KafkaRecord {
  partition: number;
  offset: bigint;
  timestampMs: bigint;
  key: Uint8Array;
  headers: Header[];
  payload: Uint8Array;
  schemaId: number;
  typeName: string;
  keySchemaId: number;
}
export interface Data {
  subscriptionId: number;
  records: KafkaRecord[];
}
export interface Checkpoint {
  subscriptionId: number;
  positions: PartitionOffset[];
}
export interface Unsubscribe {
  id: number;
}
export interface End {
  id: number;
}
export interface Publish {
  id: bigint;
  method: string;
  payload: Uint8Array;
  idempotencyKey: Uint8Array;
  /** W3C `traceparent` of the publisher, "" for none: the record's `traceparent` header. */
  traceparent: string;
  /** W3C `tracestate` belonging to `traceparent`, "" for none. */
  tracestate: string;
}
export interface Receipt {
  id: bigint;
  topic: string;
  partition: number;
  offset: bigint;
  timestampMs: bigint;
  duplicate: boolean;
}
export interface ErrorFrame {
  /** A {@link Code} value; unknown values are kept as numbers. */
  code: number;
  message: string;
  subscriptionId: number;
  publishId: bigint;
  /** A {@link Discontinuity} value; unknown values are kept as numbers. */
  discontinuity: number;
  retryAfterMs: number;
}
export interface Ping {
  nonce: bigint;
}
export interface Pong {
  nonce: bigint;
}
export interface TokenRefresh {
  token: string;
}
export interface TokenAccepted {
  tokenExpiresAtMs: bigint;
  /** As in Welcome. */
  serverTimeMs: bigint;
}
export interface Credit {
  subscriptionId: number;
  records: number;
}
export interface GoAway {
  reason: string;
  reconnectAfterMs: number;
}

/** One WebSocket message. `{ kind: undefined }`: no member this runtime knows was set. */
export type Frame =
  | { kind: "hello"; hello: Hello }
  | { kind: "welcome"; welcome: Welcome }
  | { kind: "subscribe"; subscribe: Subscribe }
  | { kind: "subscribed"; subscribed: Subscribed }
  | { kind: "data"; data: Data }
  | { kind: "checkpoint"; checkpoint: Checkpoint }
  | { kind: "unsubscribe"; unsubscribe: Unsubscribe }
  | { kind: "end"; end: End }
  | { kind: "publish"; publish: Publish }
  | { kind: "receipt"; receipt: Receipt }
  | { kind: "error"; error: ErrorFrame }
  | { kind: "ping"; ping: Ping }
  | { kind: "pong"; pong: Pong }
  | { kind: "tokenRefresh"; tokenRefresh: TokenRefresh }
  | { kind: "tokenAccepted"; tokenAccepted: TokenAccepted }
  | { kind: "credit"; credit: Credit }
  | { kind: "goAway"; goAway: GoAway }
  | { kind: undefined };

export type FrameKind = Exclude<Frame["kind"], undefined>;
/** The message type of one frame kind, e.g. `FrameMember<"data">` = `Data`. */
export type FrameMember<K extends FrameKind> = Extract<Frame, { kind: K }> extends { [P in K]: infer M } ? M : never;

// ---- schemas ----------------------------------------------------------------------------
//
// Each message is described once, field by field, as in frame.proto; one generic encoder and
// one generic decoder walk these tables. Scalar field types:

const U32 = 0; // uint32 (number)
const I32 = 1; // int32 and enums (number; negative values are 10-byte varints)
const U64 = 2; // uint64 (bigint)
const I64 = 3; // int64 (bigint)
const BOOL = 4;
const STR = 5; // string
const BYTES = 6;
type Scalar = typeof U32 | typeof I32 | typeof U64 | typeof I64 | typeof BOOL | typeof STR | typeof BYTES;

/** A message: its fields, or a oneof whose members are the fields (`{ kind, [kind]: value }`). */
interface Schema {
  readonly fields: readonly Field[];
  readonly oneof?: true;
}
/** [field number, property name, type, repeated]. */
type Field = readonly [no: number, name: string, type: Scalar | Schema, repeated?: 1];

const EMPTY: Schema = { fields: [] };
const POSITION: Schema = { fields: [[1, "partition", I32], [2, "nextOffset", I64]] };
const CURSOR: Schema = { fields: [[1, "topicId", BYTES], [2, "positions", POSITION, 1]] };
const SUB_ID: Field = [1, "subscriptionId", U32];
const ID_ONLY: Schema = { fields: [[1, "id", U32]] };
const NONCE: Schema = { fields: [[1, "nonce", U64]] };

/** Frame.kind, in field-number order (field i + 1). */
const FRAME: Schema = {
  oneof: true,
  fields: [
    ["hello", { fields: [[1, "protocolVersion", U32], [2, "token", STR], [3, "client", STR], [4, "instanceId", STR]] }],
    [
      "welcome",
      {
        fields: [
          [1, "sessionId", STR],
          [2, "serverId", STR],
          [3, "limits", { fields: ["maxMessageBytes", "maxSubscriptions", "maxPublishesPerSecond", "maxInflightPublishes", "defaultCredit", "maxCredit"].map((name, i): Field => [i + 1, name, U32]) }],
          [4, "heartbeatIntervalMs", U32],
          [5, "tokenExpiresAtMs", I64],
          [6, "serverTimeMs", I64],
        ],
      },
    ],
    [
      "subscribe",
      {
        fields: [
          [1, "id", U32],
          [2, "method", STR],
          [3, "request", BYTES],
          [4, "start", { oneof: true, fields: [[1, "latest", EMPTY], [2, "earliest", EMPTY], [3, "timestampMs", I64], [4, "cursor", CURSOR]] }],
          [5, "credit", U32],
        ],
      },
    ],
    ["subscribed", { fields: [[1, "id", U32], [2, "topic", STR], [3, "cursor", CURSOR], [4, "credit", U32]] }],
    [
      "data",
      {
        fields: [
          SUB_ID,
          [
            2,
            "records",
            {
              fields: [
                [1, "partition", I32],
                [2, "offset", I64],
                [3, "timestampMs", I64],
                [4, "key", BYTES],
                [5, "headers", { fields: [[1, "key", STR], [2, "value", BYTES]] }, 1],
                [6, "payload", BYTES],
                [7, "schemaId", U32],
                [8, "typeName", STR],
                [10, "keySchemaId", U32],
              ],
            },
            1,
          ],
        ],
      },
    ],
    ["checkpoint", { fields: [SUB_ID, [2, "positions", POSITION, 1]] }],
    ["unsubscribe", ID_ONLY],
    ["end", ID_ONLY],
    ["publish", { fields: [[1, "id", U64], [2, "method", STR], [3, "payload", BYTES], [4, "idempotencyKey", BYTES], [5, "traceparent", STR], [6, "tracestate", STR]] }],
    [
      "receipt",
      {
        fields: [
          [1, "id", U64],
          [2, "topic", STR],
          [3, "partition", I32],
          [4, "offset", I64],
          [5, "timestampMs", I64],
          [6, "duplicate", BOOL],
        ],
      },
    ],
    [
      "error",
      {
        fields: [
          [1, "code", I32],
          [2, "message", STR],
          [3, "subscriptionId", U32],
          [4, "publishId", U64],
          [5, "discontinuity", I32],
          [6, "retryAfterMs", U32],
        ],
      },
    ],
    ["ping", NONCE],
    ["pong", NONCE],
    ["tokenRefresh", { fields: [[1, "token", STR]] }],
    ["tokenAccepted", { fields: [[1, "tokenExpiresAtMs", I64], [2, "serverTimeMs", I64]] }],
    ["credit", { fields: [SUB_ID, [2, "records", U32]] }],
    ["goAway", { fields: [[1, "reason", STR], [2, "reconnectAfterMs", U32]] }],
  ].map(([name, schema], i) => [i + 1, name, schema] as Field),
};

// ---- generic codec ----------------------------------------------------------------------

type Obj = { [key: string]: unknown };

const wireTypeOf = (type: Scalar | Schema): number => (typeof type === "object" || type >= STR ? 2 : 0);

function writeValue(w: Writer, no: number, type: Scalar | Schema, v: unknown, force: boolean): void {
  if (typeof type === "object") {
    if (v !== undefined) {
      w.tag(no, 2).fork();
      writeMessage(type, v as Obj, w);
      w.join();
    }
    return;
  }
  // Proto3 implicit presence: defaults are not written, except where presence matters (oneof).
  if (!force && (!v || (v instanceof Uint8Array && !v.length))) return;
  w.tag(no, wireTypeOf(type) as 0 | 2);
  if (type === U32) w.uint32(v as number);
  else if (type === I32) w.int32(v as number);
  else if (type === U64 || type === I64) w.uint64(v as bigint);
  else if (type === BOOL) w.bool(v as boolean);
  else if (type === STR) w.string(v as string);
  else w.bytes(v as Uint8Array);
}

function writeMessage(s: Schema, m: Obj, w: Writer): void {
  for (const [no, name, type, repeated] of s.fields) {
    if (s.oneof) {
      if (m["kind"] === name) writeValue(w, no, type, m[name] ?? {}, true);
    } else if (repeated) {
      for (const item of m[name] as unknown[]) writeValue(w, no, type, item, true);
    } else writeValue(w, no, type, m[name], false);
  }
}

function readValue(r: Reader, type: Scalar | Schema): unknown {
  if (typeof type === "object") return readMessage(type, r.sub());
  return type === U32
    ? r.uint32()
    : type === I32
      ? r.int32()
      : type === U64
        ? r.uint64()
        : type === I64
          ? r.int64()
          : type === BOOL
            ? r.bool()
            : type === STR
              ? r.string()
              : r.bytes();
}

const DEFAULTS = [0, 0, 0n, 0n, false, ""];

function readMessage(s: Schema, r: Reader): Obj {
  let m: Obj = s.oneof ? { kind: undefined } : {};
  if (!s.oneof) {
    for (const [, name, type, repeated] of s.fields) {
      if (repeated) m[name] = [];
      else if (typeof type !== "object") m[name] = type === BYTES ? new Uint8Array(0) : DEFAULTS[type];
    }
  }
  while (!r.eof()) {
    const t = r.tag();
    const f = s.fields.find((f) => f[0] === t >>> 3);
    if (!f || (t & 7) !== wireTypeOf(f[2])) {
      r.skip(t); // unknown field, or a known one with an unexpected wire type
      continue;
    }
    const [, name, type, repeated] = f;
    const v = readValue(r, type);
    if (s.oneof) m = type === EMPTY ? { kind: name } : { kind: name, [name]: v }; // the last member wins
    else if (repeated) (m[name] as unknown[]).push(v);
    else m[name] = v;
  }
  return m;
}

/** Encodes a frame; `{ kind: undefined }` encodes as an empty Frame. */
export function encodeFrame(frame: Frame): Uint8Array<ArrayBuffer> {
  const w = new Writer();
  writeMessage(FRAME, frame as Obj, w);
  return w.finish();
}

/** Decodes one frame; throws WireError on malformed bytes. */
export function decodeFrame(bytes: Uint8Array): Frame {
  return readMessage(FRAME, new Reader(bytes)) as Frame;
}

/** Protobuf bytes of a Cursor message. */
export function encodeCursorMessage(cursor: Cursor): Uint8Array<ArrayBuffer> {
  const w = new Writer();
  writeMessage(CURSOR, cursor as unknown as Obj, w);
  return w.finish();
}

export function decodeCursorMessage(bytes: Uint8Array): Cursor {
  return readMessage(CURSOR, new Reader(bytes)) as unknown as Cursor;
}
