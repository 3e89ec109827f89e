/**
 * `@kafkasocks/runtime/json`: the proto3 JSON mapping
 * (https://protobuf.dev/programming-guides/json/) of the messages kafkasocks-gen generates.
 * Per message, generated code has a JSON codec `<Message>Json` (`toJson(value)`,
 * `fromJson(json, options?)`) built on the helpers below, separate from the binary codec so
 * that a page which never uses JSON does not bundle any of it. This module adds the strict JSON
 * text parser they want (exact 64-bit integers, no duplicate names) and
 * {@link createJsonSerializer}, a `Serializer` for
 * `createClient(service, connection, { serializer: createJsonSerializer(<Service>Json) })` that
 * sends and receives UTF-8 JSON payloads instead of binary protobuf.
 *
 * Errors are {@link JsonError}s whose `path` names the field (`"inner.mood"`, `"rInt32[2]"`,
 * `"stringInt32[\"a\"]"`).
 *
 * @module
 */
import type { AnyMethodDescriptor, MessageCodec, Serializer } from "./client.js";

/** A JSON value as `toJson` produces it (and `JSON.stringify` accepts). */
export type JsonValue = null | boolean | number | string | JsonValue[] | JsonObject;

/** A JSON object. */
export interface JsonObject {
  [key: string]: JsonValue;
}

/**
 * What `fromJson` reads: a JSON value, where a number may also be a `bigint`. {@link parseJson}
 * returns integers beyond ±2^53 as bigints, so 64-bit fields written as bare numbers stay exact.
 */
export type JsonInput =
  | null
  | boolean
  | number
  | bigint
  | string
  | readonly JsonInput[]
  | { readonly [key: string]: JsonInput };

/** Options of `fromJson`. */
export interface JsonReadOptions {
  /** Skip fields (and enum value names) this schema does not know instead of failing. Default false. */
  readonly ignoreUnknownFields?: boolean | undefined;
}

/**
 * The proto3 JSON mapping of one message type (generated as `<Message>Json`, next to the
 * binary codec `<Message>`).
 */
export interface JsonCodec<T> {
  /** The fully-qualified message name, e.g. "chat.v1.ChatMessage". */
  readonly typeName: string;
  /** The binary codec of the same type (what `google.protobuf.Any` packs with). */
  readonly binary: MessageCodec<T>;
  /** The proto3 JSON form of `value` (defaults of implicit-presence fields left out). */
  toJson(value: T): JsonValue;
  /** Reads the proto3 JSON form (lowerCamelCase or original field names); throws {@link JsonError}. */
  fromJson(json: JsonInput, options?: JsonReadOptions): T;
}

/** Bad JSON for a message, or a message that has no JSON form (e.g. a Timestamp out of range). */
export class JsonError extends Error {
  /** Where in the document: field names, `[index]`, `["map key"]`; empty at the top. */
  readonly path: string;
  /** What is wrong, without the path. */
  readonly reason: string;

  /** The error's `message` is `"<path>: <reason>"` (just `reason` when `path` is empty). */
  constructor(reason: string, path = "", options?: { cause?: unknown }) {
    super(path === "" ? reason : `${path}: ${reason}`, options);
    this.name = "JsonError";
    this.path = path;
    this.reason = reason;
  }
}

// --- JSON text -----------------------------------------------------------------------------

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
const NUMBER_TEXT = /^-?(?:0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE]([+-]?[0-9]+))?$/;
const MAX_DEPTH = 1000;

/**
 * Parses JSON text (RFC 8259, strictly: no comments, trailing commas, duplicate names or lone
 * surrogates). Integers beyond ±2^53 become bigints so that no digit is lost.
 */
