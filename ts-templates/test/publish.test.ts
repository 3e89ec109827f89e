import assert from "node:assert/strict";
import { test } from "node:test";
import { KafkaSocksError, type Receipt } from "../src/index.js";
import type { Limits } from "../src/frames.js";
import { setup, type FakeWebSocket } from "../testing/fakes.js";

const METHOD = "demo.Orders/Place";
const PAYLOAD = new Uint8Array([8, 1, 18, 4, 65, 67, 77, 69]);
const receipt = (ws: FakeWebSocket, id: bigint, over: Partial<{ offset: bigint; duplicate: boolean }> = {}) =>
  ws.deliver({ kind: "receipt", receipt: { id, topic: "orders", partition: 2, offset: over.offset ?? 41n, timestampMs: 1_700_000_000_500n, duplicate: over.duplicate ?? false } });
const publishError = (ws: FakeWebSocket, publishId: bigint, code: number, retryAfterMs = 0) =>
  ws.deliver({ kind: "error", error: { code, message: `code ${code}`, subscriptionId: 0, publishId, discontinuity: 0, retryAfterMs } });
const isError = (code: string, clientCode?: string) => (e: unknown) =>
  e instanceof KafkaSocksError && e.code === code && (clientCode === undefined || e.clientCode === clientCode);
const limits = (over: Partial<Limits>): Limits => ({
  maxMessageBytes: 1 << 20,
  maxSubscriptions: 64,
  maxPublishesPerSecond: 1000,
  maxInflightPublishes: 256,
  defaultCredit: 1000,
  maxCredit: 100_000,
  ...over,
});

test("publish sends Publish with a random 16-byte idempotency key and resolves with the receipt", async () => {
  const h = setup();
  const ws = await h.session();
  const p = h.conn.publish(METHOD, PAYLOAD);
  const frame = ws.last("publish");
  assert.equal(frame.method, METHOD);
  assert.deepEqual(frame.payload, PAYLOAD);
  assert.equal(frame.idempotencyKey.length, 16);
  assert.ok(frame.idempotencyKey.some((b) => b !== 0));
  h.conn.publish(METHOD, PAYLOAD);
  assert.notDeepEqual(ws.last("publish").idempotencyKey, frame.idempotencyKey, "a fresh key per publish");
  assert.notEqual(ws.last("publish").id, frame.id);
  receipt(ws, frame.id);
  const r: Receipt = await p;
  assert.deepEqual(r, { topic: "orders", partition: 2, offset: 41n, timestampMs: 1_700_000_000_500, duplicate: false });
});

test("a caller's idempotency key (bytes or string) is used as is; more than 64 bytes is refused", async () => {
  const h = setup();
  const ws = await h.session();
  void h.conn.publish(METHOD, PAYLOAD, { idempotencyKey: "order-42" });
  assert.deepEqual(ws.last("publish").idempotencyKey, new TextEncoder().encode("order-42"));
  await assert.rejects(h.conn.publish(METHOD, PAYLOAD, { idempotencyKey: new Uint8Array(65) }), isError("INVALID_ARGUMENT"));
});

test("a publish's trace context goes out in the Publish frame, also when resent after a reconnect; none: empty fields", async () => {
  const h = setup();
  const ws = await h.session();
  const traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  const tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";
  void h.conn.publish(METHOD, PAYLOAD, { traceparent, tracestate });
  const frame = ws.last("publish");
  assert.deepEqual([frame.traceparent, frame.tracestate], [traceparent, tracestate]);
  ws.serverClose(1006);
  await h.tick(250);
  const ws2 = await h.session();
  assert.deepEqual([ws2.last("publish").traceparent, ws2.last("publish").tracestate], [traceparent, tracestate], "resent with it");
  void h.conn.publish(METHOD, PAYLOAD);
  assert.deepEqual([ws2.last("publish").traceparent, ws2.last("publish").tracestate], ["", ""]);
});

test("publishes made offline wait and go out after Welcome", async () => {
  const h = setup();
  const p = h.conn.publish(METHOD, PAYLOAD);
  const ws = await h.session();
  const frame = ws.last("publish");
  receipt(ws, frame.id);
  assert.equal((await p).offset, 41n);
});

test("after a reconnect every unanswered publish is resent with the SAME idempotency key, in order", async () => {
  const h = setup();
  const ws1 = await h.session();
  const p1 = h.conn.publish(METHOD, new Uint8Array([1]));
  const p2 = h.conn.publish(METHOD, new Uint8Array([2]));
  const [f1, f2] = ws1.sentOf("publish");
  assert.ok(f1 && f2);
  ws1.serverClose(1006);
  const p3 = h.conn.publish(METHOD, new Uint8Array([3]));
  await h.tick(250);
  const ws2 = await h.session();
  const resent = ws2.sentOf("publish");
  assert.deepEqual(
    resent.map((f) => f.payload[0]),
    [1, 2, 3],
  );
  assert.deepEqual(resent[0]?.idempotencyKey, f1.idempotencyKey);
  assert.deepEqual(resent[1]?.idempotencyKey, f2.idempotencyKey);
  assert.ok(resent.every((f) => f.id !== f1.id && f.id !== f2.id), "new frame ids on the new socket");
  receipt(ws2, resent[0]!.id, { duplicate: true, offset: 7n });
  receipt(ws2, resent[1]!.id, { offset: 8n });
  receipt(ws2, resent[2]!.id, { offset: 9n });
  const [r1, r2, r3] = await Promise.all([p1, p2, p3]);
  assert.deepEqual([r1.duplicate, r1.offset, r2.offset, r3.offset], [true, 7n, 8n, 9n]);
});

