import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";
import {
  createClient,
  defineService,
  KafkaSocksError,
  PROTOCOL,
  Reader,
  RUNTIME_VERSION,
  Writer,
  type Codec,
  type Receipt,
  type Serializer,
  type Subscription,
} from "../src/index.js";
import { cursorOf, data, record, setup, subscribed } from "../testing/fakes.js";

// Hand-written codecs standing in for generated ones.
interface WatchRequest {
  symbol: string;
}
interface Tick {
  symbol: string;
  priceCents: bigint;
}
interface Order {
  symbol: string;
  qty: number;
}
const WatchRequest: Codec<WatchRequest> = {
  encode: (m) => new Writer().tag(1, 2).string(m.symbol).finish(),
  decode: (b) => {
    const r = new Reader(b);
    const m = { symbol: "" };
    while (!r.eof()) {
      const t = r.tag();
      if (t === 10) m.symbol = r.string();
      else r.skip(t);
    }
    return m;
  },
};
const Tick: Codec<Tick> = {
  encode: (m) => new Writer().tag(1, 2).string(m.symbol).tag(2, 0).int64(m.priceCents).finish(),
  decode: (b) => {
    const r = new Reader(b);
    const m = { symbol: "", priceCents: 0n };
    while (!r.eof()) {
      const t = r.tag();
      if (t === 10) m.symbol = r.string();
      else if (t === 16) m.priceCents = r.int64();
      else r.skip(t);
    }
    return m;
  },
};
const Order: Codec<Order> = {
  encode: (m) => new Writer().tag(1, 2).string(m.symbol).tag(2, 0).int32(m.qty).finish(),
  decode: () => ({ symbol: "", qty: 0 }),
};
const Empty: Codec<Record<string, never>> = { encode: () => new Uint8Array(0), decode: () => ({}) };

const TickerService = defineService({
  typeName: "demo.TickerService",
  methods: {
    watch: { name: "demo.TickerService/Watch", kind: "subscribe", input: WatchRequest, output: Tick },
    placeOrder: { name: "demo.TickerService/PlaceOrder", kind: "publish", input: Order, output: Empty },
  },
});

test("the entry point carries the versions (RUNTIME_VERSION follows package.json)", () => {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as { version: string };
  assert.equal(RUNTIME_VERSION, "0.1.0");
  assert.equal(RUNTIME_VERSION, pkg.version);
  assert.equal(PROTOCOL, "kafkasocks.v1");
});

test("createClient: typed subscribe and publish through the generated codecs", async () => {
  const h = setup();
  const ws = await h.session();
  const ticker = createClient(TickerService, h.conn);

  const sub: Subscription<Tick> = ticker.watch({ symbol: "ACME" }, { credit: 16 });
  const s = ws.last("subscribe");
  assert.equal(s.method, "demo.TickerService/Watch");
  assert.deepEqual(WatchRequest.decode(s.request), { symbol: "ACME" });
  assert.equal(s.credit, 16);
  ws.deliver(subscribed(s.id, cursorOf({ 0: 0n })));
  ws.deliver(data(s.id, record(0, 0n, Tick.encode({ symbol: "ACME", priceCents: 12345n }))));
  for await (const { value, partition, offset } of sub) {
    const cents: bigint = value.priceCents;
    assert.equal(cents, 12345n);
    assert.equal(value.symbol, "ACME");
    assert.deepEqual([partition, offset], [0, 0n]);
    break;
  }

  const pending: Promise<Receipt> = ticker.placeOrder({ symbol: "ACME", qty: -3 });
  const p = ws.last("publish");
  assert.equal(p.method, "demo.TickerService/PlaceOrder");
  assert.deepEqual(p.payload, Order.encode({ symbol: "ACME", qty: -3 }));
  ws.deliver({ kind: "receipt", receipt: { id: p.id, topic: "orders", partition: 0, offset: 5n, timestampMs: 1n, duplicate: false } });
  assert.equal((await pending).offset, 5n);

  // Compile-time checks: the client is typed from the descriptor.
  if (Math.random() < 0) {
    // @ts-expect-error wrong request type
    ticker.watch({ symbol: 1 });
    // @ts-expect-error publish methods take the input message
    void ticker.placeOrder({ symbol: "A" });
    // @ts-expect-error no such method
    ticker.nope();
  }
});

test("a Serializer replaces the binary codec per client (toy JSON)", async () => {
  const h = setup();
  const ws = await h.session();
  const calls: string[] = [];
  const json: Serializer = {
    name: "json",
    encode: (method, _codec, value) => {
      calls.push(`encode ${method.name}`);
      return new TextEncoder().encode(JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v)));
    },
    decode: <O>(method: { name: string }, _codec: Codec<O>, bytes: Uint8Array): O => {
      calls.push(`decode ${method.name}`);
      const o = JSON.parse(new TextDecoder().decode(bytes)) as { symbol: string; priceCents: string };
      return { symbol: o.symbol, priceCents: BigInt(o.priceCents) } as O;
    },
  };
  const ticker = createClient(TickerService, h.conn, { serializer: json });
  const sub = ticker.watch({ symbol: "ACME" });
  const s = ws.last("subscribe");
  assert.equal(new TextDecoder().decode(s.request), '{"symbol":"ACME"}');
  const got: Tick[] = [];
  sub.on("record", (r) => got.push(r.value));
  ws.deliver(subscribed(s.id, cursorOf({ 0: 0n })));
  ws.deliver(data(s.id, record(0, 0n, new TextEncoder().encode('{"symbol":"ACME","priceCents":"99"}'))));
  assert.deepEqual(got, [{ symbol: "ACME", priceCents: 99n }]);
  void ticker.placeOrder({ symbol: "ACME", qty: 1 });
  assert.equal(new TextDecoder().decode(ws.last("publish").payload), '{"symbol":"ACME","qty":1}');
  assert.deepEqual(calls, ["encode demo.TickerService/Watch", "decode demo.TickerService/Watch", "encode demo.TickerService/PlaceOrder"]);
});

test("a record that does not decode is skipped with an error event (DECODE), and the cursor moves past it", async () => {
  const h = setup();
  const ws = await h.session();
  const sub = createClient(TickerService, h.conn).watch({ symbol: "X" });
  const errors: KafkaSocksError[] = [];
  const got: bigint[] = [];
  sub.on("error", (e) => errors.push(e));
  sub.on("record", (r) => got.push(r.offset));
  ws.deliver(subscribed(1, cursorOf({ 0: 0n })));
  ws.deliver(data(1, record(0, 0n, new Uint8Array([0x0a, 0x09])), record(0, 1n, Tick.encode({ symbol: "X", priceCents: 1n }))));
  assert.deepEqual(got, [1n]);
  assert.equal(errors.length, 1);
  assert.equal(errors[0]?.code, "INTERNAL");
  assert.equal(errors[0]?.clientCode, "DECODE");
  assert.equal(sub.state, "subscribed");
  assert.deepEqual(sub.cursor, cursorOf({ 0: 2n }));
});

test("a request that cannot be encoded rejects the publish with INVALID_ARGUMENT", async () => {
  const h = setup();
  await h.session();
  const broken = defineService({
    typeName: "demo.Broken",
    methods: {
      send: {
        name: "demo.Broken/Send",
        kind: "publish",
        input: {
          encode: (): Uint8Array => {
            throw new Error("boom");
          },
          decode: () => 0,
        },
        output: Empty,
      },
    },
  });
  await assert.rejects(createClient(broken, h.conn).send(0), (e: unknown) => e instanceof KafkaSocksError && e.code === "INVALID_ARGUMENT");
});
