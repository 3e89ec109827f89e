import assert from "node:assert/strict";
import { test } from "node:test";
import { connect, KafkaSocksError, type ConnectionState, type WebSocketConstructor } from "../src/index.js";
import { flush, setup, type FakeWebSocket } from "../testing/fakes.js";

/** Read through a function so TypeScript does not keep an earlier assertion's narrowing. */
const closeCode = (ws: FakeWebSocket) => ws.closedByClient?.code;

// Compile-time: the browser's WebSocket fits the injectable constructor type.
const domWebSocket: WebSocketConstructor | undefined = typeof WebSocket === "undefined" ? undefined : WebSocket;
void domWebSocket;

test("opens with subprotocol kafkasocks.v1 and arraybuffer, sends Hello, becomes open on Welcome", async () => {
  const h = setup({ token: "t0k" });
  const states: ConnectionState[] = [];
  h.conn.on("state", (s) => states.push(s));
  assert.equal(h.conn.state, "connecting");
  const ws = await h.session({ sessionId: "abc" });
  assert.equal(ws.url, "wss://gateway.test/ks");
  assert.equal(ws.protocols, "kafkasocks.v1");
  assert.equal(ws.binaryType, "arraybuffer");
  const hello = ws.sent[0] as { kind: "hello"; hello: { instanceId: string } };
  assert.match(hello.hello.instanceId, /^[0-9a-f]{32}$/, "128 random bits");
  assert.deepEqual(ws.sent[0], {
    kind: "hello",
    hello: { protocolVersion: 1, token: "t0k", client: "kafkasocks-ts/0.1.0", instanceId: hello.hello.instanceId },
  });
  assert.equal(h.conn.state, "open");
  assert.deepEqual(states, ["open"]);
  assert.equal(h.conn.welcome?.sessionId, "abc");
});

test("throws a clear NO_WEBSOCKET error when there is no WebSocket (Node 20)", () => {
  assert.equal(typeof (globalThis as { WebSocket?: unknown }).WebSocket, "undefined", "Node 20 has no global WebSocket");
  assert.throws(
    () => connect({ url: "ws://x" }),
    (e: unknown) => e instanceof KafkaSocksError && e.code === "FAILED_PRECONDITION" && e.clientCode === "NO_WEBSOCKET" && /ws/.test(e.message),
  );
});

test("answers Ping with Pong carrying the same nonce", async () => {
  const h = setup();
  const ws = await h.session();
  ws.deliver({ kind: "ping", ping: { nonce: 123456789012n } });
  assert.deepEqual(ws.last("pong"), { nonce: 123456789012n });
});

test("an async token function is awaited before every (re)connect", async () => {
  let n = 0;
  const h = setup({ token: async () => `token-${++n}` });
  const ws1 = await h.session();
  assert.equal(ws1.last("hello").token, "token-1");
  ws1.serverClose(1006);
  assert.equal(h.conn.state, "reconnecting");
  await h.tick(250); // backoff: random 0.5 * 500
  const ws2 = await h.session();
  assert.notEqual(ws2, ws1);
  assert.equal(ws2.last("hello").token, "token-2");
});

test("a dropped connection reconnects with backoff, not before", async () => {
  const h = setup({ backoff: { initialMs: 1000, maxMs: 8000, random: () => 0.999 } });
  const ws1 = await h.session();
  ws1.serverClose(1011, "internal");
  assert.equal(h.conn.state, "reconnecting");
  await h.tick(998);
  assert.equal(h.Socket.instances.length, 1, "no new socket before the backoff delay");
  await h.tick(1);
  assert.equal(h.Socket.instances.length, 2);
  // A second failure without a Welcome doubles the window: 0.999 * 2000 = 1998.
  h.ws.serverClose(1006);
  await h.tick(1997);
  assert.equal(h.Socket.instances.length, 2);
  await h.tick(1);
  assert.equal(h.Socket.instances.length, 3);
  await h.session();
  assert.equal(h.conn.state, "open");
});

