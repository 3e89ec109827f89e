// The proto3 JSON mapping of the generated JSON codecs (<Message>Json: toJson / fromJson, @kafkasocks/runtime/json):
// round trips of every-feature messages, hand-checked JSON for the tricky cases, bad input, and
// the JSON serializer through createClient. Run: npm test (builds with tsc into dist/ first).
import assert from "node:assert/strict";
import { test } from "node:test";
import { binarySerializer, createClient } from "@kafkasocks/runtime";
import {
  createJsonSerializer,
  fromJsonString,
  JsonError,
  parseJson,
  stringifyJson,
  toJsonString,
} from "@kafkasocks/runtime/json";
import {
  ChatMessage,
  ChatMessageJson,
  ChatStreams,
  ChatStreamsJson,
  Color,
  Everything,
  Everything_Inner,
  Everything_Inner_Mood,
  EverythingJson,
  Maps,
  MapsJson,
  Optionals,
  OptionalsJson,
  Repeated,
  RepeatedJson,
  Scalars,
  ScalarsJson,
} from "../dist/gen/every/v1/every_kafkasocks.js";
import { Legacy, LegacyJson, Level } from "../dist/gen/every/v1/legacy_kafkasocks.js";
import { Any, AnyJson } from "../dist/gen/google/protobuf/any_kafkasocks.js";
import { Duration, DurationJson } from "../dist/gen/google/protobuf/duration_kafkasocks.js";
import { Empty } from "../dist/gen/google/protobuf/empty_kafkasocks.js";
import { ListValue, ListValueJson, Struct, StructJson, Value, ValueJson } from "../dist/gen/google/protobuf/struct_kafkasocks.js";
import { Timestamp, TimestampJson } from "../dist/gen/google/protobuf/timestamp_kafkasocks.js";
import {
  BytesValue,
  BytesValueJson,
  FloatValue,
  FloatValueJson,
  Int64Value,
  Int64ValueJson,
  StringValue,
  StringValueJson,
  UInt64Value,
  UInt64ValueJson,
} from "../dist/gen/google/protobuf/wrappers_kafkasocks.js";
import { canonical, normalized } from "./canonical.mjs";

const bytes = (...b) => new Uint8Array(b);
const ts = (seconds, nanos = 0) => ({ seconds: BigInt(seconds), nanos });
const num = (value) => ({ kind: { case: "numberValue", value } });
const str = (value) => ({ kind: { case: "stringValue", value } });
const pack = (codec, value) => ({ typeUrl: `type.googleapis.com/${codec.typeName}`, value: codec.encode(value) });

/** value -> JSON text -> value must be the same value; the JSON text is a fixed point. */
function roundTrip(codec, value) {
  const text = toJsonString(codec, value);
  const back = fromJsonString(codec, text);
  assert.equal(normalized(canonical(back)), normalized(canonical(value)), `${codec.typeName} JSON round trip: ${text}`);
  assert.equal(toJsonString(codec, back), text);
  // and through the binary codec: JSON -> message -> bytes -> message -> JSON
  assert.equal(toJsonString(codec, codec.binary.decode(codec.binary.encode(back))), text);
  return text;
}

const scalars = () => ({
  ...Scalars.create(),
  fDouble: -1.5e-300,
  fFloat: 3.4028234663852886e38,
  fInt32: -2147483648,
  fInt64: -9223372036854775808n,
  fUint32: 4294967295,
  fUint64: 18446744073709551615n,
  fSint32: 2147483647,
  fSint64: 9223372036854775807n,
  fFixed32: 1,
  fFixed64: 9007199254740993n,
  fSfixed32: -1,
  fSfixed64: -9007199254740993n,
  fBool: true,
  fString: "é 中文 😀 \u0000 \"quoted\" \\",
  fBytes: bytes(0, 251, 255, 128),
  fColor: Color.COLOR_BLUE,
});

const optionalsAtDefaults = () => ({
  ...Optionals.create(),
  oDouble: -0,
  oFloat: 0,
  oInt32: 0,
  oInt64: 0n,
  oUint32: 0,
  oUint64: 0n,
  oSint32: 0,
  oSint64: 0n,
  oFixed32: 0,
  oFixed64: 0n,
  oSfixed32: 0,
  oSfixed64: 0n,
  oBool: false,
  oString: "",
  oBytes: bytes(),
  oColor: Color.COLOR_UNSPECIFIED,
});

