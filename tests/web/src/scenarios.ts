/**
 * The integration scenarios, written once and run twice: in Node (the `ws` package's
 * WebSocket injected) and inside a Chromium page (the browser's own WebSocket; this module is
 * bundled into the test page by esbuild). Nothing here may import Node modules.
 *
 * A scenario drives the real runtime against the real gateway (through a TCP proxy) and
 * returns plain JSON-able data; the Node side asserts on it (src/suite.ts), comparing with what
 * it observed itself (fixture-kafka's output, the proxy's counters). Everything outside the
 * runtime — severing sockets, producing with fixture-kafka, deleting records, network
 * emulation — is asked of the `Control`, which always runs in Node (in the browser it is
 * reached through Playwright's exposed functions).
 */
import {
  KafkaSocksError,
  Writer,
  connect,
  encodeCursor,
  type Connection,
  type ConnectionState,
  type LogFields,
  type Logger,
  type Subscription,
  type SubscriptionRecord,
  type SubscriptionState,
  type WebSocketConstructor,
} from "../../../ts-templates/src/index.ts";

export const WATCH = "test.v1.Records/Watch";
export const PUT = "test.v1.Records/Put";
export const IDEMPOTENCY_HEADER = "kafkasocks-idempotency-key";

/** One record as fixture-kafka reported producing it. */
export interface Produced {
  partition: number;
  offset: number;
  key: string;
}

export interface ProxyStats {
  /** Connections accepted and forwarded to the gateway. */
  accepted: number;
  /** Connections reset at once because the proxy was blocked. */
  refused: number;
  /** Forwarded connections currently open. */
  open: number;
}

/** What a scenario may ask of the test process. */
export interface Control {
  /** Waits (at most `waitMs`, default 5000; 0 = not at all) until a connection through the proxy is open, then resets every one; returns how many. */
  sever(waitMs?: number): Promise<number>;
  /** Resets every connection and refuses (resets) new ones until `unblock`; returns how many were cut. */
  block(): Promise<number>;
  unblock(): Promise<void>;
  proxyStats(): Promise<ProxyStats>;
  /** `fixture-kafka produce TOPIC COUNT`: keys k0..k9, values v<i>. */
  produce(count: number): Promise<Produced[]>;
  /** `fixture-kafka delete-records TOPIC PARTITION OFFSET`: moves the partition's log start. */
  deleteRecords(partition: number, offset: number): Promise<void>;
  /** Stops the gateway and starts a fresh one (empty memory) behind the same proxy address. */
  restartGateway(): Promise<void>;
  /** Browser only: Playwright's `context.setOffline`. */
  setOffline(offline: boolean): Promise<void>;
}

/** The Control methods, exposed to the page as `ksControl_<name>`. */
export const CONTROL_METHODS = ["sever", "block", "unblock", "proxyStats", "produce", "deleteRecords", "restartGateway", "setOffline"] as const satisfies readonly (keyof Control)[];

export interface Env {
  /** ws://127.0.0.1:PROXY/streams */
  url: string;
  topic: string;
  /** Injected in Node 20; the browser uses its own. */
  WebSocket?: WebSocketConstructor;
  control: Control;
}

/** [partition, offset, key, value]: keys and values are UTF-8 text in these tests. */
export type Row = [partition: number, offset: number, key: string, value: string];

export interface PlainReceipt {
  topic: string;
  partition: number;
  offset: number;
  duplicate: boolean;
}

// ---- helpers ------------------------------------------------------------------------------

const utf8 = new TextDecoder();
const now = (): number => Date.now();

/** A request message of the fixture's methods: field 1 = key, field 2 = body (when given). */
export function message(key: string, body?: string): Uint8Array {
  const w = new Writer().tag(1, 2).string(key);
  if (body !== undefined) w.tag(2, 2).string(body);
  return w.finish();
}

function hex(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += b.toString(16).padStart(2, "0");
  return s;
}

function randomId(): string {
  return hex(crypto.getRandomValues(new Uint8Array(6)));
}

