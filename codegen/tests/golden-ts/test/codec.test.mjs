// Behaviour of the generated codecs that random round trips do not pin down.
// Run: npm test (builds with tsc into dist/ first).
import assert from "node:assert/strict";
import { test } from "node:test";
import { Writer } from "@kafkasocks/runtime";
import { ChatStreams, Color, Everything, Maps, Repeated, Scalars, Sensors } from "../dist/gen/every/v1/every_kafkasocks.js";
import { Legacy } from "../dist/gen/every/v1/legacy_kafkasocks.js";

test("unknown fields survive decode and re-encode", () => {
  const known = Scalars.encode({ ...Scalars.create(), fInt32: 7, fString: "x" });
  // Append field 99 (varint) and field 100 (bytes) that this schema does not know.
  const w = new Writer();
  w.raw(known).uint32((99 << 3) | 0).uint64(123456789n).uint32((100 << 3) | 2).bytes(new Uint8Array([1, 2, 3]));
  const bytes = w.finish();
  const m = Scalars.decode(bytes);
  assert.equal(m.fInt32, 7);
  assert.equal(m.$unknown?.length, 2);
  assert.deepEqual(Scalars.encode(m), bytes);
});

test("repeated scalars decode packed and unpacked alike", () => {
  const packed = new Writer().uint32((3 << 3) | 2).fork().int32(1).int32(-2).join().finish();
  const unpacked = new Writer().uint32((3 << 3) | 0).int32(1).uint32((3 << 3) | 0).int32(-2).finish();
  assert.deepEqual(Repeated.decode(packed).rInt32, [1, -2]);
  assert.deepEqual(Repeated.decode(unpacked).rInt32, [1, -2]);
  // [packed = false] fields are written unpacked, but read packed too.
  const r = { ...Repeated.create(), rUnpackedInt32: [5, 6] };
  assert.deepEqual(Repeated.encode(r), new Writer().uint32(136).int32(5).uint32(136).int32(6).finish());
  const packed17 = new Writer().uint32((17 << 3) | 2).fork().int32(5).int32(6).join().finish();
  assert.deepEqual(Repeated.decode(packed17).rUnpackedInt32, [5, 6]);
});

test("enums are open: unknown numbers are kept", () => {
  const bytes = new Writer().uint32((16 << 3) | 0).int32(42).finish();
  const m = Scalars.decode(bytes);
  assert.equal(m.fColor, 42);
  assert.deepEqual(Scalars.encode(m), bytes);
  assert.equal(Color.COLOR_BLUE, -3);
});

test("oneofs are discriminated unions; the last member on the wire wins", () => {
  const e = { ...Everything.create(), payload: { case: "bigChoice", value: -5n } };
  const back = Everything.decode(Everything.encode(e));
  assert.deepEqual(back.payload, { case: "bigChoice", value: -5n });
  const w = new Writer().uint32((7 << 3) | 2).string("text").uint32((11 << 3) | 0).int64(9n);
  assert.deepEqual(Everything.decode(w.finish()).payload, { case: "bigChoice", value: 9n });
});

test("a message field seen twice is merged", () => {
  const a = Scalars.encode({ ...Scalars.create(), fInt32: 1 });
  const b = Scalars.encode({ ...Scalars.create(), fString: "s" });
  const w = new Writer().uint32(10).bytes(a).uint32(10).bytes(b);
  const m = Everything.decode(w.finish());
  assert.equal(m.scalars?.fInt32, 1);
  assert.equal(m.scalars?.fString, "s");
});

test("proto2: required, defaults, groups", () => {
  const l = Legacy.create();
  assert.equal(l.id, 0);
  assert.equal(l.name, undefined, "optional fields with defaults are absent until set");
  l.blob = { numbers: [1, 2], data: "d" };
  l.item = [{ key: "k" }];
  const back = Legacy.decode(Legacy.encode(l));
  assert.deepEqual(back.blob?.numbers, [1, 2]);
  assert.equal(back.item[0]?.key, "k");
  assert.throws(() => Legacy.decode(new Writer().uint32((10 << 3) | 3).finish()), /unterminated group/);
});

test("map entries with default keys or values are written as prost does", () => {
  const maps = { ...Maps.create(), stringInt32: new Map([["", 0], ["a", 1]]) };
  // key and value left out for the first entry (both default), key written for the second.
  const expected = new Writer().uint32(10).fork().join().uint32(10).fork().uint32(10).string("a").uint32(16).int32(1).join();
  assert.deepEqual(Maps.encode(maps), expected.finish());
  assert.deepEqual([...Maps.decode(Maps.encode(maps)).stringInt32], [["", 0], ["a", 1]]);
});

test("service descriptors route to the gateway's method names", () => {
  assert.equal(ChatStreams.typeName, "every.v1.ChatStreams");
  assert.equal(ChatStreams.methods.messages.name, "every.v1.ChatStreams/Messages");
  assert.equal(ChatStreams.methods.messages.kind, "subscribe");
  assert.equal(ChatStreams.methods.post.kind, "publish");
  assert.deepEqual(Object.keys(Sensors.methods), ["watch", "byDevice", "record", "firehose", "dump", "recordStrict", "recordRaw"]);
});

test("malformed input is a WireError, not a crash", () => {
  assert.throws(() => Everything.decode(new Uint8Array([10, 50, 1])), /WireError|truncated|past the end/);
  assert.throws(() => Scalars.decode(new Uint8Array([0x72, 2, 0xff, 0xfe])), /UTF-8/);
});