const repeated = () => ({
  ...Repeated.create(),
  rDouble: [NaN, Infinity, -Infinity, 0.1, -0],
  rFloat: [Math.fround(0.1), Math.fround(-1e-40), 16777216],
  rInt32: [1, -2, 0],
  rInt64: [0n, -1n, 2n ** 63n - 1n],
  rUint32: [4294967295],
  rUint64: [2n ** 64n - 1n, 0n],
  rSint32: [-1],
  rSint64: [-(2n ** 63n)],
  rFixed32: [7],
  rFixed64: [8n],
  rSfixed32: [-9],
  rSfixed64: [-10n],
  rBool: [true, false],
  rString: ["", "a"],
  rBytes: [bytes(), bytes(1, 2, 3)],
  rColor: [Color.COLOR_RED, 42, Color.COLOR_UNSPECIFIED],
  rUnpackedInt32: [5, 6],
  rUnpackedSint64: [-7n],
  rMessage: [Scalars.create(), scalars()],
});

const maps = () => ({
  ...Maps.create(),
  stringInt32: new Map([["", 0], ["a", 1], ["__proto__", 2], ["10", 3]]),
  int64String: new Map([[-(2n ** 63n), "min"], [0n, ""], [2n ** 63n - 1n, "max"]]),
  boolBytes: new Map([[false, bytes()], [true, bytes(255)]]),
  uint32Message: new Map([[0, Scalars.create()], [4294967295, scalars()]]),
  sint64Enum: new Map([[-1n, Color.COLOR_GREEN], [1n, 99]]),
  fixed32Double: new Map([[3, NaN], [1, -0.5]]),
  sfixed64Float: new Map([[-5n, Math.fround(1.1)]]),
  int32Uint64: new Map([[-1, 2n ** 64n - 1n]]),
});

const structure = () => ({
  fields: new Map([
    ["number", num(-1.25)],
    ["string", str("s")],
    ["null", { kind: { case: "nullValue", value: 0 } }],
    ["bool", { kind: { case: "boolValue", value: false } }],
    ["list", { kind: { case: "listValue", value: { values: [num(1), str("two"), { kind: { case: "listValue", value: { values: [] } } }] } } }],
    ["struct", { kind: { case: "structValue", value: { fields: new Map([["inner", num(0)]]) } } }],
  ]),
});

const legacy = () => ({
  ...Legacy.create(),
  id: 7,
  name: "",
  count: -5n,
  level: Level.LEVEL_LOW,
  ratio: 0.5,
  magic: bytes(1, 2, 120),
  flag: false,
  unpacked: [1, 2],
  packed: [-3],
  blob: { data: "d", numbers: [4] },
  item: [{ key: "k1" }, { key: "" }],
  child: { ...Legacy.create(), id: 8 },
});

function everything(payload, second) {
  const e = {
    ...Everything.create(),
    scalars: scalars(),
    optionals: optionalsAtDefaults(),
    repeated: repeated(),
    maps: maps(),
    inner: { ...Everything_Inner.create(), label: "in", mood: Everything_Inner_Mood.MOOD_HAPPY, parent: { ...Everything.create(), afterOneof: 1 } },
    inners: [Everything_Inner.create(), { ...Everything_Inner.create(), mood: 5 }],
    afterOneof: -1,
    createdAt: ts(63108020, 21000000),
    ttl: { seconds: -1n, nanos: -340012 },
    maybeString: { value: "" },
    maybeInt64: { value: 0n },
    attributes: structure(),
    extra: pack(Scalars, scalars()),
    nothing: {},
    legacy: legacy(),
    class: "c",
    type: 3,
    default: true,
    object: { in: "x" },
    map: { entries: new Map([["k", "v"]]) },
    constructor: "ctor",
  };
  if (payload) e.payload = payload;
  if (second) e.second = second;
  return e;
}

test("every-feature messages round-trip through JSON", () => {
  roundTrip(ScalarsJson, Scalars.create());
  roundTrip(ScalarsJson, scalars());
  roundTrip(OptionalsJson, Optionals.create());
  roundTrip(OptionalsJson, optionalsAtDefaults());
  roundTrip(RepeatedJson, repeated());
  roundTrip(MapsJson, maps());
  roundTrip(LegacyJson, legacy());
  roundTrip(EverythingJson, Everything.create());
  const payloads = [
    undefined,
    { case: "text", value: "" },
    { case: "blob", value: bytes(9) },
    { case: "innerChoice", value: Everything_Inner.create() },
    { case: "colorChoice", value: Color.COLOR_UNSPECIFIED },
    { case: "colorChoice", value: 1234 },
    { case: "bigChoice", value: -(2n ** 63n) },
  ];
  const seconds = [undefined, { case: "secondDouble", value: -0 }, { case: "secondMessage", value: Scalars.create() }];
  for (const p of payloads) for (const s of seconds) roundTrip(EverythingJson, everything(p, s));
  // Any holding well-known types and another Any
  for (const extra of [
    pack(Timestamp, ts(-62135596800)),
    pack(Duration, { seconds: 315576000000n, nanos: 999999999 }),
    pack(Struct, structure()),
    pack(Value, num(2)),
    pack(ListValue, { values: [] }),
    pack(StringValue, { value: "" }),
    // (a value that went through JSON once: its maps are in JSON's key order, so the packed bytes are stable)
    pack(Any, pack(Everything, EverythingJson.fromJson(EverythingJson.toJson(everything({ case: "text", value: "deep" }))))),
    pack(Empty, {}),
    { typeUrl: "", value: bytes() },
  ]) {
    roundTrip(EverythingJson, { ...Everything.create(), extra });
  }
});