export function parseJson(text: string): JsonInput {
  let i = 0;
  const fail = (what: string): never => {
    throw new JsonError(`invalid JSON at offset ${i}: ${what}`);
  };
  const ws = (): void => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09) i++;
      else return;
    }
  };
  const string = (): string => {
    i++; // the opening quote
    let out = "";
    let start = i;
    for (;;) {
      if (i >= text.length) fail("unterminated string");
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        out += text.slice(start, i);
        i++;
        break;
      }
      if (c < 0x20) fail("control character in a string");
      if (c !== 0x5c) {
        i++;
        continue;
      }
      out += text.slice(start, i);
      const e = text[i + 1];
      i += 2;
      switch (e) {
        case '"':
          out += '"';
          break;
        case "\\":
          out += "\\";
          break;
        case "/":
          out += "/";
          break;
        case "b":
          out += "\b";
          break;
        case "f":
          out += "\f";
          break;
        case "n":
          out += "\n";
          break;
        case "r":
          out += "\r";
          break;
        case "t":
          out += "\t";
          break;
        case "u": {
          const hex = text.slice(i, i + 4);
          if (!/^[0-9a-fA-F]{4}$/.test(hex)) fail("bad \\u escape");
          out += String.fromCharCode(parseInt(hex, 16));
          i += 4;
          break;
        }
        default:
          i -= 1;
          fail("bad escape");
      }
      start = i;
    }
    if (!wellFormed(out)) fail("unpaired surrogate in a string");
    return out;
  };
  const value = (depth: number): JsonInput => {
    if (depth > MAX_DEPTH) fail(`nested deeper than ${MAX_DEPTH}`);
    ws();
    const c = text[i];
    if (c === "{") {
      i++;
      const o: { [key: string]: JsonInput } = {};
      ws();
      if (text[i] === "}") {
        i++;
        return o;
      }
      for (;;) {
        ws();
        if (text[i] !== '"') fail("expected a string (an object member name)");
        const key = string();
        if (Object.hasOwn(o, key)) fail(`duplicate name ${quote(key)}`);
        ws();
        if (text[i] !== ":") fail('expected ":"');
        i++;
        setMember(o, key, value(depth + 1));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "}") {
          i++;
          return o;
        }
        fail('expected "," or "}"');
      }
    }
    if (c === "[") {
      i++;
      const a: JsonInput[] = [];
      ws();
      if (text[i] === "]") {
        i++;
        return a;
      }
      for (;;) {
        a.push(value(depth + 1));
        ws();
        if (text[i] === ",") {
          i++;
          continue;
        }
        if (text[i] === "]") {
          i++;
          return a;
        }
        fail('expected "," or "]"');
      }
    }
    if (c === '"') return string();
    if (text.startsWith("true", i)) {
      i += 4;
      return true;
    }
    if (text.startsWith("false", i)) {
      i += 5;
      return false;
    }
    if (text.startsWith("null", i)) {
      i += 4;
      return null;
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (m === null) return fail(i >= text.length ? "unexpected end" : `unexpected ${quote(text.slice(i, i + 10))}`);
    i += m[0].length;
    const n = Number(m[0]);
    if (Number.isInteger(n) && !Number.isSafeInteger(n)) {
      // Keep big integers exact (64-bit fields); anything else is a double anyway.
      const exact = integerOf(m[0]);
      if (exact !== undefined && exact > -BIG && exact < BIG) return exact;
    }
    return n;
  };
  const v = value(0);
  ws();
  if (i < text.length) fail("unexpected text after the value");
  return v;
}

/**
 * `value` as JSON text, compact or indented by `space` spaces. Like `JSON.stringify`, except that
 * -0 stays "-0" and non-finite numbers are errors rather than "null".
 */
export function stringifyJson(value: JsonValue, space = 0): string {
  const indent = " ".repeat(Math.max(0, Math.min(10, Math.floor(space))));
  const nl = indent === "" ? "" : "\n";
  const colon = indent === "" ? ":" : ": ";
  const write = (v: JsonValue, pad: string): string => {
    if (v === null) return "null";
    switch (typeof v) {
      case "boolean":
        return v ? "true" : "false";
      case "number":
        if (!Number.isFinite(v)) throw new JsonError(`${v} is not a JSON number`);
        return Object.is(v, -0) ? "-0" : String(v);
      case "string":
        return JSON.stringify(v);
    }
    const inner = pad + indent;
    if (Array.isArray(v)) {
      if (v.length === 0) return "[]";
      return `[${nl}${v.map((x) => inner + write(x, inner)).join(`,${nl}`)}${nl}${pad}]`;
    }
    const members = Object.entries(v);
    if (members.length === 0) return "{}";
    return `{${nl}${members.map(([k, x]) => inner + JSON.stringify(k) + colon + write(x, inner)).join(`,${nl}`)}${nl}${pad}}`;
  };
  return write(value, "");
}

/** `codec.toJson(value)` as JSON text, e.g. `toJsonString(ChatMessage, m, 2)` for logs. */
export function toJsonString<T>(codec: JsonCodec<T>, value: T, space?: number): string {
  return stringifyJson(codec.toJson(value), space);
}

/** `codec.fromJson(parseJson(text), options)`. */
export function fromJsonString<T>(codec: JsonCodec<T>, text: string, options?: JsonReadOptions): T {
  return codec.fromJson(parseJson(text), options);
}

// --- The serializer ------------------------------------------------------------------------

const utf8Encoder = /* @__PURE__ */ new TextEncoder();
const utf8Decoder = /* @__PURE__ */ new TextDecoder("utf-8", { fatal: true });

