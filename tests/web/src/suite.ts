/**
 * The scenario tests shared by Node (test/node.test.ts) and Chromium (test/browser.test.ts):
 * each test starts a fresh topic, a fixture-gateway and a TCP proxy, runs one scenario of
 * scenarios.ts through a `Runner` (directly in Node, or inside a page), and asserts on the
 * result against what Node itself saw (fixture-kafka's output, the proxy's counters).
 */
import assert from "node:assert/strict";
import { test, type TestContext } from "node:test";
import { cleanups, fixtureKafka, produce, startGateway, uniqueTopic, type GatewayOptions, type GatewayProcess } from "./fixtures.ts";
import { TcpProxy } from "./proxy.ts";
import { IDEMPOTENCY_HEADER, TRACEPARENT, TRACESTATE, type Control, type Produced, type Row, type ScenarioName, type ScenarioParams, type ScenarioResult } from "./scenarios.ts";

export interface Runner {
  /** "node" or "chromium": prefixes the test names. */
  readonly name: string;
  /** The origins of the pages the runner serves (the gateway lets in browsers of these only). */
  readonly origins?: readonly string[];
  run<K extends ScenarioName>(
    t: TestContext,
    fixture: Fixture,
    name: K,
    params: ScenarioParams<K>,
  ): Promise<ScenarioResult<K>>;
}

/** The Control as implemented in the test process; it also records every batch produced. */
export class NodeControl implements Control {
  readonly batches: Produced[][] = [];
  /** Set by the browser runner (Playwright's context.setOffline). */
  offline: ((offline: boolean) => Promise<void>) | undefined;

  constructor(
    readonly topic: string,
    readonly proxy: TcpProxy,
    private readonly restart: () => Promise<void>,
  ) {}

  restartGateway(): Promise<void> {
    return this.restart();
  }

  sever(waitMs = 5000): Promise<number> {
    return this.proxy.severWhenConnected(waitMs);
  }

  async block(): Promise<number> {
    return this.proxy.block();
  }

  async unblock(): Promise<void> {
    this.proxy.unblock();
  }

  async proxyStats() {
    return this.proxy.stats();
  }

  async produce(count: number): Promise<Produced[]> {
    const batch = await produce(this.topic, count);
    this.batches.push(batch);
    return batch;
  }

  async deleteRecords(partition: number, offset: number): Promise<void> {
    await fixtureKafka("delete-records", this.topic, String(partition), String(offset));
  }

  async setOffline(offline: boolean): Promise<void> {
    if (!this.offline) throw new Error("setOffline: no network emulation in this environment");
    await this.offline(offline);
  }
}

export interface Fixture {
  topic: string;
  /** The current gateway (restartGateway replaces it). */
  gateway: GatewayProcess;
  proxy: TcpProxy;
  control: NodeControl;
  /** Registers a cleanup (run after the test, in reverse order). */
  defer(fn: () => unknown): void;
  /** The proxy's WebSocket URL. */
  url: string;
}

/**
 * A fresh topic with `partitions`, its gateway (letting in browser pages of `origins`; more
 * settings in `gatewayOptions`) and a proxy in front; all torn down after the test.
 */
export async function setup(
  t: TestContext,
  partitions: number,
  origins: readonly string[] = [],
  gatewayOptions: Omit<GatewayOptions, "origins"> = {},
): Promise<Fixture> {
  const defer = cleanups(t);
  const topic = uniqueTopic("web");
  const options: GatewayOptions = { ...gatewayOptions, origins };
  const gateway = await startGateway(topic, partitions, options);
  defer(() => fixtureKafka("delete", topic));
  const proxy = await TcpProxy.start({ host: gateway.host, port: gateway.port });
  const f: Fixture = {
    topic,
    gateway,
    proxy,
    control: new NodeControl(topic, proxy, async () => {
      await f.gateway.stop();
      f.gateway = await startGateway(topic, undefined, options);
      proxy.retarget({ host: f.gateway.host, port: f.gateway.port });
    }),
    defer,
    url: proxy.url,
  };
  defer(() => f.gateway.stop());
  defer(() => proxy.close());
  return f;
}

