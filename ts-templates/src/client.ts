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
  encode(value: T): Uint8Array;
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
  create(): T;
  encode(value: T): Uint8Array<ArrayBuffer>;
  write(value: T, w: Writer): void;
  /** Reads a message (until the end of `r`, or the end-group tag `endGroup`), merging into `into`. */
  read(r: Reader, endGroup?: number, into?: T): T;
}

/** Server-streaming RPCs are subscriptions; unary RPCs are publishes. */
export type MethodKind = "subscribe" | "publish";

export interface MethodDescriptor<I, O, K extends MethodKind = MethodKind> {
  /** Fully-qualified method, "package.Service/Method" (what the gateway routes on). */
  readonly name: string;
  readonly kind: K;
  readonly input: Codec<I>;
  readonly output: Codec<O>;
}

/** The constraint every method descriptor satisfies, whatever its message types. */
export interface AnyMethodDescriptor {
  readonly name: string;
  readonly kind: MethodKind;
  readonly input: { encode(value: never): Uint8Array };
  readonly output: { decode(bytes: Uint8Array): unknown };
}

export interface ServiceDescriptor {
  /** Fully-qualified service name, "package.Service". */
  readonly typeName: string;
  /** Keyed by the client method name (generated code uses lowerCamelCase of the RPC). */
  readonly methods: { readonly [name: string]: AnyMethodDescriptor };
}

type InputOf<M> = M extends { readonly input: Codec<infer I> } ? I : never;
type OutputOf<M> = M extends { readonly output: Codec<infer O> } ? O : never;

/** The client function of one method. */
export type ClientMethod<M> = M extends { readonly kind: "subscribe" }
  ? (request: InputOf<M>, options?: SubscribeOptions) => Subscription<OutputOf<M>>
  : M extends { readonly kind: "publish" }
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
  encode<I>(method: AnyMethodDescriptor, codec: Codec<I>, value: I): Uint8Array;
  decode<O>(method: AnyMethodDescriptor, codec: Codec<O>, bytes: Uint8Array): O;
}

export const binarySerializer: Serializer = {
  name: "binary",
  encode: (_method, codec, value) => codec.encode(value),
  decode: (_method, codec, bytes) => codec.decode(bytes),
};

export interface ClientOptions {
  /** How requests and payloads are (de)serialized. Default {@link binarySerializer}. */
  serializer?: Serializer;
}

/** Identity helper that keeps the literal `kind`s of a descriptor written inline. */
export function defineService<const S extends ServiceDescriptor>(service: S): S {
  return service;
}

/** Builds the typed client of `service` over `connection`. */
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