test("scalars: 64-bit integers as strings, bytes as base64, enums by name, special floats as strings", () => {
  assert.deepEqual(ScalarsJson.toJson(scalars()), {
    fDouble: -1.5e-300,
    fFloat: 3.4028235e38, // the shortest decimal of the 32-bit float
    fInt32: -2147483648,
    fInt64: "-9223372036854775808",
    fUint32: 4294967295,
    fUint64: "18446744073709551615",
    fSint32: 2147483647,
    fSint64: "9223372036854775807",
    fFixed32: 1,
    fFixed64: "9007199254740993",
    fSfixed32: -1,
    fSfixed64: "-9007199254740993",
    fBool: true,
    fString: "é 中文 😀 \u0000 \"quoted\" \\",
    fBytes: "APv/gA==",
    fColor: "COLOR_BLUE",
  });
  assert.deepEqual(ScalarsJson.toJson({ ...Scalars.create(), fDouble: NaN, fFloat: -Infinity, fColor: 42 }), {
    fDouble: "NaN",
    fFloat: "-Infinity",
    fColor: 42, // unknown enum numbers stay numbers
  });
  assert.deepEqual(ScalarsJson.toJson({ ...Scalars.create(), fDouble: Infinity, fFloat: Math.fround(0.1) }), { fDouble: "Infinity", fFloat: 0.1 });
  // proto3 implicit presence: defaults are left out (-0 counts as the default, as on the wire)
  assert.deepEqual(ScalarsJson.toJson(Scalars.create()), {});
  assert.deepEqual(ScalarsJson.toJson({ ...Scalars.create(), fDouble: -0 }), {});
});

test("scalars: inputs the mapping accepts", () => {
  const m = fromJsonString(
    ScalarsJson,
    `{"fInt64": 9223372036854775807, "f_uint64": "18446744073709551615", "fInt32": "-5", "fUint32": 1e3,
      "fSint64": "1e2", "fFixed64": 4.0, "fDouble": "-Infinity", "fFloat": "1.5", "fBytes": "-_8",
      "fColor": 2, "fBool": false, "fString": "\\u00e9\\ud83d\\ude00", "fSfixed32": -0}`,
  );
  assert.equal(m.fInt64, 9223372036854775807n, "a bare number keeps every digit");
  assert.equal(m.fUint64, 18446744073709551615n);
  assert.equal(m.fInt32, -5);
  assert.equal(m.fUint32, 1000);
  assert.equal(m.fSint64, 100n);
  assert.equal(m.fFixed64, 4n);
  assert.equal(m.fDouble, -Infinity);
  assert.equal(m.fFloat, 1.5);
  assert.deepEqual(m.fBytes, bytes(251, 255), "URL-safe base64 without padding");
  assert.equal(m.fColor, Color.COLOR_GREEN);
  assert.equal(m.fString, "é😀");
  assert.ok(Object.is(m.fSfixed32, 0));
  assert.deepEqual(fromJsonString(ScalarsJson, '{"fBytes": "+/8="}').fBytes, bytes(251, 255));
  assert.deepEqual(fromJsonString(ScalarsJson, '{"fColor": "COLOR_RED"}').fColor, 1);
  assert.deepEqual(fromJsonString(ScalarsJson, '{"fColor": -100}').fColor, -100, "unknown numbers are kept");
  assert.equal(fromJsonString(ScalarsJson, '{"fFloat": 0.1}').fFloat, Math.fround(0.1), "floats are rounded to 32 bits");
  // null is the default
  assert.deepEqual(fromJsonString(ScalarsJson, '{"fInt32": null, "fString": null, "fColor": null}'), Scalars.create());
});

test("explicit presence: set fields are written even at their default", () => {
  assert.deepEqual(OptionalsJson.toJson(optionalsAtDefaults()), {
    oDouble: -0,
    oFloat: 0,
    oInt32: 0,
    oInt64: "0",
    oUint32: 0,
    oUint64: "0",
    oSint32: 0,
    oSint64: "0",
    oFixed32: 0,
    oFixed64: "0",
    oSfixed32: 0,
    oSfixed64: "0",
    oBool: false,
    oString: "",
    oBytes: "",
    oColor: "COLOR_UNSPECIFIED",
  });
  assert.equal(toJsonString(OptionalsJson, { oDouble: -0, oFloat: -0 }), '{"oDouble":-0,"oFloat":-0}', "-0 keeps its sign");
  assert.deepEqual(OptionalsJson.toJson(Optionals.create()), {});
  const back = fromJsonString(OptionalsJson, '{"oInt32": 0, "oString": null}');
  assert.equal(back.oInt32, 0);
  assert.ok(!("oString" in back), "null leaves an optional field unset");
});

