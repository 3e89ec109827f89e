import assert from "node:assert/strict";
import { test } from "node:test";
import {
  decodeCursor,
  encodeCursor,
  KafkaSocksError,
  type SubscriptionRecord,
  type SubscriptionState,
  type UnrecoverableEvent,
} from "../src/index.js";
import { cursorOf, data, flush, record, setup, subscribed, TOPIC_ID } from "../testing/fakes.js";

const METHOD = "demo.Ticker/Watch";
const REQ = new Uint8Array([10, 3, 65, 67, 77]);
const offsets = (rs: SubscriptionRecord<unknown>[]) => rs.map((r) => `${r.partition}:${r.offset}`);
const errorFrame = (subscriptionId: number, code: number, discontinuity = 0, retryAfterMs = 0) =>
  ({ kind: "error", error: { code, message: `code ${code}`, subscriptionId, publishId: 0n, discontinuity, retryAfterMs } }) as const;

test("subscribe sends Subscribe; records reach callbacks and advance the cursor", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  const states: SubscriptionState[] = [];
  sub.on("state", (s) => states.push(s));
  const got: SubscriptionRecord<Uint8Array>[] = [];
  sub.on("record", (r) => got.push(r));
  assert.deepEqual(ws.last("subscribe"), { id: 1, method: METHOD, request: REQ, start: { kind: "latest" }, credit: 256 });
  assert.equal(sub.state, "subscribing");
  assert.equal(sub.cursor, undefined, "latest: unknown until Subscribed");
  ws.deliver(subscribed(1, cursorOf({ 0: 10n, 1: 20n })));
  assert.equal(sub.state, "subscribed");
  assert.equal(sub.topic, "ticks");
  ws.deliver(data(1, record(0, 10n), record(1, 20n), record(0, 11n)));
  assert.deepEqual(offsets(got), ["0:10", "1:20", "0:11"]);
  assert.deepEqual([...(got[0]?.value ?? [])], [0, 10]);
  assert.equal(got[0]?.timestampMs, 1_600_000_000_010);
  assert.deepEqual(sub.cursor, cursorOf({ 0: 12n, 1: 21n }));
  assert.deepEqual(states, ["subscribed"]);
});

test("after a drop it resubscribes from the cursor (records + checkpoint), and drops duplicates", async () => {
  const h = setup();
  const ws1 = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ, { start: "earliest" });
  const got: SubscriptionRecord<Uint8Array>[] = [];
  sub.on("record", (r) => got.push(r));
  ws1.deliver(subscribed(1, cursorOf({ 0: 10n, 1: 20n, 2: 0n })));
  ws1.deliver(data(1, record(0, 10n), record(0, 11n), record(1, 20n)));
  ws1.deliver({ kind: "checkpoint", checkpoint: { subscriptionId: 1, positions: [{ partition: 1, nextOffset: 25n }, { partition: 2, nextOffset: 7n }] } });
  ws1.serverClose(1006);
  assert.equal(sub.state, "subscribing");
  await h.tick(250);
  const ws2 = await h.session();
  const resub = ws2.last("subscribe");
  assert.equal(resub.method, METHOD);
  assert.deepEqual(resub.request, REQ);
  assert.deepEqual(resub.start, {
    kind: "cursor",
    cursor: {
      topicId: TOPIC_ID,
      positions: [
        { partition: 0, nextOffset: 12n },
        { partition: 1, nextOffset: 25n },
        { partition: 2, nextOffset: 7n },
      ],
    },
  });
  const id = resub.id;
  ws2.deliver(subscribed(id, cursorOf({ 0: 12n, 1: 25n, 2: 7n })));
  // A non-conforming gateway repeats 0:11 and 1:24: both must be dropped.
  ws2.deliver(data(id, record(0, 11n), record(0, 12n), record(1, 24n), record(1, 25n)));
  assert.deepEqual(offsets(got), ["0:10", "0:11", "1:20", "0:12", "1:25"]);
  assert.deepEqual(sub.cursor, cursorOf({ 0: 13n, 1: 26n, 2: 7n }));
});