/**
 * The JSON codecs of a service's methods, generated as `<Service>Json`: keyed by the full
 * method name ("package.Service/Method").
 */
export interface ServiceJson {
  /** Fully-qualified service name, "package.Service". */
  readonly typeName: string;
  /** Per full method name ("package.Service/Method"), the JSON codecs of its messages. */
  readonly methods: {
    readonly [method: string]: {
      /** JSON codec of the method's request message (a subscription's request, a publish's payload). */
      readonly input: JsonCodec<unknown>;
      /** JSON codec of the method's response message (a subscription's record values). */
      readonly output: JsonCodec<unknown>;
    };
  };
}

function methodJson(service: ServiceJson, method: AnyMethodDescriptor): { input: JsonCodec<unknown>; output: JsonCodec<unknown> } {
  const json = Object.prototype.hasOwnProperty.call(service.methods, method.name) ? service.methods[method.name] : undefined;
  if (json === undefined) {
    throw new JsonError(`${method.name}: not a method of ${service.typeName} (pass the <Service>Json generated for this client's service)`);
  }
  return json;
}

/**
 * A `Serializer` whose requests and payloads are UTF-8 proto3 JSON (compact), for
 * `createClient(Service, connection, { serializer: createJsonSerializer(ServiceJson) })`, with
 * the `<Service>Json` generated next to the service. The gateway and the topic must carry JSON
 * for these methods: the default `binarySerializer` is what a protobuf gateway expects.
 */
export function createJsonSerializer(service: ServiceJson, options: JsonReadOptions = {}): Serializer {
  return {
    name: "json",
    encode: (method, _codec, value) => utf8Encoder.encode(stringifyJson(methodJson(service, method).input.toJson(value))),
    decode: <O>(method: AnyMethodDescriptor, _codec: unknown, bytes: Uint8Array): O => {
      const json = methodJson(service, method).output;
      let text: string;
      try {
        text = utf8Decoder.decode(bytes);
      } catch (cause) {
        throw new JsonError(`${method.name}: the payload is not UTF-8`, "", { cause });
      }
      // The generated <Service>Json pairs each method with the JSON codec of its own output type.
      return json.fromJson(parseJson(text), options) as O;
    },
  };
}

// --- Helpers of generated code -------------------------------------------------------------
// Readers take a JSON value and throw a JsonError without a path; each message's fromJson
// adds the field name (`at`), so the error names the full path.

const BIG = 10n ** 25n;

function quote(s: string): string {
  return JSON.stringify(s.length > 40 ? `${s.slice(0, 40)}...` : s);
}

function show(v: JsonInput): string {
  if (v === null) return "null";
  if (v === undefined) return "undefined";
  switch (typeof v) {
    case "string":
      return quote(v);
    case "number":
    case "boolean":
      return String(v);
    case "bigint":
      return v.toString();
  }
  return isArray(v) ? "an array" : "an object";
}

function wellFormed(s: string): boolean {
  return !/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/.test(s);
}

/** The exact integer a JSON number text stands for; undefined when it has a fraction. */
function integerOf(text: string): bigint | undefined {
  const m = NUMBER_TEXT.exec(text);
  if (m === null) return undefined;
  const negative = text.startsWith("-");
  const intPart = text.slice(negative ? 1 : 0).split(/[.eE]/)[0] ?? "";
  const frac = (m[1] ?? "").replace(/0+$/, "");
  const exp = m[2] === undefined ? 0 : Number(m[2]);
  let digits = (intPart + frac).replace(/^0+/, "");
  if (digits === "") return 0n;
  const scale = exp - frac.length;
  if (scale < 0) {
    if (-scale >= digits.length || /[^0]/.test(digits.slice(scale))) return undefined;
    digits = digits.slice(0, scale);
  } else if (digits.length + scale > 25) {
    return negative ? -BIG : BIG; // out of range of every integer type
  } else {
    digits += "0".repeat(scale);
  }
  const v = BigInt(digits);
  return negative ? -v : v;
}

/** Whether `v` is a JSON array (`Array.isArray`, typed for {@link JsonInput}). */
export function isArray(v: JsonInput): v is readonly JsonInput[] {
  return Array.isArray(v);
}

/** Sets a member (safe for "__proto__"). */
export function setMember<V>(o: { [key: string]: V }, key: string, v: V): void {
  if (key === "__proto__") Object.defineProperty(o, key, { value: v, enumerable: true, writable: true, configurable: true });
  else o[key] = v;
}

