import assert from "node:assert/strict";
import { test } from "node:test";
import { decodeFrame, encodeFrame, type Frame } from "../src/frames.js";
import { WireError, Writer } from "../src/wire.js";

const hex = (b: Uint8Array) => Buffer.from(b).toString("hex");
const u8 = (...b: number[]) => new Uint8Array(b);
const cursor = { topicId: u8(1, 2, 3), positions: [{ partition: 0, nextOffset: 10n }, { partition: 3, nextOffset: 2n ** 40n }] };

/** One frame of every kind, every field set to a non-default value; the field number from frame.proto. */
const EVERY: [number, Frame][] = [
  [1, { kind: "hello", hello: { protocolVersion: 1, token: "tok", client: "kafkasocks-ts/0.1.0", instanceId: "0123456789abcdef0123456789abcdef" } }],
  [
    2,
    {
      kind: "welcome",
      welcome: {
        sessionId: "s",
        serverId: "n1",
        limits: { maxMessageBytes: 1 << 20, maxSubscriptions: 64, maxPublishesPerSecond: 1000, maxInflightPublishes: 256, defaultCredit: 1000, maxCredit: 100000 },
        heartbeatIntervalMs: 15000,
        tokenExpiresAtMs: 1_700_000_000_000n,
        serverTimeMs: 1_699_999_000_000n,
      },
    },
  ],
  [3, { kind: "subscribe", subscribe: { id: 7, method: "demo.Ticker/Watch", request: u8(1, 2), start: { kind: "cursor", cursor }, credit: 256 } }],
  [4, { kind: "subscribed", subscribed: { id: 7, topic: "ticks", cursor, credit: 200 } }],
  [
    5,
    {
      kind: "data",
      data: {
        subscriptionId: 7,
        records: [
          { partition: 2, offset: 99n, timestampMs: 1_600_000_000_000n, key: u8(9), headers: [{ key: "h", value: u8(1) }, { key: "i", value: u8() }], payload: u8(4, 5), schemaId: 12, typeName: "pkg.Event.Reading", keySchemaId: 3 },
          { partition: 0, offset: 0n, timestampMs: 0n, key: u8(), headers: [], payload: u8(), schemaId: 0, typeName: "", keySchemaId: 0 },
        ],
      },
    },
  ],
  [6, { kind: "checkpoint", checkpoint: { subscriptionId: 7, positions: cursor.positions } }],
  [7, { kind: "unsubscribe", unsubscribe: { id: 7 } }],
  [8, { kind: "end", end: { id: 7 } }],
  [
    9,
    {
      kind: "publish",
      publish: {
        id: 2n ** 64n - 1n,
        method: "demo.Ticker/Place",
        payload: u8(1),
        idempotencyKey: u8(...Array(16).keys()),
        traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        tracestate: "rojo=00f067aa0ba902b7",
      },
    },
  ],
  [10, { kind: "receipt", receipt: { id: 3n, topic: "orders", partition: 1, offset: 42n, timestampMs: 1_700_000_000_123n, duplicate: true } }],
  [11, { kind: "error", error: { code: 15, message: "gone", subscriptionId: 7, publishId: 9n, discontinuity: 2, retryAfterMs: 250 } }],
  [12, { kind: "ping", ping: { nonce: 1n } }],
  [13, { kind: "pong", pong: { nonce: 2n ** 63n } }],
  [14, { kind: "tokenRefresh", tokenRefresh: { token: "new" } }],
  [15, { kind: "tokenAccepted", tokenAccepted: { tokenExpiresAtMs: 1_700_000_600_000n, serverTimeMs: 1_700_000_000_000n } }],
  [16, { kind: "credit", credit: { subscriptionId: 7, records: 128 } }],
  [17, { kind: "goAway", goAway: { reason: "deploy", reconnectAfterMs: 5000 } }],
];

test("every frame kind round-trips, under the field number frame.proto gives it", () => {
  assert.equal(EVERY.length, 17);
  for (const [field, frame] of EVERY) {
    const b = encodeFrame(frame);
    assert.equal(b[0], (field << 3) | 2, `${frame.kind}: key byte`);
    assert.deepEqual(decodeFrame(b), frame, frame.kind);
  }
});

