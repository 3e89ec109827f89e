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
  Reader,
  Writer,
  connect,
  encodeCursor,
  type ConnectOptions,
  type Connection,
  type ConnectionState,
  type LogFields,
  type Logger,
  type Subscription,
  type SubscriptionRecord,
  type SubscriptionState,
  type WebSocketConstructor,
} from "@kafkasocks/runtime";

export const WATCH = "test.v1.Records/Watch";
export const PUT = "test.v1.Records/Put";
export const IDEMPOTENCY_HEADER = "kafkasocks-idempotency-key";
/** The W3C Trace Context recommendation's example context. */
export const TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
export const TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE";

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
  /** Bytes forwarded gateway → client. */
  toClient: number;
  /** Bytes forwarded client → gateway. */
  toServer: number;
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

/** The body (field 2) of a request message of the fixture's methods; undefined when it has none. */
export function messageBody(bytes: Uint8Array): string | undefined {
  const r = new Reader(bytes);
  let body: string | undefined;
  while (!r.eof()) {
    const tag = r.tag();
    if (tag === ((2 << 3) | 2)) body = r.string();
    else r.skip(tag);
  }
  return body;
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

function open(env: Env, extra: Omit<ConnectOptions, "url" | "logger" | "WebSocket"> = {}): Session {
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
 * TCP resets by the proxy spread over the stream (one each time another total/(severs+2)
 * records have arrived, and only once the connection is open again). Afterwards 10 more
 * ("tail") records, so a late duplicate of any earlier record would show as an order violation.
 */
async function manyRecordsWithDisconnects(env: Env, params: { total: number; severs: number }) {
  const { total, severs } = params;
  const s = open(env);
  try {
    // A small credit window: after a sever, the old connection can still deliver what was
    // in flight on it; with the default window (256) and a fast gateway, thousands of rows
    // arrived before the cut was noticed and fewer than `severs` thresholds were left.
    const sub = s.conn.subscribe(WATCH, message(""), { start: "latest", credit: 100 });
    const rows: Row[] = [];
    /** rows.length at each connection state change, e.g. "reconnecting@952". */
    const timeline: string[] = [];
    s.conn.on("state", (st) => timeline.push(`${st}@${rows.length}`));
    const severCounts: number[] = [];
    const severAtRow: number[] = [];
    /** rows.length when each cut was confirmed (the reset itself happened before). */
    const cutAtRow: number[] = [];
    // Spread over the stream, leaving room at the end: a cut must land while records flow.
    const every = Math.floor(total / (severs + 2));
    let severing = false;
    let opensAtLastSever = 0;
    let severError: unknown;
    sub.on("record", (r) => {
      rows.push(row(r));
      if (!severing && severCounts.length < severs && rows.length >= every * (severCounts.length + 1) && s.opens() > opensAtLastSever) {
        severing = true;
        opensAtLastSever = s.opens();
        severAtRow.push(rows.length);
        timeline.push(`sever@${rows.length}`);
        env.control.sever().then(
          (n) => {
            timeline.push(`cut${n}@${rows.length}`);
            cutAtRow.push(rows.length);
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
    // Fails after 15 s without a new record (a lost resume stalls), or 90 s in all.
    let lastCount = -1;
    let lastProgress = now();
    await waitFor(
      `${main.length} records (15 s without progress)`,
      () => {
        if (rows.length !== lastCount) [lastCount, lastProgress] = [rows.length, now()];
        if (now() - lastProgress > 15_000) throw new Error(`no record for 15 s\n${progress()}`);
        return rows.length >= main.length || severError !== undefined;
      },
      90_000,
      progress,
      20,
    );
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
      cutAtRow,
      timeline,
      opens: s.opens(),
      producedMs,
      totalMs: now() - started,
      subState: sub.state as SubscriptionState,
      connState: s.conn.state,
    };
  } finally {
    s.conn.close();
  }
}

/**
 * Visit 1: subscribe from earliest, receive, take the cursor (as an app would persist it:
 * `encodeCursor`), close. Meanwhile more records are produced and records past the cursor are
 * deleted in one partition; with `restartGateway` the gateway restarts (a later visit meets a
 * gateway that has no copy of the deleted records in memory; see the README). Visit 2:
 * subscribe with `{ cursor }` (the string): the gateway cannot continue without a gap, so the
 * subscription fails with an `unrecoverable` event (OFFSET_BELOW_LOG_START) and the iterator
 * rejects.
 */
async function unrecoverableCursor(env: Env, params: { restartGateway: boolean }) {
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
  if (params.restartGateway) await env.control.restartGateway();

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
    // Failed, or records came instead (then the assertions report them).
    await waitFor("the resumed subscription to fail", () => resumed.state === "failed" || pulled > 0, 15_000, () => `state ${resumed.state}\n${s.log.tail()}`);
    const finalState = resumed.state as SubscriptionState;
    if (finalState !== "failed") resumed.unsubscribe(); // ends the iterator
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
      finalState,
      error: resumed.error ? describeError(resumed.error) : null,
      connState: s.conn.state,
    };
  } finally {
    s.conn.close();
  }
}

/**
 * Publishes with a W3C trace context (`traceparent`, `tracestate` publish options), one valid
 * and one invalid (uppercase hex), and what a key-filtered subscriber receives: each record's
 * trace headers (the fixture gateway exports no traces, so a valid context passes through
 * unchanged; an invalid one is ignored and the publish still succeeds).
 */
async function traceContext(env: Env) {
  const s = open(env);
  try {
    const k = `trace-${randomId()}`;
    const sub = s.conn.subscribe(WATCH, message(k), { start: "latest" });
    const got: SubscriptionRecord<Uint8Array>[] = [];
    sub.on("record", (r) => got.push(r));
    await waitFor("the subscription to be subscribed", () => sub.state === "subscribed", 10_000, s.log.tail);
    const traced = await s.conn.publish(PUT, message(k, "traced"), { traceparent: TRACEPARENT, tracestate: TRACESTATE });
    const invalid = await s.conn.publish(PUT, message(k, "invalid"), { traceparent: TRACEPARENT.toUpperCase(), tracestate: TRACESTATE });
    const at = (r: { partition: number; offset: bigint }) => got.find((x) => x.partition === r.partition && x.offset === r.offset);
    await waitFor("both records", () => at(traced) !== undefined && at(invalid) !== undefined, 10_000, s.log.tail);
    const seen = (r: { partition: number; offset: bigint }) => {
      const record = at(r);
      return {
        row: record ? row(record) : null,
        traceparent: record ? (header(record, "traceparent") ?? null) : null,
        tracestate: record ? (header(record, "tracestate") ?? null) : null,
      };
    };
    return { key: k, traced: { receipt: plainReceipt(traced), ...seen(traced) }, invalid: { receipt: plainReceipt(invalid), ...seen(invalid) } };
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

/** One connection cut by `pipelinedPublishes`, as the page saw it. */
export interface PublishCut {
  /** Publishes answered (receipt or error) when the cut was asked for. */
  answered: number;
  /** Publishes not answered yet then: in flight on the socket, or waiting to be sent. */
  unanswered: number;
  /** Connections the proxy reset. */
  severed: number;
}

/**
 * Publish order: `count` publishes for ONE key made in one synchronous loop (publish() called
 * `count` times, none awaited in between; record i's body is "i" and its idempotency key
 * `<key>/i`), then every outcome awaited. The fixture's publish hook waits a random 0..N ms
 * (FIXTURE_PUBLISH_JITTER_MS), so anything that let a publish overtake an earlier one, in the
 * client or in the gateway, shows in the receipts' offsets. With `cuts` > 0 the proxy resets
 * the connection that many times while publishes are unanswered: the first once a fifth of
 * them are answered, each later one once the reconnected session has answered `afterReopen`
 * more (a reconnected session first sends a full in-flight window: the unanswered publishes
 * again, same keys, new frame ids, then the queue), so the client must resend them in call
 * order. Last, the key's records are read back from earliest up to a sentinel published after
 * everything else (same key, so the same partition).
 */
async function pipelinedPublishes(env: Env, params: { count: number; cuts: number; afterReopen?: number }) {
  const { count, cuts } = params;
  const afterReopen = params.afterReopen ?? 50;
  // Room for every publish in the client's queue and time for all of them under the gateway's
  // rate limit (1000/s by default); fast reconnects.
  const s = open(env, { maxOfflinePublishes: count, publishTimeoutMs: 180_000, backoff: { initialMs: 50, maxMs: 200 } });
  try {
    await waitFor("the connection to open", () => s.conn.state === "open", 10_000, s.log.tail);
    const k = `order-${randomId()}`;
    const outcomes: Settled[] = new Array<Settled>(count);
    let answered = 0;
    const started = now();
    const all: Promise<void>[] = [];
    for (let i = 0; i < count; i++) {
      const p = s.conn.publish(PUT, message(k, String(i)), { idempotencyKey: `${k}/${i}` });
      all.push(
        p.then(
          (r) => void (outcomes[i] = { receipt: plainReceipt(r) }),
          (e: unknown) => void (outcomes[i] = { error: describeError(e) }),
        ).finally(() => void answered++),
      );
    }
    const callMs = now() - started;
    const progress = () => `answered ${answered}/${count}, opens ${s.opens()}, state ${s.conn.state}\n${s.log.tail()}`;
    const cutLog: PublishCut[] = [];
    for (let c = 0; c < cuts; c++) {
      if (c === 0) {
        await waitFor(`${Math.floor(count / 5)} answers`, () => answered >= count / 5, 120_000, progress, 1);
      } else {
        await waitFor(`reconnect ${c}`, () => s.opens() > c && s.conn.state === "open", 20_000, progress, 1);
        const atReopen = answered;
        await waitFor(`${afterReopen} answers after reconnect ${c}`, () => answered >= atReopen + afterReopen || answered === count, 60_000, progress, 1);
      }
      const at = answered;
      const severed = await env.control.sever();
      cutLog.push({ answered: at, unanswered: count - at, severed });
    }
    await Promise.all(all);
    const publishMs = now() - started;
    const receipts: PlainReceipt[] = [];
    const errors: { index: number; error: unknown }[] = [];
    outcomes.forEach((o, i) => {
      if (o && "receipt" in o) receipts[i] = o.receipt;
      else errors.push({ index: i, error: o?.error ?? "never settled" });
    });

    // Read the key's records back: earliest up to a sentinel published last.
    const sub = s.conn.subscribe(WATCH, message(k), { start: "earliest", credit: 1000 });
    /** [partition, offset, body of the request, idempotency key header] */
    const rows: [number, number, string | null, string | null][] = [];
    sub.on("record", (r) => rows.push([r.partition, Number(r.offset), messageBody(r.value) ?? null, header(r, IDEMPOTENCY_HEADER) ?? null]));
    const sentinel = plainReceipt(await s.conn.publish(PUT, message(k, "sentinel"), { timeoutMs: 30_000 }));
    await waitFor(
      "the sentinel record",
      () => rows.some(([p, o]) => p === sentinel.partition && o === sentinel.offset),
      60_000,
      () => `rows ${rows.length}\n${s.log.tail()}`,
    );
    return {
      key: k,
      count,
      callMs,
      publishMs,
      /** Indexed by call: receipts[i] answers the i-th publish() (a hole where it failed). */
      receipts,
      errors: errors.slice(0, 10),
      errorCount: errors.length,
      cuts: cutLog,
      /** Refusals the client waited out (`RESOURCE_EXHAUSTED` + `retry_after_ms`: a rate or in-flight limit of the gateway). */
      refusals: s.log.entries.filter((e) => e.message === "publish rate-limited").length,
      /** Their `retry_after_ms` (the first 20): 50 is the in-flight bound's, less a rate limit's. */
      refusalDelaysMs: s.log.entries
        .filter((e) => e.message === "publish rate-limited")
        .slice(0, 20)
        .map((e) => Number(e.fields?.["retryInMs"])),
      opens: s.opens(),
      states: s.states.map((x) => x.state),
      sentinel,
      rows: rows.filter(([p, o]) => !(p === sentinel.partition && o === sentinel.offset)),
    };
  } finally {
    s.conn.close();
  }
}

/** Browser-only helpers: navigator.onLine and the window's online/offline events. */
function networkProbe() {
  const g = globalThis as unknown as { navigator?: { onLine: boolean }; addEventListener?: (t: string, f: () => void) => void; removeEventListener?: (t: string, f: () => void) => void };
  const events: string[] = [];
  const listeners = ["online", "offline"].map((type) => [type, () => events.push(type)] as const);
  for (const [type, fn] of listeners) g.addEventListener?.(type, fn);
  return {
    events,
    onLine: () => g.navigator?.onLine ?? null,
    stop: () => {
      for (const [type, fn] of listeners) g.removeEventListener?.(type, fn);
    },
  };
}

type Settled = { receipt: PlainReceipt } | { error: ReturnType<typeof describeError> } | undefined;

interface Tracked {
  /** Set once the publish settled. */
  readonly settled: Settled;
  /** The receipt; throws (naming `what`) when the publish failed. */
  receipt(what: string): Promise<PlainReceipt>;
}

/** A publish whose outcome can be inspected without awaiting it. */
function track(p: Promise<{ topic: string; partition: number; offset: bigint; duplicate: boolean }>): Tracked {
  let settled: Settled;
  const done: Promise<void> = p.then(
    (r) => void (settled = { receipt: plainReceipt(r) }),
    (e: unknown) => void (settled = { error: describeError(e) }),
  );
  return {
    get settled() {
      return settled;
    },
    async receipt(what) {
      await done;
      const s = settled as Settled;
      if (!s || !("receipt" in s)) throw new Error(`${what} failed: ${safeJson(s)}`);
      return s.receipt;
    },
  };
}

/** A streaming subscription (from "latest") that records rows, with a "have these arrived?" check. */
function watchAll(s: Session) {
  const sub = s.conn.subscribe(WATCH, message(""), { start: "latest" });
  const rows: Row[] = [];
  const seen = new Set<string>();
  sub.on("record", (r) => {
    rows.push(row(r));
    seen.add(key(r.partition, Number(r.offset)));
  });
  const has = (list: readonly { partition: number; offset: number }[]) => list.every((p) => seen.has(key(p.partition, p.offset)));
  const progress = () => `rows ${rows.length}, state ${s.conn.state}/${sub.state}\n${s.log.tail()}`;
  return { sub, rows, has, progress };
}

/**
 * Browser only: what Playwright's `context.setOffline(true)` does to an OPEN WebSocket in
 * Chromium (see the README). Phase A: offline with the socket intact: records produced
 * meanwhile reach the browser (the proxy forwards them) but are held, not delivered; a publish
 * goes into the socket; nothing closes. Back online the same socket (no reconnect) delivers
 * the held records and the receipt. Phase B: offline, records held as in A, then the proxy
 * resets the TCP connection: with data held, Chromium reports the reset only after going back
 * online (the runtime still says "open"; a publish goes into the dead socket). Back online:
 * the held records, then close 1006; the runtime reconnects, resends the publish with its
 * idempotency key, and resumes the subscription from its cursor.
 */
async function offlineFrozenSocket(env: Env) {
  const s = open(env);
  const net = networkProbe();
  try {
    const w = watchAll(s);
    await waitFor("the subscription to be subscribed", () => w.sub.state === "subscribed", 10_000, w.progress);
    const batch1 = await env.control.produce(20);
    await waitFor("the first records", () => w.has(batch1), 10_000, w.progress);

    // Phase A: offline, socket intact.
    const opensA = s.opens();
    await env.control.setOffline(true);
    const onLineOffline = net.onLine();
    const statsA = await env.control.proxyStats();
    const k1 = `frozen-${randomId()}`;
    const p1 = track(s.conn.publish(PUT, message(k1, "published offline, socket intact"), { timeoutMs: 30_000 }));
    const batch2 = await env.control.produce(20);
    // A bounded observation window (a negative observation, not a readiness wait).
    const arrivedWhileOffline = await waitFor("records while offline", () => w.has(batch2), 1500).then(
      () => true,
      () => false,
    );
    const statsA2 = await env.control.proxyStats();
    const phaseA = {
      onLineOffline,
      arrivedWhileOffline,
      connState: s.conn.state as ConnectionState,
      publishSettled: p1.settled !== undefined,
      rowsBefore: w.rows.length,
      /** Bytes the proxy forwarded to the browser / received from it while offline. */
      toBrowser: statsA2.toClient - statsA.toClient,
      fromBrowser: statsA2.toServer - statsA.toServer,
    };
    const onlineA = now();
    await env.control.setOffline(false);
    await waitFor("the held records after going online", () => w.has(batch2), 10_000, w.progress);
    const heldRecordsMs = now() - onlineA;
    const r1 = await p1.receipt("the publish made offline (phase A)");
    const published1: Produced = { partition: r1.partition, offset: r1.offset, key: k1 };
    await waitFor("the phase A publish's record", () => w.has([published1]), 10_000, w.progress);
    const reconnectsA = s.opens() - opensA;

    // Phase B: offline, records held in the browser, then the connection is reset.
    const opensB = s.opens();
    await env.control.setOffline(true);
    const { toClient: bytesAtOffline } = await env.control.proxyStats();
    const batch3 = await env.control.produce(20);
    // Positive condition: the gateway's Data frames went through the proxy (≥ 20 bytes a record).
    await waitFor("the proxy to forward the records to the browser", async () => (await env.control.proxyStats()).toClient >= bytesAtOffline + 20 * 20, 10_000, w.progress);
    const cut = await env.control.sever();
    const k2 = `reset-${randomId()}`;
    const p2 = track(s.conn.publish(PUT, message(k2, "published offline, socket reset"), { timeoutMs: 30_000 }));
    const batch4 = await env.control.produce(20);
    const phaseB = {
      connState: s.conn.state as ConnectionState,
      subState: w.sub.state as SubscriptionState,
      publishSettled: p2.settled !== undefined,
      heldDelivered: batch3.some((r) => w.has([r])),
    };
    const onlineB = now();
    await env.control.setOffline(false);
    await waitFor("the reconnect after going online", () => s.opens() > opensB, 10_000, w.progress, 5);
    const reconnectMsB = now() - onlineB;
    const r2 = await p2.receipt("the publish made offline (phase B)");
    const published2: Produced = { partition: r2.partition, offset: r2.offset, key: k2 };
    await waitFor("every record after the reconnect", () => w.has([...batch3, ...batch4, published2]), 10_000, w.progress);
    const tail = await env.control.produce(10);
    await waitFor("the tail records", () => w.has(tail), 10_000, w.progress);
    return {
      rows: w.rows,
      phaseA: { ...phaseA, heldRecordsMs, reconnects: reconnectsA, receipt: r1, published: published1 },
      phaseB: { ...phaseB, cut, reconnectMs: reconnectMsB, receipt: r2, published: published2 },
      events: net.events,
      onLineAfter: net.onLine(),
      states: s.states.map((x) => x.state),
      subState: w.sub.state as SubscriptionState,
    };
  } finally {
    net.stop();
    s.conn.close();
  }
}

/**
 * Browser only: offline, then the proxy resets the connection. With no data held in the
 * browser, Chromium reports the close at once although offline; reconnect attempts then fail
 * inside the browser (no TCP connection reaches the proxy). A publish waits in the queue and
 * records are produced (a gap the resume must fill). Going online fires `online`, which must
 * cut the runtime's backoff wait short: it reconnects within 2 s although its next retry is
 * 3.6 s away (backoff made deterministic: initial 1000 ms, random 0.9 → 900, 1800, 3600 ms).
 */
async function offlineOnline(env: Env) {
  const s = open(env, { backoff: { initialMs: 1000, maxMs: 20_000, random: () => 0.9 } });
  const net = networkProbe();
  try {
    const w = watchAll(s);
    await waitFor("the subscription to be subscribed", () => w.sub.state === "subscribed", 10_000, w.progress);
    const before = await env.control.produce(20);
    await waitFor("the first records", () => w.has(before), 10_000, w.progress);

    // Offline with nothing in flight to the browser. Only a gateway Ping (every 15 s) could slip
    // in between; it would be held and hide the reset until online (see offlineFrozenSocket),
    // so then let it through and go offline again.
    let statsAtOffline = await env.control.proxyStats();
    for (let tries = 1; ; tries++) {
      await env.control.setOffline(true);
      const current = await env.control.proxyStats();
      if (current.toClient === statsAtOffline.toClient || tries === 3) break;
      await env.control.setOffline(false);
      statsAtOffline = await env.control.proxyStats();
    }
    const cut = await env.control.sever();
    const heldAtReset = (await env.control.proxyStats()).toClient - statsAtOffline.toClient;
    const resetNoticedAt = now();
    await waitFor("the connection to notice the reset while offline", () => s.conn.state === "reconnecting", 10_000, w.progress, 5);
    const resetNoticedMs = now() - resetNoticedAt;
    const logsAtOffline = s.log.entries.length;

    const k = `online-${randomId()}`;
    const p = track(s.conn.publish(PUT, message(k, "published while offline"), { timeoutMs: 30_000 }));
    const gap = await env.control.produce(20);
    const scheduled = () => s.log.entries.filter((e) => e.message === "reconnecting");
    await waitFor("a backoff wait of 3 s or more", () => Number(scheduled().at(-1)?.fields?.["delayMs"] ?? 0) >= 3000, 15_000, w.progress);
    const last = scheduled().at(-1) as LogEntry;
    const pendingDelayMs = Number(last.fields?.["delayMs"]);
    const retryDueAt = last.at + pendingDelayMs;
    const statsOffline = await env.control.proxyStats();
    const offlineAttempts = s.log.entries.slice(logsAtOffline).filter((e) => e.message === "reconnecting").length;
    const offlineState = { conn: s.conn.state as ConnectionState, sub: w.sub.state as SubscriptionState, publishSettled: p.settled !== undefined, onLine: net.onLine() };

    const opensBefore = s.opens();
    const t0 = now();
    await env.control.setOffline(false);
    await waitFor("the connection to reopen", () => s.opens() > opensBefore, 15_000, w.progress, 5);
    const openedAt = now();
    const receipt = await p.receipt("the publish made offline");
    const published: Produced = { partition: receipt.partition, offset: receipt.offset, key: k };
    await waitFor("every record, including those produced and published while offline", () => w.has([...gap, published]), 15_000, w.progress);
    const tail = await env.control.produce(10);
    await waitFor("the tail records", () => w.has(tail), 10_000, w.progress);
    return {
      rows: w.rows,
      cut,
      heldAtReset,
      resetNoticedMs,
      statsAtOffline,
      statsOffline,
      offlineAttempts,
      pendingDelayMs,
      offlineState,
      reconnectMs: openedAt - t0,
      /** > 0: the reconnect came before the backoff timer would have fired. */
      marginBeforeRetryMs: retryDueAt - openedAt,
      receipt,
      published,
      events: net.events,
      onLineAfter: net.onLine(),
      states: s.states.map((x) => x.state),
      subState: w.sub.state as SubscriptionState,
    };
  } finally {
    net.stop();
    s.conn.close();
  }
}

/**
 * A page of an origin the gateway does not allow: each attempt is refused before the upgrade
 * (HTTP 403, which a browser reports only as a failed WebSocket: `error`, then close 1006),
 * and the runtime keeps retrying with backoff without ever opening. Runs until `attempts`
 * sockets have closed.
 */
async function refusedOrigin(env: Env, params: { attempts: number }) {
  const s = open(env, { backoff: { initialMs: 50, maxMs: 200 } });
  const closeCodes = () => s.log.entries.filter((e) => e.message === "socket closed").map((e) => Number(e.fields?.["code"]));
  try {
    await waitFor(`${params.attempts} refused attempts`, () => closeCodes().length >= params.attempts, 20_000, s.log.tail);
    return {
      closeCodes: closeCodes(),
      states: s.states.map((x) => x.state),
      opens: s.opens(),
      welcomed: s.conn.welcome !== undefined,
      connState: s.conn.state,
    };
  } finally {
    s.conn.close();
  }
}

export const scenarios = {
  publishReceipt,
  traceContext,
  manyRecordsWithDisconnects,
  unrecoverableCursor,
  offlineQueue,
  pipelinedPublishes,
  offlineFrozenSocket,
  offlineOnline,
  refusedOrigin,
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