test("repeated fields are arrays, maps are objects with string keys", () => {
  const r = RepeatedJson.toJson({ ...Repeated.create(), rInt64: [1n, -2n], rBytes: [bytes(1)], rColor: [1, 42], rDouble: [NaN, -0] });
  assert.deepEqual(r, { rDouble: ["NaN", -0], rInt64: ["1", "-2"], rBytes: ["AQ=="], rColor: ["COLOR_RED", 42] });
  const m = MapsJson.toJson(maps());
  assert.deepEqual(m.int64String, { "-9223372036854775808": "min", "0": "", "9223372036854775807": "max" });
  assert.deepEqual(m.boolBytes, { false: "", true: "/w==" });
  assert.deepEqual(m.sint64Enum, { "-1": "COLOR_GREEN", "1": 99 });
  assert.deepEqual(m.fixed32Double, { "3": "NaN", "1": -0.5 });
  assert.deepEqual(m.uint32Message, { "0": {}, "4294967295": ScalarsJson.toJson(scalars()) });
  assert.equal(Object.keys(m.stringInt32).length, 4);
  assert.equal(Object.getPrototypeOf(m.stringInt32), Object.prototype, '"__proto__" is a plain key');
  assert.equal(m.stringInt32.__proto__, 2);
  const back = fromJsonString(MapsJson, '{"int64String": {"-1": "a", "18": "b"}, "boolBytes": {"true": "AA=="}, "int32Uint64": {"7": 8}}');
  assert.deepEqual(back.int64String, new Map([[-1n, "a"], [18n, "b"]]));
  assert.deepEqual([...back.boolBytes], [[true, bytes(0)]]);
  assert.deepEqual([...back.int32Uint64], [[7, 8n]]);
  assert.deepEqual(MapsJson.toJson(Maps.create()), {}, "empty maps and lists are left out");
});

test("oneofs: the set case is written under its JSON name; a second case or name is an error", () => {
  const e = { ...Everything.create(), payload: { case: "bigChoice", value: 5n }, second: { case: "secondDouble", value: 0 } };
  assert.deepEqual(EverythingJson.toJson(e), { bigChoice: "5", secondDouble: 0 }, "a oneof member at its default is still written");
  assert.deepEqual(fromJsonString(EverythingJson, '{"big_choice": "5"}').payload, { case: "bigChoice", value: 5n });
  assert.deepEqual(fromJsonString(EverythingJson, '{"text": null, "colorChoice": "COLOR_RED"}').payload, { case: "colorChoice", value: 1 });
  assert.throws(() => fromJsonString(EverythingJson, '{"text": "a", "blob": ""}'), { name: "JsonError", message: "blob: oneof payload is set twice" });
});

test("field names: lowerCamelCase and the proto name both read; both at once is an error", () => {
  assert.deepEqual(EverythingJson.toJson({ ...Everything.create(), afterOneof: 1 }), { afterOneof: 1 });
  assert.equal(fromJsonString(EverythingJson, '{"after_oneof": 2}').afterOneof, 2);
  assert.throws(() => fromJsonString(EverythingJson, '{"afterOneof": 1, "after_oneof": 2}'), {
    message: "after_oneof: field after_oneof is set twice",
  });
  // reserved words are plain JSON names
  const names = fromJsonString(EverythingJson, '{"class": "c", "type": 1, "default": true, "constructor": "k", "object": {"in": "i"}, "map": {"entries": {"a": "b"}}}');
  assert.equal(names.constructor, "k");
  assert.equal(names.object.in, "i");
  assert.deepEqual([...names.map.entries], [["a", "b"]]);
});

test("Timestamp: RFC 3339 in UTC with 0, 3, 6 or 9 fractional digits; range checked", () => {
  const cases = [
    [ts(0), "1970-01-01T00:00:00Z"],
    [ts(63108020, 21000000), "1972-01-01T10:00:20.021Z"],
    [ts(63108020, 21000), "1972-01-01T10:00:20.000021Z"],
    [ts(63108020, 1), "1972-01-01T10:00:20.000000001Z"],
    [ts(-1, 999999999), "1969-12-31T23:59:59.999999999Z"],
    [ts(-62135596800), "0001-01-01T00:00:00Z"],
    [ts(253402300799, 999999999), "9999-12-31T23:59:59.999999999Z"],
  ];
  for (const [t, text] of cases) {
    assert.equal(TimestampJson.toJson(t), text);
    assert.deepEqual(TimestampJson.fromJson(text), { ...Timestamp.create(), ...t });
  }
  assert.deepEqual(TimestampJson.fromJson("1970-01-01T08:00:01.5+08:00"), ts(1, 500000000), "offsets are applied");
  assert.deepEqual(TimestampJson.fromJson("1969-12-31T16:00:00-08:00"), ts(0));
  for (const bad of ["1970-01-01 00:00:00Z", "1970-01-01t00:00:00z", "1970-01-01T00:00:00", "1970-02-30T00:00:00Z", "0000-12-31T23:59:59Z", "1970-01-01T00:00:00.1234567890Z", "1970-01-01T24:00:00Z"]) {
    assert.throws(() => TimestampJson.fromJson(bad), JsonError, bad);
  }
  assert.throws(() => TimestampJson.toJson(ts(253402300800)), /out of range/);
  assert.throws(() => TimestampJson.toJson(ts(0, -1)), /nanos -1 is out of range/);
  assert.throws(() => fromJsonString(ChatMessageJson, '{"sentAt": 5}'), { message: /^sentAt: expected an RFC 3339 timestamp string, got 5$/ });
});

