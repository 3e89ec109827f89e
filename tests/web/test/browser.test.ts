/**
 * The same scenarios in real headless Chromium (playwright-core, /usr/bin/chromium): the
 * runtime (@kafkasocks/runtime, a file: dependency on ../../ts-templates) is bundled by esbuild (entry src/harness.ts), served by a
 * Node http server on 127.0.0.1:0 (one for this file: its origin is the one the gateways let
 * in), and run inside the page with the browser's own WebSocket.
 * The page reaches the test's Control (proxy, fixture-kafka, network emulation) through
 * functions exposed with page.exposeFunction. Each test launches its own browser with a fresh
 * user-data dir and closes everything it started.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test, type TestContext } from "node:test";
import { build } from "esbuild";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS, webRoot } from "../src/fixtures.ts";
import { CONTROL_METHODS, type Produced, type Row, type ScenarioName, type ScenarioParams, type ScenarioResult } from "../src/scenarios.ts";
import { assertExactlyOnceInOrder, setup, sharedTests, type Fixture, type Runner } from "../src/suite.ts";


let bundle: Promise<string> | undefined;

/** The harness and the runtime in one ES module (built once per run). */
function harnessBundle(): Promise<string> {
  bundle ??= build({
    entryPoints: [join(webRoot, "src", "harness.ts")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    sourcemap: "inline",
    write: false,
    logLevel: "silent",
  }).then((r) => {
    const out = r.outputFiles[0];
    if (!out) throw new Error("esbuild produced nothing");
    return out.text;
  });
  return bundle;
}

const PAGE = `<!doctype html>
<html><head><meta charset="utf-8"><title>KafkaSocks runtime test page</title></head>
<body><script type="module" src="/harness.js"></script></body></html>`;

/** Serves the test page and the bundle on 127.0.0.1:0. */
async function servePage(): Promise<{ url: string; origin: string; close(): Promise<void> }> {
  const js = await harnessBundle();
  const server = http.createServer((req, res) => {
    if (req.url === "/") res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(PAGE);
    else if (req.url === "/harness.js") res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(js);
    else if (req.url === "/favicon.ico") res.writeHead(204).end();
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: `${origin}/`,
    origin,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** The pages of every test, from one origin: the one the tests' gateways let in (FIXTURE_ORIGINS). */
const pages = await servePage();
after(() => pages.close());

interface Browser {
  context: BrowserContext;
  page: Page;
  /** Console output and page errors, for failure messages. */
  console: string[];
}

/**
 * A fresh Chromium (own user-data dir) with the test page loaded from `server` (default: the
 * allowed origin) and the fixture's Control exposed.
 */
async function openPage(f: Fixture, server: { url: string } = pages): Promise<Browser> {
  const userDataDir = await mkdtemp(join(tmpdir(), "kafkasocks-chromium-"));
  f.defer(() => rm(userDataDir, { recursive: true, force: true }));
  const context = await chromium.launchPersistentContext(userDataDir, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  f.defer(() => context.close());
  f.control.offline = (offline) => context.setOffline(offline);
  const page = context.pages()[0] ?? (await context.newPage());
  const lines: string[] = [];
  page.on("console", (m) => lines.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => lines.push(`pageerror: ${e.message}`));
  for (const m of CONTROL_METHODS) {
    await page.exposeFunction(`ksControl_${m}`, (...args: unknown[]) => (f.control[m] as (...a: unknown[]) => Promise<unknown>).apply(f.control, args));
  }
  await page.goto(server.url);
  await page.waitForFunction(() => "ksHarness" in window, undefined, { timeout: 10_000 });
  return { context, page, console: lines };
}

async function runInPage<K extends ScenarioName>(
  f: Fixture,
  name: K,
  params: ScenarioParams<K>,
  server?: { url: string },
): Promise<{ result: ScenarioResult<K>; browser: Browser }> {
  const browser = await openPage(f, server);
  try {
    const result = await browser.page.evaluate(
      ({ name, url, topic, params }) =>
        (window as unknown as { ksHarness: { run(n: string, b: { url: string; topic: string }, p: unknown): Promise<unknown> } }).ksHarness.run(
          name,
          { url, topic },
          params,
        ),
      { name, url: f.url, topic: f.topic, params: params ?? null },
    );
    return { result: result as ScenarioResult<K>, browser };
  } catch (e) {
    const tail = browser.console.slice(-20).join("\n");
    throw new Error(`${e instanceof Error ? e.message : String(e)}${tail ? `\n--- page console ---\n${tail}` : ""}`, { cause: e });
  }
}

const runner: Runner = {
  name: "chromium",
  origins: [pages.origin],
  run<K extends ScenarioName>(_t: TestContext, f: Fixture, name: K, params: ScenarioParams<K>): Promise<ScenarioResult<K>> {
    return runInPage(f, name, params).then((x) => x.result);
  },
};

sharedTests(runner);

/** Every record of the topic, each once, in order, and per partition offsets 0..n-1 without a hole. */
function assertWholeTopic(rows: readonly Row[], expected: readonly Produced[], what: string): void {
  assertExactlyOnceInOrder(rows, expected, what);
  for (const p of [0, 1, 2]) {
    const offsets = rows.filter((x) => x[0] === p).map((x) => x[1]);
    assert.deepEqual(offsets, offsets.map((_, i) => i), `${what}: partition ${p} offsets 0..${offsets.length - 1} without a hole`);
  }
}

test("chromium: setOffline(true) holds an open WebSocket's traffic without closing it; a reset behind held data surfaces when back online; nothing lost, nothing twice", { timeout: 90_000 }, async (t) => {
  const f = await setup(t, 3, [pages.origin]);
  const { result: r } = await runInPage(f, "offlineFrozenSocket", undefined);
  t.diagnostic(
    `phase A (offline, socket intact): records arrived while offline: ${r.phaseA.arrivedWhileOffline}; held records arrived ${r.phaseA.heldRecordsMs} ms after going online; reconnects ${r.phaseA.reconnects}. ` +
      `phase B (offline + reset): state while offline ${r.phaseB.connState}; reconnected ${r.phaseB.reconnectMs} ms after going online`,
  );
  assert.deepEqual(r.events, ["offline", "online", "offline", "online"], "window offline/online events");
  assert.deepEqual([r.phaseA.onLineOffline, r.onLineAfter], [false, true], "navigator.onLine follows the emulation");
  // A: the socket is frozen, not closed: nothing arrives, the runtime still sees it open.
  assert.equal(r.phaseA.arrivedWhileOffline, false, "records produced while offline did not arrive while offline");
  assert.equal(r.phaseA.rowsBefore, 20);
  assert.deepEqual([r.phaseA.connState, r.phaseA.publishSettled], ["open", false], "the socket stayed open; the publish waited in it");
  assert.ok(r.phaseA.toBrowser >= 20 * 20, `the records reached the browser (${r.phaseA.toBrowser} bytes) and were held there`);
  assert.equal(r.phaseA.fromBrowser, 0, "the publish sent while offline was held in the browser too");
  // Back online the same socket carries on: held records and the receipt, no reconnect.
  assert.equal(r.phaseA.reconnects, 0, "the WebSocket survived the offline period");
  assert.equal(r.phaseA.receipt.duplicate, false);
  // B: records held in the browser, then a reset: Chromium reports it only once back online.
  assert.ok(r.phaseB.cut >= 1, "the proxy reset the open connection");
  assert.deepEqual(
    [r.phaseB.connState, r.phaseB.subState, r.phaseB.publishSettled, r.phaseB.heldDelivered],
    ["open", "subscribed", false, false],
    "while offline, with records held, the runtime cannot see the reset",
  );
  assert.ok(r.phaseB.reconnectMs < 5000, `reconnected ${r.phaseB.reconnectMs} ms after going online`);
  assert.equal(r.phaseB.receipt.duplicate, false, "the publish lost with the socket was sent again (same key) and produced once");
  assert.match(r.states.join(","), /^open,reconnecting,open$/, `connection states ${r.states.join(",")}`);
  assert.equal(r.subState, "subscribed");
  const batches = f.control.batches;
  assert.equal(batches.length, 5, "batches: before, phase A, phase B held, phase B after the reset, tail");
  assertWholeTopic(r.rows, [...batches.flat(), r.phaseA.published, r.phaseB.published], "chromium frozen socket");
});

test("chromium: offline, then the connection is reset: attempts fail in the browser, the publish is queued, the `online` event reconnects at once; no gap, no duplicate", { timeout: 90_000 }, async (t) => {
  const f = await setup(t, 3, [pages.origin]);
  const { result: r } = await runInPage(f, "offlineOnline", undefined);
  t.diagnostic(
    `${r.offlineAttempts} attempts failed while offline (proxy accepted ${r.statsAtOffline.accepted} → ${r.statsOffline.accepted}); ` +
      `next retry was ${r.pendingDelayMs} ms away; reconnected ${r.reconnectMs} ms after setOffline(false), ${r.marginBeforeRetryMs} ms before the retry was due`,
  );
  assert.ok(r.cut >= 1, "the proxy reset the open connection");
  // Nothing was held in the browser, so Chromium reported the reset at once, offline as it was.
  assert.equal(r.heldAtReset, 0, "no gateway bytes were in flight to the browser when the proxy reset the connection");
  assert.ok(r.resetNoticedMs < 2000, `the runtime noticed the reset ${r.resetNoticedMs} ms after it, while offline`);
  // ["offline", "online"] (one more pair when a Ping had to be let through first).
  assert.ok(r.events.length >= 2 && r.events.every((e, i) => e === (i % 2 ? "online" : "offline")) && r.events.length % 2 === 0, `window events ${r.events.join(",")}`);
  assert.equal(r.onLineAfter, true);
  // Offline, new WebSockets fail inside Chromium: no connection attempt reaches the proxy.
  assert.deepEqual([r.statsOffline.accepted, r.statsOffline.refused, r.statsOffline.open], [r.statsAtOffline.accepted, r.statsAtOffline.refused, 0], "no connection attempt reached the proxy while offline");
  assert.ok(r.offlineAttempts >= 2, `reconnect attempts failed while offline: ${r.offlineAttempts}`);
  assert.deepEqual(r.offlineState, { conn: "reconnecting", sub: "subscribing", publishSettled: false, onLine: false }, "queued while offline");
  // Online: the `online` listener, not the backoff timer, reconnected.
  assert.ok(r.pendingDelayMs >= 3000, `backoff wait pending when going online: ${r.pendingDelayMs} ms`);
  assert.ok(r.reconnectMs < 2000, `reconnected ${r.reconnectMs} ms after going online`);
  assert.ok(r.marginBeforeRetryMs > 0, `the reconnect came ${r.marginBeforeRetryMs} ms before the backoff retry was due`);
  assert.ok(f.proxy.accepted > r.statsOffline.accepted, "the reconnect went through the proxy");
  assert.equal(r.receipt.topic, f.topic);
  assert.equal(r.receipt.duplicate, false, "the queued publish was sent once, after the reconnect");
  assert.match(r.states.join(","), /^open,reconnecting,open$/, `connection states ${r.states.join(",")}`);
  assert.equal(r.subState, "subscribed");
  const batches = f.control.batches;
  assert.equal(batches.length, 3, "batches: before, while offline, tail");
  assertWholeTopic(r.rows, [...batches.flat(), r.published], "chromium offline/online");
});

/** The gateway's answer to a WebSocket upgrade from a page of `origin` (101 when it went through). */
function upgradeStatus(wsUrl: string, origin: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request(wsUrl.replace(/^ws:/, "http:"), {
      headers: {
        connection: "Upgrade",
        upgrade: "websocket",
        origin,
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-protocol": "kafkasocks.v1",
      },
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode ?? 0);
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

test("chromium: a page of an origin the gateway does not allow cannot connect: HTTP 403 before the upgrade, retried, never open", { timeout: 60_000 }, async (t) => {
  const f = await setup(t, 3, [pages.origin]);
  // The same page from another origin (another port is another origin).
  const elsewhere = await servePage();
  f.defer(() => elsewhere.close());
  const attempts = 3;
  const { result: r, browser } = await runInPage(f, "refusedOrigin", { attempts }, elsewhere);
  t.diagnostic(`close codes ${r.closeCodes.join(",")}; states ${r.states.join(",")}`);
  assert.equal(r.opens, 0, "never open");
  assert.equal(r.welcomed, false, "no Welcome");
  assert.ok(!r.states.includes("open"), `states ${r.states.join(",")}`);
  assert.equal(r.connState, "reconnecting", "the runtime reports a failed connection and keeps retrying");
  assert.ok(r.closeCodes.length >= attempts && r.closeCodes.every((c) => c === 1006), `each attempt ended in close 1006 (${r.closeCodes.join(",")})`);
  // The attempts reached the gateway (through the proxy), which refused them before the upgrade.
  assert.ok(f.proxy.accepted >= attempts, `the proxy forwarded ${f.proxy.accepted} connections`);
  const refusals = browser.console.filter((l) => /WebSocket connection to .* failed: .*Unexpected response code: 403/.test(l));
  assert.ok(refusals.length >= attempts, `Chromium saw HTTP 403 for each attempt:\n${browser.console.slice(-10).join("\n")}`);
  // The gateway's answer, asked directly: 403 for that origin, the upgrade for the allowed one.
  assert.equal(await upgradeStatus(f.url, elsewhere.origin), 403);
  assert.equal(await upgradeStatus(f.url, "null"), 403);
  assert.equal(await upgradeStatus(f.url, pages.origin), 101);
});
