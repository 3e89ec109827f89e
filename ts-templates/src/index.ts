/**
 * @kafkasocks/runtime: the browser client of the KafkaSocks gateway (protocol kafkasocks.v1).
 * This is the main entry point; `@kafkasocks/runtime/json` (./json.ts) has the proto3 JSON
 * mapping. Everything not exported from the two is internal.
 *
 * @module
 */
export { CODEGEN_INTERFACE, RUNTIME_VERSION, PROTOCOL } from "./version.js";

export {
  connect,
  type Connection,
  type ConnectOptions,
  type ConnectionEvents,
  type ConnectionState,
  type EventSourceLike,
  type TokenSource,
  type WebSocketConstructor,
  type WebSocketLike,
} from "./connection.js";

// The types of `Connection.welcome` (the session the gateway opened, with its limits).
export type { Limits, Welcome } from "./frames.js";

export {
  decodeCursor,
  encodeCursor,
  type Cursor,
  type Header,
  type PartitionOffset,
  type RecordMetadata,
  type StartAt,
  type SubscribeOptions,
  type Subscription,
  type SubscriptionEvents,
  type SubscriptionRecord,
  type SubscriptionState,
  type UnrecoverableEvent,
} from "./subscription.js";

export type { PublishOptions, Receipt } from "./publish.js";

export {
  binarySerializer,
  createClient,
  defineService,
  type AnyMethodDescriptor,
  type Client,
  type ClientMethod,
  type ClientOptions,
  type Codec,
  type MessageCodec,
  type MethodDescriptor,
  type MethodKind,
  type Serializer,
  type ServiceDescriptor,
} from "./client.js";

export { KafkaSocksError, type ClientCode, type CodeName, type DiscontinuityName, type KafkaSocksErrorInit } from "./errors.js";

export { consoleLogger, silentLogger, type ConsoleLike, type LogFields, type Logger, type LogLevel } from "./logger.js";

export { Backoff, systemClock, type BackoffOptions, type Clock } from "./backoff.js";

// For generated message codecs.
export { Reader, Writer, WireError, WireType } from "./wire.js";