test("before its first Subscribed, a resubscribe uses the original start", async () => {
  const h = setup();
  const ws1 = await h.session();
  h.conn.subscribe(METHOD, REQ, { start: { timestampMs: 1_650_000_000_000 } });
  assert.deepEqual(ws1.last("subscribe").start, { kind: "timestampMs", timestampMs: 1_650_000_000_000n });
  ws1.serverClose(1006);
  await h.tick(250);
  const ws2 = await h.session();
  assert.deepEqual(ws2.last("subscribe").start, { kind: "timestampMs", timestampMs: 1_650_000_000_000n });
});

test("a subscription made while disconnected is sent once the session opens", async () => {
  const h = setup();
  const sub = h.conn.subscribe(METHOD, REQ);
  assert.equal(sub.state, "subscribing");
  const ws = await h.session();
  assert.equal(ws.sentOf("subscribe").length, 1);
});

test("unsubscribe while subscribing: Unsubscribe goes out only once Subscribed arrives", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  const got: unknown[] = [];
  sub.on("record", (r) => got.push(r));
  sub.unsubscribe();
  assert.equal(sub.state, "unsubscribed");
  assert.equal(ws.sentOf("unsubscribe").length, 0, "the gateway does not know the id yet");
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  assert.deepEqual(ws.sentOf("unsubscribe"), [{ id: 1 }]);
  ws.deliver(data(1, record(0, 0n)));
  assert.equal(got.length, 0, "records after unsubscribe are not delivered");
  // The id stays reserved until End.
  const other = h.conn.subscribe(METHOD, REQ);
  assert.equal(ws.last("subscribe").id, 2);
  ws.deliver({ kind: "end", end: { id: 1 } });
  assert.equal(sub.state, "unsubscribed");
  assert.equal(other.state, "subscribing");
});

test("unsubscribe while subscribing and the connection drops: nothing is sent, nothing resubscribed", async () => {
  const h = setup();
  const ws1 = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  sub.unsubscribe();
  ws1.serverClose(1006);
  await h.tick(250);
  const ws2 = await h.session();
  assert.equal(ws2.sentOf("subscribe").length, 0);
  assert.equal(ws2.sentOf("unsubscribe").length, 0);
});

test("subscribe, unsubscribe, subscribe the same method+request: a new id each time, no reuse before End", async () => {
  const h = setup();
  const ws = await h.session();
  const a = h.conn.subscribe(METHOD, REQ);
  ws.deliver(subscribed(1, cursorOf({ 0: 5n })));
  a.unsubscribe();
  assert.deepEqual(ws.last("unsubscribe"), { id: 1 });
  const b = h.conn.subscribe(METHOD, REQ);
  assert.equal(ws.last("subscribe").id, 2, "id 1 is still in use until End");
  const gotA: unknown[] = [];
  const gotB: SubscriptionRecord<Uint8Array>[] = [];
  a.on("record", (r) => gotA.push(r));
  b.on("record", (r) => gotB.push(r));
  ws.deliver(data(1, record(0, 5n))); // in flight before End
  ws.deliver({ kind: "end", end: { id: 1 } });
  ws.deliver(subscribed(2, cursorOf({ 0: 6n })));
  ws.deliver(data(2, record(0, 6n)));
  assert.equal(gotA.length, 0);
  assert.deepEqual(offsets(gotB), ["0:6"]);
  b.unsubscribe();
  h.conn.subscribe(METHOD, REQ);
  assert.deepEqual(
    ws.sentOf("subscribe").map((s) => s.id),
    [1, 2, 3],
  );
});

test("the same subscription twice at once is two independent streams; re-created after failure it starts fresh", async () => {
  const h = setup();
  const ws = await h.session();
  const a = h.conn.subscribe(METHOD, REQ);
  const b = h.conn.subscribe(METHOD, REQ);
  assert.deepEqual(
    ws.sentOf("subscribe").map((s) => s.id),
    [1, 2],
  );
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  ws.deliver(subscribed(2, cursorOf({ 0: 0n })));
  const ga: SubscriptionRecord<Uint8Array>[] = [];
  const gb: SubscriptionRecord<Uint8Array>[] = [];
  a.on("record", (r) => ga.push(r));
  b.on("record", (r) => gb.push(r));
  ws.deliver(data(1, record(0, 0n), record(0, 1n)));
  ws.deliver(data(2, record(0, 0n)));
  assert.deepEqual(offsets(ga), ["0:0", "0:1"]);
  assert.deepEqual(offsets(gb), ["0:0"]);
  ws.deliver(errorFrame(1, 15, 1));
  assert.equal(a.state, "failed");
  assert.equal(b.state, "subscribed", "the twin is unaffected");
  const again = h.conn.subscribe(METHOD, REQ, { start: "earliest" });
  const last = ws.last("subscribe");
  assert.equal(last.id, 3);
  assert.deepEqual(last.start, { kind: "earliest" });
  assert.equal(again.state, "subscribing");
});