const pk = (p: number, o: number) => `${p}:${o}`;

/**
 * `rows` holds exactly the records of `expected`, each once, and per partition in strictly
 * increasing offset order (the order they were handed to the application).
 */
export function assertExactlyOnceInOrder(rows: readonly Row[], expected: readonly Produced[], what: string): void {
  const want = new Map(expected.map((e) => [pk(e.partition, e.offset), e]));
  assert.equal(want.size, expected.length, `${what}: fixture-kafka reported a (partition, offset) twice`);
  const seen = new Set<string>();
  const last = new Map<number, number>();
  for (const [i, [p, o, key]] of rows.entries()) {
    const id = pk(p, o);
    assert.ok(!seen.has(id), `${what}: record ${id} handed to the application twice (second time at position ${i})`);
    seen.add(id);
    const e = want.get(id);
    assert.ok(e, `${what}: record ${id} (key ${key}) was never produced`);
    assert.equal(key, e.key, `${what}: record ${id} has key ${key}, fixture-kafka produced ${e.key}`);
    const prev = last.get(p);
    assert.ok(prev === undefined || o > prev, `${what}: partition ${p} went from offset ${prev} to ${o} (position ${i})`);
    last.set(p, o);
  }
  const missing = expected.filter((e) => !seen.has(pk(e.partition, e.offset)));
  assert.equal(missing.length, 0, `${what}: ${missing.length} records never arrived, e.g. ${missing.slice(0, 5).map((m) => pk(m.partition, m.offset)).join(", ")}`);
  assert.equal(rows.length, expected.length);
}

/** What unrecoverableCursor must produce: the cursor as persisted, then DATA_LOSS / OFFSET_BELOW_LOG_START. */
export function assertUnrecoverable(f: Fixture, r: ScenarioResult<"unrecoverableCursor">): void {
  const [first] = f.control.batches;
  assert.ok(first);
  assert.equal(r.firstCount, first.length);
  // The cursor the app would persist: next offset per partition = what it received.
  const ends = new Map<number, number>();
  for (const p of first) ends.set(p.partition, Math.max(ends.get(p.partition) ?? 0, p.offset + 1));
  for (const p of r.savedPositions) assert.equal(p.nextOffset, ends.get(p.partition) ?? 0, `cursor position of partition ${p.partition}`);
  assert.deepEqual(r.savedPositions.map((p) => p.partition), [0, 1, 2], "the cursor lists every partition");
  const saved = r.savedPositions.find((p) => p.partition === r.deleted.partition);
  assert.ok(saved && r.deleted.deleteBefore > saved.nextOffset, `records deleted past the cursor (${r.deleted.deleteBefore} > ${saved?.nextOffset})`);

  assert.equal(r.pulled, 0, `no record handed out after the resume (got ${r.pulled}, state ${r.finalState})`);
  assert.equal(r.unrecoverable.length, 1, "exactly one unrecoverable event");
  const u = r.unrecoverable[0];
  assert.deepEqual({ discontinuity: u?.discontinuity, errorCode: u?.errorCode }, { discontinuity: "OFFSET_BELOW_LOG_START", errorCode: "DATA_LOSS" });
  assert.equal(u?.cursor, r.savedCursor, "the event carries the cursor it could not resume from");
  assert.equal(r.finalState, "failed");
  assert.deepEqual(r.states, ["failed"], "never subscribed, never retried");
  assert.deepEqual({ code: r.error?.code, discontinuity: r.error?.discontinuity }, { code: "DATA_LOSS", discontinuity: "OFFSET_BELOW_LOG_START" });
  assert.deepEqual(r.errors.map((e) => e.code), ["DATA_LOSS"]);
  assert.equal(r.iterated.outcome, "rejected", "the async iterator rejects");
  assert.equal(r.iterated.outcome === "rejected" ? r.iterated.error.code : undefined, "DATA_LOSS");
  assert.equal(r.connState, "open", "the connection is unaffected");
}

