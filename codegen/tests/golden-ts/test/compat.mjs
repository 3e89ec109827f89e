// Cross-language check, driven by `cargo test -p kafkasocks-golden-rust --test compat`:
//
//   node test/compat.mjs DIR COUNT
//
// 1. reads DIR/rust-to-ts.jsonl (prost-encoded random messages + expected values): each
//    decodes with the generated codec to the expected value and re-encodes to the same bytes;
// 2. writes DIR/ts-to-rust.jsonl: COUNT random messages per type, built from DIR/schema.json
//    and encoded by the generated codecs, with their values (checked by the Rust side).
// 3. every message of 1. and 2. also goes through the proto3 JSON mapping (toJson, text,
//    fromJson) and must come back as the same value (after moving the well-known-type fields
//    that have no JSON form, e.g. a Timestamp beyond year 9999, into their JSON range).
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromJsonString, toJsonString } from "@kafkasocks/runtime/json";
import { Everything, EverythingJson } from "../dist/gen/every/v1/every_kafkasocks.js";
import { Legacy, LegacyJson } from "../dist/gen/every/v1/legacy_kafkasocks.js";
import { StringValue } from "../dist/gen/google/protobuf/wrappers_kafkasocks.js";
import { canonical, hex, normalized, unhex } from "./canonical.mjs";

const [dir, countArg] = process.argv.slice(2);
if (!dir) throw new Error("usage: node test/compat.mjs DIR COUNT");
const count = Number(countArg ?? 1000);
const codecs = { "every.v1.Everything": Everything, "legacy.v1.Legacy": Legacy };
const jsonCodecs = { "every.v1.Everything": EverythingJson, "legacy.v1.Legacy": LegacyJson };

// --- 3. (used by 1. and 2.) JSON round trips ---------------------------------------------------

const TS_MIN = -62135596800n;
const TS_SPAN = 253402300799n - TS_MIN + 1n;
const DURATION_SPAN = 315576000001n;
const mod = (a, n) => ((a % n) + n) % n;

/** The random value moved into the JSON range of the well-known types (same shape). */
function forJson(type, v) {
  if (type === "legacy.v1.Legacy") return v;
  const e = { ...v };
  if (e.createdAt) e.createdAt = { ...e.createdAt, seconds: mod(e.createdAt.seconds - TS_MIN, TS_SPAN) + TS_MIN, nanos: Math.abs(e.createdAt.nanos) % 1e9 };
  if (e.ttl) {
    const seconds = e.ttl.seconds % DURATION_SPAN;
    const nanos = Math.abs(e.ttl.nanos) % 1e9;
    e.ttl = { ...e.ttl, seconds, nanos: nanos !== 0 && (seconds < 0n || (seconds === 0n && e.ttl.nanos < 0)) ? -nanos : nanos };
  }
  if (e.attributes) e.attributes = structForJson(e.attributes);
  if (e.extra && !(e.extra.typeUrl === "" && e.extra.value.length === 0)) {
    // random type URLs name no type: pack a well-known one (an Any inside the JSON of an Any)
    e.extra = { typeUrl: "type.googleapis.com/google.protobuf.StringValue", value: StringValue.encode({ value: e.extra.typeUrl }) };
  }
  const inner = (i) => (i.parent ? { ...i, parent: forJson(type, i.parent) } : i);
  if (e.inner) e.inner = inner(e.inner);
  e.inners = e.inners.map(inner);
  if (e.payload?.case === "innerChoice") e.payload = { ...e.payload, value: inner(e.payload.value) };
  return e;
}

function structForJson(s) {
  return { ...s, fields: new Map([...s.fields].map(([k, v]) => [k, valueForJson(v)])) };
}