test("hand-checked bytes: Frame{ping{nonce: 1}} = 62 02 08 01", () => {
  assert.equal(hex(encodeFrame({ kind: "ping", ping: { nonce: 1n } })), "62020801");
  assert.deepEqual(decodeFrame(u8(0x62, 0x02, 0x08, 0x01)), { kind: "ping", ping: { nonce: 1n } });
});

test("hand-checked bytes: the Data frame layout of protocol.md section 2", () => {
  const rec = { partition: 0, offset: 5n, timestampMs: 0n, key: u8(), headers: [], payload: u8(0xaa), schemaId: 0, typeName: "", keySchemaId: 0 };
  const b = encodeFrame({ kind: "data", data: { subscriptionId: 7, records: [rec, rec] } });
  // Record: 10 05 (offset 5) 32 01 aa (payload) = 5 bytes
  assert.equal(hex(b), "2a10" + "0807" + "1205" + "1005" + "3201aa" + "1205" + "1005" + "3201aa");
});

test("hand-checked bytes: Subscribe with start latest, and start timestamp 0 (oneof presence)", () => {
  const latest = encodeFrame({ kind: "subscribe", subscribe: { id: 1, method: "a", request: u8(), start: { kind: "latest" }, credit: 0 } });
  assert.equal(hex(latest), "1a09" + "0801" + "120161" + "2202" + "0a00");
  const ts0 = encodeFrame({ kind: "subscribe", subscribe: { id: 1, method: "", request: u8(), start: { kind: "timestampMs", timestampMs: 0n }, credit: 0 } });
  assert.equal(hex(ts0), "1a06" + "0801" + "2202" + "1800");
  assert.deepEqual(decodeFrame(ts0), {
    kind: "subscribe",
    subscribe: { id: 1, method: "", request: u8(), start: { kind: "timestampMs", timestampMs: 0n }, credit: 0 },
  });
});

test("absent fields decode as defaults; absent sub-messages stay absent", () => {
  assert.deepEqual(decodeFrame(u8(0x12, 0x00)), { kind: "welcome", welcome: { sessionId: "", serverId: "", heartbeatIntervalMs: 0, tokenExpiresAtMs: 0n, serverTimeMs: 0n } });
  assert.deepEqual(decodeFrame(u8(0x5a, 0x00)), {
    kind: "error",
    error: { code: 0, message: "", subscriptionId: 0, publishId: 0n, discontinuity: 0, retryAfterMs: 0 },
  });
  assert.equal(encodeFrame({ kind: "end", end: { id: 0 } }).length, 2, "an empty member is still written");
  assert.equal(encodeFrame({ kind: undefined }).length, 0);
});

test("an unknown frame member decodes as kind undefined; unknown fields are skipped", () => {
  const w = new Writer();
  w.tag(99, 2).fork().tag(1, 0).uint32(5).join();
  assert.deepEqual(decodeFrame(w.finish()), { kind: undefined });
  const w2 = new Writer();
  w2.tag(12, 2).fork().tag(50, 2).string("future").tag(1, 0).uint32(4).tag(51, 5).fixed32(1).join();
  assert.deepEqual(decodeFrame(w2.finish()), { kind: "ping", ping: { nonce: 4n } });
});

test("enum values this runtime does not know are kept as numbers", () => {
  const b = encodeFrame({ kind: "error", error: { code: 99, message: "", subscriptionId: 0, publishId: 0n, discontinuity: 42, retryAfterMs: 0 } });
  const f = decodeFrame(b);
  assert.equal(f.kind, "error");
  if (f.kind === "error") {
    assert.equal(f.error.code, 99);
    assert.equal(f.error.discontinuity, 42);
  }
});

test("a field with an unexpected wire type is skipped rather than misread", () => {
  const w = new Writer();
  w.tag(13, 2).fork().tag(1, 2).string("not a varint").join();
  assert.deepEqual(decodeFrame(w.finish()), { kind: "pong", pong: { nonce: 0n } });
});

test("truncated frames throw WireError", () => {
  const b = encodeFrame(EVERY[4]?.[1] as Frame);
  for (const cut of [1, 2, 5, b.length - 1]) assert.throws(() => decodeFrame(b.subarray(0, cut)), WireError, `cut at ${cut}`);
});
