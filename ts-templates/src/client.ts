/**
 * The typed layer generated code builds on: a service descriptor lists the methods with their
 * codecs, and {@link createClient} turns it into an object with one typed function per method.
 *
 *     const ticker = createClient(TickerService, connection);
 *     for await (const { value, offset } of ticker.watch({ symbol: "ACME" })) ...
 *     const receipt = await ticker.placeOrder({ symbol: "ACME", qty: 1 });
 */
import type { Connection } from "./connection.js";
import { KafkaSocksError } from "./errors.js";
import type { PublishOptions, Receipt } from "./publish.js";
import type { SubscribeOptions, Subscription } from "./subscription.js";
import type { Reader, Writer } from "./wire.js";

/** Binary codec of one message type: what a method descriptor needs (generated codecs are {@link MessageCodec}s). */
export interface Codec<T> {
  /** The protobuf binary encoding of `value`. */
  encode(value: T): Uint8Array;
  /** Parses the protobuf binary encoding of one message; throws (a {@link WireError} for generated codecs) on malformed bytes. */
  decode(bytes: Uint8Array): T;
}

/**
 * The binary codec kafkasocks-gen generates per message (the `const` named like the message):
 * `encode`/`decode` (what `createClient` uses), `create` for a message with every field at its
 * default, and the streaming halves other codecs call. The proto3 JSON mapping is a separate
 * object, `<Message>Json` (see `@kafkasocks/runtime/json`).
 */
export interface MessageCodec<T> extends Codec<T> {
  /** The fully-qualified message name, e.g. "chat.v1.ChatMessage". */
  readonly typeName: string;
  /** A new message with every field at its default (zero, empty, absent). */
  create(): T;
  /** The protobuf binary encoding of `value`, in a fresh buffer. */
  encode(value: T): Uint8Array<ArrayBuffer>;
  /** Writes the fields of `value` (each with its tag) to `w`, without a length prefix; unknown fields kept from decoding are written back. */
  write(value: T, w: Writer): void;
  /** Reads a message (until the end of `r`, or the end-group tag `endGroup`), merging into `into`. */
  read(r: Reader, endGroup?: number, into?: T): T;
}

/** Server-streaming RPCs are subscriptions; unary RPCs are publishes. */
export type MethodKind = "subscribe" | "publish";

/**
 * One RPC of a service, as generated code describes it: its wire name, its kind and the
 * codecs of its request (`I`) and response (`O`) messages.
 */
export interface MethodDescriptor<I, O, K extends MethodKind = MethodKind> {
  /** Fully-qualified method, "package.Service/Method" (what the gateway routes on). */
  readonly name: string;
  /** "subscribe" for a server-streaming RPC, "publish" for a unary one. */
  readonly kind: K;
  /** Codec of the request: a subscription's request message, or a publish's payload. */
  readonly input: Codec<I>;
  /** Codec of the response: a subscription's record values (a publish's answer is a {@link Receipt}). */
  readonly output: Codec<O>;
}

/** The constraint every method descriptor satisfies, whatever its message types. */
export interface AnyMethodDescriptor {
  /** As {@link MethodDescriptor.name}: "package.Service/Method". */
  readonly name: string;
  /** As {@link MethodDescriptor.kind}. */
  readonly kind: MethodKind;
  /** The request codec, of whatever message type. */
  readonly input: {
    /** As {@link Codec.encode}. */
    encode(value: never): Uint8Array;
  };
  /** The response codec, of whatever message type. */
  readonly output: {
    /** As {@link Codec.decode}. */
    decode(bytes: Uint8Array): unknown;
  };
}

/**
 * A service as generated code describes it (the `const` named like the service), the input
 * of {@link createClient}.
 */
export interface ServiceDescriptor {
  /** Fully-qualified service name, "package.Service". */
  readonly typeName: string;
  /** Keyed by the client method name (generated code uses lowerCamelCase of the RPC). */
  readonly methods: { readonly [name: string]: AnyMethodDescriptor };
}

