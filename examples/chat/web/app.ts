// The chat page: follows one room and posts to it through the KafkaSocks gateway, with
// the typed client generated from proto/chat/v1/chat.proto (web/gen/, checked in;
// `kafkasocks-gen ts --check` in the tests keeps it current). Its cursor is saved in
// localStorage after every message, so a reload resumes exactly where the page stopped.
import { ChatStreams, type ChatMessage } from "./gen/chat/v1/chat_kafkasocks.js";
import { connect, createClient, encodeCursor, type Subscription } from "@kafkasocks/runtime";

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const log = $<HTMLDivElement>("log");
const stateEl = $<HTMLSpanElement>("state");
const cursorEl = $<HTMLSpanElement>("cursor");
const receiptEl = $<HTMLParagraphElement>("receipt");
const userEl = $<HTMLInputElement>("user");
userEl.value = localStorage.getItem("chat-user") ?? `guest${Math.floor(Math.random() * 1000)}`;

// The gateway's address comes from `?ws=host:port` (the gateway prints the full page URL),
// else the example's default port.
const gateway = new URLSearchParams(location.search).get("ws") ?? `${location.hostname}:8081`;
const conn = connect({ url: `ws://${gateway}/streams` });
conn.on("state", (s) => { stateEl.textContent = s; stateEl.className = s; });
const chat = createClient(ChatStreams, conn);

function line(html: string, cls = "msg"): void {
  const div = document.createElement("div");
  div.className = cls;
  div.innerHTML = html;
  log.append(div);
  log.scrollTop = log.scrollHeight;
}
const esc = (s: string): string => s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

let current: Subscription<ChatMessage> | undefined;
let currentRoom = "";

function join(room: string): void {
  current?.unsubscribe();
  log.textContent = "";
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

const roomEl = $<HTMLInputElement>("room");
$<HTMLButtonElement>("join").onclick = () => join(roomEl.value.trim() || "general");
$<HTMLFormElement>("post").onsubmit = async (ev) => {
  ev.preventDefault();
  const form = ev.target as HTMLFormElement;
  const input = form.elements.namedItem("text") as HTMLInputElement;
  const text = input.value;
  input.value = "";
  localStorage.setItem("chat-user", userEl.value);
  try {
    const receipt = await chat.post({ room: currentRoom, user: userEl.value, text, sentAtMs: BigInt(Date.now()) });
    receiptEl.textContent = `sent: ${receipt.topic} p${receipt.partition}@${receipt.offset}${receipt.duplicate ? " (duplicate)" : ""}`;
  } catch (e) {
    line(`not sent: ${esc((e as Error).message)}`, "warn");
  }
};
// Back to the room of the last visit, from its saved cursor: what was posted meanwhile
// shows up once, what was already shown does not.
join(localStorage.getItem("chat-room") ?? "general");
