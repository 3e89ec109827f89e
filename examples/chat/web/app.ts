// The chat page: follows one room and posts to it through the KafkaSocks gateway.
// Its cursor is saved in localStorage after every message, so a reload resumes exactly
// where the page stopped.
import { connect, encodeCursor, Reader, Writer, type Subscription } from "../../../ts-templates/src/index.js";

interface ChatMessage { room: string; user: string; text: string; sentAtMs: bigint }

const chatMessage = {
  encode(m: ChatMessage): Uint8Array {
    const w = new Writer();
    if (m.room) w.tag(1, 2).string(m.room);
    if (m.user) w.tag(2, 2).string(m.user);
    if (m.text) w.tag(3, 2).string(m.text);
    if (m.sentAtMs) w.tag(4, 0).int64(m.sentAtMs);
    return w.finish();
  },
  decode(b: Uint8Array): ChatMessage {
    const r = new Reader(b);
    const m: ChatMessage = { room: "", user: "", text: "", sentAtMs: 0n };
    while (!r.eof()) {
      const t = r.tag();
      switch (t >>> 3) {
        case 1: m.room = r.string(); break;
        case 2: m.user = r.string(); break;
        case 3: m.text = r.string(); break;
        case 4: m.sentAtMs = r.int64(); break;
        default: r.skip(t);
      }
    }
    return m;
  },
};
const roomFilter = (room: string): Uint8Array => new Writer().tag(1, 2).string(room).finish();

const $ = <T extends HTMLElement>(id: string): T => document.getElementById(id) as T;
const log = $<HTMLDivElement>("log");
const stateEl = $<HTMLSpanElement>("state");
const cursorEl = $<HTMLSpanElement>("cursor");
const userEl = $<HTMLInputElement>("user");
userEl.value = localStorage.getItem("chat-user") ?? `guest${Math.floor(Math.random() * 1000)}`;

const conn = connect({ url: `ws://${location.hostname}:8081/streams` });
conn.on("state", (s) => { stateEl.textContent = s; stateEl.className = s; });

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
  const key = `chat-cursor:${room}`;
  const saved = localStorage.getItem(key);
  const sub = conn.subscribe("chat.v1.ChatStreams/Messages", roomFilter(room), {
    start: saved ? { cursor: saved } : "earliest",
    decode: chatMessage.decode,
  });
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

$<HTMLButtonElement>("join").onclick = () => join($<HTMLInputElement>("room").value.trim() || "general");
$<HTMLFormElement>("post").onsubmit = async (ev) => {
  ev.preventDefault();
  const form = ev.target as HTMLFormElement;
  const input = form.elements.namedItem("text") as HTMLInputElement;
  const text = input.value;
  input.value = "";
  localStorage.setItem("chat-user", userEl.value);
  try {
    const receipt = await conn.publish(
      "chat.v1.ChatStreams/Post",
      chatMessage.encode({ room: currentRoom, user: userEl.value, text, sentAtMs: BigInt(Date.now()) }),
    );
    cursorEl.textContent = `sent: ${receipt.topic} p${receipt.partition}@${receipt.offset}`;
  } catch (e) {
    line(`not sent: ${esc((e as Error).message)}`, "warn");
  }
};
join("general");