function valueForJson(v) {
  switch (v.kind?.case) {
    case undefined:
    case "nullValue": // JSON null is NULL_VALUE, whatever number the wire had
      return { ...v, kind: { case: "nullValue", value: 0 } };
    case "numberValue":
      return Number.isFinite(v.kind.value) ? v : { ...v, kind: { case: "numberValue", value: 0 } };
    case "structValue":
      return { ...v, kind: { case: "structValue", value: structForJson(v.kind.value) } };
    case "listValue":
      return { ...v, kind: { case: "listValue", value: { ...v.kind.value, values: v.kind.value.values.map(valueForJson) } } };
    default:
      return v;
  }
}

const jsonChecked = {};
function jsonRoundTrip(type, value, where) {
  const codec = jsonCodecs[type];
  const v = forJson(type, value);
  const text = toJsonString(codec, v);
  const back = fromJsonString(codec, text);
  const got = normalized(canonical(back));
  const want = normalized(canonical(v));
  if (got !== want) {
    let i = 0;
    while (got[i] === want[i]) i++;
    const at = (s) => s.slice(Math.max(0, i - 200), i + 100);
    throw new Error(`${where} (${type}): JSON round trip differs at\n got:  ...${at(got)}\n want: ...${at(want)}\n json: ${text}`);
  }
  if (toJsonString(codec, back) !== text) throw new Error(`${where} (${type}): JSON text is not stable\n json: ${text}`);
  jsonChecked[type] = (jsonChecked[type] ?? 0) + 1;
}

// --- 1. Rust -> TS --------------------------------------------------------------------------
const seen = {};
let line = 0;
for (const text of readFileSync(join(dir, "rust-to-ts.jsonl"), "utf8").split("\n")) {
  if (!text) continue;
  line++;
  const { type, hex: h, value } = JSON.parse(text);
  const codec = codecs[type];
  const bytes = unhex(h);
  const decoded = codec.decode(bytes);
  const got = normalized(canonical(decoded));
  const want = normalized(value);
  if (got !== want) throw new Error(`rust-to-ts line ${line} (${type}): value differs\n got:  ${got}\n want: ${want}`);
  const again = hex(codec.encode(decoded));
  if (again !== h) throw new Error(`rust-to-ts line ${line} (${type}): re-encoding differs\n got:  ${again}\n want: ${h}`);
  jsonRoundTrip(type, decoded, `rust-to-ts line ${line}`);
  seen[type] = (seen[type] ?? 0) + 1;
}
console.log(`rust -> ts: ${JSON.stringify(seen)} decoded to equal values and re-encoded to identical bytes`);

// --- 2. TS -> Rust --------------------------------------------------------------------------
const schema = JSON.parse(readFileSync(join(dir, "schema.json"), "utf8"));
let seed = 0x2545f491;
function rand() {
  // xorshift32: deterministic runs
  seed ^= seed << 13;
  seed >>>= 0;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  seed >>>= 0;
  return seed / 2 ** 32;
}
const int = (n) => Math.floor(rand() * n);
const pick = (xs) => xs[int(xs.length)];
const chance = (p) => rand() < p;

function randomBigInt(signed) {
  const edge = signed ? [0n, 1n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 53n + 1n] : [0n, 1n, 2n ** 64n - 1n, 2n ** 53n + 1n];
  if (chance(0.3)) return pick(edge);
  const v = (BigInt(int(2 ** 32)) << 32n) | BigInt(int(2 ** 32));
  return signed ? BigInt.asIntN(64, v) : v;
}

const f32 = new DataView(new ArrayBuffer(8));
function scalar(kind) {
  switch (kind) {
    case "double":
      return chance(0.3) ? pick([0, -0, NaN, Infinity, -Infinity, 5e-324, 0.1, 1e300, 2 ** 53 + 2]) : (rand() - 0.5) * 10 ** int(40);
    case "float":
      if (chance(0.3)) return pick([0, -0, NaN, Infinity, -Infinity, 0.5, 3.4028234663852886e38]);
      f32.setUint32(0, int(2 ** 32) & 0x7f7fffff);
      return f32.getFloat32(0) * pick([1, -1]);
    case "int32":
    case "sint32":
    case "sfixed32":
      return chance(0.3) ? pick([0, 1, -1, 2 ** 31 - 1, -(2 ** 31)]) : int(2 ** 32) - 2 ** 31;
    case "uint32":
    case "fixed32":
      return chance(0.3) ? pick([0, 1, 2 ** 32 - 1]) : int(2 ** 32);
    case "int64":
    case "sint64":
    case "sfixed64":
      return randomBigInt(true);
    case "uint64":
    case "fixed64":
      return randomBigInt(false);
    case "bool":
      return chance(0.5);
    case "string":
      return Array.from({ length: int(4) }, () => pick(["", "a", "room-1", "é", "中文", "😀", "\u0000", "x y"])).join("");
    case "bytes":
      return Uint8Array.from({ length: int(10) }, () => int(256));
    default:
      throw new Error(`no scalar ${kind}`);
  }
}