test("DATA_LOSS: state failed, an unrecoverable event with the reason, the iterator throws, no resubscribe", async () => {
  const h = setup();
  const ws1 = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ, { start: { cursor: cursorOf({ 0: 3n }) } });
  const events: UnrecoverableEvent[] = [];
  const errors: KafkaSocksError[] = [];
  sub.on("unrecoverable", (e) => events.push(e));
  sub.on("error", (e) => errors.push(e));
  const it = sub[Symbol.asyncIterator]();
  ws1.deliver({ kind: "error", error: { code: 15, message: "offset 3 is below the log start 9", subscriptionId: 1, publishId: 0n, discontinuity: 1, retryAfterMs: 0 } });
  assert.equal(sub.state, "failed");
  assert.equal(events.length, 1);
  assert.equal(events[0]?.discontinuity, "OFFSET_BELOW_LOG_START");
  assert.equal(events[0]?.message, "offset 3 is below the log start 9");
  assert.deepEqual(events[0]?.cursor, cursorOf({ 0: 3n }));
  assert.equal(errors[0]?.code, "DATA_LOSS");
  assert.equal(sub.error?.discontinuity, "OFFSET_BELOW_LOG_START");
  await assert.rejects(it.next(), (e: unknown) => e instanceof KafkaSocksError && e.code === "DATA_LOSS");
  ws1.serverClose(1006);
  await h.tick(250);
  const ws2 = await h.session();
  assert.equal(ws2.sentOf("subscribe").length, 0, "never silently restarted");
});

test("UNAVAILABLE is retried with backoff under a new id; PERMISSION_DENIED fails", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  const errors: string[] = [];
  sub.on("error", (e) => errors.push(e.code));
  ws.deliver(errorFrame(1, 14));
  assert.equal(sub.state, "subscribing");
  await h.tick(249);
  assert.equal(ws.sentOf("subscribe").length, 1);
  await h.tick(1);
  assert.equal(ws.sentOf("subscribe").length, 2);
  ws.deliver(errorFrame(2, 7));
  assert.equal(sub.state, "failed");
  assert.deepEqual(errors, ["UNAVAILABLE", "PERMISSION_DENIED"]);
});

test("AbortSignal: abort unsubscribes and ends the iterator", async () => {
  const h = setup();
  const ws = await h.session();
  const ac = new AbortController();
  const sub = h.conn.subscribe(METHOD, REQ, { signal: ac.signal });
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  ws.deliver(data(1, record(0, 0n)));
  const seen: string[] = [];
  const loop = (async () => {
    for await (const r of sub) {
      seen.push(`${r.partition}:${r.offset}`);
      if (seen.length === 1) ac.abort();
    }
  })();
  await loop;
  assert.deepEqual(seen, ["0:0"]);
  assert.equal(sub.state, "unsubscribed");
  assert.deepEqual(ws.sentOf("unsubscribe"), [{ id: 1 }]);
  const pre = new AbortController();
  pre.abort();
  const never = h.conn.subscribe(METHOD, REQ, { signal: pre.signal });
  assert.equal(never.state, "unsubscribed");
  assert.equal(ws.sentOf("subscribe").length, 1, "an already-aborted signal sends nothing");
});

test("breaking out of for-await unsubscribes", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  ws.deliver(data(1, record(0, 0n), record(0, 1n)));
  for await (const r of sub) {
    assert.equal(r.offset, 0n);
    break;
  }
  assert.equal(sub.state, "unsubscribed");
  assert.deepEqual(ws.sentOf("unsubscribe"), [{ id: 1 }]);
});