test("Duration: seconds with an s suffix, negative with -", () => {
  const cases = [
    [{ seconds: 0n, nanos: 0 }, "0s"],
    [{ seconds: 1n, nanos: 340012 }, "1.000340012s"],
    [{ seconds: -1n, nanos: -340012 }, "-1.000340012s"],
    [{ seconds: 0n, nanos: -500000000 }, "-0.500s"],
    [{ seconds: 3n, nanos: 1000 }, "3.000001s"],
    [{ seconds: 315576000000n, nanos: 0 }, "315576000000s"],
  ];
  for (const [d, text] of cases) {
    assert.equal(DurationJson.toJson(d), text);
    assert.deepEqual(DurationJson.fromJson(text), { ...Duration.create(), ...d });
  }
  assert.deepEqual(DurationJson.fromJson("-0.5s"), { seconds: 0n, nanos: -500000000 });
  for (const bad of ["1", "1.5", "s", "+1s", "1.0000000001s", "315576000001s", " 1s"]) assert.throws(() => DurationJson.fromJson(bad), JsonError, bad);
  assert.throws(() => DurationJson.toJson({ seconds: 1n, nanos: -1 }), /wrong sign/);
  assert.throws(() => DurationJson.toJson({ seconds: -315576000001n, nanos: 0 }), /out of range/);
});

test("wrappers are their bare value; null leaves the field unset", () => {
  const e = { ...Everything.create(), maybeString: { value: "" }, maybeInt64: { value: -3n } };
  assert.deepEqual(EverythingJson.toJson(e), { maybeString: "", maybeInt64: "-3" });
  const back = fromJsonString(EverythingJson, '{"maybeString": "s", "maybeInt64": 4}');
  assert.deepEqual(back.maybeString, { value: "s" });
  assert.deepEqual(back.maybeInt64, { value: 4n });
  assert.equal(fromJsonString(EverythingJson, '{"maybeString": null}').maybeString, undefined);
  assert.equal(UInt64ValueJson.toJson({ value: 2n ** 64n - 1n }), "18446744073709551615");
  assert.equal(BytesValueJson.toJson({ value: bytes(1, 2) }), "AQI=");
  assert.equal(FloatValueJson.toJson({ value: NaN }), "NaN");
  assert.deepEqual(Int64ValueJson.fromJson("-9223372036854775808"), { value: -(2n ** 63n) });
  assert.deepEqual(StringValueJson.fromJson(""), { value: "" });
});

test("Struct, Value and ListValue are plain JSON", () => {
  assert.deepEqual(StructJson.toJson(structure()), {
    number: -1.25,
    string: "s",
    null: null,
    bool: false,
    list: [1, "two", []],
    struct: { inner: 0 },
  });
  const text = '{"attributes": {"a": [1, {"b": null}, "c", true, 12345678901234567890], "d": {}}}';
  const attrs = fromJsonString(EverythingJson, text).attributes;
  assert.deepEqual(StructJson.toJson(attrs), { a: [1, { b: null }, "c", true, 12345678901234567000], d: {} });
  assert.deepEqual(attrs.fields.get("d"), { kind: { case: "structValue", value: { fields: new Map() } } });
  assert.deepEqual(ValueJson.fromJson(null), { kind: { case: "nullValue", value: 0 } });
  assert.equal(ValueJson.toJson({ kind: { case: "nullValue", value: 0 } }), null);
  assert.deepEqual(ListValueJson.toJson({ values: [num(1), { kind: { case: "nullValue", value: 0 } }] }), [1, null]);
  assert.throws(() => ValueJson.toJson({}), /Value has no kind set/);
  assert.throws(() => ValueJson.toJson(num(NaN)), /cannot hold NaN/);
  assert.throws(() => StructJson.fromJson([1]), /expected an object/);
  assert.throws(() => ListValueJson.fromJson({}), /expected an array/);
});