/** Map keys in prost's BTreeMap order (ASCII strings, so JS order is byte order). */
function mapKeys(kind) {
  const keys = [];
  for (let i = 0, n = int(4); i < n; i++) {
    let k = kind === "string" ? pick(["", "a", "b", "key", "z9"]) + (chance(0.5) ? String(int(10)) : "") : scalar(kind);
    if (!keys.some((x) => x === k)) keys.push(k);
  }
  return keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
}

function value(field, depth) {
  if (field.kind === "message") return depth < 3 ? message(field.type, depth + 1) : undefined;
  if (field.kind === "enum") {
    const e = schema.enums[field.type];
    return !e.closed && chance(0.2) ? pick([7, 99, -100]) : pick(e.values);
  }
  return scalar(field.kind);
}

function message(type, depth) {
  const m = {};
  const oneofsDone = new Set();
  for (const f of schema.messages[type].fields) {
    if (f.oneof) {
      if (oneofsDone.has(f.oneof) || chance(0.6)) continue;
      const v = value(f, depth);
      if (v !== undefined) {
        m[f.oneof] = { case: f.prop, value: v };
        oneofsDone.add(f.oneof);
      }
      continue;
    }
    switch (f.label) {
      case "map": {
        const map = new Map();
        for (const k of mapKeys(f.key)) {
          const v = value(f, depth);
          if (v !== undefined) map.set(k, v);
        }
        m[f.prop] = map;
        break;
      }
      case "repeated":
        m[f.prop] = Array.from({ length: int(4) }, () => value(f, depth)).filter((v) => v !== undefined);
        break;
      case "optional":
        if (chance(0.7)) {
          const v = value(f, depth);
          if (v !== undefined) m[f.prop] = v;
        }
        break;
      default: {
        // implicit and required: always present in the TS value
        const v = value(f, depth);
        m[f.prop] = v !== undefined ? v : implicitDefault(f);
      }
    }
  }
  return m;
}

function implicitDefault(f) {
  if (f.kind === "enum") return schema.enums[f.type].closed ? schema.enums[f.type].values[0] : 0;
  return { bool: false, string: "", bytes: new Uint8Array(0) }[f.kind] ?? (/64/.test(f.kind) ? 0n : 0);
}

let out = "";
const written = {};
for (const [type, codec] of Object.entries(codecs)) {
  for (let i = 0; i < count; i++) {
    const bytes = codec.encode(message(type, 0));
    // The value the bytes carry (e.g. -0 in an implicit field is not written, as in prost).
    const decoded = codec.decode(bytes);
    if (hex(codec.encode(decoded)) !== hex(bytes)) throw new Error(`${type}: TS re-encoding is not stable`);
    jsonRoundTrip(type, decoded, `ts-to-rust message ${i}`);
    out += JSON.stringify({ type, hex: hex(bytes), value: canonical(decoded) }) + "\n";
    written[type] = (written[type] ?? 0) + 1;
  }
}
writeFileSync(join(dir, "ts-to-rust.jsonl"), out);
console.log(`ts -> rust: wrote ${JSON.stringify(written)}`);
console.log(`json: ${JSON.stringify(jsonChecked)} round-tripped through the proto3 JSON mapping to equal values`);