test("fatal close 4001 with a static token: closed with UNAUTHENTICATED, no reconnect", async () => {
  const h = setup({ token: "static" });
  const states: ConnectionState[] = [];
  h.conn.on("state", (s) => states.push(s));
  const errors: KafkaSocksError[] = [];
  h.conn.on("error", (e) => errors.push(e));
  const ws = await h.session();
  ws.deliver({ kind: "error", error: { code: 16, message: "bad token", subscriptionId: 0, publishId: 0n, discontinuity: 0, retryAfterMs: 0 } });
  ws.serverClose(4001, "unauthenticated");
  assert.equal(h.conn.state, "closed");
  assert.deepEqual(states, ["open", "closed"]);
  assert.equal(h.conn.error?.code, "UNAUTHENTICATED");
  assert.equal(h.conn.error?.closeCode, 4001);
  assert.equal(h.conn.error?.message, "bad token");
  assert.equal(errors.at(-1), h.conn.error);
  await h.tick(600_000);
  assert.equal(h.Socket.instances.length, 1, "never reconnects");
  assert.equal(h.clock.pending, 0, "no timer left behind");
});

test("4001 with a token function: one retry with a fresh token, then fatal", async () => {
  let n = 0;
  const h = setup({ token: () => `t${++n}` });
  const ws1 = await h.session();
  ws1.serverClose(4001);
  assert.equal(h.conn.state, "reconnecting");
  await h.tick(250);
  await flush();
  const ws2 = h.ws;
  assert.notEqual(ws2, ws1);
  ws2.open();
  assert.equal(ws2.last("hello").token, "t2");
  ws2.serverClose(4001);
  assert.equal(h.conn.state, "closed");
  assert.equal(h.conn.error?.code, "UNAUTHENTICATED");
});

test("4002 (token expired) reconnects with a new token; with a static token it is fatal", async () => {
  let n = 0;
  const h = setup({ token: () => `t${++n}` });
  (await h.session()).serverClose(4002, "token expired");
  await h.tick(250);
  const ws2 = await h.session();
  assert.equal(ws2.last("hello").token, "t2");
  assert.equal(h.conn.state, "open");

  const s = setup({ token: "fixed" });
  (await s.session()).serverClose(4002);
  assert.equal(s.conn.state, "closed");
  assert.equal(s.conn.error?.closeCode, 4002);
});

test("close codes 4000, 1002, 1003 and 1009 before Welcome are fatal; 1009 after Welcome is not", async () => {
  for (const [code, name] of [
    [4000, "FAILED_PRECONDITION"],
    [1002, "INTERNAL"],
    [1003, "INTERNAL"],
  ] as const) {
    const h = setup();
    (await h.session()).serverClose(code);
    assert.equal(h.conn.state, "closed", `${code}`);
    assert.equal(h.conn.error?.code, name);
    assert.equal(h.conn.error?.clientCode, "FATAL_CLOSE");
  }
  const before = setup();
  await flush();
  before.ws.open();
  before.ws.serverClose(1009);
  assert.equal(before.conn.state, "closed");
  assert.equal(before.conn.error?.code, "RESOURCE_EXHAUSTED");
  const after = setup();
  (await after.session()).serverClose(1009);
  assert.equal(after.conn.state, "reconnecting");
});

test("GoAway: reconnects after reconnect_after_ms plus jitter, holding new work meanwhile", async () => {
  const h = setup({ backoff: { random: () => 0.5 } });
  const ws1 = await h.session();
  ws1.deliver({ kind: "goAway", goAway: { reason: "deploy", reconnectAfterMs: 4000 } });
  const sub = h.conn.subscribe("demo.T/Watch", new Uint8Array());
  assert.equal(ws1.sentOf("subscribe").length, 0, "no new subscription to a draining gateway");
  ws1.serverClose(1001, "going away");
  assert.equal(h.conn.state, "reconnecting");
  await h.tick(5999); // 4000 + 0.5 * 4000
  assert.equal(h.Socket.instances.length, 1, "waits for reconnect_after_ms + jitter");
  await h.tick(1);
  assert.equal(h.Socket.instances.length, 2);
  const ws2 = await h.session();
  assert.equal(ws2.sentOf("subscribe").length, 1, "the held subscription goes to the new node");
  assert.equal(sub.state, "subscribing");
});