test("offline queue full: RESOURCE_EXHAUSTED / QUEUE_FULL with a clear message", async () => {
  const h = setup({ maxOfflinePublishes: 3 });
  const queued = [1, 2, 3].map((i) => h.conn.publish(METHOD, new Uint8Array([i])));
  await assert.rejects(h.conn.publish(METHOD, PAYLOAD), (e: unknown) => {
    assert.ok(e instanceof KafkaSocksError);
    assert.equal(e.code, "RESOURCE_EXHAUSTED");
    assert.equal(e.clientCode, "QUEUE_FULL");
    assert.match(e.message, /queue full: 3 publishes/);
    return true;
  });
  const ws = await h.session();
  assert.equal(ws.sentOf("publish").length, 3);
  for (const f of ws.sentOf("publish")) receipt(ws, f.id);
  assert.equal((await Promise.all(queued)).length, 3);
});

test("the per-call timeout rejects with DEADLINE_EXCEEDED; a late receipt is ignored", async () => {
  const h = setup({ publishTimeoutMs: 5000 });
  const ws = await h.session({ heartbeatIntervalMs: 60_000 });
  const p = h.conn.publish(METHOD, PAYLOAD);
  const short = assert.rejects(h.conn.publish(METHOD, PAYLOAD, { timeoutMs: 100 }), isError("DEADLINE_EXCEEDED", "TIMEOUT"));
  let settled = false;
  const long = assert.rejects(
    p.finally(() => (settled = true)),
    isError("DEADLINE_EXCEEDED"),
  );
  await h.tick(100);
  await short;
  await h.tick(4899);
  assert.equal(settled, false, "the default 5000 ms has not passed");
  await h.tick(1);
  await long;
  receipt(ws, ws.sentOf("publish")[0]!.id);
  assert.equal(h.conn.state, "open");
});

test("rate limited (RESOURCE_EXHAUSTED + retry_after_ms): resent after that delay with the same key, a bounded number of times", async () => {
  const h = setup({ maxPublishRetries: 2 });
  const ws = await h.session();
  const p = h.conn.publish(METHOD, PAYLOAD);
  const first = ws.last("publish");
  publishError(ws, first.id, 8, 300);
  await h.tick(299);
  assert.equal(ws.sentOf("publish").length, 1);
  await h.tick(1);
  const second = ws.last("publish");
  assert.equal(ws.sentOf("publish").length, 2);
  assert.deepEqual(second.idempotencyKey, first.idempotencyKey);
  receipt(ws, second.id);
  assert.equal((await p).offset, 41n);

  const q = assert.rejects(h.conn.publish(METHOD, PAYLOAD), (e: unknown) => isError("RESOURCE_EXHAUSTED")(e) && (e as KafkaSocksError).retryAfterMs === 100);
  for (let i = 0; i < 3; i++) {
    publishError(ws, ws.last("publish").id, 8, 100);
    await h.tick(100);
  }
  await q;
  assert.equal(ws.sentOf("publish").length, 2 + 3, "1 try + 2 retries");
});

test("a publish waiting out a refusal's retry_after_ms is not overtaken: later publishes go after it, in call order", async () => {
  const h = setup();
  const ws = await h.session({ limits: limits({}) });
  const body = (f: { payload: Uint8Array }) => f.payload[0];
  const ps = [1, 2].map((i) => h.conn.publish(METHOD, new Uint8Array([i])));
  const [f1, f2] = ws.sentOf("publish");
  assert.ok(f1 && f2);
  publishError(ws, f1.id, 8, 300); // 1 refused; 2 is on the wire already (the gateway may take it)
  ps.push(h.conn.publish(METHOD, new Uint8Array([3])), h.conn.publish(METHOD, new Uint8Array([4])));
  assert.deepEqual(ws.sentOf("publish").map(body), [1, 2], "3 and 4 wait behind 1");
  await h.tick(299);
  assert.deepEqual(ws.sentOf("publish").map(body), [1, 2]);
  await h.tick(1);
  assert.deepEqual(ws.sentOf("publish").map(body), [1, 2, 1, 3, 4], "1 again (same key), then 3 and 4");
  assert.deepEqual(ws.sentOf("publish")[2]?.idempotencyKey, f1.idempotencyKey);
  for (const f of ws.sentOf("publish").slice(1)) receipt(ws, f.id);
  assert.equal((await Promise.all(ps)).length, 4);
});

