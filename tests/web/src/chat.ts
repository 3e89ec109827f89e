/**
 * The chat example as its tests run it: the example's own binary (gateway and page), or the
 * `kafkasocks` binary serving examples/chat/kafkasocks.toml with the example serving only
 * the page and its demo tokens (CHAT_GATEWAY mode). And what a test does on the page.
 * Node only.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Page } from "playwright-core";
import { bin, repoRoot } from "./fixtures.ts";
import { waitFor } from "./scenarios.ts";

/** A child process whose stdout is watched for a line, with its recent logs kept. */
export interface Child {
  child: ChildProcess;
  logs: () => string;
  /** SIGINT or SIGTERM (graceful), SIGKILL after 20 s; resolves with the exit code. */
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/** Starts `path` and resolves once its stdout matches `line` (within `limitMs`); rejects if it exits first. */
export function start(
  path: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  line: RegExp,
  what: string,
  limitMs = 60_000,
): Promise<{ c: Child; match: RegExpExecArray }> {
  const child = spawn(path, args, { env, stdio: ["ignore", "pipe", "pipe"] });
  let logs = "";
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (logs = (logs + d).slice(-40_000)));
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const stop = async (signal: NodeJS.Signals = "SIGINT"): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill(signal);
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  };
  const c: Child = { child, logs: () => logs, stop };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} printed no ${line} within ${limitMs / 1000} s\n${logs}`)), limitMs);
    let out = "";
    child.stdout?.setEncoding("utf8").on("data", (d: string) => {
      out += d;
      const m = line.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve({ c, match: m });
      }
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}\n${logs}`));
    });
  });
}

/** Starts chat-gateway on free ports (with `extra` settings); resolves with the page URL it prints. */
export async function startChat(extra: Record<string, string> = {}): Promise<{ url: string; stop: () => Promise<unknown> }> {
  const env = { ...process.env, ...extra };
  for (const v of ["CHAT_HTTP_ADDR", "CHAT_WS_ADDR", "CHAT_GRPC_ADDR", "CHAT_METRICS_ADDR"]) env[v] = "127.0.0.1:0";
  const { c, match } = await start(bin("chat-gateway"), [], env, /chat: open (http:\/\/\S+)/, "chat-gateway");
  return { url: match[1] as string, stop: () => c.stop() };
}

/** A port that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address() as net.AddressInfo;
      server.close(() => resolve(address.port));
    });
  });
}

/** A running `kafkasocks serve`. */
export interface Kafkasocks {
  /** host:port of its WebSocket listener. */
  ws: string;
  /** http://host:port of its admin listener. */
  admin: string;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
  logs: () => string;
}

/**
 * The chat without its Rust gateway: examples/chat/kafkasocks.toml, unchanged but for where
 * its files are (the proto folder, the token key in a fresh folder), served by the
 * `kafkasocks` binary; and the example in CHAT_GATEWAY mode serving only the page and the
 * demo tokens (`extra` goes to it, e.g. CHAT_TOKEN_ROOMS). `gateway()` starts another
 * `kafkasocks` on the same config (a restart, or a second node).
 */
export async function startStandalone(extra: Record<string, string> = {}): Promise<{
  url: string;
  pageOrigin: string;
  gateway: (env?: Record<string, string>) => Promise<Kafkasocks>;
  first: Kafkasocks;
  stop: () => Promise<void>;
}> {
  const dir = mkdtempSync(join(tmpdir(), "kafkasocks-standalone-"));
  const keyFile = join(dir, "token-public.pem");
  const example = readFileSync(join(repoRoot, "examples/chat/kafkasocks.toml"), "utf8");
  const config = example
    .replaceAll('"../../proto', `"${join(repoRoot, "proto")}`)
    .replace('pem_file = "demo-keys/token-public.pem"', `pem_file = ${JSON.stringify(keyFile)}`);
  if (config === example || !config.includes(keyFile)) throw new Error("examples/chat/kafkasocks.toml changed: update startStandalone");
  const configFile = join(dir, "kafkasocks.toml");
  writeFileSync(configFile, config);

  const [pagePort, wsPort] = [await freePort(), await freePort()];
  const pageEnv = {
    ...process.env,
    ...extra,
    CHAT_GATEWAY: `127.0.0.1:${wsPort}`,
    CHAT_HTTP_ADDR: `127.0.0.1:${pagePort}`,
    CHAT_TOKEN_PUBLIC_KEY_FILE: keyFile,
  };
  const page = await start(bin("chat-gateway"), [], pageEnv, /chat: open (http:\/\/\S+)/, "chat-gateway (page only)");
  const pageOrigin = `http://127.0.0.1:${pagePort}`;
  const gateways: Kafkasocks[] = [];
  const gateway = async (env: Record<string, string> = {}): Promise<Kafkasocks> => {
    const { c, match } = await start(
      bin("kafkasocks"),
      ["serve", "--config", configFile],
      {
        ...process.env,
        KAFKASOCKS_KAFKA_BOOTSTRAP: process.env["KAFKA_BOOTSTRAP"] ?? "127.0.0.1:19092",
        KAFKASOCKS_ORIGINS_ALLOW: pageOrigin,
        KAFKASOCKS_SERVER_LISTEN: "127.0.0.1:0",
        KAFKASOCKS_SERVER_ADMIN_LISTEN: "127.0.0.1:0",
        ...env,
      },
      /kafkasocks: listening on (\S+)\nkafkasocks: admin on (\S+)/,
      "kafkasocks serve",
    );
    const g: Kafkasocks = { ws: match[1] as string, admin: match[2] as string, stop: c.stop, logs: c.logs };
    gateways.push(g);
    return g;
  };
  // A gateway that does not start must not leave the page server behind (its pipes would
  // keep the test process alive).
  const first = await gateway({ KAFKASOCKS_SERVER_LISTEN: `127.0.0.1:${wsPort}` }).catch(async (e: unknown) => {
    await page.c.stop();
    rmSync(dir, { recursive: true, force: true });
    throw e;
  });
  return {
    url: page.match[1] as string,
    pageOrigin,
    gateway,
    first,
    stop: async () => {
      for (const g of gateways) await g.stop();
      await page.c.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A demo token for `user` from the page's `POST /token`. */
export async function fetchToken(pageUrl: string, user: string): Promise<string> {
  const res = await fetch(new URL("/token", pageUrl), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = (await res.json()) as { token?: string; error?: string };
  if (!res.ok || !body.token) throw new Error(`POST /token: ${res.status} ${body.error ?? ""}`);
  return body.token;
}

/** Opens the chat page at `url` in `page`, signs in as `user` and joins `room`; waits until the session is open. */
export async function enterChat(page: Page, url: string, user: string, room: string): Promise<Page> {
  await page.goto(url);
  await page.fill("#user", user);
  await page.fill("#room", room);
  await page.click("#join");
  await page.locator("#state.open").waitFor({ timeout: 15_000 });
  return page;
}

export async function say(page: Page, text: string): Promise<void> {
  await page.fill("input[name=text]", text);
  await page.press("input[name=text]", "Enter");
}

/** How many chat lines in `page` contain `text` (waits for at least `atLeast`). */
export async function lines(page: Page, text: string, atLeast = 1): Promise<number> {
  if (atLeast > 0) await page.locator("#log .msg", { hasText: text }).nth(atLeast - 1).waitFor({ timeout: 15_000 });
  return page.locator("#log .msg", { hasText: text }).count();
}

/** The admin endpoint's answer to `path`: status and body. */
export async function admin(g: Kafkasocks, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`${g.admin}${path}`);
  return { status: res.status, body: await res.text() };
}

export { waitFor };
