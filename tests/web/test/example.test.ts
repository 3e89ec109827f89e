/**
 * The README's main job, as a person uses it: the chat example's own gateway binary and
 * page (examples/chat, typed client generated from proto/chat/v1/chat.proto), two people
 * in two Chromium contexts, signed in through the page's `POST /token`, and a visit that
 * comes back after missing messages. And a session that outlives its token.
 *
 * Needs `cargo build -p kafkasocks-example-chat` (target/debug/chat-gateway) and
 * `scripts/build-page chat` (examples/chat/web/dist/app.js); scripts/test does both.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { chromium, type Browser, type Page } from "playwright-core";
import { enterChat, lines, say, startChat } from "../src/chat.ts";
import { CHROMIUM, CHROMIUM_ARGS, cleanups, repoRoot } from "../src/fixtures.ts";
import { waitFor } from "../src/scenarios.ts";

test("the chat example: two people chat in Chromium; a returning visitor gets what it missed, once", { timeout: 120_000 }, async (t) => {
  const defer = cleanups(t);
  const bundle = join(repoRoot, "examples/chat/web/dist/app.js");
  assert.ok(existsSync(bundle), `${bundle} is missing: run scripts/build-page chat`);
  const chat = await startChat();
  defer(() => chat.stop());
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  defer(() => browser.close());
  const room = `it-${randomBytes(4).toString("hex")}`;
  const errors: string[] = [];
  const tokenRequests = new Map<string, number>();
  const open = async (user: string): Promise<Page> => {
    const page = await (await browser.newContext()).newPage();
    page.on("pageerror", (e) => errors.push(`${user}: ${e.message}`));
    page.on("request", (r) => {
      if (new URL(r.url()).pathname === "/token") tokenRequests.set(user, (tokenRequests.get(user) ?? 0) + 1);
    });
    return enterChat(page, chat.url, user, room);
  };
  const ada = await open("ada");
  const bob = await open("bob");

  assert.ok((tokenRequests.get("ada") ?? 0) >= 1, "the page fetched a token from POST /token");
  await say(ada, "hello from ada");
  assert.equal(await lines(bob, "hello from ada"), 1, "bob sees ada's message once");
  assert.match(await bob.locator("#log .msg", { hasText: "hello from ada" }).innerText(), /^ada: hello from ada/, "written by ada, the token's subject");
  assert.equal(await lines(ada, "hello from ada"), 1, "ada sees her own message once");
  await ada.locator("#receipt", { hasText: "sent: chat.messages p" }).waitFor({ timeout: 10_000 });
  await say(bob, "hi ada");
  assert.equal(await lines(ada, "hi ada"), 1);

  // The generated hooks' validation reaches the page as a clear refusal.
  await say(ada, "   ");
  await ada.locator("#log .warn", { hasText: "needs some text" }).waitFor({ timeout: 10_000 });
  // A name the token endpoint refuses: the page says why and stays signed in as before.
  await ada.fill("#user", "<ada>");
  await ada.click("#join");
  await ada.locator("#log .warn", { hasText: "cannot sign in" }).waitFor({ timeout: 10_000 });
  await ada.locator("#state.open").waitFor({ timeout: 10_000 });
  await ada.fill("#user", "ada");

  // Ada leaves; bob writes while she is away; she comes back to the same page.
  await ada.goto("about:blank");
  await say(bob, "while you were away");
  await bob.locator("#log .msg", { hasText: "while you were away" }).waitFor({ timeout: 10_000 });
  await ada.goto(chat.url);
  await ada.locator("#state.open").waitFor({ timeout: 15_000 });
  assert.equal(await ada.inputValue("#room"), room, "back in the same room");
  assert.equal(await lines(ada, "while you were away"), 1, "what she missed arrives, once");
  assert.equal(await lines(ada, "hello from ada", 0), 0, "what she had already seen does not arrive again");
  assert.equal(await lines(ada, "hi ada", 0), 0);
  await say(bob, "welcome back");
  assert.equal(await lines(ada, "welcome back"), 1);
  await ada.screenshot({ path: join(repoRoot, "target", "chat-example.png") });
  assert.deepEqual(errors, [], "no page errors");
});

test("the chat example: a session outlives its token; the page refreshes it over the open WebSocket", { timeout: 60_000 }, async (t) => {
  const defer = cleanups(t);
  const ttlSeconds = 5;
  const chat = await startChat({ CHAT_TOKEN_TTL: `${ttlSeconds}s` });
  defer(() => chat.stop());
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  defer(() => browser.close());
  const page = await (await browser.newContext()).newPage();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  let sockets = 0;
  let tokens = 0;
  let firstTokenAt = 0;
  page.on("websocket", () => sockets++);
  page.on("request", (r) => {
    if (new URL(r.url()).pathname !== "/token") return;
    tokens++;
    firstTokenAt ||= Date.now();
  });
  const room = `ttl-${randomBytes(4).toString("hex")}`;
  await page.goto(chat.url);
  await page.fill("#user", "carol");
  await page.fill("#room", room);
  await page.click("#join");
  await page.locator("#state.open").waitFor({ timeout: 15_000 });
  const socketsSignedIn = sockets;
  const tokensSignedIn = tokens;
  // Two refreshes (each at 80 % of a token's life): by then the first token has expired.
  await waitFor("two token refreshes", () => tokens >= tokensSignedIn + 2, 30_000);
  assert.ok(Date.now() - firstTokenAt > ttlSeconds * 1000, "past the first token's expiry");
  await say(page, "still here");
  assert.equal(await lines(page, "still here"), 1);
  assert.equal(await page.textContent("#state"), "open");
  assert.equal(sockets, socketsSignedIn, "the same WebSocket throughout: refreshed in band, not reconnected");
  assert.deepEqual(errors, [], "no page errors");
});
