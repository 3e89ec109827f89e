import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { Reader, WireError, Writer } from "../src/wire.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const bytes = (h: string) => new Uint8Array(Buffer.from(h.replace(/\s+/g, ""), "hex"));
const write = (f: (w: Writer) => unknown) => {
  const w = new Writer();
  f(w);
  return w.finish();
};

describe("varints", () => {
  test("uint32 encodings are the canonical protobuf bytes", () => {
    const cases: [number, string][] = [
      [0, "00"],
      [1, "01"],
      [127, "7f"],
      [128, "8001"],
      [300, "ac02"],
      [16384, "808001"],
      [2 ** 31, "8080808008"],
      [2 ** 32 - 1, "ffffffff0f"],
    ];
    for (const [n, h] of cases) {
      assert.equal(hex(write((w) => w.uint32(n))), h, `encode ${n}`);
      assert.equal(new Reader(bytes(h)).uint32(), n, `decode ${h}`);
    }
  });

  test("negative int32 is a 10-byte sign-extended varint and reads back", () => {
    const b = write((w) => w.int32(-1));
    assert.equal(hex(b), "ffffffffffffffffff01");
    assert.equal(new Reader(b).int32(), -1);
    assert.equal(new Reader(b).int64(), -1n, "the same bytes are int64 -1");
    const min = write((w) => w.int32(-(2 ** 31)));
    assert.equal(min.length, 10);
    assert.equal(new Reader(min).int32(), -(2 ** 31));
  });

  test("uint32 reading a 64-bit varint keeps the low 32 bits", () => {
    const b = write((w) => w.uint64(2n ** 40n + 5n));
    assert.equal(new Reader(b).uint32(), 5);
  });

  test("64-bit extremes round-trip as bigint", () => {
    for (const v of [0n, 1n, 127n, 128n, 2n ** 32n, 2n ** 53n + 1n, 2n ** 63n - 1n, 2n ** 64n - 1n]) {
      const b = write((w) => w.uint64(v));
      assert.equal(new Reader(b).uint64(), v, `uint64 ${v}`);
    }
    assert.equal(hex(write((w) => w.uint64(2n ** 64n - 1n))), "ffffffffffffffffff01");
    for (const v of [-1n, -(2n ** 63n), 2n ** 63n - 1n, -123456789012345n]) {
      const b = write((w) => w.int64(v));
      assert.equal(b.length, v < 0n ? 10 : b.length);
      assert.equal(new Reader(b).int64(), v, `int64 ${v}`);
    }
  });

  test("zigzag 32 and 64", () => {
    const z32: [number, number][] = [
      [0, 0],
      [-1, 1],
      [1, 2],
      [-2, 3],
      [2147483647, 4294967294],
      [-2147483648, 4294967295],
    ];
    for (const [v, z] of z32) {
      const b = write((w) => w.sint32(v));
      assert.equal(new Reader(b).uint32(), z, `zigzag32(${v})`);
      assert.equal(new Reader(b).sint32(), v);
    }
    const z64: [bigint, bigint][] = [
      [0n, 0n],
      [-1n, 1n],
      [1n, 2n],
      [2n ** 63n - 1n, 2n ** 64n - 2n],
      [-(2n ** 63n), 2n ** 64n - 1n],
    ];
    for (const [v, z] of z64) {
      const b = write((w) => w.sint64(v));
      assert.equal(new Reader(b).uint64(), z, `zigzag64(${v})`);
      assert.equal(new Reader(b).sint64(), v);
    }
  });
});

test("fixed-width, float, double, bool, string, bytes round-trip", () => {
  const b = write((w) =>
    w
      .fixed32(0xdeadbeef)
      .sfixed32(-5)
      .fixed64(2n ** 64n - 2n)
      .sfixed64(-(2n ** 63n))
      .float(1.5)
      .double(-Math.PI)
      .bool(true)
      .bool(false)
      .string("héllo ✓ 🎉")
      .bytes(new Uint8Array([0, 255, 7])),
  );
  assert.equal(hex(b.subarray(0, 4)), "efbeadde", "fixed32 is little-endian");
  const r = new Reader(b);
  assert.equal(r.fixed32(), 0xdeadbeef);
  assert.equal(r.sfixed32(), -5);
  assert.equal(r.fixed64(), 2n ** 64n - 2n);
  assert.equal(r.sfixed64(), -(2n ** 63n));
  assert.equal(r.float(), 1.5);
  assert.equal(r.double(), -Math.PI);
  assert.equal(r.bool(), true);
  assert.equal(r.bool(), false);
  assert.equal(r.string(), "héllo ✓ 🎉");
  assert.deepEqual([...r.bytes()], [0, 255, 7]);
  assert.ok(r.eof());
});

