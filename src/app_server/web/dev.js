// The dev dashboard: live SMS outbox, QR sessions (with phone buttons),
// connections and recent messages from GET /_dev/feed (server-sent events).
// Everything is inserted as text.

import { $, el } from "./dom.js";

const PLATFORMS = { 0: "robot", 1: "iOS", 2: "Android", 3: "Windows", 4: "macOS", 5: "Web", 6: "mini-program", 7: "Linux", 8: "iPad", 9: "Android pad" };

const time = (ms) => new Date(ms).toLocaleTimeString();
const secs = (ms) => `${Math.max(0, Math.round(ms / 1000))} s`;
let snap = null;
let received = 0; // when the last snapshot arrived, for countdowns
const chosen = new Map(); // session token → user picked in its row

function rows(id, items, render, empty) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...(items.length ? items.map(render) : [el("tr", {}, el("td", { colspan: "9", class: "muted", text: empty }))]));
}

function content(m) {
  const c = m.content;
  switch (c.type) {
    case "text": return c.text;
    case "notification": return `[${c.kind}${c.members ? " " + c.members.join(", ") : ""}${c.name ? " “" + c.name + "”" : ""}]`;
    case "image": return `[image ${c.w}×${c.h}]`;
    default: return `[${c.type}]`;
  }
}

async function act(token, action) {
  const userId = chosen.get(token) || snap.users.find((u) => u.userId !== "robot")?.userId;
  $("toast").textContent = "";
  try {
    const r = await fetch(`/_dev/pc_sessions/${encodeURIComponent(token)}/${action}`, {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ userId }),
    });
    const body = await r.json();
    if (!r.ok) $("toast").textContent = `${action} as ${userId}: ${body.error}`;
  } catch (e) {
    $("toast").textContent = `${action}: ${e.message}`;
  }
}

// A quick-login request is bound to one user: only that user's phone answers it.
function quickRow(q, ago) {
  const user = q.scanner.userId;
  chosen.set(q.token, user);
  return el("tr", { "data-token": q.token, class: "quick" },
    el("td", {}, el("code", { text: q.token.slice(0, 12) + "…", title: q.token })),
    el("td", { class: "state-" + q.status },
      el("span", { class: "badge", text: "quick login" }), ` ${q.status} ${q.statusName} · asks ${user}`),
    el("td", { text: `${q.deviceName} (${PLATFORMS[q.platform] || q.platform})` }),
    el("td", { text: secs(q.expiresInMs - ago) }),
    el("td", {}, `${user}'s phone: `,
      el("button", { type: "button", "data-action": "approve", text: "approve", onclick: () => act(q.token, "approve") }),
      el("button", { type: "button", "data-action": "cancel", text: "deny", onclick: () => act(q.token, "cancel") })));
}

function render() {
  if (!snap) return;
  const s = snap.status;
  const ago = Date.now() - received;
  // In a cluster: this node, every live node with its connections, and NATS trouble.
  const c = s.cluster;
  const cluster = c ? ` · node ${c.node} of ${c.nodes.map((n) => `${n.name} (${n.connections})`).join(", ")}${c.natsConnected ? "" : " · NATS unreachable"}` : "";
  $("status").textContent = `imctl ${s.version} · pid ${s.pid} · up ${secs(s.uptimeMs + ago)} · app-server ${s.appServer} · broker ${s.wsUrl} · ${s.database || "in memory"} · ${s.users} users${cluster}`;
  const users = snap.users.filter((u) => u.userId !== "robot");
  $("qr-count").textContent = s.qrSessions;
  rows("sessions", snap.pcSessions, (q) => {
    if (q.quickLogin) return quickRow(q, ago);
    const pick = el("select", { "data-token": q.token, onchange: (e) => chosen.set(q.token, e.target.value) },
      ...users.map((u) => el("option", { value: u.userId, text: u.userId, selected: (chosen.get(q.token) || q.scanner?.userId) === u.userId })));
    if (!chosen.has(q.token) && q.scanner) chosen.set(q.token, q.scanner.userId);
    return el("tr", { "data-token": q.token },
      el("td", {}, el("code", { text: q.token.slice(0, 12) + "…", title: q.token })),
      el("td", { class: "state-" + q.status, text: `${q.status} ${q.statusName}${q.scanner ? " by " + q.scanner.userId : ""}` }),
      el("td", { text: `${q.deviceName} (${PLATFORMS[q.platform] || q.platform})` }),
      el("td", { text: secs(q.expiresInMs - ago) }),
      el("td", {}, pick,
        el("button", { type: "button", "data-action": "scan", text: "scan", onclick: () => act(q.token, "scan") }),
        el("button", { type: "button", "data-action": "approve", text: "approve", onclick: () => act(q.token, "approve") }),
        el("button", { type: "button", "data-action": "cancel", text: "cancel", onclick: () => act(q.token, "cancel") })));
  }, "no live QR sessions — open the web client to make one");
  $("sms-count").textContent = snap.sms.length;
  rows("sms", snap.sms, (m) => el("tr", {},
    el("td", { text: time(m.sentAt) }), el("td", { text: m.mobile }),
    el("td", {}, el("strong", { class: "code", text: m.code })),
    el("td", { text: m.expiresAt > Date.now() ? secs(m.expiresAt - Date.now()) : "expired" })), "no SMS sent yet");
  $("conn-count").textContent = s.connections;
  rows("conns", snap.connections, (c) => el("tr", {},
    el("td", { text: c.userId }), el("td", { text: c.node ? `${c.clientId} on ${c.node}` : c.clientId }),
    el("td", { text: PLATFORMS[c.platform] || String(c.platform) }), el("td", { text: time(c.since) })), "nobody is connected");
  rows("msgs", snap.messages, (m) => el("tr", {},
    el("td", { text: time(m.serverTime) }), el("td", { text: m.msgId }), el("td", { text: m.from }),
    el("td", { text: (m.conv.type === "group" ? "#" : "") + m.conv.target }),
    el("td", { class: "text", text: content(m) })), "no messages yet");
  rows("users", snap.users, (u) => el("tr", {},
    el("td", { text: u.userId }), el("td", { text: u.displayName }), el("td", { text: u.mobile || "—" })), "no users");
}

function connect() {
  const src = new EventSource("/_dev/feed");
  src.addEventListener("snapshot", (ev) => {
    snap = JSON.parse(ev.data);
    received = Date.now();
    $("live").textContent = "live";
    $("live").classList.add("up");
    render();
  });
  src.onerror = () => {
    $("live").textContent = "disconnected — retrying";
    $("live").classList.remove("up");
  };
}

connect();
setInterval(render, 1000); // countdowns between snapshots