test("GoAway: if the gateway has not closed by then, the client leaves once receipts are in", async () => {
  const h = setup({ backoff: { random: () => 0 } });
  const ws1 = await h.session();
  const p = h.conn.publish("demo.T/Place", new Uint8Array([1]));
  const id = ws1.last("publish").id;
  ws1.deliver({ kind: "goAway", goAway: { reason: "deploy", reconnectAfterMs: 1000 } });
  await h.tick(1000);
  assert.equal(ws1.closedByClient, undefined, "a publish still awaits its receipt on this node");
  ws1.deliver({ kind: "receipt", receipt: { id, topic: "o", partition: 0, offset: 1n, timestampMs: 0n, duplicate: false } });
  assert.equal((await p).offset, 1n);
  assert.equal(closeCode(ws1), 1000);
  await h.tick(0);
  assert.equal(h.Socket.instances.length, 2);
});

test("heartbeat silence for two intervals drops the socket and reconnects; traffic keeps it alive", async () => {
  const h = setup();
  const ws1 = await h.session({ heartbeatIntervalMs: 1000 });
  for (let i = 0; i < 5; i++) {
    await h.tick(1500);
    ws1.deliver({ kind: "ping", ping: { nonce: BigInt(i) } });
  }
  assert.equal(ws1.closedByClient, undefined, "pings every 1.5 s keep a 2 s deadline alive");
  await h.tick(1999);
  assert.equal(ws1.closedByClient, undefined);
  await h.tick(1);
  assert.ok(ws1.closedByClient, "silent for 2 × 1000 ms: dropped");
  assert.equal(h.conn.state, "reconnecting");
  await h.tick(250);
  assert.equal(h.Socket.instances.length, 2);
});

test("no Welcome within the handshake timeout: drop and retry", async () => {
  const h = setup({ handshakeTimeoutMs: 3000 });
  await flush();
  h.ws.open();
  await h.tick(2999);
  assert.equal(h.Socket.instances.length, 1);
  await h.tick(1);
  assert.ok(h.Socket.instances[0]?.closedByClient);
  await h.tick(250);
  assert.equal(h.Socket.instances.length, 2);
});

test("the browser 'online' event and visibility cut a backoff wait short", async () => {
  const win = new EventTarget();
  const doc = Object.assign(new EventTarget(), { visibilityState: "hidden" });
  const h = setup({ wakeEvents: { window: win, document: doc }, backoff: { initialMs: 10_000, random: () => 0.9 } });
  (await h.session()).serverClose(1006);
  await flush();
  assert.equal(h.Socket.instances.length, 1);
  win.dispatchEvent(new Event("online"));
  await flush();
  assert.equal(h.Socket.instances.length, 2, "reconnects at once when the network comes back");
  h.ws.serverClose(1006);
  doc.dispatchEvent(new Event("visibilitychange"));
  await flush();
  assert.equal(h.Socket.instances.length, 2, "still hidden: keep waiting");
  doc.visibilityState = "visible";
  doc.dispatchEvent(new Event("visibilitychange"));
  await flush();
  assert.equal(h.Socket.instances.length, 3);
  h.conn.close();
  win.dispatchEvent(new Event("online"));
  await flush();
  assert.equal(h.Socket.instances.length, 3, "listeners removed on close");
});