test("credit: a slow iterator gets credit returned only as it pulls; the buffer never exceeds the window", async () => {
  const h = setup();
  const ws = await h.session();
  const WINDOW = 8;
  const TOTAL = 40;
  const sub = h.conn.subscribe(METHOD, REQ, { credit: WINDOW });
  assert.equal(ws.last("subscribe").credit, WINDOW);
  ws.deliver(subscribed(1, cursorOf({ 0: 0n }), WINDOW));

  // A gateway that honours credit: it sends only while it has some.
  let serverCredit = WINDOW;
  let nextOffset = 0n;
  let creditSeen = 0;
  let maxBuffered = 0;
  const pump = () => {
    for (const c of ws.sentOf("credit").slice(creditSeen)) {
      assert.equal(c.subscriptionId, 1);
      serverCredit += c.records;
      creditSeen++;
    }
    const batch = [];
    while (serverCredit > 0 && nextOffset < BigInt(TOTAL)) {
      batch.push(record(0, nextOffset++));
      serverCredit--;
    }
    if (batch.length) ws.deliver(data(1, ...batch));
    maxBuffered = Math.max(maxBuffered, sub.buffered);
  };
  pump();
  assert.equal(sub.buffered, WINDOW, "a whole window arrives and waits");
  assert.equal(ws.sentOf("credit").length, 0, "no credit before the consumer pulls");

  const it = sub[Symbol.asyncIterator]();
  const creditAfterPull: number[] = [];
  let pulled = 0;
  while (pulled < TOTAL) {
    const r = await it.next();
    assert.equal(r.done, false);
    assert.equal(r.value?.offset, BigInt(pulled));
    pulled++;
    creditAfterPull.push(ws.sentOf("credit").length);
    pump();
  }
  assert.equal(maxBuffered, WINDOW, "buffered records are bounded by the window");
  // Credit goes back in batches of half the window: one Credit frame per 4 records pulled.
  assert.deepEqual(creditAfterPull.slice(0, 9), [0, 0, 0, 1, 1, 1, 1, 2, 2]);
  assert.ok(ws.sentOf("credit").every((c) => c.records === WINDOW / 2));
  assert.deepEqual(sub.cursor, cursorOf({ 0: 40n }));
});

test("credit: a callback consumer returns credit in batches as records are delivered", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ, { credit: 10 });
  let n = 0;
  sub.on("record", () => n++);
  ws.deliver(subscribed(1, cursorOf({ 0: 0n }), 10));
  ws.deliver(data(1, record(0, 0n), record(0, 1n), record(0, 2n), record(0, 3n)));
  assert.equal(ws.sentOf("credit").length, 0, "4 < half the window");
  ws.deliver(data(1, record(0, 4n), record(0, 5n), record(0, 6n)));
  assert.deepEqual(ws.sentOf("credit"), [{ subscriptionId: 1, records: 7 }], "one frame for the whole batch");
  assert.equal(n, 7);
  // Duplicates also spent the gateway's credit, so they are returned too.
  ws.deliver(data(1, record(0, 5n), record(0, 6n), record(0, 7n), record(0, 8n), record(0, 9n)));
  assert.equal(n, 10);
  assert.deepEqual(ws.sentOf("credit")[1], { subscriptionId: 1, records: 5 });
});

test("credit: a clamped grant shrinks the window so credit still flows", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ, { credit: 1000 });
  sub.on("record", () => undefined);
  ws.deliver(subscribed(1, cursorOf({ 0: 0n }), 100));
  ws.deliver(data(1, ...Array.from({ length: 50 }, (_, i) => record(0, BigInt(i)))));
  assert.deepEqual(ws.sentOf("credit"), [{ subscriptionId: 1, records: 50 }]);
});

test("credit: reconnecting with a full buffer defers the Subscribe until the consumer pulls", async () => {
  const h = setup();
  const ws1 = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ, { credit: 2 });
  const it = sub[Symbol.asyncIterator]();
  ws1.deliver(subscribed(1, cursorOf({ 0: 0n }), 2));
  ws1.deliver(data(1, record(0, 0n), record(0, 1n)));
  ws1.serverClose(1006);
  await h.tick(250);
  const ws2 = await h.session();
  assert.equal(ws2.sentOf("subscribe").length, 0, "no room: Subscribe.credit 0 would mean the gateway default");
  assert.equal((await it.next()).value?.offset, 0n);
  const s = ws2.last("subscribe");
  assert.equal(s.credit, 1, "window 2 minus the 1 record still buffered");
  assert.deepEqual(s.start, { kind: "cursor", cursor: cursorOf({ 0: 2n }) });
  assert.equal((await it.next()).value?.offset, 1n);
});

