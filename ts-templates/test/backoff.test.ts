import assert from "node:assert/strict";
import { test } from "node:test";
import { Backoff, backoffCap } from "../src/backoff.js";

/** Deterministic uniform PRNG (mulberry32) so the statistical test cannot flake. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

test("the window doubles from 500 ms and is capped at 20 s (defaults)", () => {
  const caps = [0, 1, 2, 3, 4, 5, 6, 7, 50, 5000].map((a) => backoffCap(a, 500, 20_000));
  assert.deepEqual(caps, [500, 1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000]);
});

test("delays are never negative and never reach the cap, whatever random returns", () => {
  for (const r of [0, 1e-12, 0.5, 0.999999999, 1, -3, 7]) {
    const b = new Backoff({ random: () => r });
    for (let attempt = 0; attempt < 40; attempt++) {
      const d = b.next();
      const cap = backoffCap(attempt, 500, 20_000);
      assert.ok(d >= 0, `attempt ${attempt} random ${r}: ${d} >= 0`);
      assert.ok(d < cap, `attempt ${attempt} random ${r}: ${d} < ${cap}`);
      assert.ok(Number.isInteger(d));
    }
  }
});

test("the delay is random * window (full jitter), and reset() starts over", () => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000, random: () => 0.5 });
  assert.deepEqual([b.next(), b.next(), b.next(), b.next(), b.next()], [50, 100, 200, 400, 500]);
  b.reset();
  assert.equal(b.next(), 50);
});

test("full jitter spreads 1000 delays uniformly over [0, cap)", () => {
  const b = new Backoff({ random: mulberry32(42) });
  const cap = 20_000;
  const samples = Array.from({ length: 1000 }, () => b.delay(10));
  const buckets = Array<number>(10).fill(0);
  for (const d of samples) buckets[Math.floor(d / (cap / 10))]! += 1;
  // Uniform: 100 expected per tenth. A fixed or "equal jitter" delay would leave buckets empty.
  for (const [i, n] of buckets.entries()) assert.ok(n >= 70 && n <= 130, `bucket ${i} has ${n} samples`);
  const mean = samples.reduce((a, d) => a + d, 0) / samples.length;
  assert.ok(Math.abs(mean - cap / 2) < 600, `mean ${mean} near ${cap / 2}`);
  assert.ok(Math.min(...samples) < 200 && Math.max(...samples) > 19_800, "covers both ends");
  // Chi-square with 9 degrees of freedom; 21.67 is the 1% critical value.
  const chi = buckets.reduce((a, n) => a + (n - 100) ** 2 / 100, 0);
  assert.ok(chi < 21.67, `chi-square ${chi}`);
});