test("Any: @type with the fields of a registered message, or with value for well-known types", () => {
  assert.deepEqual(AnyJson.toJson(pack(ChatMessage, { ...ChatMessage.create(), room: "r", sentAt: ts(1) })), {
    "@type": "type.googleapis.com/every.v1.ChatMessage",
    room: "r",
    sentAt: "1970-01-01T00:00:01Z",
  });
  assert.deepEqual(AnyJson.toJson(pack(Timestamp, ts(1))), { "@type": "type.googleapis.com/google.protobuf.Timestamp", value: "1970-01-01T00:00:01Z" });
  assert.deepEqual(AnyJson.toJson(pack(Struct, { fields: new Map([["a", num(1)]]) })), {
    "@type": "type.googleapis.com/google.protobuf.Struct",
    value: { a: 1 },
  });
  assert.deepEqual(AnyJson.toJson(pack(Empty, {})), { "@type": "type.googleapis.com/google.protobuf.Empty" });
  const nested = AnyJson.toJson(pack(Any, pack(Int64Value, { value: 5n })));
  assert.deepEqual(nested, {
    "@type": "type.googleapis.com/google.protobuf.Any",
    value: { "@type": "type.googleapis.com/google.protobuf.Int64Value", value: "5" },
  });
  assert.deepEqual(AnyJson.toJson({ typeUrl: "", value: bytes() }), {});
  // fromJson packs the message with its binary codec; the type URL is kept as written
  const any = AnyJson.fromJson({ room: "r", "@type": "example.com/x/every.v1.ChatMessage" });
  assert.equal(any.typeUrl, "example.com/x/every.v1.ChatMessage");
  assert.deepEqual(ChatMessage.decode(any.value), { ...ChatMessage.create(), room: "r" });
  assert.deepEqual(AnyJson.fromJson(nested), pack(Any, pack(Int64Value, { value: 5n })));
  assert.deepEqual(AnyJson.fromJson({}), { typeUrl: "", value: bytes() });
  // errors
  assert.throws(() => AnyJson.toJson({ typeUrl: "type.googleapis.com/no.Such", value: bytes() }), {
    name: "JsonError",
    message: /type URL "type.googleapis.com\/no.Such" names no message generated with this code/,
  });
  assert.throws(() => AnyJson.fromJson({ room: "r" }), /needs "@type"/);
  assert.throws(() => fromJsonString(EverythingJson, '{"extra": {"@type": "type.googleapis.com/every.v1.ChatMessage", "room": 1}}'), {
    message: "extra.room: expected a string, got 1",
  });
  assert.throws(() => AnyJson.fromJson({ "@type": "type.googleapis.com/google.protobuf.Duration", value: "1s", extra: 1 }), /no field named "extra"/);
});

test("proto2: required fields always, optional ones when set, groups under their field name", () => {
  assert.deepEqual(LegacyJson.toJson(Legacy.create()), { id: 0 });
  assert.deepEqual(LegacyJson.toJson({ ...Legacy.create(), blob: { numbers: [1] }, item: [{ key: "k" }], level: Level.LEVEL_HIGH }), {
    id: 0,
    level: "LEVEL_HIGH",
    blob: { numbers: [1] },
    item: [{ key: "k" }],
  });
  const l = fromJsonString(LegacyJson, '{"id": 1, "blob": {"data": "d"}, "child": {"id": 2, "flag": true}}');
  assert.equal(l.name, undefined, "absent: the proto2 default applies when read, as on the wire");
  assert.equal(l.blob?.data, "d");
  assert.equal(l.child?.flag, true);
});

test("ignoreUnknownFields skips unknown fields and unknown enum names", () => {
  const text = '{"fInt32": 1, "nope": {"deep": [1]}, "fColor": "COLOR_PURPLE"}';
  assert.throws(() => fromJsonString(ScalarsJson, text), { message: 'nope: every.v1.Scalars has no field named "nope" (ignoreUnknownFields skips unknown fields)' });
  const m = fromJsonString(ScalarsJson, text, { ignoreUnknownFields: true });
  assert.equal(m.fInt32, 1);
  assert.equal(m.fColor, 0);
  const r = fromJsonString(RepeatedJson, '{"rColor": ["COLOR_RED", "COLOR_PURPLE", 7]}', { ignoreUnknownFields: true });
  assert.deepEqual(r.rColor, [1, 7], "unknown names are dropped from lists");
  const mp = fromJsonString(MapsJson, '{"sint64Enum": {"1": "COLOR_PURPLE", "2": "COLOR_RED"}}', { ignoreUnknownFields: true });
  assert.deepEqual([...mp.sint64Enum], [[2n, 1]], "and from maps");
  assert.throws(() => fromJsonString(RepeatedJson, '{"rColor": ["COLOR_PURPLE"]}'), { message: 'rColor[0]: "COLOR_PURPLE" is not a value of enum every.v1.Color' });
});