test("token refresh: at 80% of the lifetime the token function is called and TokenRefresh sent", async () => {
  let n = 0;
  const h = setup({ token: async () => `tok-${++n}` });
  const now = h.clock.now();
  const ws = await h.session({ tokenExpiresAtMs: BigInt(now + 100_000), heartbeatIntervalMs: 60_000 });
  await h.tick(79_999);
  assert.equal(ws.sentOf("tokenRefresh").length, 0);
  await h.tick(1);
  assert.deepEqual(ws.sentOf("tokenRefresh"), [{ token: "tok-2" }]);
  ws.deliver({ kind: "tokenAccepted", tokenAccepted: { tokenExpiresAtMs: BigInt(h.clock.now() + 50_000), serverTimeMs: 0n } });
  await h.tick(40_000);
  assert.deepEqual(ws.sentOf("tokenRefresh"), [{ token: "tok-2" }, { token: "tok-3" }], "rescheduled from TokenAccepted");
  assert.equal(h.conn.state, "open");
});

test("token refresh uses the gateway's clock: a client clock an hour off refreshes on time", async () => {
  let n = 0;
  const h = setup({ token: async () => `tok-${++n}` });
  // The gateway's clock is an hour ahead of ours; the token has 100 s left on its clock.
  const server = h.clock.now() + 3_600_000;
  const ws = await h.session({
    tokenExpiresAtMs: BigInt(server + 100_000),
    serverTimeMs: BigInt(server),
    heartbeatIntervalMs: 60_000,
  });
  await h.tick(79_999);
  assert.equal(ws.sentOf("tokenRefresh").length, 0, "not early (by our clock it expires in an hour)");
  await h.tick(1);
  assert.deepEqual(ws.sentOf("tokenRefresh"), [{ token: "tok-2" }], "at 80% of the lifetime, on time");
});

test("no in-band refresh with a static token or without expiry", async () => {
  const h = setup({ token: "static" });
  const ws = await h.session({ tokenExpiresAtMs: BigInt(h.clock.now() + 10_000) });
  await h.tick(20_000);
  assert.equal(ws.sentOf("tokenRefresh").length, 0);
});

test("tokens never appear in log output, even when the gateway echoes them", async () => {
  const SECRET = "eyJ-super-secret-token";
  const FRESH = "eyJ-fresh-secret-token";
  let calls = 0;
  const h = setup({ token: () => (++calls === 1 ? SECRET : FRESH), url: `wss://gateway.test/ks?token=${SECRET}` });
  const ws = await h.session({ tokenExpiresAtMs: BigInt(h.clock.now() + 10_000) });
  await h.tick(8_000);
  ws.deliver({ kind: "error", error: { code: 16, message: `token ${FRESH} refused`, subscriptionId: 0, publishId: 0n, discontinuity: 0, retryAfterMs: 0 } });
  ws.serverClose(4001, `bad ${FRESH}`);
  await h.tick(1000);
  h.ws.open();
  h.ws.serverClose(4001, SECRET);
  assert.equal(h.conn.state, "closed");
  const text = JSON.stringify(h.logs);
  assert.ok(h.logs.length > 5, "the test did log");
  assert.ok(text.includes("[redacted]"), "the echoed token was logged, redacted");
  assert.ok(!text.includes(SECRET), "first token never logged");
  assert.ok(!text.includes(FRESH), "refreshed token never logged");
});

test("close(): state closed, socket closed with 1000, no reconnect", async () => {
  const h = setup();
  const ws = await h.session();
  h.conn.close();
  assert.equal(h.conn.state, "closed");
  assert.equal(h.conn.error, undefined);
  assert.equal(ws.closedByClient?.code, 1000);
  await h.tick(60_000);
  assert.equal(h.Socket.instances.length, 1);
});

test("an undecodable or text message drops the socket and reconnects", async () => {
  const h = setup();
  const ws = await h.session();
  ws.deliverRaw(new Uint8Array([0x0a, 0x05, 0x01]).buffer);
  assert.ok(ws.closedByClient);
  assert.equal(h.conn.state, "reconnecting");
  await h.tick(250);
  const ws2 = await h.session();
  ws2.deliverRaw("text");
  assert.ok(ws2.closedByClient);
});