test("publishes stay within Welcome's max_publishes_per_second: half its burst at once, then one per 1/rate, in call order; a new session has a new bucket", async () => {
  const h = setup({ backoff: { random: () => 0 } });
  const ws1 = await h.session({ limits: limits({ maxPublishesPerSecond: 10 }) });
  const body = (f: { payload: Uint8Array }) => f.payload[0];
  const ps = Array.from({ length: 12 }, (_, i) => h.conn.publish(METHOD, new Uint8Array([i])));
  assert.deepEqual(ws1.sentOf("publish").map(body), [0, 1, 2, 3, 4], "half of the gateway's burst of 10 at once");
  await h.tick(99);
  assert.equal(ws1.sentOf("publish").length, 5, "the next token is 100 ms away");
  await h.tick(1);
  assert.deepEqual(ws1.sentOf("publish").map(body), [0, 1, 2, 3, 4, 5]);
  await h.tick(200);
  assert.deepEqual(ws1.sentOf("publish").map(body), [0, 1, 2, 3, 4, 5, 6, 7]);
  for (const f of ws1.sentOf("publish").slice(0, 2)) receipt(ws1, f.id);
  // Answers free no rate tokens: still one per 100 ms.
  assert.equal(ws1.sentOf("publish").length, 8);
  ws1.serverClose(1006);
  await h.tick(1);
  const ws2 = await h.session({ limits: limits({ maxPublishesPerSecond: 10 }) });
  assert.deepEqual(ws2.sentOf("publish").map(body), [2, 3, 4, 5, 6], "the unanswered ones first, in call order, with a fresh burst");
  await h.tick(100);
  assert.deepEqual(ws2.sentOf("publish").map(body), [2, 3, 4, 5, 6, 7]);
  await h.tick(400);
  assert.deepEqual(ws2.sentOf("publish").map(body), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  for (const f of ws2.sentOf("publish")) receipt(ws2, f.id);
  assert.equal((await Promise.all(ps)).length, 12);
});

test("other errors reject with the gateway's code", async () => {
  const h = setup();
  const ws = await h.session();
  const p = h.conn.publish(METHOD, PAYLOAD);
  publishError(ws, ws.last("publish").id, 7);
  await assert.rejects(p, isError("PERMISSION_DENIED"));
  const q = h.conn.publish(METHOD, PAYLOAD);
  publishError(ws, ws.last("publish").id, 14);
  await assert.rejects(q, isError("UNAVAILABLE"), "UNAVAILABLE outside GoAway is not retried");
});

test("UNAVAILABLE after GoAway: the publish waits for the next node (same key)", async () => {
  const h = setup({ backoff: { random: () => 0 } });
  const ws1 = await h.session();
  const p = h.conn.publish(METHOD, PAYLOAD);
  const first = ws1.last("publish");
  ws1.deliver({ kind: "goAway", goAway: { reason: "deploy", reconnectAfterMs: 100 } });
  publishError(ws1, first.id, 14);
  await h.tick(100);
  const ws2 = await h.session();
  const again = ws2.last("publish");
  assert.deepEqual(again.idempotencyKey, first.idempotencyKey);
  receipt(ws2, again.id);
  assert.equal((await p).partition, 2);
});

test("the gateway's in-flight limit is respected: extra publishes wait for receipts", async () => {
  const h = setup();
  const ws = await h.session({ limits: limits({ maxInflightPublishes: 2 }) });
  const ps = [1, 2, 3].map((i) => h.conn.publish(METHOD, new Uint8Array([i])));
  assert.equal(ws.sentOf("publish").length, 2);
  receipt(ws, ws.sentOf("publish")[0]!.id);
  assert.equal(ws.sentOf("publish").length, 3);
  receipt(ws, ws.sentOf("publish")[1]!.id);
  receipt(ws, ws.sentOf("publish")[2]!.id);
  assert.equal((await Promise.all(ps)).length, 3);
});

test("a publish larger than max_message_bytes is refused locally (TOO_LARGE), never sent", async () => {
  const h = setup();
  const ws = await h.session({ limits: limits({ maxMessageBytes: 64 }) });
  await assert.rejects(h.conn.publish(METHOD, new Uint8Array(100)), isError("RESOURCE_EXHAUSTED", "TOO_LARGE"));
  assert.equal(ws.sentOf("publish").length, 0);
});

test("abort rejects with CANCELLED; close() rejects pending and later publishes", async () => {
  const h = setup();
  const ws = await h.session();
  const ac = new AbortController();
  const p = h.conn.publish(METHOD, PAYLOAD, { signal: ac.signal });
  ac.abort();
  await assert.rejects(p, isError("CANCELLED", "ABORTED"));
  const q = h.conn.publish(METHOD, PAYLOAD);
  h.conn.close();
  await assert.rejects(q, isError("CANCELLED", "CLOSED"));
  await assert.rejects(h.conn.publish(METHOD, PAYLOAD), isError("CANCELLED", "CLOSED"));
  assert.equal(ws.sentOf("publish").length, 2);
});

test("a fatal close rejects pending publishes with the fatal error", async () => {
  const h = setup({ token: "static" });
  const ws = await h.session();
  const p = h.conn.publish(METHOD, PAYLOAD);
  ws.serverClose(4001);
  await assert.rejects(p, isError("UNAUTHENTICATED", "FATAL_CLOSE"));
});