test("bad input: a JsonError naming the field", () => {
  const bad = [
    ['{"scalars": {"fInt32": 2147483648}}', "scalars.fInt32: 2147483648 is out of range for int32"],
    ['{"scalars": {"fInt32": 1.5}}', "scalars.fInt32: 1.5 is not an integer (int32)"],
    ['{"scalars": {"fUint32": -1}}', "scalars.fUint32: -1 is out of range for uint32"],
    ['{"scalars": {"fInt64": "9223372036854775808"}}', 'scalars.fInt64: "9223372036854775808" is out of range for int64'],
    ['{"scalars": {"fUint64": " 1"}}', 'scalars.fUint64: expected uint64 (a number or a decimal string), got " 1"'],
    ['{"scalars": {"fInt64": true}}', "scalars.fInt64: expected int64 (a number or a decimal string), got true"],
    ['{"scalars": {"fFloat": 1e39}}', "scalars.fFloat: 1e+39 is out of range for float"],
    ['{"scalars": {"fDouble": 1e999}}', 'scalars.fDouble: Infinity is out of range (write "NaN", "Infinity" or "-Infinity" as strings)'],
    ['{"scalars": {"fDouble": "nan"}}', 'scalars.fDouble: expected a number, got "nan"'],
    ['{"scalars": {"fBool": "true"}}', 'scalars.fBool: expected true or false, got "true"'],
    ['{"scalars": {"fString": 1}}', "scalars.fString: expected a string, got 1"],
    ['{"scalars": {"fBytes": "a*=="}}', 'scalars.fBytes: invalid base64 character "*" in "a*=="'],
    ['{"scalars": {"fColor": "RED"}}', 'scalars.fColor: "RED" is not a value of enum every.v1.Color'],
    ['{"scalars": {"fColor": 1.5}}', "scalars.fColor: 1.5 is not an integer (int32)"],
    ['{"scalars": []}', "scalars: expected an object (every.v1.Scalars), got an array"],
    ['{"repeated": {"rInt64": [1, "x"]}}', 'repeated.rInt64[1]: expected int64 (a number or a decimal string), got "x"'],
    ['{"repeated": {"rMessage": [{}, null]}}', "repeated.rMessage[1]: null is not a valid element"],
    ['{"repeated": {"rInt32": 1}}', "repeated.rInt32: expected an array, got 1"],
    ['{"maps": {"int64String": {"x": "a"}}}', 'maps.int64String["x"]: expected int64 (a number or a decimal string), got "x"'],
    ['{"maps": {"boolBytes": {"1": ""}}}', 'maps.boolBytes["1"]: expected "true" or "false" (a bool map key), got "1"'],
    ['{"maps": {"stringInt32": {"a": null}}}', 'maps.stringInt32["a"]: null is not a valid map value'],
    ['{"maps": {"uint32Message": {"1": {"fInt32": "x"}}}}', 'maps.uint32Message["1"].fInt32: expected int32 (a number or a decimal string), got "x"'],
    ['{"inner": {"parent": {"inner": {"mood": "SAD"}}}}', 'inner.parent.inner.mood: "SAD" is not a value of enum every.v1.Everything.Inner.Mood'],
    ['{"createdAt": "10000-01-01T00:00:00Z"}', 'createdAt: invalid timestamp "10000-01-01T00:00:00Z" (expected e.g. "1972-01-01T10:00:20.021Z")'],
    ['{"ttl": "1m"}', 'ttl: invalid duration "1m" (expected e.g. "1.5s")'],
    ['{"legacy": {"item": [{"key": 1}]}}', "legacy.item[0].key: expected a string, got 1"],
    ['{"nothing": {"x": 1}}', 'nothing.x: google.protobuf.Empty has no field named "x" (ignoreUnknownFields skips unknown fields)'],
    ["null", "expected an object (every.v1.Everything), got null"],
    ['"text"', 'expected an object (every.v1.Everything), got "text"'],
  ];
  for (const [text, message] of bad) {
    assert.throws(() => fromJsonString(EverythingJson, text), (e) => {
      assert.ok(e instanceof JsonError, `${text}: ${e}`);
      assert.equal(e.message, message, text);
      return true;
    });
  }
  const e = (() => {
    try {
      fromJsonString(EverythingJson, '{"maps": {"uint32Message": {"1": {"fInt32": "x"}}}}');
    } catch (err) {
      return err;
    }
  })();
  assert.equal(e.path, 'maps.uint32Message["1"].fInt32');
  assert.equal(e.reason, 'expected int32 (a number or a decimal string), got "x"');
});