function row(r: SubscriptionRecord<Uint8Array>): Row {
  return [r.partition, Number(r.offset), utf8.decode(r.key), utf8.decode(r.value)];
}

function plainReceipt(r: { topic: string; partition: number; offset: bigint; duplicate: boolean }): PlainReceipt {
  return { topic: r.topic, partition: r.partition, offset: Number(r.offset), duplicate: r.duplicate };
}

function header(r: SubscriptionRecord<Uint8Array>, key: string): string | undefined {
  const h = r.headers.find((x) => x.key === key);
  return h && utf8.decode(h.value);
}

function describeError(e: unknown): { name: string; message: string; code?: string; clientCode?: string; discontinuity?: string } {
  if (e instanceof KafkaSocksError) {
    return {
      name: e.name,
      message: e.message,
      code: e.code,
      ...(e.clientCode ? { clientCode: e.clientCode } : {}),
      ...(e.discontinuity !== undefined ? { discontinuity: String(e.discontinuity) } : {}),
    };
  }
  return e instanceof Error ? { name: e.name, message: e.message } : { name: "unknown", message: String(e) };
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? `${v}n` : v instanceof Error ? `${v.name}: ${v.message}` : v));
  } catch {
    return String(value);
  }
}

interface LogEntry {
  at: number;
  level: string;
  message: string;
  fields: LogFields | undefined;
}

/** A logger that keeps everything (info and up) for the assertions and for failure messages. */
function captureLogger(): { logger: Logger; entries: LogEntry[]; tail(n?: number): string } {
  const entries: LogEntry[] = [];
  const make = (level: string) => (message: string, fields?: LogFields) => {
    if (level !== "debug") entries.push({ at: now(), level, message, fields });
  };
  return {
    logger: { debug: make("debug"), info: make("info"), warn: make("warn"), error: make("error") },
    entries,
    tail: (n = 15) =>
      entries
        .slice(-n)
        .map((e) => `${e.level} ${e.message} ${e.fields ? safeJson(e.fields) : ""}`)
        .join("\n"),
  };
}

