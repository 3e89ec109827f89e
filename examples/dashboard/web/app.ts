// The dashboard page: live readings of the producer service's sources, drawn as they arrive,
// and commands back to it, through the KafkaSocks gateway with the typed client generated
// from proto/dashboard/v1/dashboard.proto (web/gen/, checked in; `kafkasocks-gen ts --check`
// in the tests keeps it current).
//
// - Several keys at once: one subscription per chosen source, all on one connection, each
//   with its own cursor; or, for a token that allows every source, one subscription with no
//   key ("all sources").
// - No gap after a reload: the chart keeps the last WINDOW_MS of readings. For each
//   subscription the page saves in localStorage the cursor where its window starts (the
//   position after the newest reading it dropped for age), so a reload reads the same window
//   again from Kafka and then goes on live. Each source's readings are numbered by the
//   producer, so the page counts any gap or duplicate it would see (shown as "no gap").
// - An unrecoverable cursor (retention passed it, the topic was re-created) is said on the
//   page; the chart of that subscription starts again from the last WINDOW_MS.
// - Commands: "set" sends a SetSampling, answered with its Kafka receipt; the producer
//   applies it and its next readings name that receipt, which the page shows as applied.
// - Signing in: the page server's POST /token is the demo's stand-in for an identity
//   provider; "ops" may read and command every source, "field" only s1 and s2.
import { Dashboard } from "./gen/dashboard/v1/dashboard_kafkasocks.js";
import type { Reading } from "./gen/dashboard/v1/readings_kafkasocks.js";
import {
  connect,
  createClient,
  decodeCursor,
  encodeCursor,
  KafkaSocksError,
  type Client,
  type Connection,
  type ConnectionState,
  type Subscription,
} from "@kafkasocks/runtime";

const SOURCES = ["s1", "s2", "s3", "s4"] as const;
const ALL = "*";
/** How much history the chart shows, and restores after a reload. */
const WINDOW_MS = 5 * 60_000;
const COLORS: Record<string, string> = { s1: "#2563eb", s2: "#dc2626", s3: "#16a34a", s4: "#9333ea" };

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const stateEl = $<HTMLSpanElement>("state");
const userEl = $<HTMLSelectElement>("user");
const allEl = $<HTMLInputElement>("all");
const canvas = $<HTMLCanvasElement>("chart");
const notices = $<HTMLDivElement>("notices");
const panels = $<HTMLDivElement>("sources");

/** One panel per source: what it shows, and its command. */
function panelHtml(source: string): string {
  const rates = [[250, "250 ms"], [500, "500 ms"], [1000, "1 s"], [2000, "2 s"]] as const;
  const options = rates.map(([ms, label]) => `<option value="${ms}"${ms === 1000 ? " selected" : ""}>${label}</option>`).join("");
  return `<div class="panel" id="panel-${source}" data-status="off">
    <label><input type="checkbox" id="follow-${source}" checked> <b class="${source}">${source}</b></label>
    <span class="status" id="status-${source}">off</span>
    <div class="value" id="value-${source}">–</div>
    <div class="meta">every <span id="rate-now-${source}">–</span> · applied <span id="applied-${source}">none</span></div>
    <div class="meta"><span id="count-${source}">0</span> readings · <span id="check-${source}">no gap, no duplicate</span></div>
    <div class="cmd"><select id="rate-${source}" aria-label="sampling interval of ${source}">${options}</select>
      <button id="set-${source}">Set</button> <span class="meta" id="receipt-${source}"></span></div>
  </div>`;
}
panels.innerHTML = SOURCES.map(panelHtml).join("\n");

/** One reading on the chart. */
interface Point {
  readonly run: bigint;
  readonly seq: bigint;
  readonly atMs: number;
  readonly value: number;
}

/** What the page knows of one source. */
interface Series {
  points: Point[];
  gaps: number;
  duplicates: number;
  last: Reading | undefined;
  /** The receipt of this page's last command for the source ("p@o"), until applied. */
  pendingCommand: string;
  status: string;
}

/** One subscription: a source, or ALL. */
interface Feed {
  readonly key: string;
  readonly sub: Subscription<Reading>;
  /** Readings in arrival order with the cursor just after each, to move the window start. */
  readonly arrivals: { point: Point; source: string; cursorAfter: string }[];
  windowStart: string | undefined;
}

