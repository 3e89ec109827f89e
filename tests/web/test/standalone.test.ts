/**
 * The README's "no Rust" path: the `kafkasocks` binary (runtime/gateway), started from
 * examples/chat/kafkasocks.toml and proto/chat/v1/chat.proto, which it reads at start (it
 * was built without them), serves the chat page and its generated TypeScript client
 * unchanged: in Node (publish with receipts, resume across dropped connections with no gap
 * and no duplicate, JWT permissions from claims, the declared validation, SIGTERM during
 * traffic) and in headless Chromium (the chat page itself).
 *
 * Needs `cargo build -p kafkasocks-gateway -p kafkasocks-example-chat` and
 * `scripts/build-page chat`; scripts/test does both.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import http from "node:http";
import { test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { WebSocket } from "ws";
import { connect, createClient, KafkaSocksError, silentLogger, type WebSocketConstructor } from "@kafkasocks/runtime";
import { ChatStreams, type ChatMessage } from "../../../examples/chat/web/gen/chat/v1/chat_kafkasocks.ts";
import { admin, enterChat, fetchToken, lines, say, startStandalone, waitFor } from "../src/chat.ts";
import { CHROMIUM, CHROMIUM_ARGS, cleanups } from "../src/fixtures.ts";
import { TcpProxy } from "../src/proxy.ts";

const WS = WebSocket as WebSocketConstructor;

function hostPort(addr: string): { host: string; port: number } {
  const i = addr.lastIndexOf(":");
  return { host: addr.slice(0, i), port: Number(addr.slice(i + 1)) };
}

async function refusal(p: Promise<unknown>): Promise<KafkaSocksError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof KafkaSocksError) return e;
    throw e;
  }
  throw new Error("expected a refusal");
}

test("kafkasocks serve: the chat's generated client publishes, resumes without gap or duplicate, and is held to the config's rules", { timeout: 180_000 }, async (t) => {
  const defer = cleanups(t);
  const room = `sa-${randomBytes(4).toString("hex")}`;
  // Tokens for this room (and the lobby) only: the config pins keys to the `rooms` claim.
  const chat = await startStandalone({ CHAT_TOKEN_ROOMS: `lobby,${room}` });
  defer(() => chat.stop());
  const proxy = await TcpProxy.start(hostPort(chat.first.ws));
  defer(() => proxy.close());

  assert.equal((await admin(chat.first, "/metrics")).status, 200, "the admin endpoint serves metrics");
  assert.equal((await admin(chat.first, "/livez")).status, 200, "live");
  await waitFor("ready (Kafka reachable)", async () => (await admin(chat.first, "/readyz")).status === 200, 15_000);

  const conn = connect({ url: `ws://${proxy.url.replace(/^ws:\/\//, "")}/streams`, token: () => fetchToken(chat.url, "ada"), WebSocket: WS, logger: silentLogger });
  defer(() => conn.close());
  const client = createClient(ChatStreams, conn);
  const seen: ChatMessage[] = [];
  const offsets: bigint[] = [];
  const sub = client.messages({ room }, { start: "earliest" });
  sub.on("record", ({ value, offset }) => {
    seen.push(value);
    offsets.push(offset);
  });

  // The declared rules: author from the token, text trimmed and required, rooms checked.
  const first = await client.post({ room, user: "mallory", text: "  hello  ", sentAtMs: 0n });
  assert.equal(first.topic, "chat.messages");
  assert.equal(first.duplicate, false);
  await waitFor("the first message", () => seen.length === 1, 15_000);
  assert.equal(seen[0]?.user, "ada", "the author is the token's subject, not what the client wrote");
  assert.equal(seen[0]?.text, "hello", "trimmed");
  assert.ok((seen[0]?.sentAtMs ?? 0n) > 1_600_000_000_000n, "an unset time is stamped by the gateway");
  const empty = await refusal(client.post({ room, user: "ada", text: "   ", sentAtMs: 0n }));
  assert.equal(empty.code, "INVALID_ARGUMENT");
  assert.match(empty.message, /needs some text/);
  const long = await refusal(client.post({ room, user: "ada", text: "x".repeat(501), sentAtMs: 0n }));
  assert.equal(long.code, "INVALID_ARGUMENT");
  const badRoom = await refusal(client.post({ room: "no such room!", user: "ada", text: "hi", sentAtMs: 0n }));
  assert.equal(badRoom.code, "INVALID_ARGUMENT");
  assert.match(badRoom.message, /rooms are 1-40 letters/);
  // Permissions from claims: another room is not in this token's `rooms`.
  const other = await refusal(client.post({ room: "elsewhere", user: "ada", text: "hi", sentAtMs: 0n }));
  assert.equal(other.code, "PERMISSION_DENIED");
  const otherSub = client.messages({ room: "elsewhere" }, { start: "latest" });
  await waitFor("the refusal of a room outside the token", () => otherSub.state === "failed", 10_000);
  assert.equal(otherSub.error?.code, "PERMISSION_DENIED");

  // 300 messages, the connection dropped by the proxy every 60: every receipt's record
  // arrives once, in order, and the subscription resumes from its cursor each time.
  const receipts: bigint[] = [first.offset];
  for (let i = 0; i < 300; i++) {
    if (i > 0 && i % 60 === 0) proxy.sever();
    const r = await client.post({ room, user: "ada", text: `m${i}`, sentAtMs: BigInt(Date.now()) });
    receipts.push(r.offset);
  }
  await waitFor("every message", () => seen.length >= 301, 30_000, () => `${seen.length} of 301`);
  const texts = seen.map((m) => m.text);
  assert.deepEqual(texts, ["hello", ...Array.from({ length: 300 }, (_, i) => `m${i}`)], "no gap, no duplicate, in order");
  assert.equal(new Set(receipts.map(String)).size, 301, "301 distinct records");

  // SIGTERM during traffic: a second node takes the clients; nothing acknowledged is lost
  // and the subscription carries on without gap or duplicate.
  const second = await chat.gateway();
  proxy.retarget(hostPort(second.ws));
  let sent = 0;
  let stop = false;
  const acked: string[] = [];
  const refused: string[] = [];
  const traffic = (async () => {
    while (!stop) {
      const text = `t${sent++}`;
      try {
        await client.post({ room, user: "ada", text, sentAtMs: BigInt(Date.now()) });
        acked.push(text);
      } catch (e) {
        refused.push(`${text}: ${(e as Error).message}`);
      }
    }
  })();
  await waitFor("traffic", () => acked.length >= 20, 15_000);
  const code = await chat.first.stop("SIGTERM");
  assert.equal(code, 0, `the drained gateway exits cleanly\n${chat.first.logs().slice(-3000)}`);
  await waitFor("traffic on the second node", () => acked.length >= 60, 30_000);
  stop = true;
  await traffic;
  await waitFor("every acknowledged message", () => acked.every((a) => seen.some((m) => m.text === a)), 30_000, () =>
    `missing ${acked.filter((a) => !seen.some((m) => m.text === a)).slice(0, 5).join(", ")}`,
  );
  const after = seen.slice(301).map((m) => m.text);
  assert.equal(new Set(after).size, after.length, "no duplicate across the node change");
  const sentOrder = after.map((x) => Number(x.slice(1)));
  assert.deepEqual(sentOrder, [...sentOrder].sort((a, b) => a - b), "in the order they were sent");
  // Offsets strictly increase within the room's partition: nothing skipped twice or replayed.
  for (let i = 1; i < offsets.length; i++) assert.ok((offsets[i] as bigint) > (offsets[i - 1] as bigint), `offset ${i}`);
  // A fresh reader from the start sees exactly what the subscriber saw.
  const replay: string[] = [];
  const again = client.messages({ room }, { start: "earliest" });
  again.on("record", ({ value }) => void replay.push(value.text));
  await waitFor("the replay", () => replay.length >= seen.length, 20_000);
  assert.deepEqual(replay, seen.map((m) => m.text), "the subscriber's view is the log");
  assert.ok(refused.length <= 2, `publishes refused during the drain: ${refused.join("; ")}`);
});

test("kafkasocks serve: the chat page works unchanged in Chromium against the binary", { timeout: 120_000 }, async (t) => {
  const defer = cleanups(t);
  const chat = await startStandalone();
  defer(() => chat.stop());
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  defer(() => browser.close());
  const room = `sab-${randomBytes(4).toString("hex")}`;
  const errors: string[] = [];
  const open = async (user: string): Promise<Page> => {
    const page = await (await browser.newContext()).newPage();
    page.on("pageerror", (e) => errors.push(`${user}: ${e.message}`));
    return enterChat(page, chat.url, user, room);
  };
  const ada = await open("ada");
  const bob = await open("bob");
  await say(ada, "hello from ada");
  assert.equal(await lines(bob, "hello from ada"), 1, "bob sees ada's message once");
  assert.match(await bob.locator("#log .msg", { hasText: "hello from ada" }).innerText(), /^ada: hello from ada/);
  await ada.locator("#receipt", { hasText: "sent: chat.messages p" }).waitFor({ timeout: 10_000 });
  await say(ada, "   ");
  await ada.locator("#log .warn", { hasText: "needs some text" }).waitFor({ timeout: 10_000 });
  // Ada leaves; bob writes; she comes back from her saved cursor.
  await ada.goto("about:blank");
  await say(bob, "while you were away");
  await bob.locator("#log .msg", { hasText: "while you were away" }).waitFor({ timeout: 10_000 });
  await ada.goto(chat.url);
  await ada.locator("#state.open").waitFor({ timeout: 15_000 });
  assert.equal(await lines(ada, "while you were away"), 1, "what she missed arrives, once");
  assert.equal(await lines(ada, "hello from ada", 0), 0, "what she had seen does not arrive again");
  // A page of another origin is refused before the upgrade.
  const status = await new Promise<number>((resolve, reject) => {
    const { host, port } = hostPort(chat.first.ws);
    const req = http.get({
      host,
      port,
      path: "/streams",
      headers: {
        origin: "https://evil.example",
        connection: "Upgrade",
        upgrade: "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        "sec-websocket-protocol": "kafkasocks.v1",
      },
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("upgrade", () => reject(new Error("a foreign origin was upgraded")));
    req.on("error", reject);
  });
  assert.equal(status, 403, "a page of another origin gets 403 before the upgrade");
  assert.deepEqual(errors, [], "no page errors");
});