/** Prefixes `e`'s path with a field name, `[index]` or `["key"]` segment. */
export function at(e: unknown, segment: string): JsonError {
  if (!(e instanceof JsonError)) {
    const reason = e instanceof Error ? e.message : String(e);
    return new JsonError(reason, segment, { cause: e });
  }
  if (segment === "") return e;
  const path = e.path === "" ? segment : e.path.startsWith("[") ? segment + e.path : `${segment}.${e.path}`;
  return new JsonError(e.reason, path, { cause: e.cause });
}

/** The members of a message's JSON object. */
export function readObject(v: JsonInput, typeName: string): { readonly [key: string]: JsonInput } {
  if (v === null || typeof v !== "object" || isArray(v)) throw new JsonError(`expected an object (${typeName}), got ${show(v)}`);
  return v;
}

/** A member no field of `typeName` is named like: an error unless `ignoreUnknownFields`. */
export function unknownField(key: string, typeName: string, options: JsonReadOptions | undefined): void {
  if (options?.ignoreUnknownFields !== true) {
    throw new JsonError(`${typeName} has no field named ${quote(key)} (ignoreUnknownFields skips unknown fields)`);
  }
}

/** The JSON form of a message without fields. */
export function readEmpty(v: JsonInput, typeName: string, options: JsonReadOptions | undefined): void {
  for (const key of Object.keys(readObject(v, typeName))) {
    try {
      unknownField(key, typeName, options);
    } catch (e) {
      throw at(e, key);
    }
  }
}

/** A field set twice (under its JSON name and its proto name), or a second member of a oneof. */
export function duplicate(what: string): JsonError {
  return new JsonError(`${what} is set twice`);
}

/** Marks field `n` as seen; a second time is an error. */
export function once(seen: Set<number>, n: number, name: string): void {
  if (seen.has(n)) throw duplicate(`field ${name}`);
  seen.add(n);
}

/** A JSON array; `read` returning undefined drops the element (unknown enum names). */
export function readList<T>(v: JsonInput, read: (x: JsonInput) => T | undefined, nullable = false): T[] {
  if (!isArray(v)) throw new JsonError(`expected an array, got ${show(v)}`);
  const out: T[] = [];
  for (let i = 0; i < v.length; i++) {
    const x = v[i] as JsonInput;
    try {
      if (x === null && !nullable) throw new JsonError("null is not a valid element");
      const r = read(x);
      if (r !== undefined) out.push(r);
    } catch (e) {
      throw at(e, `[${i}]`);
    }
  }
  return out;
}

/** A JSON object as a map; `value` returning undefined drops the entry. */
export function readMap<K, V>(
  v: JsonInput,
  key: (k: string) => K,
  value: (x: JsonInput) => V | undefined,
  nullable = false,
): Map<K, V> {
  if (v === null || typeof v !== "object" || isArray(v)) throw new JsonError(`expected an object (a map), got ${show(v)}`);
  const out = new Map<K, V>();
  for (const [k, x] of Object.entries(v)) {
    try {
      if (x === null && !nullable) throw new JsonError("null is not a valid map value");
      const kv = key(k);
      const r = value(x);
      if (r !== undefined) out.set(kv, r);
    } catch (e) {
      throw at(e, `[${quote(k)}]`);
    }
  }
  return out;
}

/** A map as a JSON object: keys in decimal / "true" / "false" / as they are. */
export function writeMap<K, V>(m: ReadonlyMap<K, V>, write: (v: V) => JsonValue): JsonObject {
  const o: JsonObject = {};
  for (const [k, v] of m) {
    const key = String(k);
    try {
      setMember(o, key, write(v));
    } catch (e) {
      throw at(e, `[${quote(key)}]`);
    }
  }
  return o;
}

/** A list of messages as a JSON array (errors name the index). */
export function writeList<V>(values: readonly V[], write: (v: V) => JsonValue): JsonValue[] {
  return values.map((v, i) => {
    try {
      return write(v);
    } catch (e) {
      throw at(e, `[${i}]`);
    }
  });
}

/** A bool map key. */
export function readBoolKey(k: string): boolean {
  if (k === "true") return true;
  if (k === "false") return false;
  throw new JsonError(`expected "true" or "false" (a bool map key), got ${quote(k)}`);
}