test("parseJson is strict JSON and keeps big integers exact", () => {
  assert.equal(parseJson("18446744073709551615"), 18446744073709551615n);
  assert.equal(parseJson("-9007199254740993"), -9007199254740993n);
  assert.equal(parseJson("9007199254740991"), 9007199254740991);
  assert.equal(parseJson("1e400"), Infinity, "a non-integer literal stays a number");
  assert.ok(Object.is(parseJson("-0"), -0));
  assert.deepEqual(parseJson(' {"a": [1, "\\u00e9\\n", true, null, {}]} '), { a: [1, "é\n", true, null, {}] });
  const proto = parseJson('{"__proto__": {"x": 1}}');
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.deepEqual(Object.keys(proto), ["__proto__"]);
  for (const bad of ['{"a": 1, "a": 2}', "[1,]", "{a: 1}", "01", "+1", "1.", ".5", "NaN", '"\\ud800"', '"a\tb"', "[1] x", "", "'a'", '{"a" 1}', "[" .repeat(1002)]) {
    assert.throws(() => parseJson(bad), JsonError, bad);
  }
});

test("stringifyJson: compact or indented, -0 kept", () => {
  const v = { a: [1, -0, "x"], b: {}, c: [] };
  assert.equal(stringifyJson(v), '{"a":[1,-0,"x"],"b":{},"c":[]}');
  assert.equal(stringifyJson(v, 2), '{\n  "a": [\n    1,\n    -0,\n    "x"\n  ],\n  "b": {},\n  "c": []\n}');
  assert.equal(JSON.stringify(JSON.parse(stringifyJson(EverythingJson.toJson(everything())))), JSON.stringify(EverythingJson.toJson(everything())));
  assert.throws(() => stringifyJson({ x: NaN }), JsonError);
});

/** A Connection stand-in that records what createClient hands it. */
function fakeConnection() {
  const calls = [];
  return {
    calls,
    subscribe(method, request, options) {
      calls.push({ kind: "subscribe", method, request, options });
      return { method };
    },
    publish(method, payload, options) {
      calls.push({ kind: "publish", method, payload, options });
      return Promise.resolve({ topic: "t", partition: 0, offset: 1n, timestampMs: 0, duplicate: false });
    },
  };
}

test("createJsonSerializer: createClient sends and receives UTF-8 proto3 JSON", async () => {
  const conn = fakeConnection();
  const serializer = createJsonSerializer(ChatStreamsJson);
  const chat = createClient(ChatStreams, conn, { serializer });
  assert.equal(serializer.name, "json");
  await chat.post({ ...ChatMessage.create(), room: "général", user: "ada", text: "hi", sentAt: ts(1, 5000000) });
  const published = conn.calls.at(-1);
  assert.equal(published.method, "every.v1.ChatStreams/Post");
  assert.equal(
    new TextDecoder().decode(published.payload),
    '{"room":"général","user":"ada","text":"hi","sentAt":"1970-01-01T00:00:01.005Z"}',
  );
  chat.messages({ room: "" }, { start: "earliest" });
  const sub = conn.calls.at(-1);
  assert.equal(new TextDecoder().decode(sub.request), "{}");
  assert.equal(sub.options.start, "earliest");
  const record = new TextEncoder().encode('{"room": "r", "text": "t", "sent_at": "1970-01-01T00:00:02Z", "later": 1}');
  assert.throws(() => sub.options.decode(record), { name: "JsonError", message: /no field named "later"/ });
  // a serializer that skips unknown fields (e.g. written by a newer schema)
  const lenient = createClient(ChatStreams, conn, { serializer: createJsonSerializer(ChatStreamsJson, { ignoreUnknownFields: true }) });
  lenient.messages({ room: "r" });
  assert.deepEqual(conn.calls.at(-1).options.decode(record), { ...ChatMessage.create(), room: "r", text: "t", sentAt: ts(2) });
  assert.throws(() => conn.calls.at(-1).options.decode(bytes(0xff)), { name: "JsonError", message: /not UTF-8/ });
  // publish errors are KafkaSocksErrors (INVALID_ARGUMENT) naming the method and the field
  await assert.rejects(chat.post({ ...ChatMessage.create(), sentAt: ts(1e12) }), {
    name: "KafkaSocksError",
    code: "INVALID_ARGUMENT",
    message: /Post: JsonError: sentAt: Timestamp seconds 1000000000000 is out of range/,
  });
  // the same client with the default serializer sends the binary codec's bytes
  const binary = createClient(ChatStreams, conn, { serializer: binarySerializer });
  await binary.post({ ...ChatMessage.create(), room: "r" });
  assert.deepEqual(conn.calls.at(-1).payload, ChatMessage.encode({ ...ChatMessage.create(), room: "r" }));
  // methods of another service are refused clearly
  const plain = { encode: () => bytes(), decode: () => ({}) };
  assert.throws(() => serializer.encode({ name: "x.Y/Z", kind: "publish", input: plain, output: plain }, plain, {}), {
    name: "JsonError",
    message: /x.Y\/Z: not a method of every.v1.ChatStreams/,
  });
  assert.throws(() => serializer.encode({ name: "toString", kind: "publish", input: plain, output: plain }, plain, {}), /not a method/);
});
