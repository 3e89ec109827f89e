/**
 * The dashboard example as a person uses it: `scripts/dashboard` (one command: services,
 * the Python producer writing through the Schema Registry, the page server, the
 * `kafkasocks` binary serving examples/dashboard/kafkasocks.toml), its page in Chromium.
 * The chart receives every source, a command reaches the producer and its effect comes back,
 * a reload resumes the last minutes with no gap or duplicate, an unrecoverable cursor is said
 * on the page, and a token that allows some sources is refused the others.
 *
 * Needs what scripts/dashboard builds itself (the `kafkasocks` binary, the page bundle) and
 * the interop virtualenv (scripts/python-interop); scripts/test runs this after both.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { decodeCursor, encodeCursor } from "@kafkasocks/runtime";
import { chromium, type Browser, type Page } from "playwright-core";
import { freePort, start } from "../src/chat.ts";
import { CHROMIUM, CHROMIUM_ARGS, cleanups, repoRoot } from "../src/fixtures.ts";
import { waitFor } from "../src/scenarios.ts";

const SOURCES = ["s1", "s2", "s3", "s4"] as const;

interface SourceView {
  seqs: string[];
  runs: string[];
  gaps: number;
  duplicates: number;
  status: string;
  samplingMs: number | undefined;
  applied: string | undefined;
}
type Snapshot = Record<string, SourceView>;

const snapshot = (page: Page): Promise<Snapshot> =>
  page.evaluate(() => (window as unknown as { dashboard: { snapshot: () => Snapshot } }).dashboard.snapshot());

/** The readings of the newest producer run in `v`, as numbers. */
function newestRun(v: SourceView): number[] {
  const runs = v.runs.map(BigInt);
  const newest = runs.reduce((a, b) => (b > a ? b : a), 0n);
  return v.seqs.filter((_, i) => runs[i] === newest).map(Number);
}

/** Whether `seqs` are n, n+1, n+2, … */
const contiguous = (seqs: number[]): boolean => seqs.every((s, i) => i === 0 || s === (seqs[i - 1] as number) + 1);

async function everySourceLive(page: Page, sources: readonly string[], points = 2): Promise<Snapshot> {
  let last: Snapshot = {};
  await waitFor(
    `${sources.join(", ")} live with ${points} points each`,
    async () => {
      last = await snapshot(page);
      return sources.every((s) => last[s]?.status === "live" && (last[s]?.seqs.length ?? 0) >= points);
    },
    30_000,
  );
  return last;
}