function integer(v: JsonInput, type: string, min: bigint, max: bigint): bigint {
  let n: bigint | undefined;
  switch (typeof v) {
    case "number":
      if (!Number.isInteger(v)) throw new JsonError(`${show(v)} is not an integer (${type})`);
      n = BigInt(v);
      break;
    case "bigint":
      n = v;
      break;
    case "string":
      if (!NUMBER_TEXT.test(v)) throw new JsonError(`expected ${type} (a number or a decimal string), got ${show(v)}`);
      n = integerOf(v);
      if (n === undefined) throw new JsonError(`${show(v)} is not an integer (${type})`);
      break;
    default:
      throw new JsonError(`expected ${type} (a number or a decimal string), got ${show(v)}`);
  }
  if (n < min || n > max) throw new JsonError(`${show(v)} is out of range for ${type}`);
  return n;
}

/** int32, sint32, sfixed32 (also enum numbers). */
export function readInt32(v: JsonInput): number {
  if (typeof v === "number" && Number.isInteger(v) && v >= -0x80000000 && v <= 0x7fffffff) return v === 0 ? 0 : v;
  return Number(integer(v, "int32", -(2n ** 31n), 2n ** 31n - 1n));
}

/** uint32, fixed32. */
export function readUint32(v: JsonInput): number {
  if (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 0xffffffff) return v === 0 ? 0 : v;
  return Number(integer(v, "uint32", 0n, 2n ** 32n - 1n));
}

/** int64, sint64, sfixed64: a decimal string or a number. */
export function readInt64(v: JsonInput): bigint {
  return integer(v, "int64", -(2n ** 63n), 2n ** 63n - 1n);
}

/** uint64, fixed64: a decimal string or a number. */
export function readUint64(v: JsonInput): bigint {
  return integer(v, "uint64", 0n, 2n ** 64n - 1n);
}

/** double: a number, a numeric string, or "NaN" / "Infinity" / "-Infinity". */
export function readDouble(v: JsonInput): number {
  switch (typeof v) {
    case "number":
      if (!Number.isFinite(v)) throw new JsonError(`${show(v)} is out of range (write "NaN", "Infinity" or "-Infinity" as strings)`);
      return v;
    case "bigint":
      return Number(v);
    case "string": {
      if (v === "NaN") return NaN;
      if (v === "Infinity") return Infinity;
      if (v === "-Infinity") return -Infinity;
      if (!NUMBER_TEXT.test(v)) throw new JsonError(`expected a number, got ${show(v)}`);
      const n = Number(v);
      if (!Number.isFinite(n)) throw new JsonError(`${show(v)} is out of range for double`);
      return n;
    }
  }
  throw new JsonError(`expected a number, got ${show(v)}`);
}

/** float: as double, rounded to 32 bits; finite values beyond the float range are errors. */
export function readFloat(v: JsonInput): number {
  const d = readDouble(v);
  const f = Math.fround(d);
  if (Number.isFinite(d) && !Number.isFinite(f)) throw new JsonError(`${show(v)} is out of range for float`);
  return f;
}

/** bool: `true` or `false` (no strings or numbers). */
export function readBool(v: JsonInput): boolean {
  if (typeof v !== "boolean") throw new JsonError(`expected true or false, got ${show(v)}`);
  return v;
}

