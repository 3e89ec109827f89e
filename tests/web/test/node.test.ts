/**
 * The runtime in Node 20 (no global WebSocket: the `ws` package's is injected) against the
 * real fixture-gateway and Kafka. The scenarios live in src/scenarios.ts and run unchanged in
 * Chromium (browser.test.ts); the assertions in src/suite.ts. The last two tests are about
 * `ws` itself: it emits 'error' events that crash the process when nobody listens.
 */
import assert from "node:assert/strict";
import net from "node:net";
import { test } from "node:test";
import { WebSocket } from "ws";
import { connect, silentLogger, type WebSocketConstructor } from "@kafkasocks/runtime";
import { cleanups } from "../src/fixtures.ts";
import { TcpProxy } from "../src/proxy.ts";
import { runScenario, waitFor } from "../src/scenarios.ts";
import { assertUnrecoverable, setup, sharedTests, type Runner } from "../src/suite.ts";

const WS = WebSocket as WebSocketConstructor;

const runner: Runner = {
  name: "node",
  run: (_t, f, name, params) => runScenario(name, { url: f.url, topic: f.topic, control: f.control, WebSocket: WS }, params),
};

sharedTests(runner);

// The same gateway process that read the records live (and still holds them in its replay
// ring) must also answer OFFSET_BELOW_LOG_START: records deleted from Kafka are not served
// from memory, and every node gives the same answer (found by this test, fixed in the gateway).
test(
  "node: the same gateway process also reports OFFSET_BELOW_LOG_START for a cursor below the log start",
  { timeout: 60_000 },
  async (t) => {
    const f = await setup(t, 3);
    const r = await runScenario("unrecoverableCursor", { url: f.url, topic: f.topic, control: f.control, WebSocket: WS }, { restartGateway: false });
    assertUnrecoverable(f, r);
  },
);

test("node: refused connection attempts (gateway unreachable) are retried, not thrown: ws's 'error' event is handled", { timeout: 20_000 }, async (t) => {
  const defer = cleanups(t);
  const proxy = await TcpProxy.start({ host: "127.0.0.1", port: 9 });
  proxy.block(); // every connection is reset at once, before the WebSocket handshake
  defer(() => proxy.close());
  const conn = connect({ url: proxy.url, WebSocket: WS, logger: silentLogger, backoff: { initialMs: 50, maxMs: 200 } });
  defer(() => conn.close());
  await waitFor("three refused attempts", () => proxy.refused >= 3, 10_000);
  assert.equal(conn.state, "reconnecting");
});

test("node: close() and the handshake timeout while the WebSocket is still connecting do not throw (ws emits 'error' on abort)", { timeout: 20_000 }, async (t) => {
  const defer = cleanups(t);
  // Accepts TCP and never answers the HTTP upgrade: the client's socket stays CONNECTING.
  const held = new Set<net.Socket>();
  let closed = 0;
  const server = net.createServer((s) => {
    held.add(s);
    s.on("error", () => undefined);
    s.on("close", () => {
      held.delete(s);
      closed++;
    });
    s.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  defer(() => new Promise((resolve) => server.close(resolve)));
  defer(() => held.forEach((s) => s.destroy()));
  const url = `ws://127.0.0.1:${(server.address() as net.AddressInfo).port}/streams`;

  // The handshake timeout drops the socket (close() while CONNECTING) and retries.
  const a = connect({ url, WebSocket: WS, logger: silentLogger, handshakeTimeoutMs: 100, backoff: { initialMs: 20, maxMs: 50 } });
  defer(() => a.close());
  await waitFor("two handshakes abandoned by the client", () => closed >= 2, 10_000);
  assert.equal(a.state, "reconnecting");
  a.close();
  assert.equal(a.state, "closed");

  // close() by the application while connecting.
  const before = closed;
  const b = connect({ url, WebSocket: WS, logger: silentLogger });
  await waitFor("the socket to reach the server", () => held.size >= 1, 10_000);
  b.close();
  await waitFor("the client to abort it", () => closed > before, 10_000);
  assert.equal(b.state, "closed");
});