/** The request message type of a method descriptor. */
type InputOf<M> = M extends { readonly input: Codec<infer I> } ? I : never;
/** The response message type of a method descriptor. */
type OutputOf<M> = M extends { readonly output: Codec<infer O> } ? O : never;

/**
 * The client function of one method descriptor `M`: a subscribe method takes the request
 * message and returns a {@link Subscription} of the response message type; a publish method
 * takes the request message and returns a promise of its {@link Receipt}.
 */
export type ClientMethod<M> = M extends {
  /** A server-streaming method. */
  readonly kind: "subscribe";
}
  ? (request: InputOf<M>, options?: SubscribeOptions) => Subscription<OutputOf<M>>
  : M extends {
        /** A unary method. */
        readonly kind: "publish";
      }
    ? (request: InputOf<M>, options?: PublishOptions) => Promise<Receipt>
    : never;

/** A client fully typed from its service descriptor. */
export type Client<S extends ServiceDescriptor> = {
  readonly [K in keyof S["methods"]]: ClientMethod<S["methods"][K]>;
};

/**
 * Decides the bytes of requests and record payloads. The default, {@link binarySerializer},
 * uses the generated binary codecs. Another serializer (e.g. a proto3-JSON one from generated
 * code, for a gateway method that carries JSON) can replace it per client; it receives the
 * method and its binary codec and returns/accepts the payload bytes.
 */
export interface Serializer {
  /** For logs, e.g. "binary" or "json". */
  readonly name: string;
  /**
   * The bytes of `value`, the request of `method` (a subscription's request or a publish's
   * payload); `codec` is the method's binary input codec. A throw rejects a publish with
   * INVALID_ARGUMENT, and is thrown from the call that subscribes.
   */
  encode<I>(method: AnyMethodDescriptor, codec: Codec<I>, value: I): Uint8Array;
  /**
   * The value of one record payload of `method`; `codec` is the method's binary output codec.
   * A throw skips the record: the subscription emits an `error` (INTERNAL, `clientCode`
   * "DECODE") and goes on.
   */
  decode<O>(method: AnyMethodDescriptor, codec: Codec<O>, bytes: Uint8Array): O;
}

/** The default {@link Serializer}, named "binary": the method's generated protobuf binary codecs. */
export const binarySerializer: Serializer = {
  name: "binary",
  encode: (_method, codec, value) => codec.encode(value),
  decode: (_method, codec, bytes) => codec.decode(bytes),
};

/** Options of {@link createClient}. */
export interface ClientOptions {
  /** How requests and payloads are (de)serialized. Default {@link binarySerializer}. */
  serializer?: Serializer;
}

/** Identity helper that keeps the literal `kind`s of a descriptor written inline. */
export function defineService<const S extends ServiceDescriptor>(service: S): S {
  return service;
}

/**
 * Builds the typed client of `service` over `connection`: one function per method, keyed as
 * in `service.methods` (see {@link Client}).
 */
export function createClient<S extends ServiceDescriptor>(service: S, connection: Connection, options: ClientOptions = {}): Client<S> {
  const serializer = options.serializer ?? binarySerializer;
  const client: { [name: string]: unknown } = {};
  for (const [key, descriptor] of Object.entries(service.methods)) {
    const m = descriptor as MethodDescriptor<unknown, unknown>;
    client[key] =
      m.kind === "subscribe"
        ? (request: unknown, opts: SubscribeOptions = {}) =>
            connection.subscribe(m.name, serializer.encode(m, m.input, request), {
              ...opts,
              decode: (bytes: Uint8Array) => serializer.decode(m, m.output, bytes),
            })
        : async (request: unknown, opts?: PublishOptions) => {
            let payload: Uint8Array;
            try {
              payload = serializer.encode(m, m.input, request);
            } catch (cause) {
              throw new KafkaSocksError("INVALID_ARGUMENT", `cannot encode the request of ${m.name}: ${String(cause)}`, { cause });
            }
            return connection.publish(m.name, payload, opts);
          };
  }
  return client as Client<S>;
}