/**
 * What `pipelinedPublishes` must show: every publish answered with a receipt; the receipts'
 * offsets, taken in the order publish() was called, strictly increasing on one partition;
 * and the key's records read back from Kafka are exactly one per publish (each idempotency
 * key once), in call order, where the receipts say.
 */
export function assertPublishOrder(f: Fixture, r: ScenarioResult<"pipelinedPublishes">, what: string): void {
  // Order first (over the publishes that got a receipt), so that a failure names both.
  const overtaken: string[] = [];
  let previous: { index: number; offset: number } | undefined;
  for (let i = 0; i < r.count; i++) {
    const x = r.receipts[i];
    if (!x) continue;
    if (previous && x.offset <= previous.offset) overtaken.push(`publish ${previous.index} → offset ${previous.offset}, publish ${i} → offset ${x.offset}`);
    previous = { index: i, offset: x.offset };
  }
  const disorder = `${overtaken.length} consecutive receipts with offsets out of call order${overtaken.length ? `, e.g.\n${overtaken.slice(0, 5).join("\n")}` : ""}`;
  assert.equal(r.errorCount, 0, `${what}: ${r.errorCount} publishes failed, e.g. ${JSON.stringify(r.errors.slice(0, 3))}; ${disorder}`);
  const receipts = Array.from({ length: r.count }, (_, i) => r.receipts[i]);
  const missing = receipts.findIndex((x) => x === undefined || x === null);
  assert.equal(missing, -1, `${what}: publish ${missing} has no receipt`);
  const got = receipts as ScenarioResult<"pipelinedPublishes">["receipts"];
  const partition = got[0]?.partition;
  assert.ok(got.every((x) => x.topic === f.topic && x.partition === partition), `${what}: one key, one topic, one partition`);
  assert.equal(overtaken.length, 0, `${what}: ${disorder}`);
  // Kafka's side: one record per publish, in call order, at the receipt's offset.
  assert.equal(r.rows.length, r.count, `${what}: ${r.rows.length} records on the key before the sentinel, ${r.count} publishes`);
  for (const [j, [p, o, body, idem]] of r.rows.entries()) {
    const want = { partition, offset: got[j]?.offset, body: String(j), idem: `${r.key}/${j}` };
    if (p !== want.partition || o !== want.offset || body !== want.body || idem !== want.idem) {
      assert.fail(`${what}: record ${j} read back is ${JSON.stringify({ partition: p, offset: o, body, idem })}, want ${JSON.stringify(want)}`);
    }
  }
  assert.ok(r.sentinel.offset > (got.at(-1)?.offset ?? Infinity), `${what}: the sentinel comes after every publish`);
}

