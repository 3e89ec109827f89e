/**
 * The Rust fixture binaries (built by `cargo build -p kafkasocks-tests --bins`) and the
 * per-test cleanup stack. Node only.
 */
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { TestContext } from "node:test";
import type { Produced } from "./scenarios.ts";

/** tests/web: the nearest folder above this file whose package.json is ours (works from src/ and dist/). */
export const webRoot: string = (() => {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const pkg = join(dir, "package.json");
    if (existsSync(pkg) && (JSON.parse(readFileSync(pkg, "utf8")) as { name?: string }).name === "kafkasocks-web-tests") return dir;
  }
  throw new Error("cannot find tests/web (package kafkasocks-web-tests)");
})();

export const repoRoot = join(webRoot, "..", "..");

/** Debian's Chromium (`apt-get install chromium`); playwright cannot download browsers here. */
export const CHROMIUM = process.env["CHROMIUM"] ?? "/usr/bin/chromium";
/** As root, headless, and quiet on a machine without internet. */
export const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
const binDir = process.env["KAFKASOCKS_FIXTURES_DIR"] ?? join(repoRoot, "target", "debug");

export function bin(name: string): string {
  const path = join(binDir, name);
  if (!existsSync(path)) throw new Error(`${path} is missing: run \`cargo build -p kafkasocks-tests --bins\` first`);
  return path;
}

/** A topic name no other test uses. */
export function uniqueTopic(prefix: string): string {
  return `${prefix}-${randomBytes(6).toString("hex")}`;
}

/** Runs `fixture-kafka ARGS...`; resolves with stdout. */
export function fixtureKafka(...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(bin("fixture-kafka"), args, { timeout: 120_000, maxBuffer: 64 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`fixture-kafka ${args.join(" ")} failed: ${error.message}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

export async function produce(topic: string, count: number): Promise<Produced[]> {
  const out = (await fixtureKafka("produce", topic, String(count))).trim().split("\n");
  const done = out.pop();
  if (done !== `DONE ${count}`) throw new Error(`fixture-kafka produce: expected "DONE ${count}", got ${JSON.stringify(done)}`);
  const records = out.map((line) => {
    const [p, o, key] = line.split(" ");
    return { partition: Number(p), offset: Number(o), key: key ?? "" };
  });
  if (records.length !== count || records.some((r) => !Number.isInteger(r.partition) || !Number.isInteger(r.offset) || !r.key)) {
    throw new Error(`fixture-kafka produce: malformed output (${records.length} lines)`);
  }
  return records;
}

export interface GatewayProcess {
  host: string;
  port: number;
  /** Closes stdin (graceful stop) and waits for the exit; SIGKILL after 15 s. */
  stop(): Promise<void>;
  output(): string;
}

/** How a fixture-gateway is configured beyond its topic (see tests/src/bin/fixture_gateway.rs). */
export interface GatewayOptions {
  /** Browser origins let in (`FIXTURE_ORIGINS`). Default none. */
  origins?: readonly string[];
  /**
   * `FIXTURE_PUBLISH_JITTER_MS`: the publish hook waits a random 0..N ms before keying the
   * record (an async validation). Default: unset (no wait).
   */
  publishJitterMs?: number;
}

/**
 * Starts `fixture-gateway TOPIC [PARTITIONS]` and waits for its `LISTENING host:port` line.
 * Browser pages of `options.origins` may connect (`FIXTURE_ORIGINS`); pages of any other
 * origin get HTTP 403 (clients that send no Origin, like Node's, are let in).
 */
export function startGateway(topic: string, partitions?: number, options: GatewayOptions = {}): Promise<GatewayProcess> {
  const args = partitions === undefined ? [topic] : [topic, String(partitions)];
  const env: NodeJS.ProcessEnv = { ...process.env, FIXTURE_ORIGINS: (options.origins ?? []).join(",") };
  delete env["FIXTURE_PUBLISH_JITTER_MS"];
  if (options.publishJitterMs !== undefined) env["FIXTURE_PUBLISH_JITTER_MS"] = String(options.publishJitterMs);
  const child = spawn(bin("fixture-gateway"), args, { env, stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  let exited = false;
  const exit = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  child.stderr.setEncoding("utf8").on("data", (d: string) => (output = (output + d).slice(-20_000)));
  const stop = async () => {
    if (exited) return;
    child.stdin.end();
    const timer = setTimeout(() => child.kill("SIGKILL"), 15_000);
    await exit;
    clearTimeout(timer);
  };
  return new Promise((resolve, reject) => {
    let stdout = "";
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`fixture-gateway ${args.join(" ")}: no LISTENING line within 30 s\n${output}`));
    }, 30_000);
    child.once("error", (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`fixture-gateway ${args.join(" ")} exited with ${code} before listening\n${output}`));
    });
    child.stdout.setEncoding("utf8").on("data", (d: string) => {
      stdout += d;
      const m = /LISTENING (\S+):(\d+)/.exec(stdout);
      if (m) {
        clearTimeout(timer);
        resolve({ host: m[1] as string, port: Number(m[2]), stop, output: () => output });
      }
    });
  });
}

/**
 * Cleanup in reverse order of registration, run by one `t.after` (every closer runs even if
 * an earlier one throws; the first error is rethrown).
 */
export function cleanups(t: TestContext): (fn: () => unknown) => void {
  const stack: (() => unknown)[] = [];
  t.after(async () => {
    let first: unknown;
    for (const fn of stack.reverse()) {
      try {
        await fn();
      } catch (e) {
        first ??= e;
      }
    }
    if (first) throw first;
  });
  return (fn) => void stack.push(fn);
}