const series = new Map<string, Series>(
  SOURCES.map((s) => [s, { points: [], gaps: 0, duplicates: 0, last: undefined, pendingCommand: "", status: "off" }]),
);
const feeds = new Map<string, Feed>();
let conn: Connection | undefined;
let client: Client<typeof Dashboard> | undefined;
let allowed: string[] = [];
let unwatch: (() => void)[] = [];

function notice(text: string, cls = "warn"): void {
  const div = document.createElement("div");
  div.className = cls;
  div.textContent = text;
  notices.prepend(div);
  while (notices.childElementCount > 20) notices.lastElementChild?.remove();
}

function showState(s: ConnectionState): void {
  stateEl.textContent = s;
  stateEl.className = s;
}

const savedKey = (feed: string): string => `dashboard:window:${userEl.value}:${feed}`;

/** Where a feed starts: its saved window start, else the last WINDOW_MS. */
function startOf(feed: string): { cursor: string } | { timestampMs: number } {
  const saved = localStorage.getItem(savedKey(feed));
  if (saved !== null) {
    try {
      decodeCursor(saved);
      return { cursor: saved };
    } catch {
      notice(`${feed}: the saved position is not a cursor; showing the last ${WINDOW_MS / 60_000} minutes`);
      localStorage.removeItem(savedKey(feed));
    }
  }
  return { timestampMs: Date.now() - WINDOW_MS };
}

function sourcesOf(feed: string): string[] {
  return feed === ALL ? [...SOURCES] : [feed];
}

function append(feed: Feed, value: Reading): void {
  const s = series.get(value.source);
  if (!s) return; // a source this page does not know: not drawn
  const point: Point = { run: value.run, seq: value.seq, atMs: Number(value.atMs), value: value.value };
  const prev = s.points[s.points.length - 1];
  if (prev && prev.run === point.run) {
    if (point.seq <= prev.seq) {
      s.duplicates++;
      return;
    }
    if (point.seq !== prev.seq + 1n) s.gaps++;
  }
  s.points.push(point);
  s.last = value;
  if (s.pendingCommand && value.appliedCommand === s.pendingCommand) {
    notice(`${value.source}: command ${s.pendingCommand} applied, now every ${value.samplingMs} ms`, "ok");
    s.pendingCommand = "";
  }
  const cursor = feed.sub.cursor;
  if (cursor) feed.arrivals.push({ point, source: value.source, cursorAfter: encodeCursor(cursor) });
  prune(feed);
}

/** Drops readings older than the window, and saves where the window now starts. */
function prune(feed: Feed): void {
  const cutoff = Date.now() - WINDOW_MS;
  let moved = false;
  while (feed.arrivals.length && feed.arrivals[0]!.point.atMs < cutoff) {
    const { source, cursorAfter } = feed.arrivals.shift()!;
    series.get(source)?.points.shift();
    feed.windowStart = cursorAfter;
    moved = true;
  }
  if (moved && feed.windowStart) localStorage.setItem(savedKey(feed.key), feed.windowStart);
}

function follow(key: string): void {
  if (!client || feeds.has(key)) return;
  const sub = client.readings({ source: key === ALL ? "" : key }, { start: startOf(key) });
  const feed: Feed = { key, sub, arrivals: [], windowStart: undefined };
  feeds.set(key, feed);
  for (const source of sourcesOf(key)) setStatus(source, "subscribing");
  sub.on("state", (state) => {
    if (state === "subscribed") {
      // Where the window starts before any reading is dropped: the start position as the
      // gateway resolved it (a cursor, whatever the start was).
      if (!feed.windowStart && sub.cursor) {
        feed.windowStart = encodeCursor(sub.cursor);
        localStorage.setItem(savedKey(key), feed.windowStart);
      }
      for (const source of sourcesOf(key)) setStatus(source, "live");
    } else if (state === "subscribing") {
      for (const source of sourcesOf(key)) setStatus(source, "subscribing");
    }
  });
  sub.on("record", ({ value }) => append(feed, value));
  sub.on("unrecoverable", (e) => {
    notice(
      `${key === ALL ? "all sources" : key}: the saved position can no longer be resumed (${String(e.discontinuity)}: ${e.message}); ` +
        `the chart starts again from the last ${WINDOW_MS / 60_000} minutes`,
      "error",
    );
    localStorage.removeItem(savedKey(key));
    drop(key);
    for (const source of sourcesOf(key)) clearSeries(source);
    follow(key);
  });
  sub.on("error", (e) => {
    if (sub.state !== "failed" || e.discontinuity !== undefined) return;
    const why = e instanceof KafkaSocksError && e.code === "PERMISSION_DENIED" ? "not allowed for this token" : e.message;
    for (const source of sourcesOf(key)) setStatus(source, `refused: ${why}`);
    notice(`${key === ALL ? "all sources" : key}: ${e.message}`);
    feeds.delete(key);
  });
}