/** Polls `cond` every `intervalMs` until true; throws after `timeoutMs` naming `what` (and `detail()`). */
export async function waitFor(
  what: string,
  cond: () => boolean | Promise<boolean>,
  timeoutMs = 10_000,
  detail?: () => string,
  intervalMs = 10,
): Promise<void> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (now() >= deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${detail ? `\n${detail()}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

interface Session {
  conn: Connection;
  log: ReturnType<typeof captureLogger>;
  states: { state: ConnectionState; at: number }[];
  opens(): number;
}

function open(env: Env, extra: { backoff?: { initialMs?: number; maxMs?: number; random?: () => number } } = {}): Session {
  const log = captureLogger();
  const conn = connect({
    url: env.url,
    logger: log.logger,
    ...(env.WebSocket ? { WebSocket: env.WebSocket } : {}),
    ...extra,
  });
  const states: Session["states"] = [];
  conn.on("state", (state) => states.push({ state, at: now() }));
  return { conn, log, states, opens: () => states.filter((s) => s.state === "open").length };
}

function key(p: number, o: number): string {
  return `${p}:${o}`;
}

// ---- scenarios ----------------------------------------------------------------------------

/**
 * publish → Receipt, and a key-filtered subscriber receives the record at exactly the receipt's
 * (partition, offset). Then the same idempotency key again (dedup: the first receipt, duplicate)
 * and a third publish: the subscriber gets the first and the third, nothing for the repeat.
 */
async function publishReceipt(env: Env) {
  const s = open(env);
  try {
    const k = `pub-${randomId()}`;
    const idem = `idem-${randomId()}`;
    const sub = s.conn.subscribe(WATCH, message(k), { start: "latest" });
    const got: SubscriptionRecord<Uint8Array>[] = [];
    sub.on("record", (r) => got.push(r));
    await waitFor("the subscription to be subscribed", () => sub.state === "subscribed", 10_000, s.log.tail);
    const payload = message(k, "first");
    const receipt = await s.conn.publish(PUT, payload, { idempotencyKey: idem });
    await waitFor("the published record", () => got.some((r) => r.partition === receipt.partition && r.offset === receipt.offset), 10_000, s.log.tail);
    const again = await s.conn.publish(PUT, payload, { idempotencyKey: idem });
    const third = await s.conn.publish(PUT, message(k, "third"));
    await waitFor("the third record", () => got.some((r) => r.partition === third.partition && r.offset === third.offset), 10_000, s.log.tail);
    return {
      key: k,
      idem,
      payloadHex: hex(payload),
      topic: sub.topic,
      receipt: plainReceipt(receipt),
      again: plainReceipt(again),
      third: plainReceipt(third),
      records: got.map((r) => ({ row: row(r), valueHex: hex(r.value), idempotencyHeader: header(r, IDEMPOTENCY_HEADER) ?? null })),
    };
  } finally {
    s.conn.close();
  }
}

/**
 * `total` records produced by fixture-kafka while subscribed (from "latest"), with `severs`
 * TCP resets by the proxy spread over the stream (one each time another total/(severs+1)
 * records have arrived, and only once the connection is open again). Afterwards 10 more
 * ("tail") records, so a late duplicate of any earlier record would show as an order violation.
 */
async function manyRecordsWithDisconnects(env: Env, params: { total: number; severs: number }) {
  const { total, severs } = params;
  const s = open(env);
  try {
    const sub = s.conn.subscribe(WATCH, message(""), { start: "latest" });
    const rows: Row[] = [];
    const severCounts: number[] = [];
    const severAtRow: number[] = [];
    const every = Math.floor(total / (severs + 1));
    let severing = false;
    let opensAtLastSever = 0;
    let severError: unknown;
    sub.on("record", (r) => {
      rows.push(row(r));
      if (!severing && severCounts.length < severs && rows.length >= every * (severCounts.length + 1) && s.opens() > opensAtLastSever) {
        severing = true;
        opensAtLastSever = s.opens();
        severAtRow.push(rows.length);
        env.control.sever().then(
          (n) => {
            severCounts.push(n);
            severing = false;
          },
          (e: unknown) => {
            severError = e;
          },
        );
      }
    });
    const progress = () =>
      `rows ${rows.length}, severs ${severCounts.length}, opens ${s.opens()}, state ${s.conn.state}/${sub.state}\n${s.log.tail()}${
        severError ? `\nsever failed: ${String(severError)}` : ""
      }`;
    await waitFor("the subscription to be subscribed", () => sub.state === "subscribed", 10_000, progress);
    const started = now();
    const main = await env.control.produce(total);
    const producedMs = now() - started;
    await waitFor(`${main.length} records`, () => rows.length >= main.length || severError !== undefined, 90_000, progress, 20);
    if (severError) throw severError;
    const tail = await env.control.produce(10);
    const seen = new Set<string>();
    let scanned = 0;
    await waitFor(
      "the 10 tail records",
      () => {
        for (; scanned < rows.length; scanned++) seen.add(key(rows[scanned]![0], rows[scanned]![1]));
        return tail.every((t) => seen.has(key(t.partition, t.offset)));
      },
      20_000,
      progress,
    );
    return {
      rows,
      severCounts,
      severAtRow,
      opens: s.opens(),
      producedMs,
      totalMs: now() - started,
      subState: sub.state as SubscriptionState,
      connState: s.conn.state,
      warnings: s.log.entries.filter((e) => e.level === "warn" || e.level === "error").map((e) => e.message),
    };
  } finally {
    s.conn.close();
  }
}

/**
 * Visit 1: subscribe from earliest, receive, take the cursor (as an app would persist it:
 * `encodeCursor`), close. Meanwhile more records are produced and records past the cursor are
 * deleted in one partition, and the gateway restarts (a later visit meets a gateway that has
 * no copy of the deleted records in memory; see the README). Visit 2: subscribe with
 * `{ cursor }` (the string): the gateway cannot continue without a gap, so the subscription
 * fails with an `unrecoverable` event (OFFSET_BELOW_LOG_START) and the iterator rejects.
 */
async function unrecoverableCursor(env: Env) {
  const first = await env.control.produce(30);
  const visit1 = open(env);
  let saved: string;
  let savedPositions: { partition: number; nextOffset: number }[];
  let firstCount: number;
  try {
    const sub = visit1.conn.subscribe(WATCH, message(""), { start: "earliest" });
    const rows: Row[] = [];
    sub.on("record", (r) => rows.push(row(r)));
    await waitFor(`the first ${first.length} records`, () => rows.length >= first.length, 20_000, visit1.log.tail);
    const cursor = sub.cursor;
    if (!cursor) throw new Error("no cursor after receiving records");
    saved = encodeCursor(cursor);
    savedPositions = cursor.positions.map((p) => ({ partition: p.partition, nextOffset: Number(p.nextOffset) }));
    firstCount = rows.length;
    sub.unsubscribe();
  } finally {
    visit1.conn.close();
  }

  const second = await env.control.produce(30);
  // The partition that got the most of the second batch; delete up to its new end.
  const counts = new Map<number, number>();
  for (const p of second) counts.set(p.partition, (counts.get(p.partition) ?? 0) + 1);
  const partition = [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0]?.[0] ?? 0;
  const deleteBefore = Math.max(...second.filter((p) => p.partition === partition).map((p) => p.offset)) + 1;
  await env.control.deleteRecords(partition, deleteBefore);
  await env.control.restartGateway();

  const s = open(env);
  try {
    const resumed = s.conn.subscribe(WATCH, message(""), { start: { cursor: saved } });
    const states: SubscriptionState[] = [];
    const errors: ReturnType<typeof describeError>[] = [];
    const unrecoverable: { discontinuity: string; message: string; errorCode: string; cursor: string | null }[] = [];
    resumed.on("state", (st) => states.push(st));
    resumed.on("error", (e) => errors.push(describeError(e)));
    resumed.on("unrecoverable", (e) =>
      unrecoverable.push({ discontinuity: String(e.discontinuity), message: e.message, errorCode: e.error.code, cursor: e.cursor ? encodeCursor(e.cursor) : null }),
    );
    let pulled = 0;
    const iteration = (async () => {
      try {
        for await (const _ of resumed as Subscription<Uint8Array>) pulled++;
        return { outcome: "ended" as const };
      } catch (e) {
        return { outcome: "rejected" as const, error: describeError(e) };
      }
    })();
    await waitFor("the resumed subscription to fail", () => resumed.state === "failed", 15_000, () => `state ${resumed.state}, pulled ${pulled}\n${s.log.tail()}`);
    const iterated = await iteration;
    return {
      firstCount,
      savedCursor: saved,
      savedPositions,
      deleted: { partition, deleteBefore },
      states,
      errors,
      unrecoverable,
      pulled,
      iterated,
      finalState: resumed.state as SubscriptionState,
      error: resumed.error ? describeError(resumed.error) : null,
      connState: s.conn.state,
    };
  } finally {
    s.conn.close();
  }
}

/**
 * The offline queue: the proxy resets the connection and refuses new ones; a publish made now
 * waits (the client keeps retrying and failing); once the proxy accepts again the publish is
 * sent and resolves with a receipt. A subscription from earliest (up to a later sentinel
 * record on the same key, hence the same partition) then counts the records carrying that
 * payload: exactly one.
 */
async function offlineQueue(env: Env) {
  const s = open(env);
  try {
    await waitFor("the connection to open", () => s.conn.state === "open", 10_000, s.log.tail);
    const cut = await env.control.block();
    await waitFor("the connection to notice", () => s.conn.state === "reconnecting", 10_000, s.log.tail);
    const { refused: refusedAtBlock } = await env.control.proxyStats();

    const k = `offline-${randomId()}`;
    const idem = `idem-${randomId()}`;
    const payload = message(k, `queued while offline ${randomId()}`);
    let settled: { receipt: PlainReceipt } | { error: ReturnType<typeof describeError> } | undefined;
    const publishedAt = now();
    const pending = s.conn.publish(PUT, payload, { idempotencyKey: idem, timeoutMs: 30_000 }).then(
      (r) => (settled = { receipt: plainReceipt(r) }),
      (e: unknown) => (settled = { error: describeError(e) }),
    );
    // Two more reconnect attempts refused while the publish waits.
    let refused = refusedAtBlock;
    await waitFor(
      "two refused reconnect attempts",
      async () => (refused = (await env.control.proxyStats()).refused) >= refusedAtBlock + 2,
      10_000,
      s.log.tail,
      20,
    );
    const whileBlocked = { state: s.conn.state as ConnectionState, settled: settled !== undefined, refused };
    await env.control.unblock();
    await pending;
    const waitedMs = now() - publishedAt;
    const result = settled as { receipt: PlainReceipt } | { error: ReturnType<typeof describeError> } | undefined;
    if (!result || !("receipt" in result)) throw new Error(`the queued publish failed: ${safeJson(result)}\n${s.log.tail()}`);
    const receipt = result.receipt;

    // Count it in Kafka: earliest → a sentinel published after it on the same key (same partition).
    const sub = s.conn.subscribe(WATCH, message(k), { start: "earliest" });
    const got: SubscriptionRecord<Uint8Array>[] = [];
    sub.on("record", (r) => got.push(r));
    const sentinel = await s.conn.publish(PUT, message(k, "sentinel"));
    await waitFor("the sentinel record", () => got.some((r) => r.partition === sentinel.partition && r.offset === sentinel.offset), 15_000, s.log.tail);
    const payloadHex = hex(payload);
    const matching = got.filter((r) => hex(r.value) === payloadHex);
    return {
      cut,
      whileBlocked,
      waitedMs,
      receipt,
      sentinel: plainReceipt(sentinel),
      idem,
      matching: matching.map((r) => ({ row: row(r), idempotencyHeader: header(r, IDEMPOTENCY_HEADER) ?? null })),
      recordsOnKey: got.map(row),
      states: s.states.map((x) => x.state),
    };
  } finally {
    s.conn.close();
  }
}

/**
 * Browser only: Playwright's network emulation. Subscribed and streaming; the context goes
 * offline (does the existing WebSocket survive? records produced now tell); the proxy resets
 * the connection; reconnects fail while offline; a publish made now waits; records are
 * produced meanwhile (a gap the resume must fill). Going online fires `online`, which cuts
 * the runtime's backoff wait short: it must reconnect within 2 s although its next retry is
 * 3.6 s away (backoff made deterministic: initial 1000 ms, random 0.9 → 900, 1800, 3600 ms).
 */
async function offlineOnline(env: Env) {
  const s = open(env, { backoff: { initialMs: 1000, maxMs: 20_000, random: () => 0.9 } });
  const g = globalThis as unknown as { navigator?: { onLine: boolean }; addEventListener?: (t: string, f: () => void) => void };
  const events: { type: string; at: number }[] = [];
  for (const type of ["online", "offline"]) g.addEventListener?.(type, () => events.push({ type, at: now() }));
  try {
    const sub = s.conn.subscribe(WATCH, message(""), { start: "latest" });
    const rows: Row[] = [];
    sub.on("record", (r) => rows.push(row(r)));
    const has = (list: Produced[]) => {
      const seen = new Set(rows.map((r) => key(r[0], r[1])));
      return list.every((p) => seen.has(key(p.partition, p.offset)));
    };
    const progress = () => `rows ${rows.length}, state ${s.conn.state}/${sub.state}\n${s.log.tail()}`;
    await waitFor("the subscription to be subscribed", () => sub.state === "subscribed", 10_000, progress);
    const before = await env.control.produce(30);
    await waitFor("the first 30 records", () => has(before), 10_000, progress);
    const statsOnline = await env.control.proxyStats();

    // 1. Offline: does the open WebSocket survive? Records produced now arrive only through it.
    await env.control.setOffline(true);
    const onLineWhenOffline = g.navigator?.onLine ?? null;
    const duringOffline = await env.control.produce(30);
    let socketSurvivedOffline = true;
    try {
      await waitFor("records through the existing socket while offline", () => has(duringOffline), 5_000);
    } catch {
      socketSurvivedOffline = false;
    }
    const afterOfflineState = s.conn.state;
    const reconnectingLogsBefore = s.log.entries.filter((e) => e.message === "reconnecting").length;

    // 2. The network really goes: reset the TCP connection.
    const cut = await env.control.sever(socketSurvivedOffline ? 5_000 : 0);
    await waitFor("the connection to notice the reset", () => s.conn.state === "reconnecting", 10_000, progress);

    // 3. While offline: publish (queued), records produced (the gap), failed reconnect attempts.
    const k = `online-${randomId()}`;
    const payload = message(k, "published while offline");
    let settled: { receipt: PlainReceipt } | { error: ReturnType<typeof describeError> } | undefined;
    const pending = s.conn.publish(PUT, payload, { timeoutMs: 30_000 }).then(
      (r) => (settled = { receipt: plainReceipt(r) }),
      (e: unknown) => (settled = { error: describeError(e) }),
    );
    const whileOffline = await env.control.produce(30);
    const scheduled = () => s.log.entries.filter((e) => e.message === "reconnecting").map((e) => Number(e.fields?.["delayMs"]));
    await waitFor("a backoff wait of 3 s or more (two failed attempts while offline)", () => (scheduled().at(-1) ?? 0) >= 3000, 15_000, progress);
    const statsOffline = await env.control.proxyStats();
    const offlineAttempts = scheduled().length - reconnectingLogsBefore;
    const pendingDelayMs = scheduled().at(-1) ?? 0;
    const offlineState = { conn: s.conn.state as ConnectionState, sub: sub.state as SubscriptionState, publishSettled: settled !== undefined };

    // 4. Online: the `online` event must reconnect now, not in 3.6 s.
    const opensBefore = s.opens();
    const t0 = now();
    await env.control.setOffline(false);
    const onLineAfter = g.navigator?.onLine ?? null;
    await waitFor("the connection to reopen", () => s.opens() > opensBefore, 15_000, progress, 5);
    const reconnectMs = now() - t0;
    await pending;
    const result = settled as { receipt: PlainReceipt } | { error: ReturnType<typeof describeError> } | undefined;
    if (!result || !("receipt" in result)) throw new Error(`the offline publish failed: ${safeJson(result)}\n${progress()}`);
    const receipt = result.receipt;
    const published: Produced = { partition: receipt.partition, offset: receipt.offset, key: k };
    await waitFor("every record, including those produced and published while offline", () => has([...whileOffline, published]), 15_000, progress);
    // A late record after everything: keeps the order check meaningful for late duplicates.
    const tail = await env.control.produce(10);
    await waitFor("the tail records", () => has(tail), 10_000, progress);
    return {
      rows,
      batches: { before, duringOffline, whileOffline, tail },
      published,
      receipt,
      socketSurvivedOffline,
      afterOfflineState,
      cut,
      statsOnline,
      statsOffline,
      offlineAttempts,
      pendingDelayMs,
      offlineState,
      onLineWhenOffline,
      onLineAfter,
      events: events.map((e) => e.type),
      reconnectMs,
      states: s.states.map((x) => x.state),
      subState: sub.state as SubscriptionState,
    };
  } finally {
    s.conn.close();
  }
}

export const scenarios = {
  publishReceipt,
  manyRecordsWithDisconnects,
  unrecoverableCursor,
  offlineQueue,
  offlineOnline,
};

export type Scenarios = typeof scenarios;
export type ScenarioName = keyof Scenarios;
/** The parameters after `env` (none for most). */
export type ScenarioParams<K extends ScenarioName> = Parameters<Scenarios[K]> extends [Env, infer P] ? P : undefined;
export type ScenarioResult<K extends ScenarioName> = Awaited<ReturnType<Scenarios[K]>>;

/** Runs a scenario by name (the browser harness and the Node runner both call this). */
export function runScenario<K extends ScenarioName>(name: K, env: Env, params: ScenarioParams<K>): Promise<ScenarioResult<K>> {
  const fn = scenarios[name] as (env: Env, params: unknown) => Promise<ScenarioResult<K>>;
  return fn(env, params);
}