/** The tests every environment runs. */
export function sharedTests(runner: Runner): void {
  const name = (s: string) => `${runner.name}: ${s}`;

  test(name("publish resolves with a receipt; a subscriber receives the record at that (partition, offset); a repeat is deduplicated"), { timeout: 60_000 }, async (t) => {
    const f = await setup(t, 3, runner.origins);
    const r = await runner.run(t, f, "publishReceipt", undefined);
    assert.equal(r.topic, f.topic, "Subscribed names the fixture topic");
    assert.deepEqual({ topic: r.receipt.topic, duplicate: r.receipt.duplicate }, { topic: f.topic, duplicate: false });
    assert.equal(r.records.length, 2, `the subscriber got ${r.records.length} records (want: the first and the third publish)`);
    const [first, third] = r.records;
    assert.deepEqual(first?.row.slice(0, 3), [r.receipt.partition, r.receipt.offset, r.key], "record at the receipt's partition/offset, with the request's key");
    assert.equal(first?.valueHex, r.payloadHex, "the record value is the published payload");
    assert.equal(first?.idempotencyHeader, r.idem, `the record carries the ${IDEMPOTENCY_HEADER} header`);
    // The same idempotency key again: the first receipt, flagged duplicate, nothing produced.
    assert.deepEqual(r.again, { ...r.receipt, duplicate: true });
    assert.deepEqual([r.third.partition, r.third.offset, r.third.duplicate], [r.receipt.partition, r.receipt.offset + 1, false], "same key, same partition, next offset");
    assert.deepEqual(third?.row.slice(0, 2), [r.third.partition, r.third.offset]);
  });

  test(name("trace context: a publish's traceparent and tracestate reach the subscriber as record headers; an invalid traceparent is ignored and the publish succeeds"), { timeout: 60_000 }, async (t) => {
    const f = await setup(t, 3, runner.origins);
    const r = await runner.run(t, f, "traceContext", undefined);
    assert.deepEqual(r.traced.row?.slice(0, 3), [r.traced.receipt.partition, r.traced.receipt.offset, r.key], "the traced record, where its receipt says");
    assert.deepEqual([r.traced.traceparent, r.traced.tracestate], [TRACEPARENT, TRACESTATE], "its trace headers, as sent");
    assert.deepEqual(r.invalid.row?.slice(0, 3), [r.invalid.receipt.partition, r.invalid.receipt.offset, r.key], "the invalid context's publish succeeded");
    assert.deepEqual([r.invalid.traceparent, r.invalid.tracestate], [null, null], "an invalid traceparent adds no trace header");
  });

  test(name("10,000 records on 3 partitions with 20 forced disconnects: every record exactly once, in offset order per partition"), { timeout: 150_000 }, async (t) => {
    const f = await setup(t, 3, runner.origins);
    const total = 10_000;
    const severs = 20;
    const r = await runner.run(t, f, "manyRecordsWithDisconnects", { total, severs });
    t.diagnostic(`produced ${total} in ${r.producedMs} ms; all received in ${r.totalMs} ms; timeline ${r.timeline.join(" ")}`);
    const [main, tail] = f.control.batches;
    assert.ok(main && tail && f.control.batches.length === 2, "two batches produced: 10,000 and the 10 tail records");
    assert.equal(main.length, total);
    assert.deepEqual(new Set(main.map((m) => m.partition)), new Set([0, 1, 2]), "records on all 3 partitions");
    assertExactlyOnceInOrder(r.rows, [...main, ...tail], `${runner.name} 10k`);
    // The values are fixture-kafka's v0..v9999 (then v0..v9 for the tail): each main value once.
    assert.equal(new Set(r.rows.map((x) => x[3])).size, total);
    assert.equal(r.severCounts.length, severs, `${severs} severs`);
    assert.ok(r.severCounts.every((n) => n >= 1), `every sever cut an open connection: ${r.severCounts.join(",")}`);
    assert.ok(r.cutAtRow.every((at) => at < total), `every cut landed mid-stream (confirmed at rows ${r.cutAtRow.join(",")})`);
    assert.equal(r.opens, severs + 1, "one open per (re)connect: the first and one after each sever");
    assert.ok(f.proxy.accepted >= severs + 1, `the proxy forwarded ${f.proxy.accepted} connections`);
    assert.deepEqual([r.subState, r.connState], ["subscribed", "open"]);
  });

  test(name("a cursor whose records were deleted: resubscribing fails with unrecoverable OFFSET_BELOW_LOG_START, state failed"), { timeout: 60_000 }, async (t) => {
    const f = await setup(t, 3, runner.origins);
    const r = await runner.run(t, f, "unrecoverableCursor", { restartGateway: true });
    assertUnrecoverable(f, r);
    assert.ok(f.proxy.accepted >= 2, "two visits, two connections");
  });

  test(name("publish order: 10,000 publishes for one key, pipelined through a 0-5 ms async hook: receipt offsets strictly increase in call order, each in Kafka once"), { timeout: 180_000 }, async (t) => {
    const f = await setup(t, 3, runner.origins, { publishJitterMs: 5 });
    const r = await runner.run(t, f, "pipelinedPublishes", { count: 10_000, cuts: 0 });
    t.diagnostic(
      `${r.count} publish() calls in ${r.callMs} ms; all answered in ${r.publishMs} ms (${Math.round(r.count / (r.publishMs / 1000))}/s); ${r.refusals} RESOURCE_EXHAUSTED refusals waited out (retry_after_ms ${r.refusalDelaysMs.join(",") || "-"})`,
    );
    assertPublishOrder(f, r, `${runner.name} pipelined`);
    assert.ok(r.receipts.every((x) => !x.duplicate), "each produced once, on the first try");
    assert.deepEqual([r.opens, f.proxy.accepted], [1, 1], "one connection throughout");
  });

  test(name("publish order across reconnects: the connection cut 3 times while publishes are unanswered; resent in call order, each produced once, offsets strictly increasing"), { timeout: 180_000 }, async (t) => {
    const f = await setup(t, 3, runner.origins, { publishJitterMs: 5 });
    const cuts = 3;
    const r = await runner.run(t, f, "pipelinedPublishes", { count: 3000, cuts });
    const duplicates = r.receipts.filter((x) => x?.duplicate).length;
    t.diagnostic(
      `cuts ${JSON.stringify(r.cuts)}; ${duplicates} receipts answered from the dedup window; ${r.refusals} RESOURCE_EXHAUSTED refusals waited out (retry_after_ms ${r.refusalDelaysMs.join(",") || "-"}); all answered in ${r.publishMs} ms; states ${r.states.join(",")}`,
    );
    assert.equal(r.cuts.length, cuts);
    assert.ok(r.cuts.every((c) => c.severed >= 1 && c.unanswered > 0), `every cut reset an open connection with publishes unanswered: ${JSON.stringify(r.cuts)}`);
    assert.equal(r.opens, cuts + 1, "one open per (re)connect");
    assertPublishOrder(f, r, `${runner.name} pipelined with ${cuts} cuts`);
    // Publishes the gateway had read when the connection was cut were produced then; the
    // client sent them again (same key) and got the first receipt back.
    assert.ok(duplicates >= 1, "some resent publishes were answered from the dedup window (produced before the cut, receipt lost with it)");
  });

  test(name("offline queue: a publish made while the gateway is unreachable waits, resolves after reconnect, and is in Kafka once"), { timeout: 60_000 }, async (t) => {
    const f = await setup(t, 3, runner.origins);
    const r = await runner.run(t, f, "offlineQueue", undefined);
    t.diagnostic(`publish waited ${r.waitedMs} ms; ${r.whileBlocked.refused} reconnect attempts refused`);
    assert.ok(r.cut >= 1, "the block cut the open connection");
    assert.deepEqual({ state: r.whileBlocked.state, settled: r.whileBlocked.settled }, { state: "reconnecting", settled: false }, "queued, not failed, while refused");
    assert.ok(f.proxy.refused >= 2, `reconnect attempts were refused (${f.proxy.refused})`);
    assert.equal(r.receipt.topic, f.topic);
    assert.equal(r.receipt.duplicate, false, "first time the gateway saw it");
    assert.equal(r.matching.length, 1, `records with the payload: ${r.matching.length}`);
    assert.deepEqual(r.matching[0]?.row.slice(0, 2), [r.receipt.partition, r.receipt.offset], "the record is where the receipt says");
    assert.equal(r.matching[0]?.idempotencyHeader, r.idem);
    assert.deepEqual(
      r.recordsOnKey.map((x) => [x[0], x[1]]),
      [
        [r.receipt.partition, r.receipt.offset],
        [r.sentinel.partition, r.sentinel.offset],
      ],
      "the key's records from earliest: the queued publish, then the sentinel",
    );
    const states = r.states.join(",");
    assert.match(states, /^open,reconnecting,open$/, `connection states ${states}`);
  });
}