function drop(key: string): void {
  const feed = feeds.get(key);
  if (!feed) return;
  feeds.delete(key);
  feed.sub.unsubscribe();
}

function clearSeries(source: string): void {
  const s = series.get(source);
  if (!s) return;
  s.points = [];
  s.last = undefined;
}

function setStatus(source: string, status: string): void {
  const s = series.get(source);
  if (s) s.status = status;
  renderPanels();
}

/** Follows what the checkboxes say: one feed per source, or one for all. */
function sync(): void {
  const wanted = new Set<string>();
  if (allEl.checked) wanted.add(ALL);
  else for (const s of SOURCES) if ($<HTMLInputElement>(`follow-${s}`).checked) wanted.add(s);
  for (const key of [...feeds.keys()]) {
    if (!wanted.has(key)) {
      drop(key);
      for (const source of sourcesOf(key)) {
        clearSeries(source);
        setStatus(source, "off");
      }
    }
  }
  for (const key of wanted) follow(key);
  localStorage.setItem("dashboard:follow", JSON.stringify([...wanted]));
  renderPanels();
}

async function fetchToken(user: string): Promise<{ token: string; sources: string[] }> {
  const res = await fetch("/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = (await res.json().catch(() => ({}))) as { token?: string; sources?: string[]; error?: string };
  if (!res.ok || !body.token) throw new Error(body.error ?? `the token endpoint answered HTTP ${res.status}`);
  return { token: body.token, sources: body.sources ?? [] };
}

async function signIn(): Promise<void> {
  for (const key of [...feeds.keys()]) drop(key);
  for (const s of SOURCES) clearSeries(s);
  for (const off of unwatch) off();
  conn?.close();
  const user = userEl.value;
  localStorage.setItem("dashboard:user", user);
  const first = await fetchToken(user);
  allowed = first.sources;
  const { gateway } = (await (await fetch("/config.json")).json()) as { gateway: string };
  let pending: string | undefined = first.token;
  conn = connect({
    url: gateway,
    token: async () => {
      const t = pending ?? (await fetchToken(user)).token;
      pending = undefined;
      return t;
    },
  });
  unwatch = [conn.on("state", showState), conn.on("error", (e) => notice(`connection: ${e.message}`))];
  client = createClient(Dashboard, conn);
  $<HTMLSpanElement>("allowed").textContent = allowed.includes("*") ? "every source" : allowed.join(", ");
  sync();
}

async function command(source: string): Promise<void> {
  if (!client) return;
  const samplingMs = Number($<HTMLSelectElement>(`rate-${source}`).value);
  const out = $<HTMLSpanElement>(`receipt-${source}`);
  out.textContent = "sending…";
  try {
    const r = await client.setSampling({ source, samplingMs, issuedBy: "", issuedAtMs: 0n });
    const where = `${r.partition}@${r.offset}`;
    const s = series.get(source);
    if (s) s.pendingCommand = where;
    out.textContent = `stored: ${r.topic} p${where}`;
    out.dataset.receipt = where;
  } catch (e) {
    out.textContent = `refused: ${e instanceof Error ? e.message : String(e)}`;
  }
}

function renderPanels(): void {
  for (const source of SOURCES) {
    const s = series.get(source)!;
    const last = s.last;
    const el = $<HTMLDivElement>(`panel-${source}`);
    el.dataset.status = s.status.split(":")[0];
    $<HTMLSpanElement>(`status-${source}`).textContent = s.status;
    $<HTMLSpanElement>(`value-${source}`).textContent = last ? last.value.toFixed(2) : "–";
    $<HTMLSpanElement>(`rate-now-${source}`).textContent = last ? `${last.samplingMs} ms` : "–";
    $<HTMLSpanElement>(`applied-${source}`).textContent = last?.appliedCommand || "none";
    $<HTMLSpanElement>(`count-${source}`).textContent = String(s.points.length);
    $<HTMLSpanElement>(`check-${source}`).textContent =
      s.gaps || s.duplicates ? `${s.gaps} gaps, ${s.duplicates} duplicates` : "no gap, no duplicate";
  }
}

function draw(): void {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const g = canvas.getContext("2d");
  if (!g) return;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = Date.now();
  const from = now - WINDOW_MS;
  let lo = Infinity;
  let hi = -Infinity;
  for (const s of series.values()) for (const p of s.points) if (p.atMs >= from) (lo = Math.min(lo, p.value)), (hi = Math.max(hi, p.value));
  if (lo === Infinity) {
    lo = 0;
    hi = 1;
  }
  if (hi - lo < 1) (lo -= 0.5), (hi += 0.5);
  const pad = 28;
  const x = (t: number): number => pad + ((t - from) / WINDOW_MS) * (w - pad - 8);
  const y = (v: number): number => h - pad - ((v - lo) / (hi - lo)) * (h - 2 * pad);
  g.strokeStyle = "#d4d4d8";
  g.fillStyle = "#71717a";
  g.font = "11px system-ui, sans-serif";
  g.lineWidth = 1;
  for (let m = 0; m <= WINDOW_MS / 60_000; m++) {
    const t = now - m * 60_000;
    g.beginPath();
    g.moveTo(x(t), pad / 2);
    g.lineTo(x(t), h - pad);
    g.stroke();
    g.fillText(m === 0 ? "now" : `-${m} min`, x(t) - 14, h - 8);
  }
  g.fillText(hi.toFixed(1), 2, y(hi) + 4);
  g.fillText(lo.toFixed(1), 2, y(lo) + 4);
  for (const [source, s] of series) {
    g.strokeStyle = COLORS[source] ?? "#000";
    g.lineWidth = 1.5;
    g.beginPath();
    let started = false;
    let run: bigint | undefined;
    for (const p of s.points) {
      if (p.atMs < from) continue;
      // A new producer run is a new line: its readings do not continue the last run's.
      if (!started || p.run !== run) g.moveTo(x(p.atMs), y(p.value));
      else g.lineTo(x(p.atMs), y(p.value));
      started = true;
      run = p.run;
    }
    g.stroke();
  }
}

/** A read-only view of the page's state for tests and the console: `dashboard.snapshot()`. */
function snapshot(): Record<string, { seqs: string[]; runs: string[]; gaps: number; duplicates: number; status: string; samplingMs: number | undefined; applied: string | undefined }> {
  const out: ReturnType<typeof snapshot> = {};
  for (const [source, s] of series) {
    out[source] = {
      seqs: s.points.map((p) => String(p.seq)),
      runs: s.points.map((p) => String(p.run)),
      gaps: s.gaps,
      duplicates: s.duplicates,
      status: s.status,
      samplingMs: s.last?.samplingMs,
      applied: s.last?.appliedCommand,
    };
  }
  return out;
}
(window as unknown as { dashboard: { snapshot: typeof snapshot } }).dashboard = { snapshot };

for (const source of SOURCES) {
  $<HTMLInputElement>(`follow-${source}`).addEventListener("change", sync);
  $<HTMLButtonElement>(`set-${source}`).addEventListener("click", () => void command(source));
}
allEl.addEventListener("change", sync);
$<HTMLButtonElement>("signin").addEventListener("click", () => void signIn().catch((e: unknown) => notice(String(e))));
setInterval(() => {
  for (const feed of feeds.values()) prune(feed);
  draw();
  renderPanels();
}, 250);

// Back to the last visit's choice of user and sources.
userEl.value = localStorage.getItem("dashboard:user") ?? "ops";
const followed = JSON.parse(localStorage.getItem("dashboard:follow") ?? '["s1","s2","s3","s4"]') as string[];
allEl.checked = followed.includes(ALL);
for (const s of SOURCES) $<HTMLInputElement>(`follow-${s}`).checked = followed.includes(s);
void signIn().catch((e: unknown) => notice(String(e)));