/** string: a JSON string; one with an unpaired surrogate (not valid UTF-16, so not encodable as UTF-8) is an error. */
export function readString(v: JsonInput): string {
  if (typeof v !== "string") throw new JsonError(`expected a string, got ${show(v)}`);
  if (!wellFormed(v)) throw new JsonError("the string has an unpaired surrogate (not valid UTF-16)");
  return v;
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = /* @__PURE__ */ (() => {
  const index = new Int8Array(128).fill(-1);
  for (let i = 0; i < 64; i++) index[B64.charCodeAt(i)] = i;
  index[0x2d] = 62; // '-' (URL-safe)
  index[0x5f] = 63; // '_' (URL-safe)
  return index;
})();

/** bytes: standard or URL-safe base64, padded or not. */
export function readBytes(v: JsonInput): Uint8Array {
  if (typeof v !== "string") throw new JsonError(`expected a base64 string, got ${show(v)}`);
  let end = v.length;
  if (end % 4 === 0 && v.endsWith("==")) end -= 2;
  else if (end % 4 === 0 && v.endsWith("=")) end -= 1;
  if (end % 4 === 1) throw new JsonError(`invalid base64 (length) in ${show(v)}`);
  const out = new Uint8Array(Math.floor((end * 3) / 4));
  let bits = 0;
  let acc = 0;
  let j = 0;
  for (let i = 0; i < end; i++) {
    const c = v.charCodeAt(i);
    const d = c < 128 ? (B64_INDEX[c] as number) : -1;
    if (d < 0) throw new JsonError(`invalid base64 character ${quote(v[i] ?? "")} in ${show(v)}`);
    acc = (acc << 6) | d;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[j++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

/** bytes as standard base64 with padding. */
export function writeBytes(b: Uint8Array): string {
  let s = "";
  let i = 0;
  for (; i + 2 < b.length; i += 3) {
    const n = ((b[i] as number) << 16) | ((b[i + 1] as number) << 8) | (b[i + 2] as number);
    s += B64[n >> 18]! + B64[(n >> 12) & 63]! + B64[(n >> 6) & 63]! + B64[n & 63]!;
  }
  if (i < b.length) {
    const n = ((b[i] as number) << 16) | (i + 1 < b.length ? (b[i + 1] as number) << 8 : 0);
    s += B64[n >> 18]! + B64[(n >> 12) & 63]! + (i + 1 < b.length ? B64[(n >> 6) & 63]! : "=") + "=";
  }
  return s;
}

/** double: a number, or "NaN" / "Infinity" / "-Infinity". */
export function writeDouble(v: number): JsonValue {
  if (Number.isFinite(v)) return v;
  return Number.isNaN(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity";
}

/** float: the shortest decimal that reads back as the same 32-bit float. */
export function writeFloat(v: number): JsonValue {
  if (!Number.isFinite(v)) return writeDouble(v);
  const f = Math.fround(v);
  if (f === 0) return f; // keeps -0
  for (let p = 1; p < 10; p++) {
    const s = Number(f.toPrecision(p));
    if (Math.fround(s) === f) return s;
  }
  return f;
}

/** An enum object as generated: value name -> number. */
export type EnumObject = { readonly [name: string]: number };

const enumNames = /* @__PURE__ */ new WeakMap<EnumObject, Map<number, string>>();

/** An enum value: its name (the first one declared for the number), or the number when unknown. */
export function writeEnum(v: number, e: EnumObject): JsonValue {
  let names = enumNames.get(e);
  if (names === undefined) {
    names = new Map();
    for (const [k, n] of Object.entries(e)) if (!names.has(n)) names.set(n, k);
    enumNames.set(e, names);
  }
  return names.get(v) ?? v;
}

/** An enum value: a name of `e` or an int32. Undefined: an unknown name with `ignoreUnknownFields`. */
export function readEnum(
  v: JsonInput,
  e: EnumObject,
  typeName: string,
  options: JsonReadOptions | undefined,
): number | undefined {
  if (typeof v === "string") {
    if (Object.hasOwn(e, v)) return e[v];
    if (options?.ignoreUnknownFields === true) return undefined;
    throw new JsonError(`${show(v)} is not a value of enum ${typeName}`);
  }
  if (typeof v === "number" || typeof v === "bigint") return readInt32(v);
  throw new JsonError(`expected a ${typeName} name or number, got ${show(v)}`);
}

/** google.protobuf.NullValue: JSON null (the name "NULL_VALUE" and 0 are accepted too). */
export function readNullValue(v: JsonInput): number {
  if (v === null || v === "NULL_VALUE" || v === 0) return 0;
  throw new JsonError(`expected null (google.protobuf.NullValue), got ${show(v)}`);
}

/** A google.protobuf.Value number: finite only. */
export function writeValueNumber(v: number): number {
  if (!Number.isFinite(v)) throw new JsonError(`google.protobuf.Value cannot hold ${v} in JSON`);
  return v;
}

/** A JSON number for google.protobuf.Value. */
export function readValueNumber(v: number | bigint): number {
  if (typeof v === "bigint") return Number(v);
  if (!Number.isFinite(v)) throw new JsonError(`google.protobuf.Value cannot hold ${v}`);
  return v;
}

// --- Well-known types ----------------------------------------------------------------------

const TS_MIN = -62135596800n; // 0001-01-01T00:00:00Z
const TS_MAX = 253402300799n; // 9999-12-31T23:59:59Z
const DURATION_MAX = 315576000000n;

function fraction(nanos: number): string {
  if (nanos === 0) return "";
  if (nanos % 1000000 === 0) return `.${String(nanos / 1000000).padStart(3, "0")}`;
  if (nanos % 1000 === 0) return `.${String(nanos / 1000).padStart(6, "0")}`;
  return `.${String(nanos).padStart(9, "0")}`;
}

/** google.protobuf.Timestamp as RFC 3339 in UTC, "1972-01-01T10:00:20.021Z". */
export function timestampToJson(t: { readonly seconds: bigint; readonly nanos: number }): string {
  if (t.seconds < TS_MIN || t.seconds > TS_MAX) {
    throw new JsonError(`Timestamp seconds ${t.seconds} is out of range (years 0001 to 9999)`);
  }
  if (!Number.isInteger(t.nanos) || t.nanos < 0 || t.nanos > 999999999) {
    throw new JsonError(`Timestamp nanos ${t.nanos} is out of range (0 to 999999999)`);
  }
  const iso = new Date(Number(t.seconds) * 1000).toISOString(); // "YYYY-MM-DDTHH:MM:SS.000Z"
  return `${iso.slice(0, 19)}${fraction(t.nanos)}Z`;
}

const TIMESTAMP = /^([0-9]{4})-([0-9]{2})-([0-9]{2})T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(?:Z|([+-])([0-9]{2}):([0-9]{2}))$/;

/** google.protobuf.Timestamp from RFC 3339 ("Z" or an offset; 0 to 9 fractional digits). */
export function timestampFromJson(v: JsonInput): {
  /** Seconds since 1970-01-01T00:00:00Z (years 0001 to 9999). */
  seconds: bigint;
  /** Nanoseconds after `seconds`, 0 to 999999999. */
  nanos: number;
} {
  if (typeof v !== "string") throw new JsonError(`expected an RFC 3339 timestamp string, got ${show(v)}`);
  const m = TIMESTAMP.exec(v);
  if (m === null) throw new JsonError(`invalid timestamp ${show(v)} (expected e.g. "1972-01-01T10:00:20.021Z")`);
  const [year, month, day, hour, minute, second] = m.slice(1, 7).map(Number) as [number, number, number, number, number, number];
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day);
  if (month < 1 || month > 12 || date.getUTCDate() !== day || hour > 23 || minute > 59 || second > 59) {
    throw new JsonError(`invalid timestamp ${show(v)} (no such date or time)`);
  }
  let seconds = BigInt(date.getTime() / 1000) + BigInt(hour * 3600 + minute * 60 + second);
  if (m[8] !== undefined) {
    const oh = Number(m[9]);
    const om = Number(m[10]);
    if (oh > 23 || om > 59) throw new JsonError(`invalid timestamp ${show(v)} (bad offset)`);
    const offset = BigInt(oh * 3600 + om * 60);
    seconds += m[8] === "+" ? -offset : offset;
  }
  if (seconds < TS_MIN || seconds > TS_MAX) throw new JsonError(`timestamp ${show(v)} is out of range (years 0001 to 9999)`);
  return { seconds, nanos: Number((m[7] ?? "").padEnd(9, "0")) };
}

/** google.protobuf.Duration as seconds with an "s" suffix, "-1.000340012s". */
export function durationToJson(d: { readonly seconds: bigint; readonly nanos: number }): string {
  if (d.seconds < -DURATION_MAX || d.seconds > DURATION_MAX) {
    throw new JsonError(`Duration seconds ${d.seconds} is out of range (±${DURATION_MAX})`);
  }
  if (!Number.isInteger(d.nanos) || d.nanos < -999999999 || d.nanos > 999999999 || (d.seconds > 0n && d.nanos < 0) || (d.seconds < 0n && d.nanos > 0)) {
    throw new JsonError(`Duration nanos ${d.nanos} is out of range or has the wrong sign for seconds ${d.seconds}`);
  }
  const negative = d.seconds < 0n || d.nanos < 0;
  const s = d.seconds < 0n ? -d.seconds : d.seconds;
  return `${negative ? "-" : ""}${s}${fraction(Math.abs(d.nanos))}s`;
}

const DURATION = /^(-?)([0-9]+)(?:\.([0-9]{1,9}))?s$/;

/** google.protobuf.Duration from "1.5s", "-0.000001s". */
export function durationFromJson(v: JsonInput): {
  /** Whole seconds, at most ±315576000000 (10000 years). */
  seconds: bigint;
  /** The fraction in nanoseconds, -999999999 to 999999999, with the sign of `seconds` (or of the duration, when `seconds` is 0). */
  nanos: number;
} {
  if (typeof v !== "string") throw new JsonError(`expected a duration string like "1.5s", got ${show(v)}`);
  const m = DURATION.exec(v);
  if (m === null) throw new JsonError(`invalid duration ${show(v)} (expected e.g. "1.5s")`);
  const seconds = BigInt(m[2] ?? "0");
  if (seconds > DURATION_MAX) throw new JsonError(`duration ${show(v)} is out of range (±${DURATION_MAX}s)`);
  const nanos = Number((m[3] ?? "").padEnd(9, "0"));
  return m[1] === "-" ? { seconds: -seconds, nanos: nanos === 0 ? 0 : -nanos } : { seconds, nanos };
}

/** google.protobuf.FieldMask: paths in lowerCamelCase, joined with ",". */
export function fieldMaskToJson(paths: readonly string[]): string {
  return paths
    .map((p) => {
      const camel = p.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase());
      if (/[A-Z]/.test(p) || camel.includes("_")) {
        throw new JsonError(`FieldMask path ${quote(p)} has no lowerCamelCase JSON form`);
      }
      return camel;
    })
    .join(",");
}

/** google.protobuf.FieldMask from "a.fooBar,b" (paths become snake_case). */
export function fieldMaskFromJson(v: JsonInput): string[] {
  if (typeof v !== "string") throw new JsonError(`expected a FieldMask string like "a,b.cD", got ${show(v)}`);
  if (v === "") return [];
  return v.split(",").map((p) => {
    if (p.includes("_")) throw new JsonError(`FieldMask path ${quote(p)} must be lowerCamelCase (no "_")`);
    return p.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
  });
}

/** Looks a message codec up by full name (what generated `google.protobuf.Any` codecs use). */
export type TypeLookup = (typeName: string) => JsonCodec<unknown> | undefined;

/** Types whose JSON is not an object with their fields: inside an Any they go in "value". */
const WKT_VALUE = /* @__PURE__ */ new Set(
  [
    "Any",
    "Duration",
    "FieldMask",
    "ListValue",
    "Struct",
    "Timestamp",
    "Value",
    "BoolValue",
    "BytesValue",
    "DoubleValue",
    "FloatValue",
    "Int32Value",
    "Int64Value",
    "StringValue",
    "UInt32Value",
    "UInt64Value",
  ].map((n) => `google.protobuf.${n}`),
);

function anyCodec(typeUrl: string, lookup: TypeLookup): JsonCodec<unknown> {
  const slash = typeUrl.lastIndexOf("/");
  const name = typeUrl.slice(slash + 1);
  const codec = slash < 0 || name === "" ? undefined : lookup(name);
  if (codec === undefined) {
    throw new JsonError(
      `google.protobuf.Any type URL ${quote(typeUrl)} names no message generated with this code (expected "type.googleapis.com/<full name>")`,
    );
  }
  return codec;
}

/** google.protobuf.Any: {"@type": url, ...fields of the message} or {"@type": url, "value": ...}. */
export function anyToJson(any: { readonly typeUrl: string; readonly value: Uint8Array }, lookup: TypeLookup): JsonValue {
  if (any.typeUrl === "" && any.value.length === 0) return {};
  const codec = anyCodec(any.typeUrl, lookup);
  const json = codec.toJson(codec.binary.decode(any.value));
  const out: JsonObject = { "@type": any.typeUrl };
  if (WKT_VALUE.has(codec.typeName)) {
    out["value"] = json;
  } else if (json !== null && typeof json === "object" && !Array.isArray(json)) {
    for (const [k, x] of Object.entries(json)) setMember(out, k, x);
  }
  return out;
}

/** google.protobuf.Any from its JSON form; the message is packed with its binary codec. */
export function anyFromJson(
  v: JsonInput,
  options: JsonReadOptions | undefined,
  lookup: TypeLookup,
): {
  /** The type URL, "type.googleapis.com/<full message name>" (empty for an empty `{}`). */
  typeUrl: string;
  /** The packed message, in protobuf binary encoding. */
  value: Uint8Array;
} {
  const o = readObject(v, "google.protobuf.Any");
  const typeUrl = o["@type"];
  if (typeUrl === undefined) {
    if (Object.keys(o).length === 0) return { typeUrl: "", value: new Uint8Array(0) };
    throw new JsonError('google.protobuf.Any needs "@type" (the type URL) in its JSON form');
  }
  if (typeof typeUrl !== "string") throw new JsonError(`"@type" must be a string, got ${show(typeUrl)}`);
  const codec = anyCodec(typeUrl, lookup);
  let message: unknown;
  if (WKT_VALUE.has(codec.typeName)) {
    // {"@type": url} alone is the default message.
    const value = o["value"];
    if (value === undefined) return { typeUrl, value: new Uint8Array(0) };
    for (const key of Object.keys(o)) {
      if (key !== "@type" && key !== "value") {
        try {
          unknownField(key, "google.protobuf.Any", options);
        } catch (e) {
          throw at(e, key);
        }
      }
    }
    try {
      message = codec.fromJson(value, options);
    } catch (e) {
      throw at(e, "value");
    }
  } else {
    const fields: { [key: string]: JsonInput } = {};
    for (const [k, x] of Object.entries(o)) if (k !== "@type") setMember(fields, k, x);
    message = codec.fromJson(fields, options);
  }
  return { typeUrl, value: codec.binary.encode(message) };
}