test("the public cursor covers only what the iterator consumer has pulled", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  const it = sub[Symbol.asyncIterator]();
  ws.deliver(subscribed(1, cursorOf({ 0: 0n, 1: 0n })));
  ws.deliver(data(1, record(0, 0n), record(0, 1n)));
  ws.deliver({ kind: "checkpoint", checkpoint: { subscriptionId: 1, positions: [{ partition: 0, nextOffset: 9n }, { partition: 1, nextOffset: 4n }] } });
  assert.deepEqual(sub.cursor, cursorOf({ 0: 0n, 1: 0n }), "nothing pulled yet");
  await it.next();
  assert.deepEqual(sub.cursor, cursorOf({ 0: 1n, 1: 0n }));
  await it.next();
  assert.deepEqual(sub.cursor, cursorOf({ 0: 9n, 1: 4n }), "the checkpoint applies once the records before it are consumed");
});

test("inside a record listener the cursor already includes that record (save it there, resume after it)", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  const seen: [bigint, bigint | undefined][] = [];
  sub.on("record", (r) => seen.push([r.offset, sub.cursor?.positions.find((p) => p.partition === 0)?.nextOffset]));
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  ws.deliver(data(1, record(0, 0n), record(0, 1n)));
  ws.deliver(data(1, record(0, 5n)));
  assert.deepEqual(seen, [
    [0n, 1n],
    [1n, 2n],
    [5n, 6n],
  ]);
});

test("a server End finishes the stream after the buffered records", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  ws.deliver(data(1, record(0, 0n)));
  ws.deliver({ kind: "end", end: { id: 1 } });
  const seen: bigint[] = [];
  for await (const r of sub) seen.push(r.offset);
  assert.deepEqual(seen, [0n]);
  assert.equal(sub.state, "unsubscribed");
});

test("records buffered before any consumer go to the first record listener", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ, { credit: 4 });
  ws.deliver(subscribed(1, cursorOf({ 0: 0n }), 4));
  ws.deliver(data(1, record(0, 0n), record(0, 1n)));
  assert.equal(sub.buffered, 2);
  const got: bigint[] = [];
  sub.on("record", (r) => got.push(r.offset));
  await flush();
  assert.deepEqual(got, [0n, 1n]);
  assert.equal(sub.buffered, 0);
  assert.deepEqual(ws.sentOf("credit"), [{ subscriptionId: 1, records: 2 }]);
});

test("encodeCursor/decodeCursor round-trip; a persisted cursor string is a valid start", async () => {
  const c = cursorOf({ 0: 12n, 1: 2n ** 40n, 7: 0n });
  const text = encodeCursor(c);
  assert.match(text, /^[A-Za-z0-9_-]+$/, "base64url, no padding");
  assert.deepEqual(decodeCursor(text), c);
  assert.throws(() => decodeCursor("not a cursor!"), (e: unknown) => e instanceof KafkaSocksError && e.code === "INVALID_ARGUMENT");
  assert.throws(() => decodeCursor("Cg"), KafkaSocksError, "truncated protobuf");
  const h = setup();
  const ws = await h.session();
  const sub = h.conn.subscribe(METHOD, REQ, { start: { cursor: text } });
  assert.deepEqual(ws.last("subscribe").start, { kind: "cursor", cursor: c });
  assert.deepEqual(sub.cursor, c);
});

test("closing the connection ends subscriptions; a fatal close fails them", async () => {
  const h = setup();
  await h.session();
  const sub = h.conn.subscribe(METHOD, REQ);
  const it = sub[Symbol.asyncIterator]();
  const pending = it.next();
  h.conn.close();
  assert.equal(sub.state, "unsubscribed");
  assert.deepEqual(await pending, { done: true, value: undefined });

  const f = setup({ token: "x" });
  const ws = await f.session();
  const fsub = f.conn.subscribe(METHOD, REQ);
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  const states: SubscriptionState[] = [];
  fsub.on("state", (st) => states.push(st));
  ws.serverClose(4001);
  assert.equal(fsub.state, "failed");
  assert.deepEqual(states, ["failed"], "straight to failed, no transient resubscribe");
  assert.equal(fsub.error?.code, "UNAUTHENTICATED");
});
