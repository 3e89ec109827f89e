// The chat page: follows one room and posts to it through the KafkaSocks gateway, with
// the typed client generated from proto/chat/v1/chat.proto (web/gen/, checked in;
// `kafkasocks-gen ts --check` in the tests keeps it current). Its cursor is saved in
// localStorage after every message, so a reload resumes exactly where the page stopped.
//
// Signing in: the name in the box goes to the page server's `POST /token`, which answers
// with a JWT for it. That endpoint is the demo's stand-in for an identity provider (anyone
// gets a token for any name); a real page gets its token from its login (OIDC) instead.
// The client calls `token` again before every reconnect and before the token expires, so
// a session outlives any one token. The gateway takes each message's author from the token.
import { ChatStreams, type ChatMessage } from "./gen/chat/v1/chat_kafkasocks.js";
import { connect, createClient, encodeCursor, type Client, type Connection, type ConnectionState, type Subscription } from "@kafkasocks/runtime";

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const log = $<HTMLDivElement>("log");
const stateEl = $<HTMLSpanElement>("state");
const cursorEl = $<HTMLSpanElement>("cursor");
const receiptEl = $<HTMLParagraphElement>("receipt");
const userEl = $<HTMLInputElement>("user");
const roomEl = $<HTMLInputElement>("room");
userEl.value = localStorage.getItem("chat-user") ?? `guest${Math.floor(Math.random() * 1000)}`;

// The gateway's address comes from `?ws=host:port` (the gateway prints the full page URL),
// else the example's default port.
const gateway = new URLSearchParams(location.search).get("ws") ?? `${location.hostname}:8081`;

function line(html: string, cls = "msg"): void {
  const div = document.createElement("div");
  div.className = cls;
  div.innerHTML = html;
  log.append(div);
  log.scrollTop = log.scrollHeight;
}
const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

function showState(s: ConnectionState): void {
  stateEl.textContent = s;
  stateEl.className = s;
}

/** A token for `user` from the page server, or an Error with the server's reason. */
async function fetchToken(user: string): Promise<string> {
  const res = await fetch("/token", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ user }),
  });
  const body = (await res.json().catch(() => ({}))) as { token?: string; error?: string };
  if (!res.ok || !body.token) throw new Error(body.error ?? `the token endpoint answered HTTP ${res.status}`);
  return body.token;
}

let conn: Connection | undefined;
let chat: Client<typeof ChatStreams> | undefined;
let signedInAs = "";
let unwatch: (() => void)[] = [];
let signIns = 0;
let current: Subscription<ChatMessage> | undefined;
let currentRoom = "";

/**
 * Connects as `user` (nothing to do when connected as them already): a first token, which
 * also checks the name, then a new connection whose `token` function fetches fresh ones.
 * False when the name was refused or a later sign-in overtook this one.
 */
async function signIn(user: string): Promise<boolean> {
  if (conn && user === signedInAs) return true;
  const attempt = ++signIns;
  showState("connecting");
  let first: string | undefined;
  try {
    first = await fetchToken(user);
  } catch (e) {
    if (attempt === signIns) {
      line(`cannot sign in as “${esc(user)}”: ${esc((e as Error).message)}`, "warn");
      showState(conn?.state ?? "closed");
    }
    return false;
  }
  if (attempt !== signIns) return false;
  current?.unsubscribe();
  current = undefined;
  for (const stop of unwatch) stop();
  conn?.close();
  signedInAs = user;
  localStorage.setItem("chat-user", user);
  conn = connect({
    url: `ws://${gateway}/streams`,
    // The first token once, then a fresh one for every reconnect and every refresh.
    token: async () => {
      const token = first ?? (await fetchToken(user));
      first = undefined;
      return token;
    },
  });
  unwatch = [conn.on("state", showState), conn.on("error", (e) => line(`connection: ${esc(e.message)}`, "warn"))];
  chat = createClient(ChatStreams, conn);
  return true;
}

function join(room: string, clear = true): void {
  if (!chat) return;
  current?.unsubscribe();
  if (clear) log.textContent = "";
  currentRoom = room;
  roomEl.value = room;
  localStorage.setItem("chat-room", room);
  const key = `chat-cursor:${room}`;
  const saved = localStorage.getItem(key);
  const sub = chat.messages({ room }, { start: saved ? { cursor: saved } : "earliest" });
  current = sub;
  sub.on("record", ({ value, partition, offset }) => {
    line(`<b>${esc(value.user)}</b>: ${esc(value.text)} <span class="meta">p${partition}@${offset}</span>`);
    if (sub.cursor) {
      localStorage.setItem(key, encodeCursor(sub.cursor));
      cursorEl.textContent = `cursor saved (p${partition} → ${offset + 1n})`;
    }
  });
  sub.on("unrecoverable", (e) => {
    line(`The saved position can no longer be resumed (${esc(String(e.discontinuity))}); starting over.`, "warn");
    localStorage.removeItem(key);
    join(room);
  });
  sub.on("error", (e) => line(`error: ${esc(e.message)}`, "warn"));
}

/** Signs in with the name in the box (when it changed), then joins `room`. */
async function enter(room: string, clear = true): Promise<boolean> {
  if (!(await signIn(userEl.value.trim()))) return false;
  join(room, clear);
  return true;
}

$<HTMLButtonElement>("join").onclick = () => void enter(roomEl.value.trim() || "general");
$<HTMLFormElement>("post").onsubmit = async (ev) => {
  ev.preventDefault();
  const form = ev.target as HTMLFormElement;
  const input = form.elements.namedItem("text") as HTMLInputElement;
  const text = input.value;
  input.value = "";
  // Another name in the box: sign in as it first; the room carries on from its cursor.
  if (userEl.value.trim() !== signedInAs && !(await enter(currentRoom || "general", false))) return;
  if (!chat) return;
  try {
    // The gateway writes the token's subject as the author, whatever `user` says.
    const receipt = await chat.post({ room: currentRoom, user: signedInAs, text, sentAtMs: BigInt(Date.now()) });
    receiptEl.textContent = `sent: ${receipt.topic} p${receipt.partition}@${receipt.offset}${receipt.duplicate ? " (duplicate)" : ""}`;
  } catch (e) {
    line(`not sent: ${esc((e as Error).message)}`, "warn");
  }
};
// Back to the room of the last visit, from its saved cursor: what was posted meanwhile
// shows up once, what was already shown does not.
void enter(localStorage.getItem("chat-room") ?? "general");