test("fork/join writes the length prefix, including multi-byte lengths and nesting", () => {
  const inner = "x".repeat(200);
  const b = write((w) => w.tag(1, 2).fork().tag(2, 2).fork().string(inner).join().tag(3, 0).uint32(9).join().tag(4, 0).uint32(1));
  const r = new Reader(b);
  assert.equal(r.tag(), (1 << 3) | 2);
  const outer = r.sub();
  assert.equal(outer.tag(), (2 << 3) | 2);
  const mid = outer.sub();
  assert.equal(mid.string(), inner);
  assert.ok(mid.eof());
  assert.equal(outer.tag(), 3 << 3);
  assert.equal(outer.uint32(), 9);
  assert.ok(outer.eof());
  assert.equal(r.tag(), 4 << 3);
  assert.equal(r.uint32(), 1);
  // outer length = 1 (tag) + 2 (len 202 as varint) + 202 + 2 = 207 -> "cf01"
  assert.equal(hex(b.subarray(0, 3)), "0acf01");
});

test("skip returns the raw bytes of unknown fields so they can be written back", () => {
  const src = write((w) =>
    w
      .tag(1, 0)
      .uint32(150)
      .tag(7, 2)
      .string("kept")
      .tag(8, 5)
      .fixed32(1)
      .tag(9, 1)
      .fixed64(2n)
      .tag(10, 3)
      .tag(1, 0)
      .uint32(5)
      .tag(10, 4)
      .tag(2, 0)
      .uint32(3),
  );
  const r = new Reader(src);
  const unknown: Uint8Array[] = [];
  let f1 = 0;
  let f2 = 0;
  while (!r.eof()) {
    const t = r.tag();
    if (t === 8) f1 = r.uint32();
    else if (t === 16) f2 = r.uint32();
    else unknown.push(r.skip(t));
  }
  assert.equal(f1, 150);
  assert.equal(f2, 3);
  assert.equal(unknown.length, 4, "string, fixed32, fixed64 and the group");
  const rebuilt = write((w) => {
    w.tag(1, 0).uint32(150);
    for (const u of unknown) w.raw(u);
    w.tag(2, 0).uint32(3);
  });
  assert.equal(hex(rebuilt), hex(src));
});

describe("malformed input is a WireError", () => {
  const fails = (h: string, read: (r: Reader) => unknown, pattern: RegExp) =>
    assert.throws(
      () => read(new Reader(bytes(h))),
      (e: unknown) => e instanceof WireError && pattern.test(e.message),
    );

  test("truncated varint, fixed and length-delimited values", () => {
    fails("", (r) => r.uint32(), /truncated/);
    fails("80", (r) => r.uint32(), /truncated/);
    fails("ffffffff", (r) => r.uint64(), /truncated/);
    fails("010203", (r) => r.fixed32(), /truncated/);
    fails("01020304050607", (r) => r.fixed64(), /truncated/);
    fails("0a0568656c", (r) => (r.tag(), r.string()), /length 5 past the end/);
  });

  test("varint longer than 10 bytes, and a 10th byte beyond 64 bits", () => {
    fails("8080808080808080808001", (r) => r.uint64(), /longer than 10 bytes/);
    fails("8080808080808080808001", (r) => r.uint32(), /longer than 10 bytes/);
    fails("ffffffffffffffffff02", (r) => r.uint64(), /overflows 64 bits/);
  });

  test("bad wire types, field 0, stray end-group, unterminated group", () => {
    fails("0e", (r) => r.tag(), /invalid wire type 6/);
    fails("0f", (r) => r.tag(), /invalid wire type 7/);
    fails("00", (r) => r.tag(), /field number 0/);
    fails("0c", (r) => r.skip(r.tag()), /unexpected wire type 4/);
    fails("0b0801", (r) => r.skip(r.tag()), /unterminated group/);
    fails("0b14", (r) => r.skip(r.tag()), /mismatched end group/);
  });

  test("invalid UTF-8 in a string", () => {
    fails("02c328", (r) => r.string(), /invalid UTF-8/);
  });

  test("a sub-reader cannot read past its own end", () => {
    const r = new Reader(bytes("0a02 0801 0802"));
    r.tag();
    const sub = r.sub();
    assert.equal(sub.tag(), 8);
    assert.equal(sub.uint32(), 1);
    assert.ok(sub.eof());
    assert.throws(() => sub.uint32(), WireError);
  });
});