test("the dashboard example: live readings, a command and its effect, a reload without gap, a lost cursor, a limited token", { timeout: 400_000 }, async (t) => {
  const defer = cleanups(t);
  const [pagePort, wsPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const { c: dashboard, match } = await start(
    join(repoRoot, "scripts/dashboard"),
    [],
    {
      ...process.env,
      DASHBOARD_PAGE_ADDR: `127.0.0.1:${pagePort}`,
      DASHBOARD_WS_ADDR: `127.0.0.1:${wsPort}`,
      DASHBOARD_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
    },
    /dashboard: open (http:\/\/\S+)/,
    "scripts/dashboard",
    300_000,
  );
  defer(() => dashboard.stop("SIGINT"));
  const url = match[1] as string;
  const browser: Browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS });
  defer(() => browser.close());
  const errors: string[] = [];
  const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (e) => errors.push(e.message));

  // Every source draws, each on its own keyed subscription, in order with no gap.
  await page.goto(url);
  await page.locator("#state.open").waitFor({ timeout: 15_000 });
  let view = await everySourceLive(page, SOURCES);
  for (const s of SOURCES) {
    const seqs = newestRun(view[s] as SourceView);
    assert.ok(contiguous(seqs), `${s}: readings in order with no gap: ${seqs.join(",")}`);
    assert.equal(view[s]?.gaps, 0);
    assert.equal(view[s]?.duplicates, 0);
  }

  // A command: its receipt on the page, the producer applies it, the readings say so.
  await page.selectOption("#rate-s3", "250");
  await page.click("#set-s3");
  const receipt = page.locator("#receipt-s3[data-receipt]");
  await receipt.waitFor({ timeout: 15_000 });
  const where = (await receipt.getAttribute("data-receipt")) as string;
  assert.match(where, /^\d+@\d+$/, "the receipt is a partition and an offset");
  assert.match(await receipt.innerText(), new RegExp(`^stored: dashboard\\.commands p${where}$`));
  await page.locator("#notices .ok", { hasText: `s3: command ${where} applied, now every 250 ms` }).waitFor({ timeout: 20_000 });
  view = await snapshot(page);
  assert.equal(view["s3"]?.applied, where, "the readings name the command that changed them");
  assert.equal(view["s3"]?.samplingMs, 250);
  assert.match(dashboard.logs(), new RegExp(`producer: applied command ${where}: s3 every 250 ms \\(from ops\\)`), "the producer consumed it, issued by the token's subject");
  // The faster rate shows: s3 now gets readings about four times as often as s1.
  const before = await snapshot(page);
  await new Promise((r) => setTimeout(r, 4_000));
  const after = await snapshot(page);
  const grew = (s: string): number => newestRun(after[s] as SourceView).length - newestRun(before[s] as SourceView).length;
  assert.ok(grew("s3") >= 2 * grew("s1") && grew("s3") >= 8, `s3 at 250 ms outpaces s1 at 1 s: ${grew("s3")} vs ${grew("s1")}`);

  // A reload: the last minutes come back from the saved cursors, with no gap or duplicate.
  const beforeReload = newestRun(after["s1"] as SourceView);
  await page.reload();
  await page.locator("#state.open").waitFor({ timeout: 15_000 });
  view = await everySourceLive(page, SOURCES, beforeReload.length + 1);
  for (const s of SOURCES) {
    const seqs = newestRun(view[s] as SourceView);
    assert.equal(seqs[0], 1, `${s}: the window restored from the start of this producer run`);
    assert.ok(contiguous(seqs), `${s}: no gap after the reload: ${seqs.join(",")}`);
    assert.equal(view[s]?.gaps, 0, `${s}: no gap`);
    assert.equal(view[s]?.duplicates, 0, `${s}: no duplicate`);
  }
  assert.ok(newestRun(view["s1"] as SourceView).length > beforeReload.length, "and it goes on live");
  mkdirSync(join(repoRoot, "tests/web/screenshots"), { recursive: true });
  await page.screenshot({ path: join(repoRoot, "tests/web/screenshots/dashboard.png") });

  // A saved cursor of a topic that is no longer there (as after the topic was deleted and
  // created again): the page says so and starts that source again from the last minutes.
  await page.evaluate(
    ({ key, cursor }) => localStorage.setItem(key, cursor),
    {
      key: "dashboard:window:ops:s2",
      cursor: await page.evaluate(() => localStorage.getItem("dashboard:window:ops:s2")).then((saved) => {
        assert.ok(saved, "the page saved where the window of s2 starts");
        const c = decodeCursor(saved);
        assert.equal(c.topicId.length, 16, "the cursor names the topic by its id");
        return encodeCursor({ ...c, topicId: new Uint8Array(randomBytes(16)) });
      }),
    },
  );
  await page.reload();
  await page
    .locator("#notices .error", { hasText: /^s2: the saved position can no longer be resumed \(TOPIC_RECREATED: / })
    .waitFor({ timeout: 15_000 });
  view = await everySourceLive(page, SOURCES);
  assert.ok(contiguous(newestRun(view["s2"] as SourceView)), "s2 starts again, in order");
  assert.equal(await page.locator("#notices .error").count(), 1, "only s2 lost its position");

  // A token that allows s1 and s2 only: the others are refused, reads and commands alike.
  await page.selectOption("#user", "field");
  await page.click("#signin");
  await page.locator("#allowed", { hasText: "s1, s2" }).waitFor({ timeout: 15_000 });
  await waitFor(
    "s3 and s4 refused, s1 and s2 live",
    async () => {
      view = await snapshot(page);
      return (
        ["s3", "s4"].every((s) => view[s]?.status === "refused: not allowed for this token") &&
        ["s1", "s2"].every((s) => view[s]?.status === "live" && (view[s]?.seqs.length ?? 0) > 0)
      );
    },
    20_000,
  );
  assert.deepEqual(
    ["s3", "s4"].map((s) => view[s]?.seqs.length),
    [0, 0],
    "nothing of a refused source reaches the page",
  );
  await page.click("#set-s4");
  await page.locator("#receipt-s4", { hasText: /^refused: / }).waitFor({ timeout: 15_000 });
  assert.equal(await page.locator("#receipt-s4").getAttribute("data-receipt"), null, "no receipt for a refused command");
  // One subscription with no key would read every source: refused for this token…
  await page.check("#all");
  await waitFor(
    "the all-sources subscription refused",
    async () => Object.values(await snapshot(page)).every((v) => v.status === "refused: not allowed for this token"),
    15_000,
  );
  // …and allowed for ops, where it carries all four.
  await page.selectOption("#user", "ops");
  await page.click("#signin");
  view = await everySourceLive(page, SOURCES);
  for (const s of SOURCES) assert.ok(contiguous(newestRun(view[s] as SourceView)), `${s}: in order on the shared subscription`);

  assert.deepEqual(errors, [], "no page errors");
});
